//! End to end over real ptys: the device simulator on one side, the daemon's serial source on
//! the other, exactly as with a USB device. Short runs for CI; the 60 s soak with latency
//! figures is `cargo run --release --example acquire_soak` (see README).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meit::acquire::serial::{PortSelector, SerialSettings, SerialSource};
use meit::acquire::signal::{PeriodicPqrst, PqrstSettings, Rhythm, SignalGenerator};
use meit::acquire::simulator::{Device, DeviceSettings, Faults, Recurring, run_on_pty};
use meit::acquire::{LinkStats, SourceEvent};
use meit::config::SerialProtocol;
use meit::ecg::{LeadSet, SampleBlock};
use tokio::sync::mpsc;

const RATE: f64 = 500.0;
const FRAMES_PER_BLOCK: usize = 5;

fn generator() -> PeriodicPqrst {
    PeriodicPqrst::new(PqrstSettings {
        sample_rate_hz: RATE,
        leads: LeadSet::standard_12(),
        heart_rate_bpm: 72.0,
        rhythm: Rhythm::Sinus,
        noise_uv: 10.0,
        seed: 11,
    })
}

/// A simulator running on its own pty pair, published as a symlink in a temp dir.
struct Simulator {
    _dir: tempfile::TempDir,
    link: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Device>,
    came_back: mpsc::UnboundedReceiver<Instant>,
}

impl Simulator {
    fn start(faults: Faults, stream_blocks: Option<u64>) -> Simulator {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("meit-sim");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, came_back) = mpsc::unbounded_channel();
        let mut device = Device::new(
            Box::new(generator()),
            DeviceSettings {
                frames_per_block: FRAMES_PER_BLOCK,
                faults,
                seed: 5,
                stream_blocks,
                ..DeviceSettings::default()
            },
        );
        let (l, s) = (link.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            run_on_pty(&mut device, &l, &s, |_| {
                let _ = ready_tx.send(Instant::now());
            })
            .unwrap();
            device
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !link.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Simulator {
            _dir: dir,
            link,
            stop,
            thread,
            came_back,
        }
    }

    fn finish(self) -> Device {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn source(link: &Path) -> (SerialSource, mpsc::Receiver<SourceEvent>) {
    source_with(link, |_| {})
}

fn source_with(
    link: &Path,
    adjust: impl FnOnce(&mut SerialSettings),
) -> (SerialSource, mpsc::Receiver<SourceEvent>) {
    let (tx, rx) = mpsc::channel(4096);
    let mut settings = SerialSettings::new(
        PortSelector::Path(link.to_path_buf()),
        SerialProtocol::FirmwareBridge,
    );
    adjust(&mut settings);
    (SerialSource::spawn(settings, tx).unwrap(), rx)
}

/// Collects events until `done` says so or `limit` passes.
async fn collect(
    rx: &mut mpsc::Receiver<SourceEvent>,
    limit: Duration,
    mut done: impl FnMut(&[SourceEvent]) -> bool,
) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    let end = tokio::time::Instant::now() + limit;
    while !done(&events) {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            _ => break,
        }
    }
    events
}

fn blocks(events: &[SourceEvent]) -> Vec<&SampleBlock> {
    events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Block(b) => Some(b),
            _ => None,
        })
        .collect()
}

