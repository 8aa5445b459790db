//! The report as an HL7 FHIR R4 `DiagnosticReport` with its measurements as contained
//! `Observation`s, published (when `mqtt.fhir = true`) on `<prefix>/v1/<site>/<unit>/<bed>/fhir`.
//!
//! Coding, following the US Core cardiology example: report code LOINC 45033-8, category LOINC
//! LP29708-2 (Cardiology); heart rate LOINC 8867-4, QRS duration 8633-2, QRS axis 8632-4 (UCUM
//! units); RR irregularity and the signal quality index have no standard code and use the
//! project's own system [`MEIT_SYSTEM`]. A machine-generated report is `preliminary` (no
//! clinician has verified it); a window without a report is `cancelled`, its reasons in
//! `conclusion`. The bed is the `subject`, as a logical reference to a `Location`.

use serde_json::{Map, Value, json};

use super::payload::ReportPayload;

/// Code system for meit's own observation codes.
pub const MEIT_SYSTEM: &str = "urn:meit:observation";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

/// The FHIR R4 `DiagnosticReport` for a report payload.
pub fn diagnostic_report(p: &ReportPayload) -> Value {
    let mut observations = Vec::new();
    let mut add =
        |id: &str, system: &str, code: &str, text: &str, value: Option<(f64, &str, &str)>| {
            let mut obs = json!({
                "resourceType": "Observation",
                "id": id,
                "status": "preliminary",
                "code": {"coding": [{"system": system, "code": code}], "text": text},
                "effectivePeriod": {"start": p.window.start_utc, "end": p.window.end_utc},
            });
            match value {
                Some((v, unit, ucum)) => {
                    obs["valueQuantity"] =
                        json!({"value": v, "unit": unit, "system": UCUM, "code": ucum})
                }
                None => {
                    obs["dataAbsentReason"] = json!({"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "not-performed"}]})
                }
            }
            observations.push(obs);
        };
    let m = p.measurements.as_ref();
    let finite = |v: Option<f32>| v.map(f64::from).filter(|v| v.is_finite());
    if let Some(hr) = finite(m.and_then(|m| m.heart_rate_bpm)) {
        add(
            "hr",
            LOINC,
            "8867-4",
            "Heart rate",
            Some((hr, "beats/minute", "/min")),
        );
    }
    if let Some(qrs) = finite(m.and_then(|m| m.qrs_ms)) {
        add(
            "qrs",
            LOINC,
            "8633-2",
            "QRS duration",
            Some((qrs, "ms", "ms")),
        );
    }
    if let Some(axis) = finite(m.and_then(|m| m.axis_deg)) {
        add(
            "axis",
            LOINC,
            "8632-4",
            "QRS axis",
            Some((axis, "degrees", "deg")),
        );
    }
    if let Some(rr) = finite(m.and_then(|m| m.rr_irregularity)) {
        add(
            "rr",
            MEIT_SYSTEM,
            "rr-irregularity",
            "RR irregularity (RMSSD / mean RR)",
            Some((rr, "ratio", "1")),
        );
    }
    add(
        "quality",
        MEIT_SYSTEM,
        "signal-quality-index",
        "ECG signal quality index (0-1)",
        Some((p.quality.index, "index", "1")),
    );
    let reported = p.kind == "report";
    let mut conclusion = match (&p.text, reported) {
        (Some(text), true) => text.clone(),
        _ => format!("No report: {}", p.reasons.join("; ")),
    };
    if !p.consistency_flags.is_empty() {
        conclusion.push_str(&format!(" [CHECK: {}]", p.consistency_flags.join("; ")));
    }
    if !p.withheld_statements.is_empty() {
        conclusion.push_str(&format!(
            " [withheld: {}]",
            p.withheld_statements.join("; ")
        ));
    }
    let mut performer = format!("meit gateway {}", p.gateway);
    if let (Some(id), Some(version)) = (&p.model.id, &p.model.version) {
        performer.push_str(&format!(", model {id} {version}"));
    }
    if let Some(provider) = &p.model.execution_provider {
        performer.push_str(&format!(" ({provider})"));
    }
    let results: Vec<Value> = observations
        .iter()
        .map(|o| json!({"reference": format!("#{}", o["id"].as_str().unwrap_or_default())}))
        .collect();
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": p.report_id,
        "contained": observations,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", p.report_id)}],
        "status": if reported { "preliminary" } else { "cancelled" },
        "category": [{"coding": [{"system": LOINC, "code": "LP29708-2", "display": "Cardiology"}]}],
        "code": {"coding": [{"system": LOINC, "code": "45033-8"}], "text": "ECG report (machine-generated, not verified)"},
        "subject": {
            "type": "Location",
            "identifier": {"system": "urn:meit:bed", "value": format!("{}/{}/{}", p.site, p.unit, p.bed)},
            "display": format!("bed {}", p.bed),
        },
        "effectivePeriod": {"start": p.window.start_utc, "end": p.window.end_utc},
        "issued": p.window.end_utc,
        "performer": [{"display": performer}],
        "result": results,
        "conclusion": conclusion,
    });
    if !p.statement_codes.is_empty() {
        report["conclusionCode"] = Value::Array(
            p.statement_codes
                .iter()
                .map(|c| json!({"coding": [{"system": MEIT_SYSTEM, "code": c}]}))
                .collect(),
        );
    }
    strip_empty(&mut report);
    report
}

