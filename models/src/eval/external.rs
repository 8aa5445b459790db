//! The external evaluation: 10-second windows of ECGs the project did not make (real PhysioNet
//! recordings and an independent simulator, `models/external/`), each with its expected rhythm
//! class and rate class from annotations or a documented measurement (`manifest.json`).
//!
//! Every window goes the way a user's record goes: the `meit` library's WFDB reader and lead
//! mapping ([`meit::wfdb::WfdbRecord::standard_leads`]), the model's preprocessing for that
//! device ([`device_preprocessor`]: absent leads masked), the quality gate, then the report from a
//! [`Reporter`] (the candle model or a bundle). Scored: the rhythm statement (its class equals the
//! expected one), the rate class the report implies, claims that need absent leads
//! ([`meit::report::unsupported_claims`]), the daemon's consistency flag
//! ([`meit::report::contradictions`] against the beats measured from the same window) and the
//! windows without a report, with why — in all, per source.
//!
//! Only the manifest's `test` split is scored; `dev` windows exist for any tuning and are never
//! scored here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meit::dsp::ModelInput;
use meit::ecg::Recording;
use meit::report::{Measurements, contradictions, unsupported_claims};
use meit::synth::report::parse_report;
use ndarray::s;
use serde::{Deserialize, Serialize};

use crate::codec::RecordCodec;
use crate::data::DataError;
use crate::generate::{Reporter, device_preprocessor};
use crate::model::ModelError;
use crate::train::TrainError;

/// The manifest file of an external set directory.
pub const MANIFEST: &str = "manifest.json";
/// Where the set's WFDB records lie, under its directory.
pub const RECORDS: &str = "records";

/// Which part of the set a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetSplit {
    /// Scored by the external evaluation; never used to train or tune.
    Test,
    /// For tuning; never scored here.
    Dev,
}

/// The rhythm a window shows, as a class of rhythm statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RhythmClass {
    /// Sinus rhythm at any rate, sinus arrhythmia (`SR`, `SBRAD`, `STACH`, `SARRH`).
    Sinus,
    /// Atrial fibrillation (`AFIB`).
    AtrialFibrillation,
    /// Atrial flutter (`AFLT`).
    AtrialFlutter,
    /// Ventricular paced rhythm (`PACE`).
    Paced,
}

impl RhythmClass {
    /// The class of a rhythm statement code; none for codes that are not a rhythm (ectopic
    /// beats, conduction, ...).
    pub fn of_code(code: &str) -> Option<RhythmClass> {
        match code {
            "SR" | "SBRAD" | "STACH" | "SARRH" => Some(RhythmClass::Sinus),
            "AFIB" => Some(RhythmClass::AtrialFibrillation),
            "AFLT" => Some(RhythmClass::AtrialFlutter),
            "PACE" => Some(RhythmClass::Paced),
            _ => None,
        }
    }
}

/// Ventricular rate class: bradycardia below 60 bpm, tachycardia above 100 bpm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateClass {
    /// Below 60 bpm.
    Bradycardia,
    /// 60-100 bpm.
    Normal,
    /// Above 100 bpm.
    Tachycardia,
}

impl RateClass {
    /// The class of a rate in bpm.
    pub fn of_bpm(bpm: f32) -> RateClass {
        if bpm < 60.0 {
            RateClass::Bradycardia
        } else if bpm > 100.0 {
            RateClass::Tachycardia
        } else {
            RateClass::Normal
        }
    }

