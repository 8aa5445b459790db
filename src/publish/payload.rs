//! The versioned JSON payloads published over MQTT: `meit.report.v1` (one per window, a
//! no-report window included) and `meit.status.v1` (retained gateway status and last will).
//!
//! Their JSON schemas are committed in `docs/schema/` and compiled in ([`REPORT_SCHEMA_V1`],
//! [`STATUS_SCHEMA_V1`]); tests validate real payloads against them with
//! [`schema::validate`](super::schema::validate). A field is never removed or retyped within a
//! version: a breaking change is `v2` (new topic level and schema id).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dsp::quality::QualityReason;
use crate::report::{Measurements, Outcome, WindowReport};

/// Schema id carried in every report payload (`schema` field).
pub const REPORT_SCHEMA_ID: &str = "meit.report.v1";
/// Schema id carried in every status payload.
pub const STATUS_SCHEMA_ID: &str = "meit.status.v1";
/// The JSON schema of report payloads (`docs/schema/report-v1.json`).
pub const REPORT_SCHEMA_V1: &str = include_str!("../../docs/schema/report-v1.json");
/// The JSON schema of status payloads (`docs/schema/status-v1.json`).
pub const STATUS_SCHEMA_V1: &str = include_str!("../../docs/schema/status-v1.json");

/// Who publishes: the ids in every payload and the model the reports come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// Site (hospital or vehicle) id.
    pub site: String,
    /// Unit (ward) id.
    pub unit: String,
    /// Gateway id (the MQTT client id): names the status topic.
    pub gateway: String,
    /// Model bundle id, when a model is loaded.
    pub model_id: Option<String>,
    /// Model bundle version, when a model is loaded.
    pub model_version: Option<String>,
    /// ONNX Runtime execution provider in use, when a model is loaded.
    pub execution_provider: Option<String>,
}

/// A `meit.report.v1` payload.
#[derive(Debug, Clone, Serialize)]
pub struct ReportPayload {
    /// Always [`REPORT_SCHEMA_ID`].
    pub schema: &'static str,
    /// UUIDv7, unique per report: subscribers drop redelivered duplicates by it.
    pub report_id: String,
    /// Site id.
    pub site: String,
    /// Unit id.
    pub unit: String,
    /// Bed id.
    pub bed: String,
    /// Gateway id.
    pub gateway: String,
    /// The window the report is about.
    pub window: WindowSpan,
    /// `report`, `no_report` or `no_model`.
    pub kind: &'static str,
    /// The generated text (`kind = report` only).
    pub text: Option<String>,
    /// Statement codes read back from the report text (`synth::report::parse_report`).
    pub statement_codes: Vec<String>,
    /// Why no report was generated (`no_report`, `no_model`).
    pub reasons: Vec<String>,
    /// Where the text contradicts the measured signal; non-empty means "check".
    pub consistency_flags: Vec<String>,
    /// Sentences the model wrote that need leads this device lacks, taken out of `text`
    /// (`report::withhold_unsupported`); left out of the payload when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld_statements: Vec<String>,
    /// Signal quality.
    pub quality: QualityPart,
    /// Rate and rhythm measured from the signal, when the window allowed it.
    pub measurements: Option<Measurements>,
    /// The model behind the text.
    pub model: ModelPart,
    /// Latencies in milliseconds (null where not measured).
    pub latency_ms: LatencyPart,
}

/// The window's span on the device clock and, estimated, in UTC.
#[derive(Debug, Clone, Serialize)]
pub struct WindowSpan {
    /// Window index since the source started.
    pub index: u64,
    /// Device time of the first sample, ns.
    pub device_start_ns: u64,
    /// Device time just after the last sample, ns.
    pub device_end_ns: u64,
    /// Gateway clock (UTC) at hand-over minus the window length.
    pub start_utc: String,
    /// Gateway clock (UTC) when the report was handed to the publisher.
    pub end_utc: String,
    /// Gateway clock (UTC) when the window's last sample arrived: `end_utc` minus the time
    /// the window spent in the daemon (`latency_ms.pipeline`). A subscriber's receive time
    /// minus this is the window end -> subscriber latency.
    pub closed_utc: String,
}

/// Signal quality of the window.
#[derive(Debug, Clone, Serialize)]
pub struct QualityPart {
    /// Quality index in [0, 1].
    pub index: f64,
    /// Fraction of the window interpolated across gaps.
    pub interpolated_fraction: f64,
    /// Every quality finding.
    pub reasons: Vec<QualityReason>,
}

