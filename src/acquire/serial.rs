//! The serial source: opens a port by path or by USB VID/PID/serial number, performs the
//! protocol's handshake, streams decoded [`SourceEvent`]s, reports sequence gaps, counts
//! rejected frames and reconnects with backoff when the device disappears or stops talking.
//!
//! Port I/O is blocking, so it runs on its own thread and hands events to the async side
//! through a bounded tokio channel: the async runtime is never blocked.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firmware_bridge::{Command, CommandKind, Frame, MAX_WIRE_FRAME_LEN, encode};
use serialport::{SerialPort, SerialPortType};
use tokio::sync::mpsc;

use super::bridge::BridgeDecoder;
use super::cyton::{self, CytonDecoder};
use super::openview::{OpenViewDecoder, OpenViewLayout};
use super::{Decoded, LinkStats, SourceEvent, WireDecoder};
use crate::acquire::config::{SerialProtocol, SourceConfig, UsbId};
use crate::ecg::LeadSet;

/// Which port to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelector {
    /// A device path such as `/dev/ttyACM0` (or a symlink to one).
    Path(PathBuf),
    /// The first USB serial port with this vendor and product id (and serial number, if given).
    Usb {
        /// USB vendor id.
        vid: u16,
        /// USB product id.
        pid: u16,
        /// USB serial number string.
        serial_number: Option<String>,
    },
}

/// How the serial source behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    /// The port.
    pub port: PortSelector,
    /// Wire protocol.
    pub protocol: SerialProtocol,
    /// Cyton channel leads (at most 8) and programmable gain.
    pub cyton: (LeadSet, f64),
    /// OpenView payload layout.
    pub openview: OpenViewLayout,
    /// Baud rate (ignored by USB CDC and ptys).
    pub baud: u32,
    /// How long a freshly opened port may take to identify itself before it is declared
    /// "not a device" and closed.
    pub handshake_timeout: Duration,
    /// Silence after which a streaming device counts as gone and the port is reopened.
    pub stall_timeout: Duration,
    /// First wait before reopening; doubles per failed attempt.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl SerialSettings {
    /// Defaults for `port` speaking `protocol`: 2 s handshake, 2 s stall, 50-500 ms backoff.
    pub fn new(port: PortSelector, protocol: SerialProtocol) -> Self {
        SerialSettings {
            port,
            protocol,
            cyton: (cyton::default_leads(), cyton::DEFAULT_GAIN),
            openview: OpenViewLayout::default(),
            baud: 921_600,
            handshake_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        }
    }

    /// Settings for a `kind = "serial"` source table (`None` for other kinds; a table that
    /// passed [`Config`](crate::config::Config) validation always yields settings).
    pub fn from_config(source: &SourceConfig) -> Option<Self> {
        let SourceConfig::Serial {
            path,
            usb,
            protocol,
            baud,
            leads,
            gain,
            sample_bytes,
            uv_per_count,
            sample_rate_hz,
            ..
        } = source
        else {
            return None;
        };
        let port = match (path, usb) {
            (Some(p), _) => PortSelector::Path(p.clone()),
            (None, Some(id)) => {
                let id = UsbId::parse(id).ok()?;
                PortSelector::Usb {
                    vid: id.vid,
                    pid: id.pid,
                    serial_number: id.serial_number,
                }
            }
            (None, None) => return None,
        };
        let mut settings = SerialSettings {
            baud: *baud,
            ..SerialSettings::new(port, *protocol)
        };
        if let Some(leads) = leads {
            settings.cyton.0 = LeadSet(leads.clone());
            settings.openview.leads = LeadSet(leads.clone());
        }
        settings.cyton.1 = gain.unwrap_or(settings.cyton.1);
        let o = &mut settings.openview;
        o.sample_bytes = sample_bytes.unwrap_or(o.sample_bytes);
        o.uv_per_count = uv_per_count.unwrap_or(o.uv_per_count);
        o.sample_rate_hz = sample_rate_hz.unwrap_or(o.sample_rate_hz);
        Some(settings)
    }
}

