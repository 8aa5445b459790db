//! How many beds one daemon keeps in real time: N in-process beds (each a synthesized 12-lead
//! 500 Hz recording streamed at real-time pace, so the measurement is of the daemon, not of N
//! pty writers) through the real pipeline: bed tasks, the shared inference worker with the
//! committed default bundle, the publisher.
//!
//! ```text
//! cargo run --release --example daemon_beds -- --beds 256 --seconds 45 --batch 16 [--phase sync]
//!     [--mqtt] [--bundle DIR] [--markdown docs/bench/daemon.md --note "what else ran on the machine"]
//! ```
//!
//! `--bundle DIR`: another report bundle than the committed default `models/bundles/tiny` (e.g.
//! `.models/bundles/smollm2-8layer` from `make smollm2-8layer-bundle`).
//!
//! `--phase spread` (the default): each bed's device starts at its own offset, drawn uniformly
//! (seeded) over one hop, as real beds are switched on at unrelated moments, so their windows
//! end at different instants. `--phase sync`: every bed starts at once and all windows end
//! together, the worst case for latency (a burst of one window per bed every hop).
//! Latency is measured from a window's end (its last sample arriving), so a bed's start offset
//! is not counted in it.
//!
//! `--mqtt`: the reports also go through the real MQTT publisher (durable outbox, fdatasync,
//! QoS 1) to a mosquitto the example starts on a free loopback port (the one
//! `scripts/install-system-deps.sh` installs), and the latency that counts is window end ->
//! PUBACK, as [`MqttPublisher::delivered`] reports each acknowledgement. The run ends when
//! every published report is acknowledged (or 30 s after the sources stop).
//!
//! The beds share six recordings (no copy per bed), so the memory measured is the daemon's.
//!
//! Prints windows published by outcome, windows dropped, window end -> sink (and -> PUBACK)
//! latency p50, p99 and max of generated reports, CPU used by this process (the broker is a
//! process of its own, not counted) and resident memory. `--markdown FILE` also writes the
//! figures as one row of FILE's table, with the command, the date and the machine; a row of
//! the same command is replaced, so each configuration has one row.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use meit::acquire::source::start_recording_after;
use meit::config::{Config, MqttConfig, SourceConfig};
use meit::pipeline::{self, model};
use meit::publish::mqtt::MqttPublisher;
use meit::publish::payload::{Identity, utc_rfc3339};
use meit::publish::{PublishError, Sink, Tee};
use meit::report::{Outcome, WindowReport};
use meit::synth::{ConditionSet, RecordSpec, generate};
use rand::SeedableRng;

#[path = "common/broker.rs"]
mod broker;

/// One published window: bed, window index, outcome kind, window end -> sink latency (ms).
type Published = (String, u64, &'static str, f64);

/// Collects outcome kinds and latencies.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Published>>>);

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
        self.0.lock().unwrap().push((
            report.bed.clone(),
            report.window_index,
            kind,
            report.timings.latency_ms,
        ));
        Ok(())
    }
}

/// The value after `name` on the command line, if any.
fn value_of(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: f64) -> anyhow::Result<f64> {
    match value_of(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .ok_or_else(|| anyhow::anyhow!("{name} {v}: a positive number")),
    }
}

/// Whether `--NAME` was given.
fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
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

/// A `/proc/self/status` size in MB (`VmRSS`, `VmHWM`).
fn memory_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// "N cores, CPU model, architecture" from /proc/cpuinfo.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {model}, {}", std::env::consts::ARCH)
}

