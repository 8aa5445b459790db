//! The `[[source]]` tables: one acquisition source per bed or device, and how serial devices
//! are named.

use std::path::PathBuf;

use serde::Deserialize;

use crate::dsp::config::BedWindow;
use crate::ecg::Lead;

/// Wire protocol spoken by a serial device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SerialProtocol {
    /// The project's own `firmware-bridge` framing.
    FirmwareBridge,
    /// OpenBCI Cyton 33-byte packets.
    OpenbciCyton,
    /// ProtoCentral OpenView packets.
    ProtocentralOpenview,
}

impl SerialProtocol {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SerialProtocol::FirmwareBridge => "firmware-bridge",
            SerialProtocol::OpenbciCyton => "openbci-cyton",
            SerialProtocol::ProtocentralOpenview => "protocentral-openview",
        }
    }
}

/// One acquisition source (`[[source]]`), tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// The built-in device simulator on a pty pair.
    Simulated {
        /// Bed or device identifier, used in topics.
        bed: String,
        /// This bed's window length in seconds (default: the model's; with a bundle it must be
        /// the window its encoder takes).
        #[serde(default)]
        window_seconds: Option<f64>,
        /// This bed's hop between window starts in seconds (default: the model's).
        #[serde(default)]
        hop_seconds: Option<f64>,
        /// Conditions to synthesize: names from `meit synth --list`, joined by `+` or `,`
        /// (e.g. "normal", "af", "af+pvc").
        #[serde(default = "default_condition")]
        condition: String,
        /// Device sample rate in Hz (100-1000).
        #[serde(default = "default_rate")]
        sample_rate_hz: f64,
        /// Mean heart rate in bpm (20-250); by default one that fits the conditions is drawn.
        #[serde(default)]
        heart_rate_bpm: Option<f32>,
        /// Severity (0-1) of baseline wander, mains, muscle noise and electrode motion
        /// (default 0.1).
        #[serde(default)]
        noise: Option<f32>,
        /// Seed of the signal (default: derived from the bed name).
        #[serde(default)]
        seed: Option<u64>,
        /// Leads the simulated device measures, in channel order (default: the standard 12),
        /// e.g. `["I", "II", "V1"]` for a 3-lead monitor.
        #[serde(default)]
        leads: Option<Vec<Lead>>,
        /// Electrodes the device reports off: `RA`, `LA`, `LL`, `RL`, `V1` .. `V6`.
        #[serde(default)]
        electrodes_off: Vec<String>,
    },
    /// A serial device.
    Serial {
        /// Bed or device identifier, used in topics.
        bed: String,
        /// This bed's window length in seconds (default: the model's; with a bundle it must be
        /// the window its encoder takes).
        #[serde(default)]
        window_seconds: Option<f64>,
        /// This bed's hop between window starts in seconds (default: the model's).
        #[serde(default)]
        hop_seconds: Option<f64>,
        /// Port path such as `/dev/ttyACM0` (give this or `usb`).
        #[serde(default)]
        path: Option<PathBuf>,
        /// USB device as hex `VID:PID` or `VID:PID:SERIAL`, e.g. `"0483:5740"` (give this or
        /// `path`); found through sysfs whenever the source (re)connects.
        #[serde(default)]
        usb: Option<String>,
        /// Wire protocol.
        #[serde(default = "default_protocol")]
        protocol: SerialProtocol,
        /// Baud rate (ignored by USB CDC and ptys).
        #[serde(default = "default_baud")]
        baud: u32,
        /// Cyton and OpenView: lead of each channel in arrival order (a firmware-bridge device
        /// announces its own). Defaults: Cyton I, II, V1..V6; OpenView I, II, V1.
        #[serde(default)]
        leads: Option<Vec<Lead>>,
        /// Cyton: programmable gain of the ADS1299 channels (1, 2, 4, 6, 8, 12 or 24; default 24).
        #[serde(default)]
        gain: Option<f64>,
        /// OpenView: bytes per channel value, 2 to 4 (default 4).
        #[serde(default)]
        sample_bytes: Option<usize>,
        /// OpenView: microvolts per count (default 1).
        #[serde(default)]
        uv_per_count: Option<f64>,
        /// OpenView: packet rate of the board's sketch in Hz (default 200).
        #[serde(default)]
        sample_rate_hz: Option<f64>,
    },
    /// A recorded file (WFDB `.hea` or CSV) replayed as if live.
    Replay {
        /// Bed or device identifier, used in topics.
        bed: String,
        /// This bed's window length in seconds (default: the model's; with a bundle it must be
        /// the window its encoder takes).
        #[serde(default)]
        window_seconds: Option<f64>,
        /// This bed's hop between window starts in seconds (default: the model's).
        #[serde(default)]
        hop_seconds: Option<f64>,
        /// The record to replay.
        file: PathBuf,
        /// Replay at real-time pace (true) or as fast as possible.
        #[serde(default = "default_true")]
        realtime: bool,
        /// Sample rate in Hz for a CSV file without a time column (overrides the file's).
        #[serde(default)]
        sample_rate_hz: Option<f64>,
    },
    /// A Polar H10 chest strap over BLE.
    Ble {
        /// Bed or device identifier, used in topics.
        bed: String,
        /// This bed's window length in seconds (default: the model's; with a bundle it must be
        /// the window its encoder takes).
        #[serde(default)]
        window_seconds: Option<f64>,
        /// This bed's hop between window starts in seconds (default: the model's).
        #[serde(default)]
        hop_seconds: Option<f64>,
        /// Advertised name or address of the strap.
        device: String,
    },
}