    /// The rate class a report states: a stated ventricular rate if there is one, else its
    /// rhythm statements (sinus bradycardia, sinus tachycardia, sinus rhythm or arrhythmia:
    /// normal; atrial fibrillation by its slow / rapid ventricular response wording). None when
    /// the report implies no class or contradicting ones.
    pub fn of_report(text: &str) -> Option<RateClass> {
        let parsed = parse_report(text);
        if let Some(rate) = parsed.rate_bpm {
            return Some(RateClass::of_bpm(rate));
        }
        let has = |code: &str| parsed.codes.contains(&code);
        let lower = text.to_lowercase();
        let mut implied = Vec::new();
        if has("SBRAD") {
            implied.push(RateClass::Bradycardia);
        }
        if has("STACH") {
            implied.push(RateClass::Tachycardia);
        }
        if implied.is_empty() && (has("SR") || has("SARRH")) {
            implied.push(RateClass::Normal);
        }
        if has("AFIB") {
            implied.push(if lower.contains("rapid ventricular response") {
                RateClass::Tachycardia
            } else if lower.contains("slow ventricular response") {
                RateClass::Bradycardia
            } else {
                RateClass::Normal
            });
        }
        implied.dedup();
        match implied[..] {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// One window of the set (a WFDB record of at least one model window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalWindow {
    /// Record name under `records/` (without `.hea`).
    pub record: String,
    /// Test or development split.
    pub split: SetSplit,
    /// Where it comes from (`mitdb-100`, `nk2-ecgsyn`, ...).
    pub source: String,
    /// The rhythm it shows.
    pub rhythm: RhythmClass,
    /// Its ventricular rate, bpm.
    pub rate_bpm: f32,
    /// The class of that rate.
    pub rate_class: RateClass,
    /// The record's signal names, as written.
    pub leads: Vec<String>,
    /// How rhythm and rate were established (annotations or a measurement).
    pub reference: String,
}

/// `manifest.json` of an external set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalManifest {
    /// Window length the set was cut for, seconds.
    pub window_s: f64,
    /// The windows.
    pub windows: Vec<ExternalWindow>,
}

impl ExternalManifest {
    /// Reads `DIR/manifest.json`; a window whose rate class disagrees with its rate is refused.
    pub fn read(dir: &Path) -> Result<ExternalManifest, TrainError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: ExternalManifest =
            serde_json::from_str(&text).map_err(|e| TrainError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        for w in &manifest.windows {
            if !w.rate_bpm.is_finite() || RateClass::of_bpm(w.rate_bpm) != w.rate_class {
                return Err(TrainError::File {
                    path,
                    message: format!(
                        "window {}: rate_class {:?} does not match rate_bpm {}",
                        w.record, w.rate_class, w.rate_bpm
                    ),
                });
            }
        }
        Ok(manifest)
    }
}

/// What came of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowScore {
    /// The record.
    pub record: String,
    /// Its source.
    pub source: String,
    /// Expected rhythm class.
    pub rhythm: RhythmClass,
    /// Expected rate class.
    pub rate_class: RateClass,
    /// Signals the lead mapping did not take as ECG leads.
    pub ignored_signals: Vec<String>,
    /// Leads the model saw masked.
    pub masked_leads: Vec<String>,
    /// The report; none when the window got no report.
    pub report: Option<String>,
    /// Why there is no report (empty with a report).
    pub no_report_reasons: Vec<String>,
    /// Rhythm classes the report states.
    pub stated_rhythm: Vec<RhythmClass>,
    /// The rate class the report implies.
    pub stated_rate_class: Option<RateClass>,
    /// The report states exactly the expected rhythm class.
    pub rhythm_right: bool,
    /// The report implies the expected rate class.
    pub rate_class_right: bool,
    /// Statements that need leads the window lacked.
    pub unsupported_claims: Vec<String>,
    /// Rate measured by the daemon's beat analysis on the window, bpm.
    pub measured_rate_bpm: Option<f32>,
    /// The daemon's consistency flag: where the text disagrees with the measured rhythm/rate.
    pub contradictions: Vec<String>,
}

/// Counts over a group of windows (the whole set or one source).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExternalCounts {
    /// Test windows.
    pub windows: usize,
    /// Windows whose report states exactly the expected rhythm class.
    pub rhythm_right: usize,
    /// Windows whose report implies the expected rate class.
    pub rate_class_right: usize,
    /// Statements needing absent leads, over all reports.
    pub unsupported_claims: usize,
    /// Windows without a report.
    pub no_report: usize,
    /// Reports the consistency flag marks (text vs measured rhythm or rate).
    pub flagged: usize,
    /// Why windows got no report: each reason and how many windows gave it.
    pub no_report_reasons: BTreeMap<String, usize>,
}

impl ExternalCounts {
    fn add(&mut self, w: &WindowScore) {
        self.windows += 1;
        self.rhythm_right += usize::from(w.rhythm_right);
        self.rate_class_right += usize::from(w.rate_class_right);
        self.unsupported_claims += w.unsupported_claims.len();
        self.no_report += usize::from(w.report.is_none());
        self.flagged += usize::from(!w.contradictions.is_empty());
        for reason in &w.no_report_reasons {
            *self.no_report_reasons.entry(reason.clone()).or_insert(0) += 1;
        }
    }

