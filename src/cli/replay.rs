//! `meit replay FILE`: stream a recorded file through the acquisition path as if it were live,
//! through the same pipeline as `meit run` (bed task, inference worker, publisher), printing
//! one line per window. Nothing is dropped: the replay waits for inference.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use meit::acquire::replay;
use meit::config::{Config, SourceConfig};
use meit::pipeline::{self, WhenBehind};
use meit::publish::stdout::{LineFormat, LineSink};

use super::run::load_model;

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
    /// Configuration whose `[model]`, `[runtime]`, `[dsp]` and `[pipeline]` tables apply
    /// (defaults when omitted; its sources are not used).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How window reports are printed.
    #[arg(long, value_enum, default_value_t = LineFormat::Text)]
    pub output: LineFormat,
}

/// Replays the file through the pipeline and prints one line per window.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let recording = replay::load(&args.file, args.sample_rate)?;
    let bed = args
        .file
        .file_stem()
        .map_or_else(|| "replay".into(), |s| s.to_string_lossy().into_owned());
    config.sources = vec![SourceConfig::Replay {
        bed,
        file: args.file.clone(),
        realtime: !args.fast,
        sample_rate_hz: args.sample_rate,
        window_seconds: None,
        hop_seconds: None,
    }];
    config.pipeline.when_behind = WhenBehind::Wait;
    let model = load_model(&config)?;
    let header = format!(
        "{}: {} leads at {} Hz, {:.1} s ({}); windows of {} s",
        args.file.display(),
        recording.leads.len(),
        recording.sample_rate_hz,
        recording.duration_s(),
        if args.fast { "fast" } else { "real time" },
        model.spec.window_seconds,
    );
    let mut preloaded = Some(recording);
    // JSON lines stay parseable: the header goes to standard error there.
    match args.output {
        LineFormat::Text => writeln!(std::io::stdout(), "{header}")?,
        LineFormat::Json => eprintln!("{header}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The record is read once: the source streams the recording already loaded.
    let summary = rt.block_on(pipeline::run_with_sources(
        &config,
        model,
        LineSink::stdout(args.output),
        std::future::pending(),
        None,
        |source, events| match preloaded.take() {
            Some(recording) => Ok(meit::acquire::source::start_recording(
                recording, !args.fast, events,
            )),
            None => meit::acquire::source::start(source, events),
        },
    ))?;
    if summary.published.published == 0 {
        writeln!(
            std::io::stdout(),
            "no complete window: the record is shorter than one window"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
