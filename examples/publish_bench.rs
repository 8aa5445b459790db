//! Publishing benchmark: reports/s through the fsynced outbox, and latency from hand-over
//! (`Sink::publish`) to the PUBACK being recorded, against a local mosquitto it starts itself
//! on a free loopback port.
//!
//! ```sh
//! cargo run --release --example publish_bench            # defaults
//! cargo run --release --example publish_bench -- 5000 16 # sequential reports, producers
//! ```
//!
//! Prints one line per figure. The outbox directory is a temporary directory (the machine's
//! /tmp: note its filesystem with the figures; fsync cost depends on it).

use std::time::{Duration, Instant};

use meit::config::MqttConfig;
use meit::publish::Sink;
use meit::publish::mqtt::MqttPublisher;
use meit::publish::outbox::{FullPolicy, Outbox, OutboxOptions};
use meit::publish::payload::{Identity, ReportPayload};
use meit::report::{Measurements, Outcome, WindowReport};

#[path = "common/broker.rs"]
mod broker;

fn report(bed: &str, index: u64) -> WindowReport {
    WindowReport {
        bed: bed.into(),
        window_index: index,
        device_start_ns: index * 10_000_000_000,
        device_end_ns: (index + 1) * 10_000_000_000,
        interpolated_fraction: 0.0,
        quality_index: 0.93,
        quality_reasons: vec![],
        measurements: Some(Measurements {
            beats: 12,
            heart_rate_bpm: Some(72.0),
            rr_irregularity: Some(0.02),
            qrs_ms: Some(90.0),
            axis_deg: Some(40.0),
        }),
        outcome: Outcome::report(
            "Sinus rhythm. Normal ECG. Ventricular rate 72 bpm, PR 160 ms, QRS 90 ms.",
            None,
            &[],
        ),
        masked_leads: vec![],
        timings: meit::report::WindowTimings::default(),
    }
}

fn identity() -> Identity {
    Identity {
        site: "bench-site".into(),
        unit: "bench-unit".into(),
        gateway: "gw-bench".into(),
        ..Identity::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sequential = args.first().copied().unwrap_or(2000);
    let producers = args.get(1).copied().unwrap_or(8);
    let payload_len = ReportPayload::new(&identity(), &report("bed-1", 0))
        .to_json()?
        .len();
    println!(
        "payload {payload_len} bytes; outbox in {}",
        std::env::temp_dir().display()
    );

    // 1. The outbox alone: one fdatasync per report, then group commits of 64.
    let dir = tempfile::tempdir()?;
    let options = OutboxOptions {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
        when_full: FullPolicy::RejectNew,
    };
    let (mut outbox, _) = Outbox::open(options)?;
    let body = vec![b'x'; payload_len];
    let t = Instant::now();
    let mut appends = Vec::with_capacity(sequential as usize);
    for _ in 0..sequential {
        let one = Instant::now();
        let (r, _) = outbox.append(vec![("t".into(), body.clone())]);
        r.into_iter().collect::<Result<Vec<_>, _>>()?;
        appends.push(one.elapsed());
    }
    let secs = t.elapsed().as_secs_f64();
    appends.sort();
    println!(
        "outbox append+fdatasync, 1 per batch: {:.0} reports/s (p50 {:.0} us, p99 {:.0} us, n={sequential})",
        sequential as f64 / secs,
        percentile(&appends, 0.5).as_secs_f64() * 1e6,
        percentile(&appends, 0.99).as_secs_f64() * 1e6,
    );
    let t = Instant::now();
    let batches = (sequential / 64).max(1);
    for _ in 0..batches {
        let (r, _) = outbox.append(vec![("t".into(), body.clone()); 64]);
        r.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "outbox append+fdatasync, 64 per batch: {:.0} reports/s (n={})",
        (batches * 64) as f64 / secs,
        batches * 64
    );
    drop(outbox);

    // 2. Through mosquitto.
    let Some(bin) = broker::mosquitto() else {
        println!(
            "SKIPPED the broker figures: mosquitto not installed (run scripts/install-system-deps.sh)"
        );
        return Ok(());
    };
    let broker = broker::Broker::start(&bin)?;
    let port = broker.port;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let outbox_dir = tempfile::tempdir()?;
        let mut cfg = MqttConfig {
            port,
            client_id: "gw-bench".into(),
            inflight: 64,
            ..MqttConfig::default()
        };
        cfg.outbox.dir = outbox_dir.path().to_path_buf();
        let publisher = MqttPublisher::start(&cfg, identity()).await?;
        anyhow::ensure!(
            publisher.wait_connected(Duration::from_secs(10)).await,
            "not connected: {:?}",
            publisher.link().borrow().last_error
        );
        let mut stats = publisher.outbox_stats();
        let mut sink = publisher.sink();
        // Latency: one report at a time, hand-over until its PUBACK is recorded in the outbox.
        let mut latencies = Vec::with_capacity(sequential as usize);
        for i in 0..sequential {
            let acked = stats.borrow().acked;
            let t = Instant::now();
            sink.publish(&report("bed-1", i)).await?;
            stats.wait_for(|s| s.acked > acked).await?;
            latencies.push(t.elapsed());
        }
        latencies.sort();
        println!(
            "hand-over -> PUBACK, one at a time: p50 {:.0} us, p99 {:.0} us, max {:.0} us (n={sequential})",
            percentile(&latencies, 0.5).as_secs_f64() * 1e6,
            percentile(&latencies, 0.99).as_secs_f64() * 1e6,
            latencies.last().unwrap().as_secs_f64() * 1e6,
        );
        // Throughput: `producers` beds publishing at once (group commit), until all acked.
        let per = sequential.max(producers) / producers * 4;
        let before = stats.borrow().acked;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..producers {
            let mut sink = publisher.sink();
            tasks.push(tokio::spawn(async move {
                let bed = format!("bed-{p}");
                for i in 0..per {
                    sink.publish(&report(&bed, i)).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let total = per * producers;
        stats.wait_for(|s| s.acked >= before + total).await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "through outbox + mosquitto, {producers} producers: {:.0} reports/s end to end (all PUBACKed, n={total})",
            total as f64 / secs
        );
        publisher.shutdown(Duration::from_secs(5)).await?;
        anyhow::Ok(())
    });
    drop(broker);
    result
}