    /// Share of windows with the right rhythm statement, percent (none without windows).
    pub fn rhythm_percent(&self) -> Option<f64> {
        percent(self.rhythm_right, self.windows)
    }

    /// Share of windows with the right rate class, percent.
    pub fn rate_class_percent(&self) -> Option<f64> {
        percent(self.rate_class_right, self.windows)
    }
}

fn percent(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| 100.0 * n as f64 / of as f64)
}

/// The external evaluation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalResult {
    /// The set's directory.
    pub dir: PathBuf,
    /// All test windows.
    pub total: ExternalCounts,
    /// Per source, by name.
    pub per_source: BTreeMap<String, ExternalCounts>,
    /// Every test window.
    pub windows: Vec<WindowScore>,
}

/// A window read and preprocessed, waiting for its report.
struct Prepared {
    window: ExternalWindow,
    ignored: Vec<String>,
    input: Option<ModelInput>,
    refused: Vec<String>,
    measured: Option<Measurements>,
}

/// Evaluates the `test` windows of the external set in `dir` with `reporter`.
pub fn evaluate_external(
    dir: &Path,
    reporter: &mut dyn Reporter,
    codec: &RecordCodec,
) -> Result<ExternalResult, TrainError> {
    let manifest = ExternalManifest::read(dir)?;
    let window_s = codec.preprocessor().spec().window_seconds;
    let prepared = manifest
        .windows
        .into_iter()
        .filter(|w| w.split == SetSplit::Test)
        .map(|w| prepare(dir, w, codec, window_s))
        .collect::<Result<Vec<_>, _>>()?;
    let reportable: Vec<&ModelInput> = prepared
        .iter()
        .filter_map(|p| p.input.as_ref().filter(|i| i.quality.is_reportable()))
        .collect();
    let prompts = vec![0; reportable.len()];
    let mut reports = reporter.reports(&reportable, &prompts)?.into_iter();
    let mut result = ExternalResult {
        dir: dir.to_path_buf(),
        total: ExternalCounts::default(),
        per_source: BTreeMap::new(),
        windows: Vec::new(),
    };
    for p in prepared {
        let masked = p
            .input
            .as_ref()
            .map(|i| i.lead_mask.missing())
            .unwrap_or_default();
        let report = match &p.input {
            Some(input) if input.quality.is_reportable() => {
                Some(reports.next().ok_or_else(|| {
                    ModelError::Input(format!("{} gave too few reports", reporter.describe()))
                })?)
            }
            _ => None,
        };
        let score = score_window(p, report, &masked);
        result.total.add(&score);
        result
            .per_source
            .entry(score.source.clone())
            .or_default()
            .add(&score);
        result.windows.push(score);
    }
    Ok(result)
}

/// Reads one window's record, cuts its first model window and preprocesses it as `generate`
/// does; measures its beats as the daemon does.
fn prepare(
    dir: &Path,
    window: ExternalWindow,
    codec: &RecordCodec,
    window_s: f64,
) -> Result<Prepared, TrainError> {
    let hea = dir.join(RECORDS).join(format!("{}.hea", window.record));
    let record = meit::wfdb::read_record(&hea).map_err(|source| DataError::Wfdb {
        path: hea.clone(),
        source,
    })?;
    let selection = record.standard_leads();
    let recording = selection.recording;
    let mut prepared = Prepared {
        window,
        ignored: selection.ignored,
        input: None,
        refused: Vec::new(),
        measured: None,
    };
    if recording.leads.0.is_empty() {
        prepared.refused.push(format!(
            "no signal is a lead the model knows (signals: {})",
            prepared.ignored.join(", ")
        ));
        return Ok(prepared);
    }
    let frames = (window_s * recording.sample_rate_hz).round() as usize;
    if recording.len() < frames {
        return Err(TrainError::File {
            path: hea,
            message: format!(
                "{:.2} s is shorter than the model's {window_s} s window",
                recording.duration_s()
            ),
        });
    }
    let slice = Recording {
        sample_rate_hz: recording.sample_rate_hz,
        leads: recording.leads.clone(),
        samples_uv: recording.samples_uv.slice(s![.., ..frames]).to_owned(),
    };
    let input = device_preprocessor(codec, &slice.leads)?
        .process_recording(&slice)
        .map_err(|source| DataError::Preprocess {
            id: prepared.window.record.clone(),
            source,
        })?;
    if !input.quality.is_reportable() {
        prepared.refused = input
            .quality
            .reasons
            .iter()
            .filter(|r| r.blocks_report())
            .map(ToString::to_string)
            .collect();
    }
    prepared.measured = measure(&slice);
    prepared.input = Some(input);
    Ok(prepared)
}