fn default_condition() -> String {
    "normal".into()
}
fn default_rate() -> f64 {
    500.0
}
fn default_protocol() -> SerialProtocol {
    SerialProtocol::FirmwareBridge
}
fn default_baud() -> u32 {
    921_600
}
fn default_true() -> bool {
    true
}

impl SourceConfig {
    /// The bed or device identifier of this source.
    pub fn bed(&self) -> &str {
        match self {
            SourceConfig::Simulated { bed, .. }
            | SourceConfig::Serial { bed, .. }
            | SourceConfig::Replay { bed, .. }
            | SourceConfig::Ble { bed, .. } => bed,
        }
    }
}

impl SourceConfig {
    /// This bed's own window length and hop (unset: the model's).
    pub fn window(&self) -> BedWindow {
        match self {
            SourceConfig::Simulated {
                window_seconds,
                hop_seconds,
                ..
            }
            | SourceConfig::Serial {
                window_seconds,
                hop_seconds,
                ..
            }
            | SourceConfig::Replay {
                window_seconds,
                hop_seconds,
                ..
            }
            | SourceConfig::Ble {
                window_seconds,
                hop_seconds,
                ..
            } => BedWindow {
                window_seconds: *window_seconds,
                hop_seconds: *hop_seconds,
            },
        }
    }
}

/// A USB serial device named by vendor id, product id and optionally serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbId {
    /// Vendor id.
    pub vid: u16,
    /// Product id.
    pub pid: u16,
    /// Serial number string.
    pub serial_number: Option<String>,
}

impl UsbId {
    /// Parses hex `VID:PID` or `VID:PID:SERIAL`; the error says what is allowed.
    pub fn parse(text: &str) -> Result<UsbId, String> {
        let mut parts = text.splitn(3, ':');
        let hex = |p: Option<&str>| {
            p.and_then(|h| u16::from_str_radix(h.trim(), 16).ok())
                .ok_or_else(|| {
                    format!(
                        "is {text:?}; allowed: hex VID:PID or VID:PID:SERIAL, e.g. \"0483:5740\""
                    )
                })
        };
        let vid = hex(parts.next())?;
        let pid = hex(parts.next())?;
        let serial_number = parts.next().map(str::to_string).filter(|s| !s.is_empty());
        Ok(UsbId {
            vid,
            pid,
            serial_number,
        })
    }
}
