//! `meit replay FILE`: stream a recorded file through the acquisition path as if it were live,
//! run the dsp stage on it (windowing, filtering, quality) and print one line per window.
//! Heart rate and RR irregularity are printed once beat measurements land in the dsp stage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meit::acquire::SourceEvent;
use meit::acquire::replay::{self, ReplaySettings};
use meit::config::{Config, DspConfig};
use meit::dsp::normalize::Normalization;
use meit::dsp::quality::QualityReason;
use meit::dsp::window::Window;
use meit::dsp::{PreprocessSpec, Preprocessor};
use meit::ecg::LeadSet;
use tokio::sync::mpsc;

/// Options of `meit replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The record (`.csv`; `.hea` once the WFDB reader lands).
    pub file: PathBuf,
    /// Replay as fast as possible instead of at real-time pace.
    #[arg(long)]
    pub fast: bool,
    /// Sample rate in Hz, when the file has no time column.
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Configuration whose `[dsp]` table sets filters and windows (defaults when omitted).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Replays the file through the dsp stage and prints per-window lines.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let dsp_config = match &args.config {
        Some(path) => Config::load(path)?.dsp,
        None => DspConfig::default(),
    };
    let recording = replay::load(&args.file, args.sample_rate)?;
    // The model's view: 12 standard leads at 500 Hz; leads the file lacks show up as reasons.
    let spec = PreprocessSpec::from_config(
        &dsp_config,
        500.0,
        LeadSet::standard_12(),
        Normalization::MinMaxRecord,
    );
    let preprocessor = Preprocessor::new(spec).context("dsp settings")?;
    let mut windower = preprocessor
        .windower(&recording.leads, recording.sample_rate_hz)
        .context("windowing this record")?;
    println!(
        "{}: {} leads at {} Hz, {:.1} s ({}); windows of {} s",
        args.file.display(),
        recording.leads.len(),
        recording.sample_rate_hz,
        recording.duration_s(),
        if args.fast { "fast" } else { "real time" },
        dsp_config.window_seconds,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(256);
        let settings = ReplaySettings {
            block_frames: (recording.sample_rate_hz / 10.0).round().max(1.0) as usize,
            realtime: !args.fast,
        };
        let producer = async {
            replay::stream(&recording, settings, &tx).await;
            drop(tx);
        };
        let consumer = async {
            let mut index = 0usize;
            while let Some(event) = rx.recv().await {
                let SourceEvent::Block(block) = event else {
                    continue;
                };
                for window in windower.push(&block)? {
                    print_window(index, &window, &preprocessor);
                    index += 1;
                }
            }
            if index == 0 {
                println!("no complete window: the record is shorter than one window");
            }
            anyhow::Ok(())
        };
        let ((), result) = tokio::join!(producer, consumer);
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line: time span, gaps, quality index, verdict and reasons (shared with `meit run`
/// until the inference engine prints reports).
pub(super) fn print_window(index: usize, window: &Window, preprocessor: &Preprocessor) {
    let t0 = window.start_device_time_ns as f64 / 1e9;
    let t1 = window.end_device_time_ns as f64 / 1e9;
    let interpolated = window.interpolated_fraction() * 100.0;
    let head = format!("window {index} [{t0:.1}-{t1:.1} s]: interpolated {interpolated:.1}%");
    match preprocessor.process_window(window) {
        Ok(input) => {
            let q = &input.quality;
            let reasons: Vec<String> = q.reasons.iter().map(describe).collect();
            println!(
                "{head}, quality {:.2}, {}{}{}; rate and RR irregularity: beat measurements not in this build",
                q.index,
                if q.is_reportable() {
                    "reportable"
                } else {
                    "no report"
                },
                if reasons.is_empty() { "" } else { ": " },
                reasons.join(", ")
            );
        }
        Err(e) => println!("{head}, no report: dsp failed: {e}"),
    }
}

fn describe(reason: &QualityReason) -> String {
    match reason {
        QualityReason::Lead {
            lead,
            issue,
            required,
        } => format!(
            "{lead} {issue:?}{}",
            if *required { " (required)" } else { "" }
        ),
        QualityReason::InterpolatedGaps { fraction } => {
            format!("{:.0}% interpolated", fraction * 100.0)
        }
        QualityReason::LowIndex { index } => format!("quality index {index:.2} too low"),
    }
}
