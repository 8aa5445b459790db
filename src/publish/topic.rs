//! MQTT topic names: `<prefix>/v1/<site>/<unit>/<bed>/<kind>`.
//!
//! Every id becomes one topic level, so it must not be empty and must not contain the level
//! separator `/`, the wildcards `+` and `#`, or NUL; a bad id is a [`TopicError`] naming the
//! field, never a silently different topic.

use std::fmt;

/// Version of the topic layout and of the payload schemas (`v1`).
pub const TOPIC_VERSION: &str = "v1";

/// What a topic carries (its last level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// One report or no-report per window (QoS 1, through the outbox).
    Report,
    /// Rate, RR irregularity and quality per window (QoS configurable, not outboxed).
    Measurements,
    /// Retained gateway status: "online", or "offline" as the last will.
    Status,
    /// The report as a FHIR R4 DiagnosticReport (QoS 1, through the outbox; `mqtt.fhir`).
    Fhir,
}

impl TopicKind {
    /// The topic level name.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Report => "report",
            TopicKind::Measurements => "measurements",
            TopicKind::Status => "status",
            TopicKind::Fhir => "fhir",
        }
    }
}

/// An id that cannot be a topic level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {}", self.problem())]
pub struct TopicError {
    /// Which id, e.g. `site.name` or `bed`.
    pub field: String,
    /// The offending value.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TopicError {
    /// What is wrong with the value and what is allowed, without the field's name (for a
    /// configuration error that names the field its own way).
    pub fn problem(&self) -> String {
        format!(
            "is {:?}: {}; allowed: a non-empty name without '/', '+', '#' or NUL (it is an MQTT topic level)",
            self.value, self.reason
        )
    }
}

/// Checks that `value` can be one topic level; `field` names it in the error.
pub fn validate_level(field: &str, value: &str) -> Result<(), TopicError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.contains('/') {
        Some("it contains the level separator '/'")
    } else if value.contains(['+', '#']) {
        Some("it contains an MQTT wildcard")
    } else if value.contains('\0') {
        Some("it contains NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TopicError {
            field: field.to_string(),
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The validated fixed part of every topic: `<prefix>/v1/<site>/<unit>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicBase {
    base: String,
}

impl TopicBase {
    /// Validates prefix, site and unit (each one level) and joins them.
    pub fn new(prefix: &str, site: &str, unit: &str) -> Result<TopicBase, TopicError> {
        validate_level("mqtt.topic_prefix", prefix)?;
        validate_level("site.name", site)?;
        validate_level("site.unit", unit)?;
        Ok(TopicBase {
            base: format!("{prefix}/{TOPIC_VERSION}/{site}/{unit}"),
        })
    }

    /// The topic of `kind` for `bed` (validated: `field` names it in the error).
    pub fn topic(&self, bed: &str, kind: TopicKind) -> Result<String, TopicError> {
        validate_level("bed", bed)?;
        Ok(format!("{}/{bed}/{}", self.base, kind.as_str()))
    }

    /// A filter matching every bed's topics of every kind under this base.
    pub fn filter_all(&self) -> String {
        format!("{}/#", self.base)
    }
}

impl fmt::Display for TopicBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_layout() {
        let base = TopicBase::new("meit", "st-mary", "icu-2").unwrap();
        assert_eq!(
            base.topic("bed-7", TopicKind::Report).unwrap(),
            "meit/v1/st-mary/icu-2/bed-7/report"
        );
        assert_eq!(
            base.topic("bed-7", TopicKind::Measurements).unwrap(),
            "meit/v1/st-mary/icu-2/bed-7/measurements"
        );
        assert_eq!(
            base.topic("gw", TopicKind::Status).unwrap(),
            "meit/v1/st-mary/icu-2/gw/status"
        );
        assert_eq!(base.filter_all(), "meit/v1/st-mary/icu-2/#");
    }

    #[test]
    fn bad_ids_are_rejected_naming_the_field() {
        let err = TopicBase::new("meit", "a+b", "u").unwrap_err();
        assert_eq!(err.field, "site.name");
        assert!(err.to_string().contains("wildcard"), "{err}");
        let err = TopicBase::new("meit", "s", "").unwrap_err();
        assert_eq!(err.field, "site.unit");
        let err = TopicBase::new("me/it", "s", "u").unwrap_err();
        assert_eq!(err.field, "mqtt.topic_prefix");
        let base = TopicBase::new("meit", "s", "u").unwrap();
        for bad in ["#", "bed+1", "a/b", "", "nul\0"] {
            let err = base.topic(bad, TopicKind::Report).unwrap_err();
            assert_eq!(err.field, "bed", "{bad:?}");
            assert!(err.to_string().starts_with("`bed` is "), "{err}");
        }
    }
}