/// The daemon's beat measurements of a window (none when no beat is found or the window cannot
/// be analysed).
pub fn measure(window: &Recording) -> Option<Measurements> {
    match meit::dsp::beats::analyze(window) {
        Ok(analysis) if !analysis.r_peaks.is_empty() => Some(Measurements::from(&analysis)),
        _ => None,
    }
}

fn score_window(p: Prepared, report: Option<String>, masked: &[meit::ecg::Lead]) -> WindowScore {
    let w = p.window;
    let mut score = WindowScore {
        record: w.record,
        source: w.source,
        rhythm: w.rhythm,
        rate_class: w.rate_class,
        ignored_signals: p.ignored,
        masked_leads: masked.iter().map(|l| l.name().to_string()).collect(),
        report: None,
        no_report_reasons: p.refused,
        stated_rhythm: Vec::new(),
        stated_rate_class: None,
        rhythm_right: false,
        rate_class_right: false,
        unsupported_claims: Vec::new(),
        measured_rate_bpm: p.measured.as_ref().and_then(|m| m.heart_rate_bpm),
        contradictions: Vec::new(),
    };
    let Some(text) = report else {
        return score;
    };
    let parsed = parse_report(&text);
    let mut stated: Vec<RhythmClass> = parsed
        .codes
        .iter()
        .filter_map(|c| RhythmClass::of_code(c))
        .collect();
    stated.sort();
    stated.dedup();
    score.rhythm_right = stated == [w.rhythm];
    score.stated_rhythm = stated;
    score.stated_rate_class = RateClass::of_report(&text);
    score.rate_class_right = score.stated_rate_class == Some(w.rate_class);
    score.unsupported_claims = unsupported_claims(&parsed.codes, masked);
    score.contradictions = p
        .measured
        .as_ref()
        .map(|m| contradictions(&text, m))
        .unwrap_or_default();
    score.report = Some(text);
    score
}

