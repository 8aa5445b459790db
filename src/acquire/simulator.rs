//! The device simulator behind `meit simulate`: a [`Device`] that speaks the firmware-bridge
//! protocol like acquisition firmware would (answers commands, sends a hello, streams sample
//! blocks in real time from a [`SignalGenerator`]) with optional fault injection, and runners
//! that put it on a serial port or on a pty pair it creates itself.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use firmware_bridge::{
    Ack, AckResult, BATTERY_UNKNOWN, CommandKind, Frame, FrameDecoder, Hello, MAX_LEADS,
    MAX_WIRE_FRAME_LEN, SERIAL_LEN, Samples, Status, encode, pack_i24,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serialport::SerialPort;

use super::signal::SignalGenerator;

/// Something that happens for a while, again and again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recurring {
    /// Time between starts.
    pub every: Duration,
    /// How long it lasts.
    pub lasting: Duration,
}

/// Faults the simulator injects into its output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Probability per transmitted byte of flipping one random bit.
    pub bit_flip_per_byte: f64,
    /// Probability per transmitted byte of dropping it.
    pub drop_per_byte: f64,
    /// Periods during which the device sends nothing (blocks due meanwhile are lost).
    pub stall: Option<Recurring>,
    /// Periods during which the device is unplugged (pty closed, then a new one).
    pub disconnect: Option<Recurring>,
}

/// Device identity and stream format of the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSettings {
    /// Serial number announced in the hello (at most 16 ASCII bytes are sent).
    pub serial: String,
    /// Time points per sample block (1..=32).
    pub frames_per_block: usize,
    /// Microvolts per ADC count.
    pub uv_per_count: f32,
    /// Faults to inject.
    pub faults: Faults,
    /// Seed for fault injection.
    pub seed: u64,
    /// Zero of the device clock: `device_time_ns` counts from here.
    pub epoch: Instant,
    /// Stop streaming after this many blocks per start (a finite recording); `None` streams on.
    pub stream_blocks: Option<u64>,
    /// Record when each block was handed to the port (for latency measurements).
    pub log_send_times: bool,
    /// Electrodes the device reports off (firmware-bridge lead-off bits, see
    /// [`electrode_bit`]), announced in every status frame.
    pub electrodes_off: u16,
}

/// Electrode names accepted by [`electrode_bit`].
pub const ELECTRODE_NAMES: [&str; 10] =
    ["RA", "LA", "LL", "RL", "V1", "V2", "V3", "V4", "V5", "V6"];

/// The firmware-bridge lead-off bit of an electrode named as in [`ELECTRODE_NAMES`]
/// (case-insensitive).
pub fn electrode_bit(name: &str) -> Option<u16> {
    ELECTRODE_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name.trim()))
        .map(|i| 1u16 << i)
}

/// What the device has sent, for checking a receiver's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Sample blocks generated while streaming (including lost ones).
    pub blocks: u64,
    /// Sample blocks transmitted with at least one flipped or dropped byte.
    pub blocks_corrupted: u64,
    /// Sample blocks not transmitted at all (stalls).
    pub blocks_stalled: u64,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            serial: "MEIT-SIM-0001".into(),
            frames_per_block: 5,
            uv_per_count: 0.5,
            faults: Faults::default(),
            seed: 0,
            epoch: Instant::now(),
            stream_blocks: None,
            log_send_times: false,
            electrodes_off: 0,
        }
    }
}

/// A simulated acquisition device: commands in, frames out.
pub struct Device {
    generator: Box<dyn SignalGenerator>,
    settings: DeviceSettings,
    commands: FrameDecoder,
    rng: StdRng,
    stream: Option<StreamState>,
    frame: Vec<f32>,
    stats: DeviceStats,
    /// Sequence numbers produced but not yet handed to the port.
    unsent: Vec<u64>,
    /// (sequence, time handed to the port), when `log_send_times` is on.
    send_log: Vec<(u64, Instant)>,
}

/// Where a running stream stands.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    started: Instant,
    blocks: u64,
    next_status: Instant,
    /// The lead-off bits of the last status frame sent in this stream.
    announced_off: Option<u16>,
}