/// The model behind the text.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPart {
    /// Bundle id.
    pub id: Option<String>,
    /// Bundle version.
    pub version: Option<String>,
    /// Execution provider.
    pub execution_provider: Option<String>,
}

/// Latencies, ms.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyPart {
    /// Encoder + decoder time of the batch this window was generated in (null when the model
    /// did not run).
    pub inference: Option<f64>,
    /// From the window's last sample arriving to the report being handed to the publisher.
    pub pipeline: f64,
}

/// When `report`'s window closed (its last sample arrived) on the gateway clock, given the
/// time it was handed over: `handed_over` minus its `timings.latency_ms`.
pub fn window_closed_at(report: &WindowReport, handed_over: SystemTime) -> SystemTime {
    Duration::try_from_secs_f64(report.timings.latency_ms / 1e3)
        .ok()
        .and_then(|d| handed_over.checked_sub(d))
        .unwrap_or(handed_over)
}

impl ReportPayload {
    /// The payload for `report`, stamped now with a fresh UUIDv7.
    pub fn new(identity: &Identity, report: &WindowReport) -> ReportPayload {
        Self::at(identity, report, SystemTime::now())
    }

    /// The payload for `report` as handed over at `now`.
    pub fn at(identity: &Identity, report: &WindowReport, now: SystemTime) -> ReportPayload {
        let span_ns = report.device_end_ns.saturating_sub(report.device_start_ns);
        let start = now
            .checked_sub(Duration::from_nanos(span_ns))
            .unwrap_or(UNIX_EPOCH);
        let (kind, text, codes, reasons, flags, withheld) = match &report.outcome {
            Outcome::Report {
                text,
                codes,
                contradictions,
                withheld,
            } => (
                "report",
                Some(text.clone()),
                codes.clone(),
                vec![],
                contradictions.clone(),
                withheld.clone(),
            ),
            Outcome::NoReport { reasons } => {
                ("no_report", None, vec![], reasons.clone(), vec![], vec![])
            }
            Outcome::NoModel { reason } => (
                "no_model",
                None,
                vec![],
                vec![reason.clone()],
                vec![],
                vec![],
            ),
        };
        ReportPayload {
            schema: REPORT_SCHEMA_ID,
            report_id: uuid_v7(now),
            site: identity.site.clone(),
            unit: identity.unit.clone(),
            bed: report.bed.clone(),
            gateway: identity.gateway.clone(),
            window: WindowSpan {
                index: report.window_index,
                device_start_ns: report.device_start_ns,
                device_end_ns: report.device_end_ns,
                start_utc: utc_rfc3339(start),
                end_utc: utc_rfc3339(now),
                closed_utc: utc_rfc3339(window_closed_at(report, now)),
            },
            kind,
            text,
            statement_codes: codes,
            reasons,
            consistency_flags: flags,
            withheld_statements: withheld,
            quality: QualityPart {
                index: finite(report.quality_index),
                interpolated_fraction: finite(report.interpolated_fraction),
                reasons: report.quality_reasons.clone(),
            },
            measurements: report.measurements.clone(),
            model: ModelPart {
                id: identity.model_id.clone(),
                version: identity.model_version.clone(),
                execution_provider: identity.execution_provider.clone(),
            },
            latency_ms: LatencyPart {
                inference: report
                    .timings
                    .inference
                    .map(|i| i.encode_ms + i.prefill_ms + i.decode_ms),
                pipeline: finite(report.timings.latency_ms).max(0.0),
            },
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The smaller `measurements` topic payload: ids, window, quality and measurements.
    pub fn measurements_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&serde_json::json!({
            "schema": "meit.measurements.v1",
            "report_id": self.report_id,
            "bed": self.bed,
            "window": self.window,
            "quality_index": self.quality.index,
            "measurements": self.measurements,
        }))
    }
}

/// NaN or infinite numbers are not JSON: they are published as 0 (never produced by the pipeline).
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// A `meit.status.v1` payload (retained on the status topic).
#[derive(Debug, Clone, Serialize)]
pub struct StatusPayload {
    /// Always [`STATUS_SCHEMA_ID`].
    pub schema: &'static str,
    /// `online` or `offline`.
    pub state: &'static str,
    /// Gateway id.
    pub gateway: String,
    /// Site id.
    pub site: String,
    /// Unit id.
    pub unit: String,
    /// The model behind the reports.
    pub model: ModelPart,
    /// When the state was entered (null in the last will, which is written at connect time).
    pub time_utc: Option<String>,
    /// Why offline: `connection lost` (last will) or `shutdown`.
    pub reason: Option<String>,
}