/// FHIR JSON forbids empty strings, arrays and objects, and nulls: remove them.
fn strip_empty(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for child in map.values_mut() {
                strip_empty(child);
            }
            let keep: Map<String, Value> = std::mem::take(map)
                .into_iter()
                .filter(|(_, c)| !is_empty(c))
                .collect();
            *map = keep;
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                strip_empty(child);
            }
            items.retain(|c| !is_empty(c));
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::payload::Identity;
    use crate::report::{Measurements, Outcome, WindowReport};

    fn payload(outcome: Outcome, measurements: Option<Measurements>) -> ReportPayload {
        let r = WindowReport {
            bed: "bed-7".into(),
            window_index: 2,
            device_start_ns: 0,
            device_end_ns: 10_000_000_000,
            interpolated_fraction: 0.0,
            quality_index: 0.8,
            quality_reasons: vec![],
            measurements,
            outcome,
            masked_leads: vec![],
            timings: crate::report::WindowTimings::default(),
        };
        let identity = Identity {
            site: "st-mary".into(),
            unit: "icu-2".into(),
            gateway: "gw-1".into(),
            model_id: Some("tiny".into()),
            model_version: Some("0.1.0".into()),
            execution_provider: None,
        };
        ReportPayload::new(&identity, &r)
    }

    /// The FHIR R4 rules this module relies on, checked on a resource tree.
    fn check_fhir_rules(report: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        fn walk(v: &Value, at: &str, problems: &mut Vec<String>) {
            if is_empty(v) {
                problems.push(format!("{at}: empty or null (not allowed in FHIR JSON)"));
            }
            match v {
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, c)| walk(c, &format!("{at}/{k}"), problems)),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, c)| walk(c, &format!("{at}/{i}"), problems)),
                _ => {}
            }
        }
        walk(report, "", &mut problems);
        let id_ok = |id: &Value| {
            id.as_str().is_some_and(|s| {
                (1..=64).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
        };
        // DiagnosticReport: status (1..1, required binding) and code (1..1).
        if report["resourceType"] != "DiagnosticReport" {
            problems.push("resourceType".into());
        }
        let statuses = [
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ];
        if !statuses.contains(&report["status"].as_str().unwrap_or("")) {
            problems.push(format!("status {}", report["status"]));
        }
        if !report["code"]["coding"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["system"] == LOINC && c["code"] == "45033-8")
        }) {
            problems.push("code: LOINC 45033-8 missing".into());
        }
        if !id_ok(&report["id"]) {
            problems.push(format!("id {}", report["id"]));
        }
        // Contained resources: ids unique and valid, each referenced from `result` (dom-3),
        // and every `#` reference resolves.
        let contained = report["contained"].as_array().cloned().unwrap_or_default();
        let ids: Vec<&str> = contained.iter().filter_map(|c| c["id"].as_str()).collect();
        let refs: Vec<&str> = report["result"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["reference"].as_str()).collect())
            .unwrap_or_default();
        for r in &refs {
            if !r.strip_prefix('#').is_some_and(|id| ids.contains(&id)) {
                problems.push(format!("result reference {r} does not resolve"));
            }
        }
        for (obs, id) in contained.iter().zip(&ids) {
            if !refs.contains(&format!("#{id}").as_str()) {
                problems.push(format!("contained {id} is not referenced (dom-3)"));
            }
            if !id_ok(&obs["id"]) || obs["resourceType"] != "Observation" {
                problems.push(format!("contained {id}: id or type"));
            }
            // Observation: status and code required; obs-6: dataAbsentReason only without value.
            if !["registered", "preliminary", "final", "amended"]
                .contains(&obs["status"].as_str().unwrap_or(""))
            {
                problems.push(format!("{id}: status"));
            }
            if obs["code"]["coding"][0]["code"].as_str().is_none() {
                problems.push(format!("{id}: code"));
            }
            if obs.get("valueQuantity").is_some() == obs.get("dataAbsentReason").is_some() {
                problems.push(format!(
                    "{id}: exactly one of value[x] and dataAbsentReason (obs-6)"
                ));
            }
            if let Some(q) = obs.get("valueQuantity")
                && (q["system"] != UCUM || q["code"].as_str().is_none() || !q["value"].is_number())
            {
                problems.push(format!("{id}: quantity needs a UCUM code and a number"));
            }
        }
        ids.iter().enumerate().for_each(|(i, id)| {
            if ids[..i].contains(id) {
                problems.push(format!("duplicate contained id {id}"));
            }
        });
        problems
    }

    #[test]
    fn a_report_is_a_preliminary_diagnostic_report_with_coded_observations() {
        let p = payload(
            Outcome::Report {
                text: "Sinus rhythm".into(),
                codes: vec![],
                contradictions: vec!["rate".into()],
                withheld: vec![],
            },
            Some(Measurements {
                beats: 12,
                heart_rate_bpm: Some(72.0),
                rr_irregularity: Some(0.02),
                qrs_ms: None,
                axis_deg: Some(40.0),
            }),
        );
        let r = diagnostic_report(&p);
        assert_eq!(check_fhir_rules(&r), Vec::<String>::new(), "{r:#}");
        assert_eq!(r["status"], "preliminary");
        assert_eq!(r["conclusion"], "Sinus rhythm [CHECK: rate]");
        let hr = r["contained"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == "hr")
            .unwrap();
        assert_eq!(hr["code"]["coding"][0]["code"], "8867-4");
        assert_eq!(hr["valueQuantity"]["value"], 72.0);
        assert_eq!(
            r["result"].as_array().unwrap().len(),
            4,
            "hr, axis, rr, quality (no QRS)"
        );
        assert_eq!(r["subject"]["identifier"]["value"], "st-mary/icu-2/bed-7");
    }

    #[test]
    fn a_no_report_window_is_cancelled_with_its_reasons() {
        let p = payload(
            Outcome::NoReport {
                reasons: vec!["V1 lead off (required)".into()],
            },
            None,
        );
        let r = diagnostic_report(&p);
        assert_eq!(check_fhir_rules(&r), Vec::<String>::new(), "{r:#}");
        assert_eq!(r["status"], "cancelled");
        assert_eq!(r["conclusion"], "No report: V1 lead off (required)");
        assert!(r.get("conclusionCode").is_none(), "no empty arrays");
    }

    #[test]
    fn the_rule_check_catches_broken_resources() {
        let mut r = diagnostic_report(&payload(Outcome::report("x", None, &[]), None));
        r["result"][0]["reference"] = json!("#missing");
        r["status"] = json!("done");
        r["note"] = json!([]);
        let problems = check_fhir_rules(&r);
        for expected in [
            "does not resolve",
            "status",
            "empty or null",
            "not referenced",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }
}
