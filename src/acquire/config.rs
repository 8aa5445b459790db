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
        /// Conditions played in sequence, each for its own duration, then again from the
        /// first (`[[source.scenario]]` or `scenario = [{ condition = "af", seconds = 20 }]`).
        /// A step's unset `heart_rate_bpm` and `noise` are the source's; its `electrodes_off`
        /// replaces the source's. Unset: the source streams `condition` for ever.
        #[serde(default)]
        scenario: Option<Vec<ScenarioStep>>,
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

/// One step of a simulated device's scenario: what it streams, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioStep {
    /// Conditions, as the source's `condition` (e.g. "normal", "af", "lbbb").
    pub condition: String,
    /// How long the step lasts, in seconds (above 0, at most a day). Steps of whole hops,
    /// starting from the stream's start, keep every window inside one step.
    pub seconds: f64,
    /// Mean heart rate in bpm (20-250); unset: the source's.
    #[serde(default)]
    pub heart_rate_bpm: Option<f32>,
    /// Artefact severity (0-1); unset: the source's.
    #[serde(default)]
    pub noise: Option<f32>,
    /// Electrodes the device reports off during this step (`RA`, `LA`, `LL`, `RL`, `V1` ..
    /// `V6`); replaces the source's `electrodes_off`.
    #[serde(default)]
    pub electrodes_off: Option<Vec<String>>,
}

/// The longest scenario step, in seconds (one day).
pub const MAX_STEP_SECONDS: f64 = 86_400.0;

impl ScenarioStep {
    /// Checks the step's own values; on error, the field (`seconds`, `condition`, ...) and
    /// what is wrong with it and what is allowed.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        use crate::acquire::signal::NOISE_RANGE;
        use crate::synth::{ConditionSet, HEART_RATE_RANGE_BPM};
        let s = self.seconds;
        if !(s > 0.0 && s <= MAX_STEP_SECONDS) {
            return Err((
                "seconds",
                format!("is {s}; allowed: above 0 and at most {MAX_STEP_SECONDS} s"),
            ));
        }
        if let Err(e) = ConditionSet::parse_list(&self.condition) {
            return Err(("condition", format!("is {:?}: {e}", self.condition)));
        }
        if let Some(hr) = self.heart_rate_bpm
            && !HEART_RATE_RANGE_BPM.contains(&hr)
        {
            return Err((
                "heart_rate_bpm",
                format!(
                    "is {hr}; allowed: {} to {} bpm",
                    HEART_RATE_RANGE_BPM.start(),
                    HEART_RATE_RANGE_BPM.end()
                ),
            ));
        }
        if let Some(n) = self.noise
            && !NOISE_RANGE.contains(&n)
        {
            return Err((
                "noise",
                format!("is {n}; allowed: 0 (clean) to 1 (severe artefacts)"),
            ));
        }
        if let Some(bad) = self
            .electrodes_off
            .iter()
            .flatten()
            .find(|e| crate::acquire::simulator::electrode_bit(e).is_none())
        {
            return Err((
                "electrodes_off",
                format!(
                    "names {bad:?}; allowed: {}",
                    crate::acquire::simulator::ELECTRODE_NAMES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a whole scenario; on error, the field relative to the source (`scenario`,
/// `scenario[2].seconds`) and the reason.
pub fn check_scenario(steps: &[ScenarioStep]) -> Result<(), (String, String)> {
    if steps.is_empty() {
        return Err((
            "scenario".into(),
            "is empty; allowed: at least one step, e.g. [{ condition = \"normal\", seconds = 20 }], or no `scenario` at all".into(),
        ));
    }
    for (j, step) in steps.iter().enumerate() {
        step.check()
            .map_err(|(field, reason)| (format!("scenario[{j}].{field}"), reason))?;
    }
    Ok(())
}

/// The step of `steps` (played in order, then again from the first) that the stream span
/// `start_s..end_s` (seconds from the stream's start) lies in entirely; `None` when the span
/// straddles a change of step (or the scenario is empty or its length is not finite). The
/// ground truth of a window.
pub fn scenario_step_during(
    steps: &[ScenarioStep],
    start_s: f64,
    end_s: f64,
) -> Option<&ScenarioStep> {
    let cycle: f64 = steps.iter().map(|s| s.seconds).sum();
    if !(cycle.is_finite() && cycle > 0.0 && start_s >= 0.0 && end_s >= start_s) {
        return None;
    }
    let lap = (start_s / cycle).floor();
    let (start, end) = (start_s - lap * cycle, end_s - lap * cycle);
    let mut step_start = 0.0;
    for step in steps {
        let step_end = step_start + step.seconds;
        if start >= step_start && start < step_end {
            // A tolerance of a microsecond for spans computed from sample counts.
            return (end <= step_end + 1e-6).then_some(step);
        }
        step_start = step_end;
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(condition: &str, seconds: f64) -> ScenarioStep {
        ScenarioStep {
            condition: condition.into(),
            seconds,
            heart_rate_bpm: None,
            noise: None,
            electrodes_off: None,
        }
    }

    #[test]
    fn a_span_inside_one_step_has_that_step_and_one_across_a_change_has_none() {
        let steps = [step("normal", 20.0), step("af", 10.0), step("tachy", 20.0)];
        let at = |a: f64, b: f64| scenario_step_during(&steps, a, b).map(|s| s.condition.as_str());
        assert_eq!(at(0.0, 10.0), Some("normal"));
        assert_eq!(at(10.0, 20.0), Some("normal"));
        assert_eq!(at(20.0, 30.0), Some("af"));
        assert_eq!(at(30.0, 50.0), Some("tachy"));
        assert_eq!(at(15.0, 25.0), None, "straddles normal -> af");
        assert_eq!(at(45.0, 55.0), None, "straddles the end of the cycle");
        // The scenario plays again from the first step.
        assert_eq!(at(50.0, 60.0), Some("normal"));
        assert_eq!(at(70.0, 80.0), Some("af"));
        assert_eq!(scenario_step_during(&[], 0.0, 1.0), None);
        assert_eq!(scenario_step_during(&steps, f64::NAN, 1.0), None);
    }

    #[test]
    fn a_step_names_the_field_it_gets_wrong() {
        assert!(check_scenario(&[]).unwrap_err().0 == "scenario");
        for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let (field, reason) =
                check_scenario(&[step("normal", 10.0), step("af", seconds)]).unwrap_err();
            assert_eq!(field, "scenario[1].seconds", "{reason}");
        }
        let (field, _) = check_scenario(&[step("af+torsades", 10.0)]).unwrap_err();
        assert_eq!(field, "scenario[0].condition");
        assert!(check_scenario(&[step("af", 10.0), step("lbbb", 5.0)]).is_ok());
    }
}