impl StatusPayload {
    /// `online`, now.
    pub fn online(identity: &Identity) -> StatusPayload {
        Self::with(
            identity,
            "online",
            Some(utc_rfc3339(SystemTime::now())),
            None,
        )
    }

    /// `offline` as the last will: the broker sends it when the connection dies.
    pub fn last_will(identity: &Identity) -> StatusPayload {
        Self::with(identity, "offline", None, Some("connection lost".into()))
    }

    /// `offline` on a clean shutdown (the broker does not send the will after DISCONNECT).
    pub fn shutdown(identity: &Identity) -> StatusPayload {
        Self::with(
            identity,
            "offline",
            Some(utc_rfc3339(SystemTime::now())),
            Some("shutdown".into()),
        )
    }

    fn with(
        identity: &Identity,
        state: &'static str,
        time_utc: Option<String>,
        reason: Option<String>,
    ) -> StatusPayload {
        StatusPayload {
            schema: STATUS_SCHEMA_ID,
            state,
            gateway: identity.gateway.clone(),
            site: identity.site.clone(),
            unit: identity.unit.clone(),
            model: ModelPart {
                id: identity.model_id.clone(),
                version: identity.model_version.clone(),
                execution_provider: identity.execution_provider.clone(),
            },
            time_utc,
            reason,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings and options of strings: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A UUIDv7 (RFC 9562) for `now`: 48-bit Unix milliseconds, then random bits.
pub fn uuid_v7(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a system time (UTC, proleptic Gregorian).
pub fn utc_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The time [`utc_rfc3339`] wrote (`YYYY-MM-DDTHH:MM:SS.mmmZ`, from 1970 on); `None` for any
/// other text.
pub fn parse_utc_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 24
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    if !shape_ok {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, m as u32, d as u32)?;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
}

/// (year, month, day) to days since 1970-01-01; `None` for a day the month does not have.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<u64> {
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Round trip: a 30 February is refused.
    (d >= 1 && civil_from_days(days) == (y, m, d))
        .then_some(days)
        .and_then(|d| u64::try_from(d).ok())
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::quality::QualityReason;
    use crate::ecg::Lead;
    use crate::publish::schema;

    pub(crate) fn identity() -> Identity {
        Identity {
            site: "st-mary".into(),
            unit: "icu-2".into(),
            gateway: "gw-1".into(),
            model_id: Some("tiny".into()),
            model_version: Some("0.1.0".into()),
            execution_provider: Some("cpu".into()),
        }
    }

    fn window(outcome: Outcome) -> WindowReport {
        WindowReport {
            bed: "bed-7".into(),
            window_index: 3,
            device_start_ns: 30_000_000_000,
            device_end_ns: 40_000_000_000,
            interpolated_fraction: 0.01,
            quality_index: 0.9,
            quality_reasons: vec![QualityReason::InterpolatedGaps { fraction: 0.01 }],
            measurements: Some(Measurements {
                beats: 12,
                heart_rate_bpm: Some(72.0),
                rr_irregularity: Some(0.02),
                qrs_ms: None,
                axis_deg: Some(45.0),
            }),
            outcome,
            masked_leads: vec![],
            timings: crate::report::WindowTimings::default(),
        }
    }

    fn validate(kind: &str, payload: &[u8], schema_text: &str) {
        let schema: serde_json::Value = serde_json::from_str(schema_text).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(payload).unwrap();
        if let Err(errors) = schema::validate(&schema, &doc) {
            panic!("{kind} payload does not match its schema: {errors:?}\n{doc:#}");
        }
    }

    #[test]
    fn every_outcome_matches_the_committed_schema() {
        for outcome in [
            Outcome::report("Sinus rhythm. Normal ECG", None, &[]),
            Outcome::report("Sinus rhythm. Right axis deviation", None, &[Lead::AVF]),
            Outcome::Report {
                text: "Sinus bradycardia".into(),
                codes: vec![],
                contradictions: vec!["states sinus bradycardia but ...".into()],
                withheld: vec![],
            },
            Outcome::NoReport {
                reasons: vec!["V1 lead off (required)".into()],
            },
            Outcome::NoModel {
                reason: "no model bundle".into(),
            },
        ] {
            let p = ReportPayload::new(&identity(), &window(outcome));
            validate(p.kind, &p.to_json().unwrap(), REPORT_SCHEMA_V1);
        }
        let mut bare = window(Outcome::NoReport { reasons: vec![] });
        bare.measurements = None;
        let p = ReportPayload::new(&Identity::default(), &bare);
        validate("bare", &p.to_json().unwrap(), REPORT_SCHEMA_V1);
        validate(
            "online",
            &StatusPayload::online(&identity()).to_json(),
            STATUS_SCHEMA_V1,
        );
        validate(
            "will",
            &StatusPayload::last_will(&identity()).to_json(),
            STATUS_SCHEMA_V1,
        );
    }

    #[test]
    fn the_schema_catches_a_payload_that_drifts() {
        let p = ReportPayload::new(&identity(), &window(Outcome::report("x", None, &[])));
        let mut doc: serde_json::Value = serde_json::from_slice(&p.to_json().unwrap()).unwrap();
        let schema: serde_json::Value = serde_json::from_str(REPORT_SCHEMA_V1).unwrap();
        doc["quality"]["index"] = serde_json::json!("high");
        doc.as_object_mut().unwrap().remove("report_id");
        doc["extra"] = serde_json::json!(1);
        let errors = schema::validate(&schema, &doc).unwrap_err();
        let text = errors.join("\n");
        assert!(text.contains("/quality/index"), "{text}");
        assert!(text.contains("report_id"), "{text}");
        assert!(text.contains("extra"), "{text}");
    }

    #[test]
    fn a_no_report_window_carries_its_reasons() {
        let p = ReportPayload::new(
            &identity(),
            &window(Outcome::NoReport {
                reasons: vec!["V1 lead off (required)".into()],
            }),
        );
        let v: serde_json::Value = serde_json::from_slice(&p.to_json().unwrap()).unwrap();
        assert_eq!(v["kind"], "no_report");
        assert_eq!(v["text"], serde_json::Value::Null);
        assert_eq!(v["reasons"][0], "V1 lead off (required)");
        assert_eq!(v["window"]["index"], 3);
        assert_eq!(v["quality"]["reasons"][0]["reason"], "interpolated_gaps");
    }

    #[test]
    fn the_window_closed_when_its_last_sample_arrived_before_hand_over() {
        let mut w = window(Outcome::report("x", None, &[]));
        w.timings.latency_ms = 1234.0;
        let now = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        let p = ReportPayload::at(&identity(), &w, now);
        assert_eq!(p.window.end_utc, "2024-02-29T12:34:56.789Z");
        assert_eq!(p.window.closed_utc, "2024-02-29T12:34:55.555Z");
        assert_eq!(p.latency_ms.pipeline, 1234.0);
        validate("closed", &p.to_json().unwrap(), REPORT_SCHEMA_V1);
        for bad in [f64::NAN, -5.0, f64::INFINITY] {
            w.timings.latency_ms = bad;
            assert_eq!(window_closed_at(&w, now), now, "{bad}");
        }
    }

    #[test]
    fn report_ids_are_uuid_v7_and_time_ordered() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_560_000_123);
        let a = uuid_v7(t);
        let b = uuid_v7(t + Duration::from_millis(1));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7", "{a}");
        assert!(a < b, "{a} {b}");
        assert_ne!(uuid_v7(t), uuid_v7(t), "random bits differ");
    }

    #[test]
    fn utc_times_are_rfc3339() {
        assert_eq!(utc_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // leap day 2024
        assert_eq!(utc_rfc3339(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn utc_times_parse_back_and_anything_else_is_refused() {
        for ms in [0u64, 1_709_210_096_789, 951_782_400_000, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_utc_rfc3339(&utc_rfc3339(t)), Some(t), "{ms}");
        }
        for bad in [
            "",
            "2024-02-30T00:00:00.000Z",
            "2023-02-29T00:00:00.000Z",
            "2024-13-01T00:00:00.000Z",
            "2024-02-29T24:00:00.000Z",
            "2024-02-29T12:34:56.789",
            "2024-02-29 12:34:56.789Z",
            "+024-02-29T12:34:56.789Z",
            "1969-12-31T23:59:59.999Z",
            "2024-02-29T12:34:5x.789Z",
        ] {
            assert_eq!(parse_utc_rfc3339(bad), None, "{bad}");
        }
    }
}