impl Device {
    /// A stopped device streaming `generator` when started.
    pub fn new(generator: Box<dyn SignalGenerator>, mut settings: DeviceSettings) -> Self {
        settings.frames_per_block = settings
            .frames_per_block
            .clamp(1, firmware_bridge::MAX_FRAMES_PER_BLOCK);
        let leads = generator.leads().len();
        Device {
            rng: StdRng::seed_from_u64(settings.seed),
            generator,
            settings,
            commands: FrameDecoder::new(),
            stream: None,
            frame: vec![0.0; leads],
            stats: DeviceStats::default(),
            unsent: Vec::new(),
            send_log: Vec::new(),
        }
    }

    /// Notes that everything produced so far was handed to the port at `at`.
    pub fn mark_sent(&mut self, at: Instant) {
        if self.settings.log_send_times {
            self.send_log
                .extend(self.unsent.drain(..).map(|seq| (seq, at)));
        }
        self.unsent.clear();
    }

    /// (sequence, time handed to the port) of every block sent, when `log_send_times` is on.
    pub fn send_log(&self) -> &[(u64, Instant)] {
        &self.send_log
    }

    /// What the device has sent so far.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// True while streaming.
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Stops streaming and forgets partial commands (the host went away).
    pub fn stop(&mut self) {
        self.stream = None;
        self.commands.reset();
    }

    /// Handles bytes from the host; appends the device's answers (wire bytes) to `out`.
    pub fn receive(&mut self, bytes: &[u8], now: Instant, out: &mut Vec<u8>) {
        for &b in bytes {
            let Some(Ok(Frame::Command(c))) = self.commands.push(b) else {
                continue;
            };
            let (result, value) = match c.kind {
                CommandKind::Start => (AckResult::Ok, 0),
                CommandKind::Stop => (AckResult::Ok, 0),
                CommandKind::Ping(nonce) => (AckResult::Ok, nonce),
                CommandKind::SetRate(hz) if f64::from(hz) == self.generator.sample_rate_hz() => {
                    (AckResult::Ok, hz)
                }
                CommandKind::SetRate(_) => (
                    AckResult::InvalidArgument,
                    self.generator.sample_rate_hz() as u32,
                ),
            };
            let ack = Ack {
                token: c.token,
                command: c.kind.code(),
                result,
                value,
            };
            push_frame(&Frame::Ack(ack), out);
            match c.kind {
                CommandKind::Start => {
                    push_frame(&Frame::Hello(self.hello()), out);
                    self.stream = Some(StreamState {
                        started: now,
                        blocks: 0,
                        next_status: now,
                        announced_off: None,
                    });
                }
                CommandKind::Stop => self.stream = None,
                CommandKind::SetRate(_) | CommandKind::Ping(_) => {}
            }
        }
    }

    fn hello(&self) -> Hello {
        let mut serial = [0u8; SERIAL_LEN];
        let id = self.settings.serial.as_bytes();
        let n = id.len().min(SERIAL_LEN);
        serial[..n].copy_from_slice(&id[..n]);
        let mut leads = [0xFFu8; MAX_LEADS];
        for (slot, lead) in leads.iter_mut().zip(&self.generator.leads().0) {
            *slot = lead.index() as u8;
        }
        Hello {
            serial,
            sample_rate_hz: self.generator.sample_rate_hz() as u32,
            lead_count: self.generator.leads().len().min(MAX_LEADS) as u8,
            leads,
            uv_per_count: self.settings.uv_per_count,
            firmware_version: [0, 1, 0],
        }
    }

    /// How long one block lasts; `None` when the generator's rate makes that no `Duration`.
    fn block_duration(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(
            self.settings.frames_per_block as f64 / self.generator.sample_rate_hz(),
        )
        .ok()
    }

    /// When the next block is complete (its last sample taken), if streaming (and if that
    /// time can be counted: a generator rate that overflows a `Duration` streams nothing).
    pub fn next_block_due(&self) -> Option<Instant> {
        let s = self.stream?;
        let period = 1.0 / self.generator.sample_rate_hz();
        let last_frame = (s.blocks + 1) * self.settings.frames_per_block as u64 - 1;
        let since_start = Duration::try_from_secs_f64(last_frame as f64 * period).ok()?;
        s.started.checked_add(since_start)
    }