impl ExternalResult {
    /// The Markdown section: the whole set and each source, then every window that went wrong.
    pub fn to_markdown(&self) -> String {
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let mut out = format!(
            "## External set (`{}`, test split)\n\n\
             10-second windows of ECGs the project did not make, never used to train or tune; \
             rhythm right: the report's rhythm statements are exactly the expected class; rate \
             class: bradycardia < 60, normal 60-100, tachycardia > 100 bpm, as the report states \
             it; flagged: the daemon's consistency flag (text vs the rhythm and rate its beat \
             analysis measures on the window). Targets: rhythm >= 95 %, rate class >= 95 %, 0 \
             claims needing absent leads.\n\n\
             | source | windows | rhythm right (%) | rate class right (%) | claims needing absent leads | no report | flagged |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
            self.dir.display()
        );
        let rows = std::iter::once(("all", &self.total))
            .chain(self.per_source.iter().map(|(s, c)| (s.as_str(), c)));
        for (name, c) in rows {
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                c.windows,
                pct(c.rhythm_percent()),
                pct(c.rate_class_percent()),
                c.unsupported_claims,
                c.no_report,
                c.flagged
            ));
        }
        if !self.total.no_report_reasons.is_empty() {
            let reasons: Vec<String> = self
                .total
                .no_report_reasons
                .iter()
                .map(|(r, n)| format!("{r} ({n})"))
                .collect();
            out.push_str(&format!(
                "\nWhy windows got no report: {}\n",
                reasons.join(", ")
            ));
        }
        let wrong: Vec<&WindowScore> = self
            .windows
            .iter()
            .filter(|w| {
                !w.rhythm_right
                    || !w.rate_class_right
                    || !w.unsupported_claims.is_empty()
                    || !w.contradictions.is_empty()
            })
            .collect();
        if !wrong.is_empty() {
            out.push_str(
                "\nWindows with a wrong rhythm or rate class, a claim needing absent leads or a \
                 flag:\n\n| record | expected | measured bpm | masked | report or why none | flag |\n|---|---|---:|---|---|---|\n",
            );
            for w in wrong {
                let text = match &w.report {
                    Some(t) => t.clone(),
                    None => format!("NO REPORT ({})", w.no_report_reasons.join("; ")),
                };
                out.push_str(&format!(
                    "| {} | {:?}, {:?} | {} | {} | {} | {} |\n",
                    w.record,
                    w.rhythm,
                    w.rate_class,
                    w.measured_rate_bpm
                        .map_or_else(|| "-".to_string(), |r| format!("{r:.0}")),
                    if w.masked_leads.is_empty() {
                        "-".to_string()
                    } else {
                        w.masked_leads.join(" ")
                    },
                    text.replace('|', "/"),
                    w.contradictions
                        .iter()
                        .chain(&w.unsupported_claims)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                        .replace('|', "/")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_classes_follow_the_60_and_100_bpm_borders() {
        assert_eq!(RateClass::of_bpm(59.9), RateClass::Bradycardia);
        assert_eq!(RateClass::of_bpm(60.0), RateClass::Normal);
        assert_eq!(RateClass::of_bpm(100.0), RateClass::Normal);
        assert_eq!(RateClass::of_bpm(100.1), RateClass::Tachycardia);
    }

    #[test]
    fn a_report_implies_its_rate_class_from_its_statements_or_a_stated_rate() {
        let of = RateClass::of_report;
        assert_eq!(
            of("Sinus bradycardia. Borderline ECG"),
            Some(RateClass::Bradycardia)
        );
        assert_eq!(
            of("sinus tachycardia. abnormal ecg."),
            Some(RateClass::Tachycardia)
        );
        assert_eq!(of("Sinus rhythm. Normal ECG"), Some(RateClass::Normal));
        assert_eq!(
            of("Atrial fibrillation with rapid ventricular response"),
            Some(RateClass::Tachycardia)
        );
        assert_eq!(
            of("Atrial fibrillation with slow ventricular response"),
            Some(RateClass::Bradycardia)
        );
        // A stated rate wins over the wording; contradicting statements imply nothing.
        assert_eq!(
            of("Sinus rhythm, rate 112 bpm"),
            Some(RateClass::Tachycardia)
        );
        assert_eq!(of("Sinus bradycardia. Sinus tachycardia"), None);
        assert_eq!(of("Atrial flutter with 2:1 A-V conduction"), None);
        assert_eq!(of(""), None);
    }

    #[test]
    fn rhythm_classes_group_the_rhythm_statements() {
        for code in ["SR", "SBRAD", "STACH", "SARRH"] {
            assert_eq!(RhythmClass::of_code(code), Some(RhythmClass::Sinus));
        }
        assert_eq!(
            RhythmClass::of_code("AFIB"),
            Some(RhythmClass::AtrialFibrillation)
        );
        assert_eq!(RhythmClass::of_code("PVC"), None);
        assert_eq!(RhythmClass::of_code("CRBBB"), None);
    }

    fn window(record: &str, rhythm: RhythmClass, rate_class: RateClass) -> Prepared {
        Prepared {
            window: ExternalWindow {
                record: record.into(),
                split: SetSplit::Test,
                source: "src".into(),
                rhythm,
                rate_bpm: 75.0,
                rate_class,
                leads: vec!["II".into()],
                reference: String::new(),
            },
            ignored: Vec::new(),
            input: None,
            refused: Vec::new(),
            measured: Some(Measurements {
                beats: 12,
                heart_rate_bpm: Some(75.0),
                rr_irregularity: Some(0.02),
                qrs_ms: Some(90.0),
                axis_deg: None,
            }),
        }
    }

    #[test]
    fn a_window_is_scored_on_rhythm_rate_class_leads_and_the_consistency_flag() {
        use meit::ecg::Lead;
        let chest: Vec<Lead> = Lead::STANDARD_12
            .into_iter()
            .filter(|l| *l != Lead::II)
            .collect();
        let right = score_window(
            window("a", RhythmClass::Sinus, RateClass::Normal),
            Some("Sinus rhythm. Premature atrial complexes".into()),
            &chest,
        );
        assert!(right.rhythm_right && right.rate_class_right);
        assert!(right.unsupported_claims.is_empty() && right.contradictions.is_empty());
        // Flutter from a sinus window at 75 bpm: rhythm and rate class wrong; a bundle-branch
        // block and a verdict from lead II alone: two claims needing absent leads; "sinus
        // tachycardia" at a measured 75 bpm: flagged.
        let wrong = score_window(
            window("b", RhythmClass::Sinus, RateClass::Normal),
            Some(
                "Atrial flutter with 2:1 A-V conduction. Right bundle branch block. Abnormal ECG"
                    .into(),
            ),
            &chest,
        );
        assert!(!wrong.rhythm_right && !wrong.rate_class_right);
        assert_eq!(wrong.unsupported_claims.len(), 2);
        let flagged = score_window(
            window("c", RhythmClass::Sinus, RateClass::Normal),
            Some("Sinus tachycardia".into()),
            &[],
        );
        assert!(flagged.rhythm_right && !flagged.rate_class_right);
        assert_eq!(
            flagged.contradictions.len(),
            1,
            "{:?}",
            flagged.contradictions
        );
        // Two rhythm classes at once are not the expected one.
        let both = score_window(
            window("d", RhythmClass::Sinus, RateClass::Normal),
            Some("Sinus rhythm. Atrial fibrillation".into()),
            &[],
        );
        assert!(!both.rhythm_right);
        let mut counts = ExternalCounts::default();
        for w in [&right, &wrong, &flagged, &both] {
            counts.add(w);
        }
        counts.add(&score_window(
            Prepared {
                refused: vec!["II flat (required)".into()],
                ..window("e", RhythmClass::Sinus, RateClass::Normal)
            },
            None,
            &[],
        ));
        // Rate class right: `right` and `both` ("Sinus rhythm" states a normal rate).
        assert_eq!(
            (counts.windows, counts.rhythm_right, counts.rate_class_right),
            (5, 2, 2)
        );
        // Flagged: `flagged`, and `both` (atrial fibrillation against a regular 75 bpm).
        assert_eq!(
            (counts.no_report, counts.flagged, counts.unsupported_claims),
            (1, 2, 2)
        );
        assert_eq!(counts.no_report_reasons["II flat (required)"], 1);
        assert_eq!(counts.rhythm_percent(), Some(40.0));
    }

    #[test]
    fn the_committed_manifest_reads_and_has_two_sources_and_40_test_windows() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("external");
        let manifest = ExternalManifest::read(&dir).expect("models/external/manifest.json");
        let test: Vec<&ExternalWindow> = manifest
            .windows
            .iter()
            .filter(|w| w.split == SetSplit::Test)
            .collect();
        assert!(test.len() >= 40, "{} test windows", test.len());
        let real = test.iter().any(|w| w.source.starts_with("mitdb"));
        let simulated = test.iter().any(|w| w.source.starts_with("nk2"));
        assert!(real && simulated);
        for class in [
            RateClass::Bradycardia,
            RateClass::Normal,
            RateClass::Tachycardia,
        ] {
            assert!(test.iter().any(|w| w.rate_class == class), "{class:?}");
        }
        // Every record reads with the library's reader, at least one window long.
        for w in &manifest.windows {
            let hea = dir.join(RECORDS).join(format!("{}.hea", w.record));
            let record = meit::wfdb::read_record(&hea).expect(&w.record);
            let recording = record.standard_leads().recording;
            assert!(
                recording.duration_s() >= manifest.window_s - 1e-6 || recording.leads.0.is_empty()
            );
        }
        // No window is in both splits.
        let dev: Vec<&str> = manifest
            .windows
            .iter()
            .filter(|w| w.split == SetSplit::Dev)
            .map(|w| w.record.as_str())
            .collect();
        assert!(test.iter().all(|w| !dev.contains(&w.record.as_str())));
    }

    #[test]
    fn a_manifest_with_a_rate_class_that_contradicts_its_rate_is_refused() {
        let dir = std::env::temp_dir().join(format!("meit-external-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = r#"{"window_s": 10.0, "windows": [{"record": "x", "split": "test",
            "source": "s", "rhythm": "sinus", "rate_bpm": 120.0, "rate_class": "normal",
            "leads": ["II"], "reference": ""}]}"#;
        std::fs::write(dir.join(MANIFEST), bad).unwrap();
        let err = ExternalManifest::read(&dir).unwrap_err().to_string();
        assert!(err.contains("rate_class") && err.contains('x'), "{err}");
        std::fs::write(dir.join(MANIFEST), bad.replace("\"sinus\"", "\"nodal\"")).unwrap();
        let err = ExternalManifest::read(&dir).unwrap_err().to_string();
        assert!(err.contains("nodal"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
