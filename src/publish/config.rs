//! The `[mqtt]` table (and its `[mqtt.outbox]` sub-table): broker, security, topics and the
//! durable outbox. `crate::config` assembles it into the whole file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::outbox::{FullPolicy, OutboxOptions};
use super::topic::validate_level;
use crate::config::Secret;

/// MQTT broker settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Publish reports over MQTT (`meit run`); off: standard output only.
    #[serde(default)]
    pub enabled: bool,
    /// Broker host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Topic prefix (first topic level).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT client identifier; also the gateway id in the status topic.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name (or `MEIT_MQTT_USERNAME`).
    pub username: Option<String>,
    /// Password (prefer `MEIT_MQTT_PASSWORD` or `password_file`).
    pub password: Option<Secret>,
    /// File holding the password (first line); used when `password` is not set.
    pub password_file: Option<PathBuf>,
    /// CA certificate file (PEM); when set, the connection uses TLS.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Allow plaintext to a broker that is not on loopback (credentials and reports travel
    /// unencrypted). Off by default.
    #[serde(default)]
    pub allow_insecure: bool,
    /// MQTT keep-alive, seconds (5-3600): how fast a dead connection is noticed.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: u64,
    /// QoS of the `measurements` topic: 0 or 1 (reports are always QoS 1).
    #[serde(default)]
    pub measurements_qos: u8,
    /// Largest payload sent, bytes; set it to at most the broker's own limit (mosquitto
    /// `message_size_limit`): an MQTT 3.1.1 broker acknowledges and silently drops a larger one.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Reports in flight (sent, not yet acknowledged) at once, 1-1000.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// First reconnect delay, ms (doubled per failure, with jitter).
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Also publish each report as an HL7 FHIR R4 DiagnosticReport on `.../<bed>/fhir`
    /// (QoS 1, through the outbox).
    #[serde(default)]
    pub fhir: bool,
    /// The durable outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