    /// Produces every block due by `now` (and a status frame once a second); appends wire
    /// bytes to `out`. With `transmit` false the blocks are generated but lost (a stall).
    pub fn produce(&mut self, now: Instant, transmit: bool, out: &mut Vec<u8>) {
        while self.next_block_due().is_some_and(|due| due <= now) {
            let Some(mut s) = self.stream else { return };
            // `Duration::mul_f64`, checked: the same arithmetic without its panic.
            let Some(start) = self
                .block_duration()
                .and_then(|d| Duration::try_from_secs_f64(s.blocks as f64 * d.as_secs_f64()).ok())
                .and_then(|d| s.started.checked_add(d))
            else {
                return;
            };
            let device_time_ns = start
                .saturating_duration_since(self.settings.epoch)
                .as_nanos() as u64;
            // Electrodes coming off or back on (a scenario step) are announced at once, before
            // the first block they concern, not at the next once-a-second status.
            let lead_off = self.lead_off();
            if transmit && s.announced_off.is_some_and(|sent| sent != lead_off) {
                self.push_status(lead_off, out);
                s.announced_off = Some(lead_off);
            }
            let counts = self.next_counts();
            let mut packed = [0u8; 3 * MAX_LEADS * firmware_bridge::MAX_FRAMES_PER_BLOCK];
            if let Ok(n) = pack_i24(&counts, &mut packed) {
                let lead_count = self.frame.len() as u8;
                if let Ok(samples) =
                    Samples::new(s.blocks as u32, device_time_ns, lead_count, &packed[..n])
                {
                    self.stats.blocks += 1;
                    if !transmit {
                        self.stats.blocks_stalled += 1;
                    } else {
                        if self.push_with_faults(&Frame::Samples(samples), out) {
                            self.stats.blocks_corrupted += 1;
                        }
                        self.unsent.push(s.blocks);
                    }
                }
            }
            s.blocks += 1;
            if transmit && now >= s.next_status {
                s.next_status = now + Duration::from_secs(1);
                let lead_off = self.lead_off();
                self.push_status(lead_off, out);
                s.announced_off = Some(lead_off);
            }
            let finished = self.settings.stream_blocks.is_some_and(|n| s.blocks >= n);
            self.stream = (!finished).then_some(s);
        }
    }

    /// The electrodes off now: the configured ones and the signal's (a scenario step's).
    fn lead_off(&self) -> u16 {
        self.settings.electrodes_off | self.generator.electrodes_off()
    }

    fn push_status(&mut self, lead_off: u16, out: &mut Vec<u8>) {
        let status = Status {
            lead_off,
            battery_percent: BATTERY_UNKNOWN,
            errors: 0,
        };
        self.push_with_faults(&Frame::Status(status), out);
    }

    fn next_counts(&mut self) -> Vec<i32> {
        let scale = f64::from(self.settings.uv_per_count);
        let (lo, hi) = firmware_bridge::I24_RANGE;
        let mut counts = Vec::with_capacity(self.frame.len() * self.settings.frames_per_block);
        for _ in 0..self.settings.frames_per_block {
            self.generator.next_frame(&mut self.frame);
            counts.extend(
                self.frame
                    .iter()
                    .map(|&uv| (f64::from(uv) / scale).round().clamp(lo.into(), hi.into()) as i32),
            );
        }
        counts
    }

    /// Appends `frame` with injected faults; true when a fault hit it.
    fn push_with_faults(&mut self, frame: &Frame<'_>, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        push_frame(frame, out);
        let f = &self.settings.faults;
        if f.bit_flip_per_byte <= 0.0 && f.drop_per_byte <= 0.0 {
            return false;
        }
        let (flip, drop) = (f.bit_flip_per_byte.min(1.0), f.drop_per_byte.min(1.0));
        let encoded = out.split_off(start);
        let mut hit = false;
        for mut b in encoded {
            if drop > 0.0 && self.rng.random_bool(drop) {
                hit = true;
                continue;
            }
            if flip > 0.0 && self.rng.random_bool(flip) {
                b ^= 1 << self.rng.random_range(0..8);
                hit = true;
            }
            out.push(b);
        }
        hit
    }
}