/// Why a port could not be found or opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// Port enumeration failed.
    #[error("cannot list serial ports: {0}")]
    Enumerate(#[source] serialport::Error),
    /// No USB serial port matches.
    #[error("no USB serial port with VID:PID {vid:04x}:{pid:04x}{}", serial_suffix(.serial_number))]
    NoUsbMatch {
        /// Vendor id.
        vid: u16,
        /// Product id.
        pid: u16,
        /// Serial number asked for.
        serial_number: Option<String>,
    },
    /// The port exists but could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The port path.
        path: PathBuf,
        /// Why.
        #[source]
        source: serialport::Error,
    },
    /// The port opened but nothing on it identified itself in time.
    #[error(
        "{path}: no device answered within {timeout:?} (is this the right port and protocol?){}",
        last_rejected.as_ref().map(|r| format!("; last rejected: {r}")).unwrap_or_default()
    )]
    NotADevice {
        /// The port path.
        path: PathBuf,
        /// The handshake timeout.
        timeout: Duration,
        /// Why the last bytes received were rejected (e.g. a protocol version this host does
        /// not speak), if anything arrived.
        last_rejected: Option<String>,
    },
    /// The I/O thread could not be started.
    #[error("cannot start the serial thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn serial_suffix(serial: &Option<String>) -> String {
    serial
        .as_ref()
        .map(|s| format!(" and serial number {s}"))
        .unwrap_or_default()
}

/// Finds the path of the USB serial port with `vid`/`pid` (and `serial_number`), reading sysfs
/// (no libudev needed).
pub fn find_usb_port(
    vid: u16,
    pid: u16,
    serial_number: Option<&str>,
) -> Result<PathBuf, SerialError> {
    let ports = serialport::available_ports().map_err(SerialError::Enumerate)?;
    ports
        .into_iter()
        .find(|p| match &p.port_type {
            SerialPortType::UsbPort(usb) => {
                usb.vid == vid
                    && usb.pid == pid
                    && serial_number.is_none_or(|want| usb.serial_number.as_deref() == Some(want))
            }
            _ => false,
        })
        .map(|p| PathBuf::from(p.port_name))
        .ok_or_else(|| SerialError::NoUsbMatch {
            vid,
            pid,
            serial_number: serial_number.map(str::to_string),
        })
}

/// The decoder for the settings' protocol and channel layout.
pub fn decoder_for(settings: &SerialSettings) -> Box<dyn WireDecoder> {
    match settings.protocol {
        SerialProtocol::FirmwareBridge => Box::new(BridgeDecoder::new()),
        SerialProtocol::OpenbciCyton => {
            let (leads, gain) = settings.cyton.clone();
            Box::new(CytonDecoder::new(leads, gain))
        }
        SerialProtocol::ProtocentralOpenview => {
            Box::new(OpenViewDecoder::new(settings.openview.clone()))
        }
    }
}

