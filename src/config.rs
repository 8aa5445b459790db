//! The daemon's TOML configuration: what it reads, how it is validated, and how secrets are
//! taken from the environment.
//!
//! Every table rejects unknown fields, and every error names the file, the line and column,
//! the field and what is allowed there, so a typo on a ward gateway is found before the
//! daemon starts (`meit check-config FILE`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::acquire::config::{SerialProtocol, SourceConfig, UsbId};
pub use crate::dsp::config::DspConfig;
use crate::dsp::config::MIN_HOP_SECONDS;
pub use crate::infer::config::{
    ExecutionProviderKind, ModelConfig, ProviderConfig, ProviderPolicy, RuntimeConfig,
};
pub use crate::metrics::MetricsConfig;
pub use crate::pipeline::PipelineConfig;
pub use crate::telemetry::LogConfig;

use crate::acquire::signal::NOISE_RANGE;
pub use crate::publish::config::MqttConfig;
use crate::synth::stream::SAMPLE_RATE_RANGE_HZ;
use crate::synth::{ConditionSet, HEART_RATE_RANGE_BPM};

/// Environment variable that overrides `mqtt.username`.
pub const ENV_MQTT_USERNAME: &str = "MEIT_MQTT_USERNAME";
/// Environment variable that overrides `mqtt.password` (keep passwords out of config files).
pub const ENV_MQTT_PASSWORD: &str = "MEIT_MQTT_PASSWORD";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where this gateway stands: used in MQTT topics and report metadata.
    #[serde(default)]
    pub site: SiteConfig,
    /// ONNX Runtime library and execution providers.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Acquisition sources, one per bed or device (`[[source]]` tables).
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Signal processing and windowing.
    #[serde(default)]
    pub dsp: DspConfig,
    /// The model bundle to serve.
    #[serde(default)]
    pub model: ModelConfig,
    /// Batching, backpressure and shutdown of the daemon's stages.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The MQTT broker reports are published to.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// Site identity, used to build topic names `<prefix>/v1/<site>/<unit>/<bed>/<kind>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Hospital or vehicle identifier.
    pub name: String,
    /// Ward, unit or vehicle section.
    pub unit: String,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            name: "demo-site".into(),
            unit: "demo-unit".into(),
        }
    }
}

