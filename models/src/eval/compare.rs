//! Two evaluations of the same held-out records compared record by record: the `test` row's
//! macro F1 of each and the paired bootstrap interval of their difference
//! ([`macro_f1_difference_interval`]). Two models' intervals of their own overlap far more than
//! their difference varies: the records both are judged on are shared, and the paired draws
//! cancel them. `meit-models compare` prints it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::clinical::{ClinicalCase, Interval, macro_f1_difference_interval, score_cases};

/// One record of an evaluation's `test` row as scored, kept in the evaluation's JSON
/// (`test_records`) so another evaluation of the same records can be compared with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredRecord {
    /// The reference statement codes, space-separated.
    pub reference: String,
    /// The generated report; empty when the quality gate refused the record.
    pub report: String,
}

impl ScoredRecord {
    /// The record of `case`.
    pub fn of(case: &ClinicalCase) -> ScoredRecord {
        ScoredRecord {
            reference: case.reference_codes.join(" "),
            report: case.generated.clone(),
        }
    }

    /// The case to score. Which leads the input had decides only the unsupported-claim count,
    /// not macro F1, and is not kept: every lead counts as present.
    fn case(&self) -> ClinicalCase {
        ClinicalCase {
            reference_codes: self
                .reference
                .split_whitespace()
                .map(String::from)
                .collect(),
            generated: self.report.clone(),
            available: meit::ecg::Lead::STANDARD_12.to_vec(),
            reference_rate_bpm: None,
        }
    }
}

/// Why two evaluations could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// An evaluation file could not be read or is not JSON.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file has no per-record figures.
    #[error(
        "{0}: no `test_records` (an evaluation written before they were kept, or not a \
         `meit-models eval` JSON): evaluate the model again"
    )]
    NoRecords(PathBuf),
    /// The two evaluations are of different records.
    #[error("not the same test records: {0}")]
    DifferentRecords(String),
}

/// The comparison of a candidate evaluation against a baseline on their shared `test` records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The baseline's generator (model or bundle).
    pub baseline: String,
    /// The candidate's generator.
    pub candidate: String,
    /// Records compared.
    pub records: usize,
    /// Macro F1 of the baseline on them.
    pub baseline_macro_f1: Option<f64>,
    /// Macro F1 of the candidate on them.
    pub candidate_macro_f1: Option<f64>,
    /// The paired bootstrap interval of candidate - baseline.
    pub difference: Option<Interval>,
    /// Records whose report differs between the two.
    pub changed_reports: usize,
}

impl Comparison {
    /// One Markdown line.
    pub fn to_markdown(&self) -> String {
        let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"));
        let difference = match (self.candidate_macro_f1, self.baseline_macro_f1) {
            (Some(c), Some(b)) => format!("{:+.3}", c - b),
            _ => "n/a".to_string(),
        };
        let interval = self.difference.map_or_else(
            || "no interval".to_string(),
            |i| {
                format!(
                    "{:.0} % paired bootstrap interval {:+.3} to {:+.3} ({} resamples)",
                    i.level * 100.0,
                    i.low,
                    i.high,
                    i.resamples
                )
            },
        );
        format!(
            "{} records, {} reports changed: macro F1 {} ({}) -> {} ({}), difference {difference}, \
             {interval}",
            self.records,
            self.changed_reports,
            show(self.baseline_macro_f1),
            self.baseline,
            show(self.candidate_macro_f1),
            self.candidate,
        )
    }
}

/// Compares the evaluation JSON at `candidate` against the one at `baseline` (both from
/// `meit-models eval`, of the same records: the same run config's test split and record
/// count): `resamples` paired draws seeded by `seed`, a 95 % interval.
pub fn compare(
    baseline: &Path,
    candidate: &Path,
    resamples: usize,
    seed: u64,
) -> Result<Comparison, CompareError> {
    let (generator_a, a) = read(baseline)?;
    let (generator_b, b) = read(candidate)?;
    if a.len() != b.len() {
        return Err(CompareError::DifferentRecords(format!(
            "{} has {} records, {} has {}",
            baseline.display(),
            a.len(),
            candidate.display(),
            b.len()
        )));
    }
    if let Some(i) = (0..a.len()).find(|&i| a[i].reference != b[i].reference) {
        return Err(CompareError::DifferentRecords(format!(
            "record {i} is \"{}\" in {} and \"{}\" in {}",
            a[i].reference,
            baseline.display(),
            b[i].reference,
            candidate.display()
        )));
    }
    let cases_a: Vec<ClinicalCase> = a.iter().map(ScoredRecord::case).collect();
    let cases_b: Vec<ClinicalCase> = b.iter().map(ScoredRecord::case).collect();
    Ok(Comparison {
        baseline: generator_a,
        candidate: generator_b,
        records: a.len(),
        baseline_macro_f1: score_cases(&cases_a).macro_f1,
        candidate_macro_f1: score_cases(&cases_b).macro_f1,
        difference: macro_f1_difference_interval(&cases_a, &cases_b, 0.95, resamples, seed),
        changed_reports: a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.report != y.report)
            .count(),
    })
}