/// A running serial source. Dropping it stops the I/O thread.
pub struct SerialSource {
    stats: Arc<Mutex<LinkStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SerialSource {
    /// Starts the I/O thread; events arrive on `events` until the source is stopped or the
    /// receiver is dropped.
    pub fn spawn(
        settings: SerialSettings,
        events: mpsc::Sender<SourceEvent>,
    ) -> Result<Self, SerialError> {
        let stats = Arc::new(Mutex::new(LinkStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let link = Link {
            decoder: decoder_for(&settings),
            settings,
            events,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            log: LogLimiter::default(),
        };
        let thread = std::thread::Builder::new()
            .name("meit-serial".into())
            .spawn(move || link.run())
            .map_err(SerialError::Thread)?;
        Ok(SerialSource {
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// The link counters so far.
    pub fn stats(&self) -> LinkStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the I/O thread and waits for it (at most one read timeout).
    pub fn stop(mut self) -> LinkStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SerialSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Allows one log line per second for a recurring problem and counts the lines it held back.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(number suppressed since the last line)` when a line may be written now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How a session on an open port ended.
enum SessionEnd {
    /// The source was stopped or the event receiver went away.
    Shutdown,
    /// The link failed; reconnect.
    Lost {
        reason: String,
        /// True when the device had identified itself (a real session, not a failed attempt).
        was_connected: bool,
    },
}

/// The I/O thread's state.
struct Link {
    settings: SerialSettings,
    decoder: Box<dyn WireDecoder>,
    events: mpsc::Sender<SourceEvent>,
    stats: Arc<Mutex<LinkStats>>,
    stop: Arc<AtomicBool>,
    log: LogLimiter,
}

impl Link {
    fn run(mut self) {
        let mut backoff = self.settings.backoff_min;
        let mut last_waiting: Option<String> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let ended = match self.open() {
                Ok((path, port)) => self.session(&path, port),
                Err(e) => SessionEnd::Lost {
                    reason: e.to_string(),
                    was_connected: false,
                },
            };
            match ended {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost {
                    reason,
                    was_connected,
                } => {
                    if was_connected {
                        backoff = self.settings.backoff_min;
                        last_waiting = None;
                        tracing::warn!(%reason, "serial device lost; reconnecting");
                        if self.send(SourceEvent::Disconnected { reason }).is_err() {
                            return;
                        }
                    } else {
                        if let Some(held) = self.log.allow(Instant::now()) {
                            tracing::warn!(%reason, suppressed = held, "serial device not available; retrying");
                        }
                        if last_waiting.as_deref() != Some(reason.as_str()) {
                            last_waiting = Some(reason.clone());
                            if self.send(SourceEvent::Waiting { reason }).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    fn sleep(&self, total: Duration) {
        let end = Instant::now() + total;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10).min(total));
        }
    }

    fn open(&self) -> Result<(PathBuf, Box<dyn SerialPort>), SerialError> {
        let path = match &self.settings.port {
            PortSelector::Path(p) => p.clone(),
            PortSelector::Usb {
                vid,
                pid,
                serial_number,
            } => find_usb_port(*vid, *pid, serial_number.as_deref())?,
        };
        let port = serialport::new(path.to_string_lossy(), self.settings.baud)
            .timeout(Duration::from_millis(20))
            .open()
            .map_err(|source| SerialError::Open {
                path: path.clone(),
                source,
            })?;
        Ok((path, port))
    }

    /// Hands `event` to the async side, waiting while the channel is full (backpressure) but
    /// never past a stop request, so stopping cannot deadlock on a full channel.
    fn send(&self, mut event: SourceEvent) -> Result<(), ()> {
        loop {
            match self.events.try_send(event) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                Err(mpsc::error::TrySendError::Full(e)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(());
                    }
                    event = e;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Asks the device to start streaming (protocols with a start command).
    fn start_command(&self, port: &mut dyn SerialPort, token: u8) {
        let bytes: Vec<u8> = match self.settings.protocol {
            SerialProtocol::FirmwareBridge => {
                let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
                let start = Frame::Command(Command {
                    token,
                    kind: CommandKind::Start,
                });
                match encode(&start, &mut wire) {
                    Ok(n) => wire[..n].to_vec(),
                    Err(_) => return,
                }
            }
            // The Cyton starts streaming on the ASCII command `b`.
            SerialProtocol::OpenbciCyton => b"b".to_vec(),
            SerialProtocol::ProtocentralOpenview => return,
        };
        // A failed write shows up as a read error or a handshake timeout.
        let _ = port.write_all(&bytes);
    }

    fn session(&mut self, path: &std::path::Path, mut port: Box<dyn SerialPort>) -> SessionEnd {
        self.decoder.reset();
        let opened = Instant::now();
        let mut connected = false;
        let mut last_rx = Instant::now();
        let mut last_start = Instant::now();
        let mut token = 0u8;
        let mut last_rejected = None;
        self.start_command(port.as_mut(), token);
        let mut buf = [0u8; 4096];
        let mut decoded = Vec::new();
        let lost = |reason: String, connected: bool| SessionEnd::Lost {
            reason,
            was_connected: connected,
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return SessionEnd::Shutdown;
            }
            let now = Instant::now();
            if !connected {
                if now.duration_since(opened) > self.settings.handshake_timeout {
                    let e = SerialError::NotADevice {
                        path: path.to_path_buf(),
                        timeout: self.settings.handshake_timeout,
                        last_rejected,
                    };
                    return lost(e.to_string(), false);
                }
                if now.duration_since(last_start) > Duration::from_millis(500) {
                    token = token.wrapping_add(1);
                    self.start_command(port.as_mut(), token);
                    last_start = now;
                }
            } else if now.duration_since(last_rx) > self.settings.stall_timeout {
                return lost(format!("{}: device stopped talking", path.display()), true);
            }
            let n = match port.read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::TimedOut => continue,
                Err(e) => return lost(format!("{}: {e}", path.display()), connected),
            };
            last_rx = Instant::now();
            decoded.clear();
            self.decoder.feed(&buf[..n], &mut decoded);
            {
                let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                stats.bytes += n as u64;
                decoded.iter().for_each(|d| stats.count(d));
                if !connected && decoded.iter().any(|d| matches!(d, Decoded::Device(_))) {
                    stats.connects += 1;
                }
            }
            for item in decoded.drain(..) {
                let event = match item {
                    Decoded::Block(b) => SourceEvent::Block(b),
                    Decoded::Device(info) => {
                        connected = true;
                        tracing::info!(port = %path.display(), protocol = %info.protocol,
                            serial = %info.serial, rate = info.sample_rate_hz,
                            leads = info.leads.len(), "serial device connected");
                        SourceEvent::Connected(info)
                    }
                    Decoded::Status(s) => SourceEvent::Status(s),
                    Decoded::Gap(g) => {
                        tracing::debug!(after = g.after, missing = g.missing, "sequence gap");
                        SourceEvent::Gap(g)
                    }
                    Decoded::Ack(_) => continue,
                    Decoded::Rejected(reason) => {
                        if !connected {
                            last_rejected = Some(reason.to_string());
                        }
                        if let Some(held) = self.log.allow(last_rx) {
                            tracing::warn!(%reason, suppressed = held, "rejected bytes from serial device");
                        }
                        continue;
                    }
                };
                if self.send(event).is_err() {
                    return SessionEnd::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_allows_one_line_per_second_and_counts_the_rest() {
        let mut l = LogLimiter::default();
        let t = Instant::now();
        assert_eq!(l.allow(t), Some(0));
        assert_eq!(l.allow(t + Duration::from_millis(10)), None);
        assert_eq!(l.allow(t + Duration::from_millis(20)), None);
        assert_eq!(l.allow(t + Duration::from_millis(1100)), Some(2));
    }

    #[test]
    fn config_tables_become_settings_with_a_usb_selector() {
        let text = "[[source]]\nkind = \"serial\"\nbed = \"b\"\nusb = \"0483:5740\"\nbaud = 115200\nprotocol = \"openbci-cyton\"\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let s = SerialSettings::from_config(&config.sources[0]).unwrap();
        assert_eq!(
            s.port,
            PortSelector::Usb {
                vid: 0x0483,
                pid: 0x5740,
                serial_number: None
            }
        );
        assert_eq!(
            (s.baud, s.protocol),
            (115_200, SerialProtocol::OpenbciCyton)
        );
        let text = "[[source]]\nkind = \"serial\"\nbed = \"b\"\npath = \"/dev/x\"\nprotocol = \"protocentral-openview\"\nleads = [\"II\"]\nsample_bytes = 3\nuv_per_count = 0.5\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let s = SerialSettings::from_config(&config.sources[0]).unwrap();
        assert_eq!(s.openview.leads, LeadSet(vec![crate::ecg::Lead::II]));
        assert_eq!((s.openview.sample_bytes, s.openview.uv_per_count), (3, 0.5));
    }

    #[test]
    fn a_missing_usb_device_is_a_named_error() {
        match find_usb_port(0xFFFE, 0xFFFD, Some("X")) {
            Err(SerialError::NoUsbMatch { vid, pid, .. }) => {
                assert_eq!((vid, pid), (0xFFFE, 0xFFFD))
            }
            other => panic!("{other:?}"),
        }
    }
}