/// The samples block `sequence` must hold, regenerated from the same seeded signal and
/// quantised like the device does (0.5 uV per count).
fn expected_blocks(n: u64) -> Vec<Vec<f32>> {
    let mut g = generator();
    let mut frame = vec![0.0f32; 12];
    (0..n)
        .map(|_| {
            let mut block = Vec::new();
            for _ in 0..FRAMES_PER_BLOCK {
                g.next_frame(&mut frame);
                block.extend(
                    frame
                        .iter()
                        .map(|&uv| (f64::from(uv) / 0.5).round() as f32 * 0.5),
                );
            }
            block
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_pty_link_delivers_every_block_in_order_with_exact_samples() {
    const BLOCKS: u64 = 500; // 5 s at 500 Hz, 12 leads
    let sim = Simulator::start(Faults::default(), Some(BLOCKS));
    let (src, mut rx) = source(&sim.link);
    let events = collect(&mut rx, Duration::from_secs(20), |e| {
        blocks(e).len() as u64 >= BLOCKS
    })
    .await;
    let stats: LinkStats = src.stop();
    let device = sim.finish();
    let got = blocks(&events);
    assert!(matches!(events[0], SourceEvent::Connected(ref i) if i.leads.len() == 12));
    assert_eq!(got.len() as u64, BLOCKS, "every block delivered");
    assert_eq!(device.stats().blocks, BLOCKS);
    assert_eq!((stats.gaps, stats.rejected), (0, 0), "{stats:?}");
    let expected = expected_blocks(BLOCKS);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(b.sequence, i as u64);
        assert_eq!(b.samples_uv, expected[i], "block {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_corruption_rejects_exactly_the_corrupted_blocks_and_delivers_the_rest() {
    const BLOCKS: u64 = 400;
    let faults = Faults {
        // 1e-3 per byte: about a fifth of the 200-byte blocks are hit, so a short run sees many.
        bit_flip_per_byte: 1e-3,
        ..Faults::default()
    };
    let sim = Simulator::start(faults, Some(BLOCKS));
    let (src, mut rx) = source(&sim.link);
    let events = collect(&mut rx, Duration::from_secs(8), |e| {
        blocks(e).last().is_some_and(|b| b.sequence + 1 >= BLOCKS)
    })
    .await;
    // The last blocks may be the corrupted ones: wait until the device has finished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = src.stop();
    let device = sim.finish().stats();
    let got = blocks(&events);
    assert!(device.blocks_corrupted > 20, "{device:?}");
    assert_eq!(
        got.len() as u64 + device.blocks_corrupted,
        BLOCKS,
        "{device:?} {stats:?}"
    );
    assert!(stats.rejected >= device.blocks_corrupted);
    let expected = expected_blocks(BLOCKS);
    for b in got {
        assert_eq!(
            b.samples_uv, expected[b.sequence as usize],
            "no corrupted data delivered"
        );
    }
    let missing: u64 = events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Gap(g) => Some(g.missing),
            _ => None,
        })
        .sum();
    assert!(missing <= device.blocks_corrupted && missing + 3 >= device.blocks_corrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reconnects_when_the_device_is_unplugged_and_comes_back() {
    let faults = Faults {
        disconnect: Some(Recurring {
            every: Duration::from_millis(1500),
            lasting: Duration::from_millis(400),
        }),
        ..Faults::default()
    };
    let mut sim = Simulator::start(faults, None);
    let (src, mut rx) = source(&sim.link);
    let events = collect(&mut rx, Duration::from_secs(15), |e| {
        e.iter()
            .filter(|e| matches!(e, SourceEvent::Connected(_)))
            .count()
            >= 3
    })
    .await;
    let stats = src.stop();
    let mut returns = Vec::new();
    while let Ok(t) = sim.came_back.try_recv() {
        returns.push(t);
    }
    sim.finish();
    let connects = events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Connected(_)))
        .count();
    let disconnects = events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Disconnected { .. }))
        .count();
    assert_eq!(connects, 3, "{stats:?}");
    assert!(disconnects >= 2);
    assert!(returns.len() >= 3, "the simulator came back twice");
    // Blocks flow in every session, between one connect and the next.
    let connect_at: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, SourceEvent::Connected(_)))
        .map(|(i, _)| i)
        .collect();
    for pair in connect_at.windows(2) {
        assert!(blocks(&events[pair[0]..pair[1]]).len() > 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_talking_is_dropped_and_picked_up_again() {
    let faults = Faults {
        stall: Some(Recurring {
            every: Duration::from_millis(1200),
            lasting: Duration::from_millis(900),
        }),
        ..Faults::default()
    };
    let sim = Simulator::start(faults, None);
    let (src, mut rx) = source_with(&sim.link, |s| s.stall_timeout = Duration::from_millis(400));
    let events = collect(&mut rx, Duration::from_secs(10), |e| {
        e.iter()
            .filter(|e| matches!(e, SourceEvent::Connected(_)))
            .count()
            >= 2
    })
    .await;
    src.stop();
    sim.finish();
    let stalled = events.iter().any(
        |e| matches!(e, SourceEvent::Disconnected { reason } if reason.contains("stopped talking")),
    );
    assert!(stalled, "{events:?}");
    let connects = events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Connected(_)))
        .count();
    assert_eq!(connects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_is_not_a_device_is_counted_and_never_reported_connected() {
    use serialport::SerialPort;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("not-a-device");
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    // A "device" that babbles: text lines and random bytes, never a valid frame.
    let babbler = std::thread::spawn(move || {
        let mut x = 0x2545_F491_u32;
        while !s.load(Ordering::Relaxed) {
            let mut chunk = b"AT+OK\r\n".to_vec();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                chunk.push(x as u8);
            }
            let _ = master.write_all(&chunk);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let (src, mut rx) = source_with(&link, |s| s.handshake_timeout = Duration::from_millis(300));
    let events = collect(&mut rx, Duration::from_millis(1500), |_| false).await;
    let stats = src.stop();
    stop.store(true, Ordering::Relaxed);
    babbler.join().unwrap();
    drop(slave);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SourceEvent::Connected(_) | SourceEvent::Block(_))),
        "{events:?}"
    );
    assert_eq!((stats.connects, stats.blocks), (0, 0));
    assert!(stats.rejected > 0 && stats.bytes > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_speaking_another_protocol_version_is_reported_by_name() {
    use firmware_bridge::{cobs::CobsWriter, crc::Crc32};
    use serialport::SerialPort;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("v2-device");
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    // A well-framed, CRC-valid frame whose version byte says 2.
    let mut raw = vec![2u8, 0x03, 0, 0, 100, 0, 0];
    raw.extend(Crc32::checksum(&raw).to_le_bytes());
    let mut wire = [0u8; 64];
    wire[0] = 0;
    let mut w = CobsWriter::new(&mut wire[1..]).unwrap();
    w.extend(&raw).unwrap();
    let n = w.finish().unwrap() + 1;
    let frame = wire[..n].to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let device = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let _ = master.write_all(&frame);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (src, mut rx) = source_with(&link, |s| s.handshake_timeout = Duration::from_millis(300));
    let events = collect(&mut rx, Duration::from_secs(5), |e| {
        e.iter().any(|e| matches!(e, SourceEvent::Waiting { .. }))
    })
    .await;
    let stats = src.stop();
    stop.store(true, Ordering::Relaxed);
    device.join().unwrap();
    drop(slave);
    let reason = events
        .iter()
        .find_map(|e| match e {
            SourceEvent::Waiting { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("a waiting status");
    assert!(
        reason.contains("protocol version 2 is not supported"),
        "{reason}"
    );
    assert!(stats.rejected > 0 && stats.connects == 0, "{stats:?}");
}

/// Streams `packet(n)` on a fresh pty every 4 ms with a garbage byte run every tenth packet;
/// returns the source's events once `want` blocks arrived.
async fn third_party_stream(
    protocol: SerialProtocol,
    packet: impl Fn(u8) -> Vec<u8> + Send + 'static,
    want: usize,
) -> (Vec<SourceEvent>, LinkStats) {
    use serialport::SerialPort;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("third-party");
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let device = std::thread::spawn(move || {
        let mut n = 0u8;
        while !s.load(Ordering::Relaxed) {
            let mut bytes = packet(n);
            if n % 10 == 9 {
                bytes.splice(0..0, [0xA0, 0x0A, 0xFA, 0x13]);
            }
            let _ = master.write_all(&bytes);
            n = n.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(4));
        }
    });
    let (src, mut rx) = source_with(&link, |s| s.protocol = protocol);
    let events = collect(&mut rx, Duration::from_secs(10), |e| {
        blocks(e).len() >= want
    })
    .await;
    let stats = src.stop();
    stop.store(true, Ordering::Relaxed);
    device.join().unwrap();
    drop(slave);
    (events, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyton_and_openview_devices_stream_scaled_blocks_over_a_pty_despite_garbage() {
    use meit::acquire::{cyton, openview};
    let (events, stats) = third_party_stream(
        SerialProtocol::OpenbciCyton,
        |n| cyton::encode_packet(n, &[1000; 8], 0).to_vec(),
        60,
    )
    .await;
    let got = blocks(&events);
    assert!(got.len() >= 60, "{stats:?}");
    let uv = (1000.0 * cyton::uv_per_count(cyton::DEFAULT_GAIN)) as f32;
    assert!(
        got.iter()
            .all(|b| b.leads.len() == 8 && b.samples_uv == vec![uv; 8])
    );
    assert!(
        stats.rejected > 0,
        "the garbage runs were counted: {stats:?}"
    );

    let payload: Vec<u8> = [250i32, -250, 500]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (events, stats) = third_party_stream(
        SerialProtocol::ProtocentralOpenview,
        move |_| openview::encode_packet(&payload),
        60,
    )
    .await;
    let got = blocks(&events);
    assert!(got.len() >= 60, "{stats:?}");
    assert!(
        got.iter()
            .all(|b| b.samples_uv == vec![250.0, -250.0, 500.0])
    );
    assert!(stats.rejected > 0, "{stats:?}");
}