fn push_frame(frame: &Frame<'_>, out: &mut Vec<u8>) {
    let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
    // Frames the simulator builds always fit the largest wire frame.
    if let Ok(n) = encode(frame, &mut wire) {
        out.extend_from_slice(&wire[..n]);
    }
}

/// Why [`run_on_port`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `stop` was set.
    Stopped,
    /// The scheduled disconnect fault arrived.
    Unplugged,
}

/// True while `now` falls inside one of the periods of `r`, which start at `origin + k * every`
/// for k = 1, 2, ... and last `lasting` each.
fn within(r: Option<Recurring>, origin: Instant, now: Instant) -> bool {
    r.is_some_and(|r| {
        let elapsed = now.saturating_duration_since(origin).as_secs_f64();
        let every = r.every.as_secs_f64().max(1e-3);
        elapsed >= every && elapsed % every < r.lasting.as_secs_f64()
    })
}

/// Runs `device` on an open port until `stop` is set or a scheduled unplug (measured from
/// `origin`) arrives. A host that goes away (hang-up, write error) stops the stream; the
/// device waits for the next start command.
pub fn run_on_port(
    device: &mut Device,
    port: &mut dyn SerialPort,
    stop: &AtomicBool,
    origin: Instant,
) -> io::Result<SessionEnd> {
    let mut rx = [0u8; 256];
    let mut tx = Vec::with_capacity(4 * MAX_WIRE_FRAME_LEN);
    let faults = device.settings.faults.clone();
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            return Ok(SessionEnd::Stopped);
        }
        if within(faults.disconnect, origin, now) {
            return Ok(SessionEnd::Unplugged);
        }
        let wait = device
            .next_block_due()
            .map_or(Duration::from_millis(20), |due| {
                due.saturating_duration_since(now)
            })
            .clamp(Duration::from_micros(200), Duration::from_millis(20));
        port.set_timeout(wait)?;
        match port.read(&mut rx) {
            Ok(n) => device.receive(&rx[..n], Instant::now(), &mut tx),
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            // No host has the other end open: nothing to stream to.
            Err(_) => {
                device.stop();
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        let now = Instant::now();
        device.produce(now, !within(faults.stall, origin, now), &mut tx);
        if !tx.is_empty() {
            port.set_timeout(Duration::from_millis(100))?;
            let handed_over = Instant::now();
            let sent = port.write_all(&tx);
            device.mark_sent(handed_over);
            tx.clear();
            match sent {
                Ok(()) => {}
                // The host is not reading fast enough: like a device whose transmit buffer
                // overflowed, the rest of this batch is lost (the host sees a gap).
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                Err(_) => device.stop(),
            }
        }
    }
}