/// A secret string: never printed, never logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or names a field, type or value that is not allowed.
    #[error("{path}:{line}:{column}: {message}{section}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong and what is allowed (from the TOML parser).
        message: String,
        /// `" (in [table])"` when the error sits inside a table.
        section: String,
    },
    /// A field parsed but its value is not usable.
    #[error("{path}: `{field}` {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field name, e.g. `dsp.hop_seconds`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl Config {
    /// Reads, parses, applies environment overrides and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning the file's text.
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.apply_env(|k| std::env::var(k).ok());
        Ok((config, text))
    }

    /// Parses and validates configuration text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        config.validate(path)?;
        Ok(config)
    }

    /// Applies secret overrides from the environment (`lookup` is `std::env::var` in the daemon).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(user) = lookup(ENV_MQTT_USERNAME) {
            self.mqtt.username = Some(user);
        }
        if let Some(pass) = lookup(ENV_MQTT_PASSWORD) {
            self.mqtt.password = Some(Secret(pass));
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: field.into(),
                reason,
            })
        };
        if let Err((field, reason)) = self.pipeline.check() {
            return invalid(&format!("pipeline.{field}"), reason);
        }
        if let Err((field, reason)) = self.log.check() {
            return invalid(&format!("log.{field}"), reason);
        }
        let d = &self.dsp;
        if !(d.highpass_hz >= 0.0 && d.highpass_hz < 5.0) {
            return invalid(
                "dsp.highpass_hz",
                format!(
                    "is {}; allowed: 0 (off) up to 5 Hz, usually 0.05 or 0.5",
                    d.highpass_hz
                ),
            );
        }
        if ![0.0, 50.0, 60.0].contains(&d.notch_hz) {
            return invalid(
                "dsp.notch_hz",
                format!("is {}; allowed: 50, 60, or 0 for no notch", d.notch_hz),
            );
        }
        if !(d.lowpass_hz > d.highpass_hz && d.lowpass_hz <= 250.0) {
            return invalid(
                "dsp.lowpass_hz",
                format!(
                    "is {}; allowed: above dsp.highpass_hz and at most 250 Hz",
                    d.lowpass_hz
                ),
            );
        }
        if !(d.window_seconds >= 1.0 && d.window_seconds <= 60.0) {
            return invalid(
                "dsp.window_seconds",
                format!("is {}; allowed: 1 to 60 s", d.window_seconds),
            );
        }
        if !(d.hop_seconds >= MIN_HOP_SECONDS && d.hop_seconds <= d.window_seconds) {
            return invalid(
                "dsp.hop_seconds",
                format!(
                    "is {}; allowed: {MIN_HOP_SECONDS} s to dsp.window_seconds ({})",
                    d.hop_seconds, d.window_seconds
                ),
            );
        }
        if ![2, 4, 6, 8].contains(&d.filter_order) {
            return invalid(
                "dsp.filter_order",
                format!("is {}; allowed: 2, 4, 6 or 8", d.filter_order),
            );
        }
        if !(d.max_gap_seconds >= 0.0 && d.max_gap_seconds <= 1.0) {
            return invalid(
                "dsp.max_gap_seconds",
                format!(
                    "is {}; allowed: 0 (never interpolate) to 1 s",
                    d.max_gap_seconds
                ),
            );
        }
        if let Err((field, reason)) = self.runtime.validate() {
            return invalid(&field, reason);
        }
        if let Err((field, reason)) = self.mqtt.validate(&self.site.name, &self.site.unit) {
            return invalid(&field, reason);
        }
        let mut beds = std::collections::HashSet::new();
        // The hardware each source opens: one port or strap read by two beds would be
        // refused by the port (held exclusively, the second bed retrying for ever) or, for a
        // strap, give two beds one patient.
        let mut hardware = std::collections::HashMap::new();
        for (i, source) in self.sources.iter().enumerate() {
            let bed = source.bed();
            let field = format!("source[{i}].bed");
            if let Err(e) = crate::publish::topic::validate_level(&field, bed) {
                return invalid(&field, e.problem());
            }
            if !beds.insert(bed) {
                return invalid(
                    &format!("source[{i}].bed"),
                    format!("{bed:?} is used by two sources; each bed needs its own name"),
                );
            }
            if let Err((name, reason)) = source.window().check() {
                return invalid(&format!("source[{i}].{name}"), reason);
            }
            let opens = match source {
                SourceConfig::Serial {
                    path: Some(path), ..
                } => Some(("path", format!("serial port {}", path.display()))),
                SourceConfig::Ble { device, .. } => {
                    if device.trim().is_empty() {
                        return invalid(
                            &format!("source[{i}].device"),
                            "is empty, which every strap in range would match; give the \
                             strap's advertised name or address"
                                .to_string(),
                        );
                    }
                    Some((
                        "device",
                        format!("BLE strap {:?}", device.trim().to_lowercase()),
                    ))
                }
                _ => None,
            };
            if let Some((name, what)) = opens
                && let Some(first) = hardware.insert(what.clone(), i)
            {
                return invalid(
                    &format!("source[{i}].{name}"),
                    format!("{what} is also source[{first}]'s; each source needs its own device"),
                );
            }
            if let SourceConfig::Serial {
                protocol,
                leads,
                gain,
                sample_bytes,
                uv_per_count,
                sample_rate_hz,
                ..
            } = source
            {
                let field = |name: &str| format!("source[{i}].{name}");
                let only = |name: &str, allowed: SerialProtocol| {
                    invalid(
                        &field(name),
                        format!("applies only to protocol = \"{}\"", allowed.name()),
                    )
                };
                use SerialProtocol::{OpenbciCyton, ProtocentralOpenview};
                if gain.is_some() && *protocol != OpenbciCyton {
                    return only("gain", OpenbciCyton);
                }
                for (name, set) in [
                    ("sample_bytes", sample_bytes.is_some()),
                    ("uv_per_count", uv_per_count.is_some()),
                    ("sample_rate_hz", sample_rate_hz.is_some()),
                ] {
                    if set && *protocol != ProtocentralOpenview {
                        return only(name, ProtocentralOpenview);
                    }
                }
                if let Some(leads) = leads {
                    let max = if *protocol == OpenbciCyton { 8 } else { 12 };
                    let unique: std::collections::HashSet<_> = leads.iter().collect();
                    if *protocol == SerialProtocol::FirmwareBridge {
                        return invalid(
                            &field("leads"),
                            "a firmware-bridge device announces its leads; remove this".into(),
                        );
                    }
                    if leads.is_empty() || leads.len() > max || unique.len() != leads.len() {
                        return invalid(
                            &field("leads"),
                            format!(
                                "has {} entries; allowed: 1 to {max} distinct leads",
                                leads.len()
                            ),
                        );
                    }
                }
                if let Some(g) = gain
                    && ![1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0].contains(g)
                {
                    return invalid(
                        &field("gain"),
                        format!("is {g}; allowed: 1, 2, 4, 6, 8, 12, 24"),
                    );
                }
                if let Some(b) = sample_bytes
                    && !(2..=4).contains(b)
                {
                    return invalid(
                        &field("sample_bytes"),
                        format!("is {b}; allowed: 2, 3 or 4"),
                    );
                }
                let (min_scale, max_scale) = firmware_bridge::UV_PER_COUNT_RANGE;
                if let Some(u) = uv_per_count
                    && !(f64::from(min_scale)..=f64::from(max_scale)).contains(u)
                {
                    return invalid(
                        &field("uv_per_count"),
                        format!("is {u}; allowed: {min_scale} to {max_scale} uV per count"),
                    );
                }
                if let Some(r) = sample_rate_hz
                    && let Err(reason) = check_device_rate(*r)
                {
                    return invalid(&field("sample_rate_hz"), reason);
                }
            }
            if let SourceConfig::Replay {
                sample_rate_hz: Some(r),
                ..
            } = source
                && let Err(reason) = check_device_rate(*r)
            {
                return invalid(&format!("source[{i}].sample_rate_hz"), reason);
            }
            if let SourceConfig::Serial { path: p, usb, .. } = source {
                match (p, usb) {
                    (Some(_), Some(_)) | (None, None) => {
                        return invalid(
                            &format!("source[{i}].path"),
                            "and `usb`: give exactly one of them (a port path or a USB VID:PID)"
                                .into(),
                        );
                    }
                    (None, Some(id)) => {
                        if let Err(reason) = UsbId::parse(id) {
                            return invalid(&format!("source[{i}].usb"), reason);
                        }
                    }
                    (Some(_), None) => {}
                }
            }
            if let SourceConfig::Simulated {
                condition,
                sample_rate_hz,
                heart_rate_bpm,
                noise,
                leads,
                electrodes_off,
                scenario,
                ..
            } = source
            {
                let field = |name: &str| format!("source[{i}].{name}");
                if let Some(steps) = scenario
                    && let Err((name, reason)) = crate::acquire::config::check_scenario(steps)
                {
                    return invalid(&field(&name), reason);
                }
                if let Some(l) = leads {
                    let mut distinct = l.clone();
                    distinct.sort();
                    distinct.dedup();
                    if l.is_empty() || distinct.len() != l.len() {
                        return invalid(
                            &field("leads"),
                            format!("is {l:?}; allowed: 1 to 12 distinct standard leads"),
                        );
                    }
                }
                if let Some(bad) = electrodes_off
                    .iter()
                    .find(|e| crate::acquire::simulator::electrode_bit(e).is_none())
                {
                    return invalid(
                        &field("electrodes_off"),
                        format!(
                            "names {bad:?}; allowed: {}",
                            crate::acquire::simulator::ELECTRODE_NAMES.join(", ")
                        ),
                    );
                }
                if let Err(e) = ConditionSet::parse_list(condition) {
                    return invalid(&field("condition"), format!("is {condition:?}: {e}"));
                }
                let rates = SAMPLE_RATE_RANGE_HZ;
                // Whole hertz: the simulated device announces its rate as an integer (the
                // firmware-bridge hello), and 100.9 Hz would be announced, and timed, as 100.
                if !rates.contains(sample_rate_hz) || sample_rate_hz.fract() != 0.0 {
                    return invalid(
                        &field("sample_rate_hz"),
                        format!(
                            "is {sample_rate_hz}; allowed: whole hertz from {} to {} Hz",
                            rates.start(),
                            rates.end()
                        ),
                    );
                }
                if let Some(hr) = heart_rate_bpm
                    && !HEART_RATE_RANGE_BPM.contains(hr)
                {
                    return invalid(
                        &field("heart_rate_bpm"),
                        format!(
                            "is {hr}; allowed: {} to {} bpm",
                            HEART_RATE_RANGE_BPM.start(),
                            HEART_RATE_RANGE_BPM.end()
                        ),
                    );
                }
                if let Some(n) = noise
                    && !NOISE_RANGE.contains(n)
                {
                    return invalid(
                        &field("noise"),
                        format!("is {n}; allowed: 0 (clean) to 1 (severe artefacts)"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Turns a TOML error into one with file, line, column and the enclosing table.
fn parse_error(text: &str, path: &Path, err: &toml::de::Error) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let offset = refine_offset(
        text,
        span.start.min(text.len())..span.end.min(text.len()),
        err.message(),
    );
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| format!(" (in {header})"))
        .unwrap_or_default();
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message: err.message().trim().to_string(),
        section,
    }
}

/// Points inside a table at the offending key or value.
///
/// Tagged enums (`[[source]]` with `kind`) are buffered by serde, so their errors carry the
/// whole table's span; the message still names the field or value, which is found here.
fn refine_offset(text: &str, span: std::ops::Range<usize>, message: &str) -> usize {
    let named = message.split('`').nth(1).filter(|n| !n.is_empty());
    let Some(name) = named else { return span.start };
    // The span may cover only the table header: search on to the next header.
    let body_end = text[span.end..]
        .find("\n[")
        .map_or(text.len(), |i| span.end + i);
    let table = text.get(span.start..body_end).unwrap_or_default();
    let mut line_start = span.start;
    for line in table.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let (key, value) = trimmed.split_once('=').unwrap_or((trimmed, ""));
        let hit = if message.starts_with("unknown field") {
            key.trim() == name
        } else if message.starts_with("unknown variant") {
            value.trim().trim_matches(['"', '\'']) == name
        } else {
            false
        };
        if hit {
            return line_start + indent;
        }
        line_start += line.len();
    }
    span.start
}

/// A device sample rate inside [`crate::acquire::DEVICE_RATE_RANGE_HZ`], or why not.
fn check_device_rate(rate: f64) -> Result<(), String> {
    let rates = crate::acquire::DEVICE_RATE_RANGE_HZ;
    if rates.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "is {rate}; allowed: {} to {} Hz",
            rates.start(),
            rates.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(
            c.runtime.execution_providers,
            vec![ProviderConfig::new(
                ExecutionProviderKind::Cpu,
                ProviderPolicy::Required
            )]
        );
        assert!(c.sources.is_empty());
    }

    #[test]
    fn providers_are_names_or_tables_with_a_policy() {
        let c = parse(
            "[runtime]\nexecution_providers = [\n  { kind = \"tensorrt\", policy = \"preferred\", fp16 = true, engine_cache_dir = \"/var/lib/meit/trt\", dla_core = 1 },\n  \"cuda\",\n  \"cpu\",\n]\n",
        )
        .unwrap();
        let p = &c.runtime.execution_providers;
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].kind, ExecutionProviderKind::Tensorrt);
        assert_eq!(p[0].policy, ProviderPolicy::Preferred);
        assert!(p[0].fp16);
        assert_eq!(p[0].dla_core, Some(1));
        assert_eq!(
            p[0].engine_cache_dir.as_deref(),
            Some(Path::new("/var/lib/meit/trt"))
        );
        assert_eq!(
            p[1],
            ProviderConfig::new(ExecutionProviderKind::Cuda, ProviderPolicy::Required)
        );
    }

    #[test]
    fn bad_provider_lists_name_the_entry_and_why() {
        for (text, expect) in [
            (
                "[runtime]\nexecution_providers = [\"cpu\", \"cuda\"]\n",
                "`runtime.execution_providers[0]` cpu must be the last provider",
            ),
            (
                "[runtime]\nexecution_providers = [\"cuda\", \"cuda\"]\n",
                "`runtime.execution_providers[1]` cuda is listed twice",
            ),
            (
                "[runtime]\nexecution_providers = [{ kind = \"cuda\", fp16 = true }]\n",
                "`runtime.execution_providers[0]` cuda has no setting fp16",
            ),
            (
                "[runtime]\nexecution_providers = [{ kind = \"cuda\", polcy = \"preferred\" }]\n",
                "unknown field `polcy`",
            ),
            (
                "[runtime]\nexecution_providers = [\"rocm\"]\n",
                "unknown variant `rocm`",
            ),
            ("[runtime]\nexecution_providers = []\n", "is empty"),
            (
                "[runtime]\ninter_threads = 0\n",
                "`runtime.inter_threads` is 0",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn typo_names_field_line_column_and_table() {
        let text = "[site]\nname = \"a\"\nunit = \"b\"\n\n[mqtt]\nhost = \"x\"\nprot = 1883\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml:7:1: "), "{err}");
        assert!(err.contains("unknown field `prot`"), "{err}");
        assert!(err.contains("`port`"), "expected the allowed names: {err}");
        assert!(err.contains("(in [mqtt])"), "{err}");
    }

    #[test]
    fn serial_sources_need_exactly_one_of_path_and_usb() {
        let both =
            "[[source]]\nkind = \"serial\"\nbed = \"b1\"\npath = \"/dev/x\"\nusb = \"0483:5740\"\n";
        let err = parse(both).unwrap_err().to_string();
        assert!(err.contains("`source[0].path`"), "{err}");
        let bad = "[[source]]\nkind = \"serial\"\nbed = \"b1\"\nusb = \"zz:1\"\n";
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains("`source[0].usb`"), "{err}");
        let ok = "[[source]]\nkind = \"serial\"\nbed = \"b1\"\nusb = \"0483:5740:AB12\"\n";
        assert!(parse(ok).is_ok());
        assert_eq!(
            UsbId::parse("0483:5740:AB12"),
            Ok(UsbId {
                vid: 0x0483,
                pid: 0x5740,
                serial_number: Some("AB12".into())
            })
        );
    }

    #[test]
    fn third_party_channel_settings_are_checked_against_the_protocol() {
        let base = "[[source]]\nkind = \"serial\"\nbed = \"b1\"\npath = \"/dev/x\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(
            err("gain = 24\n")
                .contains("`source[0].gain` applies only to protocol = \"openbci-cyton\"")
        );
        assert!(err("protocol = \"openbci-cyton\"\ngain = 5\n").contains("allowed: 1, 2, 4"));
        let nine = "protocol = \"openbci-cyton\"\nleads = [\"I\",\"II\",\"III\",\"aVR\",\"aVL\",\"aVF\",\"V1\",\"V2\",\"V3\"]\n";
        assert!(err(nine).contains("1 to 8 distinct leads"));
        assert!(
            err("protocol = \"protocentral-openview\"\nsample_bytes = 5\n")
                .contains("`source[0].sample_bytes`")
        );
        let ok = "protocol = \"protocentral-openview\"\nleads = [\"II\"]\nsample_bytes = 3\nuv_per_count = 0.5\nsample_rate_hz = 125\n";
        assert!(parse(&format!("{base}{ok}")).is_ok());
    }

    #[test]
    fn typo_inside_source_array_is_caught() {
        let text = "[[source]]\nkind = \"serial\"\nbed = \"b1\"\npath = \"/dev/ttyACM0\"\nbaudrate = 9600\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml:5:1: "), "{err}");
        assert!(err.contains("unknown field `baudrate`"), "{err}");
        assert!(err.contains("(in [[source]])"), "{err}");
    }

    #[test]
    fn wrong_enum_value_lists_allowed_values() {
        let err = parse("[[source]]\nkind = \"usb\"\nbed = \"b1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml:2:"), "{err}");
        assert!(err.contains("serial"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let err = parse("[dsp]\nnotch_hz = 55\n").unwrap_err().to_string();
        assert!(
            err.contains("`dsp.notch_hz`") && err.contains("50, 60"),
            "{err}"
        );
        let err = parse("[dsp]\nwindow_seconds = 5\nhop_seconds = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dsp.hop_seconds`"), "{err}");
        let err = parse("[dsp]\nhop_seconds = 0.002\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`dsp.hop_seconds` is 0.002; allowed: 0.1 s"),
            "{err}"
        );
        let err = parse("[dsp]\nfilter_order = 3\n").unwrap_err().to_string();
        assert!(err.contains("`dsp.filter_order`"), "{err}");
        let err = parse("[dsp]\nmax_gap_seconds = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dsp.max_gap_seconds`"), "{err}");
        let two = "[[source]]\nkind=\"simulated\"\nbed=\"b\"\n[[source]]\nkind=\"simulated\"\nbed=\"b\"\n";
        assert!(
            parse(two)
                .unwrap_err()
                .to_string()
                .contains("used by two sources")
        );
        // One strap or port read by two beds: refused, naming both sources.
        let strap = |bed: &str, device: &str| {
            format!("[[source]]\nkind = \"ble\"\nbed = \"{bed}\"\ndevice = \"{device}\"\n")
        };
        let err = parse(&(strap("a", "Polar H10 1A2B") + &strap("b", "polar h10 1a2b")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`source[1].device`") && err.contains("also source[0]'s"),
            "{err}"
        );
        let err = parse(&strap("a", " ")).unwrap_err().to_string();
        assert!(
            err.contains("`source[0].device` is empty, which every strap in range would match"),
            "{err}"
        );
        parse(&(strap("a", "Polar H10 1A2B") + &strap("b", "Polar H10 5E6F"))).unwrap();
        let port = |bed: &str, path: &str| {
            format!("[[source]]\nkind = \"serial\"\nbed = \"{bed}\"\npath = \"{path}\"\n")
        };
        let err = parse(&(port("a", "/dev/ttyACM0") + &port("b", "/dev/ttyACM0")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`source[1].path`") && err.contains("serial port /dev/ttyACM0"),
            "{err}"
        );
        parse(&(port("a", "/dev/ttyACM0") + &port("b", "/dev/ttyACM1"))).unwrap();
        // A bed is a topic level: the topic check itself, NUL included (a bed the check let
        // through would have had its every report refused at publishing).
        for (bed, reason) in [
            ("a/b", "level separator"),
            ("b+", "wildcard"),
            ("", "empty"),
            ("b\\u0000", "NUL"),
        ] {
            let one = format!("[[source]]\nkind=\"simulated\"\nbed=\"{bed}\"\n");
            let err = parse(&one).unwrap_err().to_string();
            assert!(
                err.contains("`source[0].bed`") && err.contains(reason),
                "{bed}: {err}"
            );
        }
    }

    #[test]
    fn a_beds_own_window_and_hop_are_checked_naming_the_source() {
        let base = "[[source]]\nkind = \"simulated\"\nbed = \"b1\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(err("hop_seconds = 0\n").contains("`source[0].hop_seconds` is 0"));
        assert!(err("window_seconds = 0.5\n").contains("`source[0].window_seconds` is 0.5"));
        assert!(
            err("window_seconds = 10\nhop_seconds = 12\n")
                .contains("`source[0].hop_seconds` is 12; allowed: 0.1 s to the window (10 s)")
        );
        // A hop that rounds to no frame, or to one (a window per sample), is refused up front.
        assert!(
            err("hop_seconds = 0.0001\n")
                .contains("`source[0].hop_seconds` is 0.0001; allowed: 0.1 s to the window")
        );
        let ok = parse(&format!("{base}window_seconds = 10\nhop_seconds = 2\n")).unwrap();
        assert_eq!(ok.sources[0].window().hop_seconds, Some(2.0));
    }

    #[test]
    fn non_finite_and_negative_numbers_are_rejected_naming_the_field() {
        let fields = [
            ("[dsp]\n", "highpass_hz", "dsp.highpass_hz"),
            ("[dsp]\n", "lowpass_hz", "dsp.lowpass_hz"),
            ("[dsp]\n", "notch_hz", "dsp.notch_hz"),
            ("[dsp]\n", "window_seconds", "dsp.window_seconds"),
            ("[dsp]\n", "hop_seconds", "dsp.hop_seconds"),
            ("[dsp]\n", "max_gap_seconds", "dsp.max_gap_seconds"),
            (
                "[[source]]\nkind = \"serial\"\nbed = \"b\"\npath = \"/dev/x\"\nprotocol = \"openbci-cyton\"\n",
                "gain",
                "source[0].gain",
            ),
            (
                "[[source]]\nkind = \"serial\"\nbed = \"b\"\npath = \"/dev/x\"\nprotocol = \"protocentral-openview\"\n",
                "uv_per_count",
                "source[0].uv_per_count",
            ),
            (
                "[[source]]\nkind = \"serial\"\nbed = \"b\"\npath = \"/dev/x\"\nprotocol = \"protocentral-openview\"\n",
                "sample_rate_hz",
                "source[0].sample_rate_hz",
            ),
            (
                "[[source]]\nkind = \"replay\"\nbed = \"b\"\nfile = \"r.csv\"\n",
                "sample_rate_hz",
                "source[0].sample_rate_hz",
            ),
            (
                "[[source]]\nkind = \"simulated\"\nbed = \"b\"\n",
                "sample_rate_hz",
                "source[0].sample_rate_hz",
            ),
            (
                "[[source]]\nkind = \"simulated\"\nbed = \"b\"\n",
                "heart_rate_bpm",
                "source[0].heart_rate_bpm",
            ),
            (
                "[[source]]\nkind = \"simulated\"\nbed = \"b\"\n",
                "noise",
                "source[0].noise",
            ),
        ];
        // TOML spells these `nan`, `inf`, `-inf`; 1e300 overflows every f32 field.
        for (table, key, field) in fields {
            for value in ["nan", "+nan", "-nan", "inf", "-inf", "-1", "-0.5", "1e300"] {
                let text = format!("{table}{key} = {value}\n");
                let err = parse(&text).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("`{field}`")),
                    "{key} = {value}: {err}"
                );
            }
        }
        // An absurd device scale would make samples infinite.
        let openview = "[[source]]\nkind = \"serial\"\nbed = \"b\"\npath = \"/dev/x\"\nprotocol = \"protocentral-openview\"\n";
        let err = parse(&format!("{openview}uv_per_count = 1e30\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`source[0].uv_per_count` is 1"), "{err}");
        // A replayed file at 10 MHz would need gigabytes a window.
        let replay = "[[source]]\nkind = \"replay\"\nbed = \"b\"\nfile = \"r.csv\"\n";
        let err = parse(&format!("{replay}sample_rate_hz = 1e7\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`source[0].sample_rate_hz` is 10000000; allowed: 1 to 32000 Hz"),
            "{err}"
        );
    }

    #[test]
    fn simulated_sources_check_conditions_rates_and_noise_naming_the_field() {
        let base = "[[source]]\nkind = \"simulated\"\nbed = \"b1\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err().to_string();
        let e = err("condition = \"af+torsades\"\n");
        assert!(
            e.contains("`source[0].condition`") && e.contains("torsades"),
            "{e}"
        );
        assert!(e.contains("normal, brady, tachy"), "the allowed names: {e}");
        let e = err("condition = \"lbbb,rbbb\"\n");
        assert!(e.contains("`source[0].condition`"), "{e}");
        assert!(err("sample_rate_hz = 2000\n").contains("`source[0].sample_rate_hz`"));
        // The device announces whole hertz: 100.9 Hz would be timed as 100 Hz.
        assert!(
            err("sample_rate_hz = 100.9\n")
                .contains("`source[0].sample_rate_hz` is 100.9; allowed: whole hertz")
        );
        assert!(err("heart_rate_bpm = 400\n").contains("`source[0].heart_rate_bpm`"));
        assert!(err("noise = 1.5\n").contains("`source[0].noise`"));
        assert!(err("nosie = 0.5\n").contains("unknown field `nosie`"));
        let ok = "condition = \"af+pvc\"\nheart_rate_bpm = 90\nnoise = 0.3\nseed = 42\n";
        let c = parse(&format!("{base}{ok}")).unwrap();
        assert!(matches!(
            c.sources[0],
            SourceConfig::Simulated {
                heart_rate_bpm: Some(90.0),
                seed: Some(42),
                ..
            }
        ));
    }

    #[test]
    fn a_simulated_scenario_is_checked_step_by_step_naming_the_field() {
        let base = "[[source]]\nkind = \"simulated\"\nbed = \"b1\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err().to_string();
        let e = err("scenario = []\n");
        assert!(e.contains("`source[0].scenario` is empty"), "{e}");
        for seconds in ["0", "-5", "nan", "inf", "1e9"] {
            let e = err(&format!(
                "scenario = [{{ condition = \"normal\", seconds = 20 }}, {{ condition = \"af\", seconds = {seconds} }}]\n"
            ));
            assert!(
                e.contains("`source[0].scenario[1].seconds` is"),
                "{seconds}: {e}"
            );
        }
        let e = err("scenario = [{ condition = \"torsades\", seconds = 10 }]\n");
        assert!(
            e.contains("`source[0].scenario[0].condition`") && e.contains("torsades"),
            "{e}"
        );
        let e = err("scenario = [{ condition = \"af\", seconds = 10, noise = nan }]\n");
        assert!(e.contains("`source[0].scenario[0].noise`"), "{e}");
        let e = err("scenario = [{ condition = \"af\", seconds = 10, heart_rate_bpm = 500 }]\n");
        assert!(e.contains("`source[0].scenario[0].heart_rate_bpm`"), "{e}");
        let e =
            err("scenario = [{ condition = \"af\", seconds = 10, electrodes_off = [\"V9\"] }]\n");
        assert!(
            e.contains("`source[0].scenario[0].electrodes_off`") && e.contains("V9"),
            "{e}"
        );
        let e = err("scenario = [{ condition = \"af\" }]\n");
        assert!(e.contains("missing field `seconds`"), "{e}");
        let e = err("scenario = [{ condition = \"af\", seconds = 10, sconds = 3 }]\n");
        assert!(e.contains("unknown field `sconds`"), "{e}");
        let ok = "[[source.scenario]]\ncondition = \"normal\"\nseconds = 20\n\n\
                  [[source.scenario]]\ncondition = \"tachy\"\nheart_rate_bpm = 120\nseconds = 20\n\n\
                  [[source.scenario]]\ncondition = \"normal\"\nseconds = 20\nelectrodes_off = [\"V2\"]\n";
        let c = parse(&format!("{base}{ok}")).unwrap();
        let SourceConfig::Simulated {
            scenario: Some(steps),
            ..
        } = &c.sources[0]
        else {
            panic!("{:?}", c.sources[0])
        };
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].heart_rate_bpm, Some(120.0));
        assert_eq!(steps[2].electrodes_off, Some(vec!["V2".to_string()]));
    }

    #[test]
    fn password_comes_from_env_and_never_prints() {
        let mut c = parse("[mqtt]\npassword = \"in-file\"\n").unwrap();
        c.apply_env(|k| (k == ENV_MQTT_PASSWORD).then(|| "hunter2".to_string()));
        assert_eq!(c.mqtt.password.as_ref().unwrap().expose(), "hunter2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("in-file"),
            "{shown}"
        );
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1, "no configs found in {}", dir.display());
    }
}