/// `[mqtt.outbox]`: where undelivered reports wait, and their bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory (created if missing); must survive reboots for reports to.
    #[serde(default = "default_outbox_dir")]
    pub dir: PathBuf,
    /// Bound on unacknowledged bytes.
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: u64,
    /// Unacknowledged reports older than this are dropped (counted, logged), seconds.
    #[serde(default = "default_outbox_age")]
    pub max_age_seconds: u64,
    /// At `max_bytes`: `reject-new` (default: the new report is refused with an error) or
    /// `drop-oldest`.
    #[serde(default)]
    pub when_full: FullPolicy,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "meit".into()
}
fn default_client_id() -> String {
    "meit-gateway".into()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_max_payload() -> usize {
    256 * 1024
}
fn default_inflight() -> u16 {
    32
}
fn default_backoff_initial() -> u64 {
    250
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_outbox_dir() -> PathBuf {
    PathBuf::from(".meit/outbox")
}
fn default_outbox_bytes() -> u64 {
    64 << 20
}
/// The longest `outbox.max_age_seconds`: 30 days. A report older than that helps no one at the
/// bedside, and the bound keeps the age in milliseconds far from `u64`'s range.
pub const MAX_OUTBOX_AGE_SECONDS: u64 = 30 * 24 * 3600;

fn default_outbox_age() -> u64 {
    24 * 3600
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            host: default_host(),
            port: default_port(),
            topic_prefix: default_prefix(),
            client_id: default_client_id(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            allow_insecure: false,
            keep_alive_seconds: default_keep_alive(),
            measurements_qos: 0,
            max_payload_bytes: default_max_payload(),
            inflight: default_inflight(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            fhir: false,
            outbox: OutboxConfig::default(),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: default_outbox_dir(),
            max_bytes: default_outbox_bytes(),
            max_age_seconds: default_outbox_age(),
            when_full: FullPolicy::default(),
        }
    }
}

/// Whether `host` is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl MqttConfig {
    /// Whether the connection uses TLS.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some()
    }

    /// Checks values a type cannot; returns the dotted field and what is allowed.
    pub fn validate(&self, site: &str, unit: &str) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((format!("mqtt.{field}"), reason));
        if self.port == 0 {
            return bad("port", "is 0; allowed: 1-65535".into());
        }
        if self.host.is_empty() {
            return bad("host", "is empty; allowed: a host name or address".into());
        }
        for (field, value) in [
            ("mqtt.topic_prefix", self.topic_prefix.as_str()),
            ("mqtt.client_id", self.client_id.as_str()),
            ("site.name", site),
            ("site.unit", unit),
        ] {
            if let Err(e) = validate_level(field, value) {
                return Err((field.to_string(), e.problem()));
            }
        }
        if !self.tls() && !self.allow_insecure && !is_loopback(&self.host) {
            return bad(
                "ca_file",
                format!(
                    "is not set, so reports and credentials would travel unencrypted to {:?}, which is not loopback; set ca_file (TLS) or, on a network you trust, allow_insecure = true",
                    self.host
                ),
            );
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad(
                "client_cert",
                "and `mqtt.client_key` go together: give both (mutual TLS) or neither".into(),
            );
        }
        if self.client_cert.is_some() && !self.tls() {
            return bad("client_cert", "needs `mqtt.ca_file` (TLS)".into());
        }
        if self.password.is_some() && self.password_file.is_some() {
            return bad(
                "password_file",
                "and `mqtt.password` (or MEIT_MQTT_PASSWORD) are both set; give one".into(),
            );
        }
        if !(5..=3600).contains(&self.keep_alive_seconds) {
            return bad(
                "keep_alive_seconds",
                format!("is {}; allowed: 5 to 3600", self.keep_alive_seconds),
            );
        }
        if self.measurements_qos > 1 {
            return bad(
                "measurements_qos",
                format!("is {}; allowed: 0 or 1", self.measurements_qos),
            );
        }
        if !(1024..=super::outbox::MAX_PAYLOAD).contains(&self.max_payload_bytes) {
            return bad(
                "max_payload_bytes",
                format!(
                    "is {}; allowed: 1024 to {} (the outbox's largest record)",
                    self.max_payload_bytes,
                    super::outbox::MAX_PAYLOAD
                ),
            );
        }
        if !(1..=1000).contains(&self.inflight) {
            return bad(
                "inflight",
                format!("is {}; allowed: 1 to 1000", self.inflight),
            );
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return bad(
                "backoff_max_ms",
                format!(
                    "is {} with backoff_initial_ms {}; allowed: initial above 0, max at least initial",
                    self.backoff_max_ms, self.backoff_initial_ms
                ),
            );
        }
        if self.outbox.max_bytes < self.max_payload_bytes as u64 {
            return bad(
                "outbox.max_bytes",
                format!(
                    "is {}; allowed: at least mqtt.max_payload_bytes ({})",
                    self.outbox.max_bytes, self.max_payload_bytes
                ),
            );
        }
        if !(1..=MAX_OUTBOX_AGE_SECONDS).contains(&self.outbox.max_age_seconds) {
            return bad(
                "outbox.max_age_seconds",
                format!(
                    "is {}; allowed: 1 to {MAX_OUTBOX_AGE_SECONDS} (30 days)",
                    self.outbox.max_age_seconds
                ),
            );
        }
        Ok(())
    }

    /// The outbox options.
    pub fn outbox_options(&self) -> OutboxOptions {
        OutboxOptions {
            dir: self.outbox.dir.clone(),
            max_bytes: self.outbox.max_bytes,
            max_age: Duration::from_secs(self.outbox.max_age_seconds),
            when_full: self.outbox.when_full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &MqttConfig) -> Result<(), (String, String)> {
        c.validate("site", "unit")
    }

    #[test]
    fn plaintext_to_a_remote_broker_needs_allow_insecure() {
        let mut c = MqttConfig {
            host: "broker.ward.example".into(),
            ..MqttConfig::default()
        };
        let (field, reason) = check(&c).unwrap_err();
        assert_eq!(field, "mqtt.ca_file");
        assert!(reason.contains("allow_insecure = true"), "{reason}");
        c.allow_insecure = true;
        assert_eq!(check(&c), Ok(()));
        c.allow_insecure = false;
        c.ca_file = Some("/etc/meit/ca.pem".into());
        assert_eq!(check(&c), Ok(()));
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.3.2.1"] {
            assert!(is_loopback(host), "{host}");
        }
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn ids_and_bounds_are_checked_naming_the_field() {
        let c = MqttConfig {
            client_id: "gw#1".into(),
            ..MqttConfig::default()
        };
        assert_eq!(check(&c).unwrap_err().0, "mqtt.client_id");
        assert_eq!(
            MqttConfig::default().validate("a/b", "u").unwrap_err().0,
            "site.name"
        );
        let c = MqttConfig {
            client_cert: Some("c.pem".into()),
            ..MqttConfig::default()
        };
        assert_eq!(check(&c).unwrap_err().0, "mqtt.client_cert");
        let c = MqttConfig {
            measurements_qos: 2,
            ..MqttConfig::default()
        };
        assert_eq!(check(&c).unwrap_err().0, "mqtt.measurements_qos");
        let mut c = MqttConfig::default();
        c.outbox.max_bytes = 10;
        assert_eq!(check(&c).unwrap_err().0, "mqtt.outbox.max_bytes");
        // Above the outbox's largest record, a report would be stored and lost at restart.
        let mut c = MqttConfig::default();
        c.outbox.max_bytes = 1 << 30;
        c.max_payload_bytes = super::super::outbox::MAX_PAYLOAD;
        assert_eq!(check(&c), Ok(()));
        c.max_payload_bytes = 256 << 20;
        let (field, reason) = check(&c).unwrap_err();
        assert_eq!(field, "mqtt.max_payload_bytes");
        assert!(reason.contains("the outbox's largest record"), "{reason}");
        for age in [0, MAX_OUTBOX_AGE_SECONDS + 1, 18_446_744_073_709_552] {
            let mut c = MqttConfig::default();
            c.outbox.max_age_seconds = age;
            let (field, reason) = check(&c).unwrap_err();
            assert_eq!(field, "mqtt.outbox.max_age_seconds", "{age}");
            assert!(reason.contains(&age.to_string()), "{reason}");
        }
        let mut c = MqttConfig::default();
        c.outbox.max_age_seconds = MAX_OUTBOX_AGE_SECONDS;
        assert_eq!(check(&c), Ok(()));
        assert_eq!(check(&MqttConfig::default()), Ok(()));
    }
}
