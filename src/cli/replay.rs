//! `meit replay FILE`: stream a recorded file through the acquisition path as if it were live,
//! through the same bed pipeline as `meit run`, printing one line per window.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meit::acquire::replay::{self, ReplaySettings};
use meit::config::Config;
use meit::dsp::Preprocessor;
use meit::pipeline::{self, BedPipeline};
use meit::publish::stdout::{LineFormat, LineSink};
use tokio::sync::mpsc;

/// Options of `meit replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The record: WFDB (`.hea`; its standard leads, any sample rate) or CSV (`.csv`).
    pub file: PathBuf,
    /// Replay as fast as possible instead of at real-time pace.
    #[arg(long)]
    pub fast: bool,
    /// Sample rate in Hz: for a CSV file without a time column; overrides the file's rate.
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Configuration whose `[dsp]` table sets filters and windows (defaults when omitted).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How window reports are printed.
    #[arg(long, value_enum, default_value_t = LineFormat::Text)]
    pub output: LineFormat,
}

/// Replays the file through the dsp stage and prints one line per window.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let recording = replay::load(&args.file, args.sample_rate)?;
    let preprocessor =
        Preprocessor::new(pipeline::preprocess_spec(&config)).context("dsp settings")?;
    println!(
        "{}: {} leads at {} Hz, {:.1} s ({}); windows of {} s",
        args.file.display(),
        recording.leads.len(),
        recording.sample_rate_hz,
        recording.duration_s(),
        if args.fast { "fast" } else { "real time" },
        config.dsp.window_seconds,
    );
    let bed = args
        .file
        .file_stem()
        .map_or_else(|| "replay".into(), |s| s.to_string_lossy().into_owned());
    let pipeline = BedPipeline::new(bed, preprocessor, pipeline::model_status(&config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let published = rt.block_on(async {
        let (tx, rx) = mpsc::channel(256);
        let settings = ReplaySettings {
            block_frames: (recording.sample_rate_hz / 10.0).round().max(1.0) as usize,
            realtime: !args.fast,
        };
        let producer = async {
            let streamed = replay::stream(&recording, settings, &tx).await;
            drop(tx);
            streamed
        };
        let mut sink = LineSink::stdout(args.output);
        let consumer = pipeline::run(pipeline, rx, &mut sink, None);
        let (streamed, published) = tokio::join!(producer, consumer);
        streamed?;
        published.map_err(anyhow::Error::from)
    })?;
    if published == 0 {
        println!("no complete window: the record is shorter than one window");
    }
    Ok(ExitCode::SUCCESS)
}
