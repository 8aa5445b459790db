//! Soak measurement of the serial path: the device simulator on a pty pair, the daemon's
//! serial source on the other end, both in this process so they share one clock.
//!
//! ```text
//! cargo run --release --example acquire_soak -- --seconds 60
//! cargo run --release --example acquire_soak -- --seconds 60 --bit-flip-rate 1e-4
//! cargo run --release --example acquire_soak -- --seconds 20 --unplug-every 5
//! ```
//!
//! Prints blocks sent and delivered, gaps, rejected frames, two latencies (p50, p99, max):
//! from the simulator handing a block to the pty to its arrival as a `SourceEvent` (the
//! daemon's path), and from the moment the block's last sample was due on the device (adds the
//! simulator thread's own wake-up delay), and the delay from the device coming back after an
//! unplug to the source reporting it connected again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use meit::acquire::SourceEvent;
use meit::acquire::serial::{PortSelector, SerialSettings, SerialSource};
use meit::acquire::signal::{PeriodicPqrst, PqrstSettings, Rhythm};
use meit::acquire::simulator::{Device, DeviceSettings, Faults, Recurring, run_on_pty};
use meit::config::SerialProtocol;
use meit::ecg::{Lead, LeadSet};
use tokio::sync::mpsc;

/// Soak the serial path over a pty.
#[derive(Debug, Parser)]
struct Args {
    /// How long to stream.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Sample rate in Hz.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Number of leads (1..=12, standard order).
    #[arg(long, default_value_t = 12)]
    leads: usize,
    /// Time points per block.
    #[arg(long, default_value_t = 5)]
    frames_per_block: usize,
    /// Probability per byte of a flipped bit.
    #[arg(long, default_value_t = 0.0)]
    bit_flip_rate: f64,
    /// Unplug the simulated device every this many seconds (for 0.5 s).
    #[arg(long)]
    unplug_every: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let link = dir.path().join("meit-soak");
    let epoch = Instant::now();
    let generator = PeriodicPqrst::new(PqrstSettings {
        sample_rate_hz: f64::from(args.rate),
        leads: LeadSet(Lead::STANDARD_12[..args.leads.clamp(1, 12)].to_vec()),
        heart_rate_bpm: 72.0,
        rhythm: Rhythm::Sinus,
        noise_uv: 10.0,
        seed: 1,
    });
    let faults = Faults {
        bit_flip_per_byte: args.bit_flip_rate,
        disconnect: args.unplug_every.map(|s| Recurring {
            every: Duration::from_secs_f64(s),
            lasting: Duration::from_millis(500),
        }),
        ..Faults::default()
    };
    // Without unplugs the device sends exactly `seconds` worth of blocks, then stops: every
    // block it sent is accounted for at the receiver.
    let block_count = (args.seconds * f64::from(args.rate) / args.frames_per_block as f64) as u64;
    let settings = DeviceSettings {
        frames_per_block: args.frames_per_block,
        stream_blocks: args.unplug_every.is_none().then_some(block_count),
        log_send_times: true,
        faults,
        epoch,
        ..DeviceSettings::default()
    };
    let mut device = Device::new(Box::new(generator), settings);
    let stop = Arc::new(AtomicBool::new(false));
    let (back_tx, mut back_rx) = mpsc::unbounded_channel();
    let (l, s) = (link.clone(), Arc::clone(&stop));
    let sim = std::thread::spawn(move || {
        let r = run_on_pty(&mut device, &l, &s, |_| {
            let _ = back_tx.send(Instant::now());
        });
        (device, r)
    });
    while !link.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (tx, mut rx) = mpsc::channel(8192);
    let settings = SerialSettings::new(PortSelector::Path(link), SerialProtocol::FirmwareBridge);
    let source = SerialSource::spawn(settings, tx)?;

    let frame_s = 1.0 / f64::from(args.rate);
    let last_frame_offset = Duration::from_secs_f64((args.frames_per_block - 1) as f64 * frame_s);
    let mut latencies_ms = Vec::new();
    let mut arrivals = Vec::new();
    let mut connects = Vec::new();
    let (mut blocks, mut gaps, mut missing) = (0u64, 0u64, 0u64);
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.seconds + 0.5);
    while let Ok(Some(event)) = tokio::time::timeout_at(end, rx.recv()).await {
        let now = Instant::now();
        match event {
            SourceEvent::Block(b) => {
                blocks += 1;
                arrivals.push((b.sequence, now));
                let taken = epoch + Duration::from_nanos(b.device_time_ns) + last_frame_offset;
                latencies_ms.push(now.saturating_duration_since(taken).as_secs_f64() * 1e3);
            }
            SourceEvent::Gap(g) => {
                gaps += 1;
                missing += g.missing;
            }
            SourceEvent::Connected(_) => connects.push(now),
            SourceEvent::Status(_)
            | SourceEvent::Disconnected { .. }
            | SourceEvent::Waiting { .. } => {}
        }
    }
    let stats = source.stop();
    stop.store(true, Ordering::Relaxed);
    let (device, result) = sim
        .join()
        .map_err(|_| anyhow::anyhow!("simulator panicked"))?;
    result?;
    let dev = device.stats();
    latencies_ms.sort_by(f64::total_cmp);
    // Port latency: from the simulator handing a block to the pty to its arrival as an event
    // (excludes the simulator's own scheduling delay). Sequences restart after an unplug, so
    // this is only computed for runs without one.
    let sent_at: std::collections::HashMap<u64, Instant> =
        device.send_log().iter().copied().collect();
    let mut port_ms: Vec<f64> = if args.unplug_every.is_none() {
        arrivals
            .iter()
            .filter_map(|(seq, at)| {
                sent_at
                    .get(seq)
                    .map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1e3)
            })
            .collect()
    } else {
        Vec::new()
    };
    port_ms.sort_by(f64::total_cmp);
    let mut returns = Vec::new();
    while let Ok(t) = back_rx.try_recv() {
        returns.push(t);
    }
    // Reconnect delay: from each return of the device (after the first) to the next connect.
    let delays_ms: Vec<f64> = returns
        .iter()
        .skip(1)
        .filter_map(|&r| {
            connects
                .iter()
                .find(|&&c| c >= r)
                .map(|&c| (c - r).as_secs_f64() * 1e3)
        })
        .collect();
    println!(
        "streamed {:.0} s at {} Hz x {} leads, {} frames/block",
        args.seconds, args.rate, args.leads, args.frames_per_block
    );
    println!(
        "device: blocks {} corrupted {} | source: delivered {blocks} gaps {gaps} missing {missing} rejected {} connects {}",
        dev.blocks, dev.blocks_corrupted, stats.rejected, stats.connects
    );
    println!(
        "port latency ms (pty write -> event): p50 {:.3} p99 {:.3} max {:.3} (n = {})",
        percentile(&port_ms, 0.5),
        percentile(&port_ms, 0.99),
        port_ms.last().copied().unwrap_or(f64::NAN),
        port_ms.len()
    );
    println!(
        "sample latency ms (last sample taken -> event): p50 {:.3} p99 {:.3} max {:.3} (n = {})",
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN),
        latencies_ms.len()
    );
    if !delays_ms.is_empty() {
        let worst = delays_ms.iter().copied().fold(0.0, f64::max);
        println!(
            "reconnect after device return ms: {:?} (worst {worst:.0})",
            delays_ms.iter().map(|d| d.round()).collect::<Vec<_>>()
        );
    }
    Ok(())
}
