//! How many beds one daemon keeps in real time: N in-process beds (each a synthesized 12-lead
//! 500 Hz recording streamed at real-time pace, so the measurement is of the daemon, not of N
//! pty writers) through the real pipeline: bed tasks, the shared inference worker with the
//! committed default bundle, the publisher.
//!
//! ```text
//! cargo run --release --example daemon_beds -- --beds 256 --seconds 45 --batch 16 [--phase sync]
//! ```
//!
//! `--phase spread` (the default): each bed's device starts at its own offset, drawn uniformly
//! (seeded) over one hop, as real beds are switched on at unrelated moments, so their windows
//! end at different instants. `--phase sync`: every bed starts at once and all windows end
//! together, the worst case for latency (a burst of one window per bed every hop).
//! Latency is measured from a window's end, so a bed's start offset is not counted in it.
//!
//! Prints windows published by outcome, windows dropped, window end -> sink latency (p50, p99,
//! max) of generated reports, CPU seconds used and resident memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meit::acquire::source::start_recording_after;
use meit::config::{Config, SourceConfig};
use meit::pipeline::{self, model};
use meit::publish::{PublishError, Sink};
use meit::report::{Outcome, WindowReport};
use meit::synth::{ConditionSet, RecordSpec, generate};
use rand::SeedableRng;

/// Collects outcome kinds and latencies.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(&'static str, f64)>>>);

impl Sink for Collect {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        let kind = match &report.outcome {
            Outcome::Report { .. } => "report",
            Outcome::NoReport { reasons } if reasons.iter().any(|r| r.contains("behind")) => {
                "dropped"
            }
            Outcome::NoReport { .. } => "no_report",
            Outcome::NoModel { .. } => "no_model",
        };
        self.0
            .lock()
            .unwrap()
            .push((kind, report.timings.latency_ms));
        Ok(())
    }
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of `--NAME` (a word), or `default`.
fn word_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    meit::telemetry::init(meit::telemetry::LogFormat::Text);
    let beds = arg("--beds", 256.0) as usize;
    let seconds = arg("--seconds", 45.0);
    let batch = arg("--batch", 16.0) as usize;

    let mut config = Config::default();
    config.model.bundle =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny");
    config.pipeline.max_batch = batch;
    config.pipeline.queue_windows = beds.max(256) * 2;
    config.sources = (0..beds)
        .map(|i| SourceConfig::Replay {
            bed: format!("b{i:03}"),
            file: "in-process".into(),
            realtime: true,
            sample_rate_hz: None,
            window_seconds: None,
            hop_seconds: None,
        })
        .collect();
    let loaded = model::load(&config.model, &config.runtime, &config.dsp);
    if let Err(reason) = &loaded.engine {
        anyhow::bail!("{reason}");
    }
    // A few distinct patients, each bed streaming one of them.
    let records: Vec<_> = ["normal", "af", "tachy", "brady", "lbbb", "normal,pvc"]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let spec = RecordSpec {
                seconds: seconds + 5.0,
                ..RecordSpec::ten_seconds(ConditionSet::parse_list(c).unwrap())
            };
            generate(&spec, i as u64 + 1).map(|r| r.recording)
        })
        .collect::<Result<_, _>>()?;

    let sink = Collect::default();
    let seen = sink.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut next = 0usize;
    let hop = loaded.spec.hop_seconds;
    let phase = word_arg("--phase", "spread");
    anyhow::ensure!(
        phase == "spread" || phase == "sync",
        "--phase {phase}: allowed: spread, sync"
    );
    // Seeded: every run spreads the beds the same way.
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let offsets: Vec<Duration> = (0..beds)
        .map(|_| {
            let u: f64 = rand::Rng::random(&mut rng);
            if phase == "spread" {
                Duration::from_secs_f64(u * hop)
            } else {
                Duration::ZERO
            }
        })
        .collect();
    let summary = runtime.block_on(pipeline::run_with_sources(
        &config,
        loaded,
        sink,
        async move { tokio::time::sleep(Duration::from_secs_f64(seconds)).await },
        None,
        |_, events| {
            let recording = records[next % records.len()].clone();
            let delay = offsets[next % offsets.len()];
            next += 1;
            Ok(start_recording_after(recording, true, delay, events))
        },
    ))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let results = seen.0.lock().unwrap().clone();
    let count = |k: &str| results.iter().filter(|(kind, _)| *kind == k).count();
    let mut latency: Vec<f64> = results
        .iter()
        .filter(|(k, _)| *k == "report")
        .map(|(_, l)| *l)
        .collect();
    latency.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latency
            .get(((latency.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "beds {beds}, {seconds:.0} s, max_batch {batch}, phase {phase}: windows {} (report {}, no_report {}, dropped {}, no_model {}), batches {}, queue max depth {}",
        results.len(),
        count("report"),
        count("no_report"),
        count("dropped"),
        count("no_model"),
        summary.queue.batches,
        summary.queue.max_depth,
    );
    println!(
        "window end -> sink, generated reports: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        latency.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "CPU {cpu:.1} s over {wall:.1} s wall ({:.2} cores, {:.1} ms CPU per bed-second); resident memory {:.0} MB",
        cpu / wall,
        cpu / wall / beds as f64 * 1e3,
        rss_mb()
    );
    Ok(())
}
