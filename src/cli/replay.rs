//! `meit replay FILE`: stream a recorded file through the acquisition path as if it were live
//! and print a line per window. Until the dsp stage lands, each line holds what the source
//! delivered (frames, gaps, per-lead range), not rate or quality.

use std::path::PathBuf;
use std::process::ExitCode;

use meit::acquire::SourceEvent;
use meit::acquire::replay::{self, ReplaySettings};
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
    /// Window length in seconds for the per-window lines.
    #[arg(long, default_value_t = 10.0)]
    pub window_seconds: f64,
}

/// What one window received.
struct WindowTally {
    frames: usize,
    gaps: u64,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl WindowTally {
    fn new(leads: usize) -> Self {
        WindowTally {
            frames: 0,
            gaps: 0,
            min: vec![f32::INFINITY; leads],
            max: vec![f32::NEG_INFINITY; leads],
        }
    }
}

/// Replays the file and prints per-window lines.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let recording = replay::load(&args.file, args.sample_rate)?;
    if args.window_seconds.is_nan() || args.window_seconds <= 0.0 {
        anyhow::bail!("--window-seconds must be positive");
    }
    let window_frames = (args.window_seconds * recording.sample_rate_hz)
        .round()
        .max(1.0) as usize;
    let names: Vec<&str> = recording.leads.0.iter().map(|l| l.name()).collect();
    println!(
        "{}: {} leads at {} Hz, {:.1} s ({}); dsp results appear here once the dsp stage lands",
        args.file.display(),
        recording.leads.len(),
        recording.sample_rate_hz,
        recording.duration_s(),
        if args.fast { "fast" } else { "real time" }
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
            let leads = recording.leads.len();
            let (mut tally, mut index) = (WindowTally::new(leads), 0usize);
            let print = |index: usize, t: &WindowTally| {
                let ranges: Vec<String> = names
                    .iter()
                    .zip(t.min.iter().zip(&t.max))
                    .map(|(n, (lo, hi))| format!("{n} {lo:.0}..{hi:.0}"))
                    .collect();
                println!(
                    "window {index} [{:.1}-{:.1} s]: {} frames, gaps {}, uV {}",
                    index as f64 * args.window_seconds,
                    (index + 1) as f64 * args.window_seconds,
                    t.frames,
                    t.gaps,
                    ranges.join(", ")
                );
            };
            while let Some(event) = rx.recv().await {
                match event {
                    SourceEvent::Block(b) => {
                        for frame in b.samples_uv.chunks_exact(leads.max(1)) {
                            for (i, &v) in frame.iter().enumerate() {
                                tally.min[i] = tally.min[i].min(v);
                                tally.max[i] = tally.max[i].max(v);
                            }
                            tally.frames += 1;
                            if tally.frames == window_frames {
                                print(index, &tally);
                                tally = WindowTally::new(leads);
                                index += 1;
                            }
                        }
                    }
                    SourceEvent::Gap(g) => tally.gaps += g.missing,
                    _ => {}
                }
            }
            if tally.frames > 0 {
                print(index, &tally);
            }
        };
        tokio::join!(producer, consumer);
    });
    Ok(ExitCode::SUCCESS)
}