/// p50, p99 and max of `values` (sorted here), NaN when empty.
fn percentiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        values
            .get(((values.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (
        pct(0.5),
        pct(0.99),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

const TABLE_HEADER: &str = "| date (UTC) | command | beds | phase | batch | windows: report / no_report / dropped / no_model | window end -> sink p50 / p99 / max (ms) | window end -> PUBACK p50 / p99 / max (ms) | CPU (cores) | CPU per bed (ms per bed-second) | resident / peak memory (MB) | load average start -> end | machine | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Writes `row` into the table of `path` (made with its header if missing), replacing the row
/// of the same `command`.
fn write_row(path: &Path, command: &str, row: &str) -> anyhow::Result<()> {
    let header = format!(
        "# The daemon with many beds (`examples/daemon_beds.rs`)\n\n\
         Written by `cargo run --release --example daemon_beds -- ... --markdown {}`: one row per \
         command, replaced when the same command runs again; never edited by hand. In-process beds \
         stream synthesized 12-lead 500 Hz recordings at real-time pace through the real pipeline \
         and the committed default bundle (`models/bundles/tiny`); latencies are of generated \
         reports, from the window's last sample arriving; `--mqtt` adds the durable outbox and a \
         local mosquitto (window end -> PUBACK). CPU and memory are this process's (the broker is \
         not counted).\n\n{TABLE_HEADER}",
        path.display()
    );
    let mut text = std::fs::read_to_string(path).unwrap_or(header);
    let marker = format!("| `{command}` |");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains(&marker))
        .map(str::to_string)
        .collect();
    lines.push(row.to_string());
    text = lines.join("\n") + "\n";
    std::fs::write(path, text)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    meit::telemetry::init(meit::telemetry::LogFormat::Text);
    let beds = arg("--beds", 256.0)? as usize;
    let seconds = arg("--seconds", 45.0)?;
    let batch = arg("--batch", 16.0)? as usize;
    let mqtt = flag("--mqtt");
    let markdown = value_of("--markdown");
    let note = value_of("--note").unwrap_or_default();

    let mut config = Config::default();
    // The committed default bundle unless `--bundle DIR` names another (e.g. the SmolLM2 one).
    config.model.bundle = value_of("--bundle")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny")
        });
    config.pipeline.max_batch = batch;
    config.pipeline.queue_windows = beds.max(256) * 2;
    // The signal-processing queue keeps its default bound (256 windows, each 10 s of raw and
    // filtered 12-lead samples): beyond it the oldest are dropped, so memory stays bounded
    // whatever the number of beds.
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
    let identity = match &loaded.engine {
        Err(reason) => anyhow::bail!("{reason}"),
        Ok(engine) => Identity {
            site: "bench".into(),
            unit: "beds".into(),
            gateway: "gw-bench-beds".into(),
            model_id: Some(engine.bundle().manifest.model.id.clone()),
            model_version: Some(engine.bundle().manifest.model.version.clone()),
            execution_provider: Some(engine.primary_provider().to_string()),
        },
    };
    // A few distinct patients, each bed streaming one of them.
    let records: Vec<_> = ["normal", "af", "tachy", "brady", "lbbb", "normal,pvc"]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let spec = RecordSpec {
                seconds: seconds + 5.0,
                ..RecordSpec::ten_seconds(ConditionSet::parse_list(c).unwrap())
            };
            generate(&spec, i as u64 + 1).map(|r| Arc::new(r.recording))
        })
        .collect::<Result<_, _>>()?;

    let broker = if mqtt {
        let Some(bin) = broker::mosquitto() else {
            anyhow::bail!("--mqtt needs mosquitto (run scripts/install-system-deps.sh)");
        };
        Some(broker::Broker::start(&bin)?)
    } else {
        None
    };
    let outbox_dir = tempfile::tempdir()?;

    let collect = Collect::default();
    let seen = collect.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let hop = loaded.spec.hop_seconds;
    let phase = value_of("--phase").unwrap_or_else(|| "spread".into());
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
    let mut next = 0usize;
    let start = move |_: &SourceConfig, events| {
        let recording = Arc::clone(&records[next % records.len()]);
        let delay = offsets[next % offsets.len()];
        next += 1;
        Ok(start_recording_after(recording, true, delay, events))
    };
    let stop = async move { tokio::time::sleep(Duration::from_secs_f64(seconds)).await };
    let load_start = load_average();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    // Window end -> PUBACK per (bed, window), ms; acknowledgements the listener missed.
    let acks: Arc<Mutex<Vec<(String, u64, f64)>>> = Arc::default();
    let mut missed = 0u64;
    let summary = runtime.block_on(async {
        let Some(broker) = &broker else {
            return Ok(
                pipeline::run_with_sources(&config, loaded, collect, stop, None, start).await?,
            );
        };
        let mut cfg = MqttConfig {
            port: broker.port,
            client_id: identity.gateway.clone(),
            ..MqttConfig::default()
        };
        cfg.outbox.dir = outbox_dir.path().to_path_buf();
        let publisher = MqttPublisher::start(&cfg, identity.clone()).await?;
        anyhow::ensure!(
            publisher.wait_connected(Duration::from_secs(10)).await,
            "not connected to mosquitto: {:?}",
            publisher.link().borrow().last_error
        );
        let mut delivered = publisher.delivered();
        let into = Arc::clone(&acks);
        let listener = tokio::spawn(async move {
            let mut missed = 0u64;
            loop {
                match delivered.recv().await {
                    Ok(d) => {
                        let ms = d
                            .acknowledged
                            .duration_since(d.window_closed)
                            .unwrap_or_default()
                            .as_secs_f64()
                            * 1e3;
                        into.lock().unwrap().push((d.bed, d.window, ms));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => missed += n,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break missed,
                }
            }
        });
        let sink = Tee::new(publisher.sink(), collect);
        let summary = pipeline::run_with_sources(&config, loaded, sink, stop, None, start).await;
        let mut stats = publisher.outbox_stats();
        let all_acked = tokio::time::timeout(
            Duration::from_secs(30),
            stats.wait_for(|s| s.acked >= s.appended),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !all_acked {
            eprintln!("not every report was acknowledged within 30 s of the end");
        }
        if let Err(e) = publisher.shutdown(Duration::from_secs(5)).await {
            eprintln!("MQTT shutdown: {e}");
        }
        missed = listener.await.unwrap_or(0);
        anyhow::Ok(summary?)
    })?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let load_end = load_average();
    let results = seen.0.lock().unwrap().clone();
    let count = |k: &str| results.iter().filter(|r| r.2 == k).count();
    let mut sink_ms: Vec<f64> = results
        .iter()
        .filter(|r| r.2 == "report")
        .map(|r| r.3)
        .collect();
    let (s50, s99, smax) = percentiles(&mut sink_ms);
    let reports: std::collections::HashSet<(String, u64)> = results
        .iter()
        .filter(|r| r.2 == "report")
        .map(|r| (r.0.clone(), r.1))
        .collect();
    let acks = acks.lock().unwrap().clone();
    let mut puback_ms: Vec<f64> = acks
        .iter()
        .filter(|(bed, window, _)| reports.contains(&(bed.clone(), *window)))
        .map(|a| a.2)
        .collect();
    let acked_reports = puback_ms.len();
    let (p50, p99, pmax) = percentiles(&mut puback_ms);
    let (rss, peak) = (memory_mb("VmRSS:"), memory_mb("VmHWM:"));
    let cores = cpu / wall;
    let per_bed_ms = cores / beds as f64 * 1e3;
    // Windows the daemon could not finish: it did not keep up.
    let mut behind = String::new();
    if count("dropped") > 0 {
        behind = format!(
            "; fell behind: windows dropped ({} by signal processing, {} by inference)",
            summary.dsp.dropped(),
            summary.queue.dropped()
        );
    }
    if summary.deadline_missed {
        behind.push_str("; NOT kept up: the stop deadline passed with windows unpublished");
    }
    println!(
        "beds {beds}, {seconds:.0} s, max_batch {batch}, phase {phase}{}: windows {} (report {}, no_report {}, dropped {}, no_model {}), batches {}, queue max depth {}{behind}",
        if mqtt { ", mqtt" } else { "" },
        results.len(),
        count("report"),
        count("no_report"),
        count("dropped"),
        count("no_model"),
        summary.queue.batches,
        summary.queue.max_depth,
    );
    println!(
        "window end -> sink, generated reports: p50 {s50:.0} ms, p99 {s99:.0} ms, max {smax:.0} ms"
    );
    if mqtt {
        println!(
            "window end -> PUBACK, generated reports: p50 {p50:.0} ms, p99 {p99:.0} ms, max {pmax:.0} ms ({acked_reports} of {} acknowledged, {missed} acknowledgements missed by the listener)",
            count("report")
        );
    }
    println!(
        "CPU {cpu:.1} s over {wall:.1} s wall ({cores:.2} cores, {per_bed_ms:.2} ms CPU per bed-second); resident memory {rss:.0} MB (peak {peak:.0} MB); load average {load_start:.1} -> {load_end:.1}"
    );
    if let Some(path) = markdown {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // The command as run, without the output file and note (they do not change the figures).
        let mut shown = Vec::new();
        let mut i = 0;
        while i < args.len() {
            if args[i] == "--markdown" || args[i] == "--note" {
                i += 2;
                continue;
            }
            shown.push(args[i].clone());
            i += 1;
        }
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        };
        let command = format!(
            "cargo run {profile}--example daemon_beds -- {}",
            shown.join(" ")
        );
        let puback = if mqtt {
            format!(
                "{p50:.0} / {p99:.0} / {pmax:.0} ({acked_reports} of {} acknowledged)",
                count("report")
            )
        } else {
            "-".into()
        };
        let date = utc_rfc3339(SystemTime::now());
        let row = format!(
            "| {} | `{command}` | {beds} | {phase} | {batch} | {} / {} / {} / {}{behind} | {s50:.0} / {s99:.0} / {smax:.0} | {puback} | {cores:.2} | {per_bed_ms:.2} | {rss:.0} / {peak:.0} | {load_start:.1} -> {load_end:.1} | {} | {} |",
            &date[..16],
            count("report"),
            count("no_report"),
            count("dropped"),
            count("no_model"),
            machine(),
            note.replace('|', "/"),
        );
        write_row(Path::new(&path), &command, &row)?;
        println!("row written to {path}");
    }
    Ok(())
}