/// The generator and the `test_records` of the evaluation JSON at `path`.
fn read(path: &Path) -> Result<(String, Vec<ScoredRecord>), CompareError> {
    #[derive(Deserialize)]
    struct Saved {
        generator: String,
        #[serde(default)]
        test_records: Option<Vec<ScoredRecord>>,
    }
    let file = |message: String| CompareError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| file(e.to_string()))?;
    match saved.test_records {
        Some(records) if !records.is_empty() => Ok((saved.generator, records)),
        _ => Err(CompareError::NoRecords(path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, generator: &str, records: &[(&str, &str)]) -> PathBuf {
        let records: Vec<ScoredRecord> = records
            .iter()
            .map(|(reference, report)| ScoredRecord {
                reference: reference.to_string(),
                report: report.to_string(),
            })
            .collect();
        let path = dir.join(name);
        let json = serde_json::json!({ "generator": generator, "test_records": records });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    /// 40 records alternating sinus rhythm and atrial fibrillation; `missed` of the AF records
    /// (the first ones) reported as sinus rhythm.
    fn records(missed: usize) -> Vec<(&'static str, &'static str)> {
        (0..40)
            .map(|i| match i % 2 {
                0 => ("SR NORM", "Sinus rhythm. Normal ECG."),
                _ if i / 2 < missed => ("AFIB ABN", "Sinus rhythm. Abnormal ECG."),
                _ => ("AFIB ABN", "Atrial fibrillation. Abnormal ECG."),
            })
            .collect()
    }

    #[test]
    fn a_candidate_that_fixes_misses_is_better_by_a_paired_interval_above_zero() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", "model a", &records(6));
        let b = write(dir.path(), "b.json", "model b", &records(0));
        let c = compare(&a, &b, 400, 1).unwrap();
        assert_eq!((c.records, c.changed_reports), (40, 6));
        assert_eq!(c.candidate_macro_f1, Some(1.0));
        let (fa, fb) = (c.baseline_macro_f1.unwrap(), c.candidate_macro_f1.unwrap());
        assert!(fa < 0.9, "{fa}");
        let d = c.difference.unwrap();
        assert!(
            d.low > 0.0 && d.low <= fb - fa && fb - fa <= d.high,
            "{d:?}"
        );
        let line = c.to_markdown();
        assert!(line.contains("model a") && line.contains("+0."), "{line}");
        // Against itself: no difference at all.
        let same = compare(&a, &a, 400, 1).unwrap();
        assert_eq!(same.changed_reports, 0);
        let d = same.difference.unwrap();
        assert_eq!((d.low, d.high), (0.0, 0.0));
    }

    #[test]
    fn evaluations_of_other_records_or_without_records_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", "a", &records(0));
        let shorter = write(dir.path(), "short.json", "s", &records(0)[..39]);
        let err = compare(&a, &shorter, 10, 1).unwrap_err().to_string();
        assert!(err.contains("40 records") && err.contains("39"), "{err}");
        let mut swapped = records(0);
        swapped.swap(0, 1);
        let other = write(dir.path(), "other.json", "o", &swapped);
        let err = compare(&a, &other, 10, 1).unwrap_err().to_string();
        assert!(err.contains("record 0 is \"SR NORM\""), "{err}");
        let old = dir.path().join("old.json");
        std::fs::write(&old, r#"{"generator": "g", "results": []}"#).unwrap();
        let err = compare(&old, &a, 10, 1).unwrap_err();
        assert!(matches!(err, CompareError::NoRecords(_)), "{err}");
        assert!(err.to_string().contains("old.json"), "{err}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{").unwrap();
        let err = compare(&a, &broken, 10, 1).unwrap_err();
        assert!(matches!(err, CompareError::File { .. }), "{err}");
        let err = compare(&a, &dir.path().join("absent.json"), 10, 1).unwrap_err();
        assert!(err.to_string().contains("absent.json"), "{err}");
    }
}