/// Runs `device` on a pty pair it creates, publishing the slave's path as the symlink `link`
/// (re-pointed after every simulated unplug); `on_ready` is told each new slave path.
pub fn run_on_pty(
    device: &mut Device,
    link: &Path,
    stop: &AtomicBool,
    mut on_ready: impl FnMut(&Path),
) -> io::Result<()> {
    let origin = Instant::now();
    loop {
        let (mut master, slave) = serialport::TTYPort::pair().map_err(io::Error::from)?;
        let slave_path = PathBuf::from(slave.name().unwrap_or_default());
        // The host opens the slave by path; holding it here would hide the host's hang-ups.
        drop(slave);
        point_link(link, &slave_path)?;
        on_ready(&slave_path);
        device.stop();
        let end = run_on_port(device, &mut master, stop, origin)?;
        drop(master);
        if end == SessionEnd::Stopped {
            let _ = std::fs::remove_file(link);
            return Ok(());
        }
        let _ = std::fs::remove_file(link);
        // Unplugged: stay away until the fault's window has passed, then come back.
        while within(device.settings.faults.disconnect, origin, Instant::now())
            && !stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Atomically points symlink `link` at `target`, through a temporary link named after the whole
/// of `link`'s name, the process and the thread (`with_extension` would give `icu.1` and `icu.2`
/// one temporary name, and two simulated beds starting together would race on it).
fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    let mut name = link.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{:?}.tmp-link",
        std::process::id(),
        std::thread::current().id()
    ));
    let tmp = link.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::bridge::BridgeDecoder;
    use crate::acquire::signal::{SynthSettings, SynthSignal};
    use crate::acquire::{Decoded, WireDecoder};
    use crate::ecg::{Lead, LeadSet};
    use firmware_bridge::Command;

    fn signal(leads: LeadSet) -> SynthSignal {
        SynthSignal::new(&SynthSettings {
            leads,
            seed: 3,
            ..SynthSettings::default()
        })
        .unwrap()
    }

    fn device(faults: Faults, blocks: u64) -> Device {
        device_with(signal(LeadSet::standard_12()), faults, blocks)
    }

    fn device_with(generator: SynthSignal, faults: Faults, blocks: u64) -> Device {
        Device::new(
            Box::new(generator),
            DeviceSettings {
                faults,
                stream_blocks: Some(blocks),
                ..DeviceSettings::default()
            },
        )
    }

    fn command(kind: CommandKind) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame(&Frame::Command(Command { token: 9, kind }), &mut out);
        out
    }

    fn run(device: &mut Device) -> Vec<Decoded> {
        let t0 = Instant::now();
        let mut wire = Vec::new();
        device.receive(&command(CommandKind::Start), t0, &mut wire);
        device.produce(t0 + Duration::from_secs(10), true, &mut wire);
        let mut out = Vec::new();
        BridgeDecoder::new().feed(&wire, &mut out);
        out
    }

    /// A generator whose rate no clock can count.
    struct Glacial(LeadSet);

    impl SignalGenerator for Glacial {
        fn sample_rate_hz(&self) -> f64 {
            1e-300
        }
        fn leads(&self) -> &LeadSet {
            &self.0
        }
        fn next_frame(&mut self, out: &mut [f32]) {
            out.fill(0.0);
        }
    }

    #[test]
    fn beds_whose_names_differ_after_a_dot_point_their_links_at_once_without_racing() {
        let dir = tempfile::tempdir().unwrap();
        let beds: Vec<_> = ["icu.1", "icu.2"]
            .iter()
            .map(|bed| {
                let link = dir.path().join(format!("meit-sim-{bed}"));
                let target = dir.path().join(format!("pty-{bed}"));
                (link, target)
            })
            .collect();
        std::thread::scope(|scope| {
            for (link, target) in &beds {
                scope.spawn(move || {
                    for _ in 0..300 {
                        point_link(link, target).unwrap();
                    }
                });
            }
        });
        for (link, target) in &beds {
            assert_eq!(&std::fs::read_link(link).unwrap(), target);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only the two links: {left:?}");
    }

    #[test]
    fn a_rate_no_clock_can_count_streams_nothing_instead_of_panicking() {
        let mut d = Device::new(
            Box::new(Glacial(LeadSet(vec![Lead::II]))),
            DeviceSettings {
                stream_blocks: Some(3),
                ..DeviceSettings::default()
            },
        );
        let t0 = Instant::now();
        let mut wire = Vec::new();
        d.receive(&command(CommandKind::Start), t0, &mut wire);
        assert!(d.is_streaming());
        assert_eq!(d.next_block_due(), None);
        d.produce(t0 + Duration::from_secs(3600), true, &mut wire);
        assert_eq!(d.stats().blocks, 0);
    }

    #[test]
    fn start_is_acked_then_hello_then_the_requested_blocks() {
        let mut d = device(Faults::default(), 20);
        let out = run(&mut d);
        assert!(matches!(&out[0], Decoded::Ack(a) if a.token == 9 && a.result == AckResult::Ok));
        assert!(
            matches!(&out[1], Decoded::Device(i) if i.leads.len() == 12 && i.sample_rate_hz == 500.0)
        );
        let seqs: Vec<u64> = out
            .iter()
            .filter_map(|d| match d {
                Decoded::Block(b) => Some(b.sequence),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        assert!(!d.is_streaming(), "stops after stream_blocks");
        assert_eq!(d.stats().blocks, 20);
    }

    #[test]
    fn a_device_with_fewer_leads_announces_and_streams_just_those_leads() {
        let leads = LeadSet(vec![Lead::II, Lead::V1, Lead::AVR]);
        let mut d = device_with(signal(leads.clone()), Faults::default(), 10);
        let out = run(&mut d);
        assert!(matches!(&out[1], Decoded::Device(i) if i.leads == leads));
        // The same signal, quantised like the device does (0.5 uV per count).
        let mut reference = signal(leads.clone());
        let mut frame = [0.0f32; 3];
        let mut blocks = 0;
        for b in out.iter().filter_map(Decoded::block) {
            assert_eq!(b.leads, leads);
            for got in b.samples_uv.chunks_exact(3) {
                reference.next_frame(&mut frame);
                for (g, want) in got.iter().zip(frame) {
                    assert!((g - want).abs() <= 0.25 + 1e-3, "{got:?} vs {frame:?}");
                }
            }
            blocks += 1;
        }
        assert_eq!(blocks, 10);
    }

    #[test]
    fn electrodes_a_scenario_takes_off_are_flagged_on_exactly_the_blocks_of_that_step() {
        use crate::acquire::signal::{ScenarioPart, ScenarioSignal};
        let part = |electrodes_off: u16| ScenarioPart {
            settings: SynthSettings {
                sample_rate_hz: 100.0,
                leads: LeadSet(vec![Lead::I, Lead::V1]),
                ..SynthSettings::default()
            },
            seconds: 1.0,
            electrodes_off,
        };
        let v1 = electrode_bit("V1").unwrap();
        let scenario = ScenarioSignal::new(&[part(0), part(v1), part(0)]).unwrap();
        let mut d = Device::new(
            Box::new(scenario),
            DeviceSettings {
                stream_blocks: Some(60),
                ..DeviceSettings::default()
            },
        );
        // 100 frames per step, 5 per block: 20 blocks per step.
        let flags: Vec<Vec<bool>> = run(&mut d)
            .iter()
            .filter_map(Decoded::block)
            .map(|b| b.lead_off.clone())
            .collect();
        assert_eq!(flags.len(), 60);
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(f, &vec![false, (20..40).contains(&i)], "block {i}");
        }
    }

    #[test]
    fn an_unsupported_rate_is_refused_with_the_rate_in_effect() {
        let mut d = device(Faults::default(), 1);
        let mut wire = Vec::new();
        d.receive(
            &command(CommandKind::SetRate(123)),
            Instant::now(),
            &mut wire,
        );
        let mut out = Vec::new();
        BridgeDecoder::new().feed(&wire, &mut out);
        assert!(matches!(&out[0], Decoded::Ack(a)
            if a.result == AckResult::InvalidArgument && a.value == 500));
    }

    #[test]
    fn injected_bit_flips_reject_exactly_the_corrupted_blocks() {
        let faults = Faults {
            bit_flip_per_byte: 1e-3,
            ..Faults::default()
        };
        let mut d = device(faults, 400);
        let out = run(&mut d);
        let delivered = out
            .iter()
            .filter(|o| matches!(o, Decoded::Block(_)))
            .count() as u64;
        let rejected = out
            .iter()
            .filter(|o| matches!(o, Decoded::Rejected(_)))
            .count() as u64;
        let stats = d.stats();
        assert!(stats.blocks_corrupted > 10, "{stats:?}");
        assert_eq!(delivered, stats.blocks - stats.blocks_corrupted);
        assert!(rejected >= stats.blocks_corrupted);
    }

    #[test]
    fn recurring_windows_start_after_the_first_period() {
        let r = Some(Recurring {
            every: Duration::from_secs(2),
            lasting: Duration::from_millis(500),
        });
        let o = Instant::now();
        let at = |ms| o + Duration::from_millis(ms);
        assert!(!within(r, o, at(100)));
        assert!(within(r, o, at(2100)));
        assert!(!within(r, o, at(2600)));
        assert!(within(r, o, at(4200)));
    }
}
