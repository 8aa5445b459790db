//! MIMIC-IV-ECG v1.0 (`record_list.csv` + `machine_measurements.csv` + `files/`): the two
//! tables are joined on `study_id` when the data set is opened; signals are read one record
//! at a time as a split is walked.
//!
//! - Report: the non-empty `report_0`..`report_17` machine statements joined with ". ",
//!   lower-cased by default as in the MEIT paper ([`MimicOptions::lowercase`]). Reports
//!   under 4 words are dropped (the paper's filter, 771,693 pairs remain of the real set);
//!   [`MimicDataset::dropped`] counts them.
//! - Rate: 60000 / `rr_interval` (ms). `29999` (MIMIC's missing value), an empty cell or an
//!   RR outside 150-3000 ms (400-20 bpm, a measurement program's failure rather than a
//!   rhythm) give no rate.
//! - Codes: none (MIMIC-IV-ECG gives text only).
//! - Split: MIMIC-IV-ECG has no official split. Each patient goes to one split by a hash of
//!   `subject_id` ([`split_of_subject`]): about 90 % train, 5 % validation, 5 % test, the
//!   same on every machine and run, and no patient's ECGs are in two splits.
//! - Leads: the file's order, which in MIMIC-IV-ECG puts aVF before aVL; the dsp lead mapper
//!   puts them in the model's order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::table::{CsvTable, IndexedRecord, SplitIndex, header_in};
use super::{DataError, Split};

/// MIMIC-IV-ECG's value for a measurement the cart did not make.
const MISSING: &str = "29999";
/// Machine-statement columns: `report_0` .. `report_17`.
const REPORT_COLUMNS: usize = 18;
/// RR intervals (ms) that can be a heart's; others are treated as missing.
const PLAUSIBLE_RR_MS: std::ops::RangeInclusive<f32> = 150.0..=3000.0;

/// How reports are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimicOptions {
    /// Lower-case the report (the MEIT paper does).
    pub lowercase: bool,
    /// Drop records whose report has fewer words (the paper: 4).
    pub min_words: usize,
}

impl Default for MimicOptions {
    /// The MEIT paper's preparation: lower-cased, at least 4 words.
    fn default() -> Self {
        MimicOptions {
            lowercase: true,
            min_words: 4,
        }
    }
}

/// Studies of `record_list.csv` left out when the data set was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Reports shorter than [`MimicOptions::min_words`].
    pub short_report: usize,
    /// Studies without a row in `machine_measurements.csv`.
    pub no_measurements: usize,
}

/// The split of a patient: a fixed hash of `subject_id` into 100 buckets, 0-89 train, 90-94
/// validation, 95-99 test.
pub fn split_of_subject(subject_id: &str) -> Split {
    // FNV-1a over the text, then the SplitMix64 finaliser to spread neighbouring ids.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in subject_id.trim().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    match h % 100 {
        0..90 => Split::Train,
        90..95 => Split::Validation,
        _ => Split::Test,
    }
}

/// An opened MIMIC-IV-ECG tree.
#[derive(Debug, Clone)]
pub struct MimicDataset {
    root: PathBuf,
    options: MimicOptions,
    index: SplitIndex,
    dropped: Dropped,
}

/// What `machine_measurements.csv` says about one study.
struct Measured {
    /// The prepared report.
    report: String,
    rate_bpm: Option<f32>,
}

impl MimicDataset {
    /// Opens `root` with the paper's report preparation ([`MimicOptions::default`]).
    pub fn open(root: &Path) -> Result<Self, DataError> {
        Self::open_with(root, MimicOptions::default())
    }

    /// Reads and joins `<root>/record_list.csv` and `<root>/machine_measurements.csv`. A
    /// missing column, a repeated study, an unreadable `rr_interval` or a path leaving the
    /// tree is an error naming the file and line; signal files are not touched until records
    /// are read.
    pub fn open_with(root: &Path, options: MimicOptions) -> Result<Self, DataError> {
        let mut measured = read_measurements(root, options)?;
        let mut table = CsvTable::open(&root.join("record_list.csv"))?;
        let subject_id = table.column("subject_id")?;
        let study_id = table.column("study_id")?;
        let path = table.column("path")?;
        let mut index = SplitIndex::default();
        let mut dropped = Dropped::default();
        while let Some(row) = table.next_data_row()? {
            let study = row.get(study_id);
            let relative = row.get(path);
            let header = header_in(root, relative).ok_or_else(|| {
                table.error(
                    row.line,
                    format!("record path `{relative}` is not a relative path inside the data set"),
                )
            })?;
            let Some(m) = measured.remove(study) else {
                dropped.no_measurements += 1;
                continue;
            };
            if m.report.split_whitespace().count() < options.min_words {
                dropped.short_report += 1;
                continue;
            }
            index.push(
                split_of_subject(row.get(subject_id)),
                IndexedRecord {
                    id: format!("mimic:{study}"),
                    header,
                    report: m.report,
                    codes: Vec::new(),
                    rate_bpm: m.rate_bpm,
                },
            );
        }
        Ok(MimicDataset {
            root: root.to_path_buf(),
            options,
            index,
            dropped,
        })
    }

    /// The data set's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How reports were prepared.
    pub fn options(&self) -> MimicOptions {
        self.options
    }

    /// What was left out, and why.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The records of each split (count, read one, iterate).
    pub fn splits(&self) -> &SplitIndex {
        &self.index
    }
}

/// `machine_measurements.csv` by `study_id`: the prepared report and the rate.
fn read_measurements(
    root: &Path,
    options: MimicOptions,
) -> Result<HashMap<String, Measured>, DataError> {
    let mut table = CsvTable::open(&root.join("machine_measurements.csv"))?;
    let study_id = table.column("study_id")?;
    let rr_interval = table.column("rr_interval")?;
    let first_report = table.column("report_0")?;
    let reports: Vec<usize> = std::iter::once(Ok(first_report))
        .chain(
            (1..REPORT_COLUMNS)
                .map(|k| format!("report_{k}"))
                .filter(|name| table.has_column(name))
                .map(|name| table.column(&name)),
        )
        .collect::<Result<_, _>>()?;
    let mut measured = HashMap::new();
    let mut first_line = HashMap::new();
    while let Some(row) = table.next_data_row()? {
        let study = row.get(study_id).to_string();
        if let Some(first) = first_line.insert(study.clone(), row.line) {
            return Err(table.error(
                row.line,
                format!("study_id {study} already appears on line {first}"),
            ));
        }
        let rr_text = row.get(rr_interval);
        let rate_bpm = rate_from_rr(rr_text).map_err(|()| {
            table.error(row.line, format!("rr_interval `{rr_text}` is not a number"))
        })?;
        let statements: Vec<&str> = reports
            .iter()
            .map(|&c| row.get(c))
            .filter(|s| !s.is_empty())
            .collect();
        let joined = statements.join(". ");
        let report = if options.lowercase {
            joined.to_lowercase()
        } else {
            joined
        };
        measured.insert(study, Measured { report, rate_bpm });
    }
    Ok(measured)
}

/// The rate an `rr_interval` cell gives: `Ok(None)` when missing or implausible, `Err` when
/// it is not a number.
fn rate_from_rr(cell: &str) -> Result<Option<f32>, ()> {
    if cell.is_empty() || cell == MISSING {
        return Ok(None);
    }
    let rr_ms: f32 = cell.parse().map_err(|_| ())?;
    Ok(PLAUSIBLE_RR_MS.contains(&rr_ms).then(|| 60_000.0 / rr_ms))
}

#[cfg(test)]
mod tests {
    use meit::dsp::{PreprocessSpec, Preprocessor};
    use meit::ecg::{Lead, Recording};
    use meit::synth::dataset::{DatasetSpec, DatasetStyle, write_dataset};
    use meit::synth::{Acquisition, Adc, ConditionSet, RecordSpec, generate};

    use super::*;
    use crate::data::LabelledRecord;
    use crate::data::table::tests::table_error;

    const N: usize = 12;
    const SPLITS: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// A clean MIMIC tree of `n` records and its ground truth by study id.
    fn tree(n: usize) -> (tempfile::TempDir, HashMap<String, serde_json::Value>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DatasetSpec {
            n,
            style: DatasetStyle::Mimic,
            seed: 23,
            max_noise: 0.0,
        };
        write_dataset(dir.path(), &spec, |_| {}).expect("write dataset");
        let labels = std::fs::read_to_string(dir.path().join("labels.jsonl")).expect("labels");
        let truth = labels
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["id"].as_str().unwrap_or_default().to_string(),
                    v["truth"].clone(),
                )
            })
            .collect();
        (dir, truth)
    }

    fn all_records(data: &MimicDataset) -> Result<Vec<LabelledRecord>, DataError> {
        SPLITS
            .iter()
            .flat_map(|&s| data.splits().records(s))
            .collect()
    }

    fn truth_of<'a>(
        truth: &'a HashMap<String, serde_json::Value>,
        record: &LabelledRecord,
    ) -> &'a serde_json::Value {
        let study = record.id.strip_prefix("mimic:").expect("mimic id");
        &truth[study]
    }

    /// The record as the synthesizer made it, in the standard lead order: regenerated from the
    /// ground truth's seed and conditions with the acquisition of a clean MIMIC tree.
    fn regenerated(truth: &serde_json::Value) -> Recording {
        let slugs: Vec<&str> = truth["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        let spec = RecordSpec {
            acquisition: Acquisition {
                mains_hz: 60.0,
                adc: Some(Adc {
                    uv_per_count: 5.0,
                    bits: 16,
                }),
                ..Acquisition::clean()
            },
            ..RecordSpec::ten_seconds(ConditionSet::parse_list(&slugs.join(",")).expect("slugs"))
        };
        generate(&spec, truth["seed"].as_u64().expect("seed"))
            .expect("generate")
            .recording
    }

    /// Rewrites line `line` (1-based) of `file` with `edit`; `None` removes the line.
    fn edit_line(root: &Path, file: &str, line: usize, edit: impl Fn(&str) -> Option<String>) {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        let out: Vec<String> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                if i + 1 == line {
                    edit(l)
                } else {
                    Some(l.to_string())
                }
            })
            .collect();
        std::fs::write(&path, out.join("\n") + "\n").expect("write");
    }

    /// Replaces the `rr_interval` of a measurements line (the ninth field from the end).
    fn with_rr(line: &str, rr: &str) -> Option<String> {
        let fields: Vec<&str> = line.rsplitn(10, ',').collect();
        let (rest, after) = fields.split_last()?;
        let after: Vec<&str> = after.iter().take(8).rev().copied().collect();
        Some(format!("{rest},{rr},{}", after.join(",")))
    }

    #[test]
    fn studies_join_their_measurements_and_match_the_truth() -> Result<(), DataError> {
        let (dir, truth) = tree(N);
        let data = MimicDataset::open(dir.path())?;
        let records = all_records(&data)?;
        assert_eq!(data.dropped(), Dropped::default());
        assert_eq!(records.len(), N);
        for record in &records {
            let t = truth_of(&truth, record);
            let report = t["report_mimic"].as_str().expect("report");
            assert_eq!(record.report, report.to_lowercase());
            let rr = t["measurements"]["rr_ms"].as_f64().expect("rr") as f32;
            let rate = record.rate_bpm.expect("a rate");
            assert!(
                (rate - 60_000.0 / rr.round()).abs() < 1e-3,
                "{rate} vs rr {rr}"
            );
            assert!(record.codes.is_empty());
            assert_eq!(record.recording.samples_uv.dim(), (12, 5000));
        }
        let cased = MimicDataset::open_with(
            dir.path(),
            MimicOptions {
                lowercase: false,
                ..MimicOptions::default()
            },
        )?;
        for record in all_records(&cased)? {
            assert_eq!(
                Some(record.report.as_str()),
                truth_of(&truth, &record)["report_mimic"].as_str()
            );
        }
        Ok(())
    }

    #[test]
    fn avf_and_avl_stay_where_the_file_stores_them() -> Result<(), DataError> {
        let (dir, truth) = tree(2);
        let data = MimicDataset::open(dir.path())?;
        for record in all_records(&data)? {
            let leads = &record.recording.leads;
            assert_eq!(
                (leads.position(Lead::AVF), leads.position(Lead::AVL)),
                (Some(4), Some(5))
            );
            let made = regenerated(truth_of(&truth, &record));
            let row = |r: &Recording, lead| {
                r.samples_uv
                    .row(r.leads.position(lead).expect("lead"))
                    .to_owned()
            };
            for lead in [Lead::AVF, Lead::AVL, Lead::V1] {
                let worst = (&row(&record.recording, lead) - &row(&made, lead))
                    .iter()
                    .fold(0.0f32, |m, d| m.max(d.abs()));
                assert!(worst <= 2.6, "{lead:?} differs by {worst} uV");
            }
            // The two leads differ, so a swap would have been seen.
            let apart = (&row(&made, Lead::AVF) - &row(&made, Lead::AVL))
                .iter()
                .fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(apart > 50.0, "aVF and aVL only {apart} uV apart");
        }
        Ok(())
    }

    #[test]
    fn a_loaded_record_goes_through_the_daemon_preprocessing_in_model_order()
    -> Result<(), Box<dyn std::error::Error>> {
        let (dir, truth) = tree(1);
        let data = MimicDataset::open(dir.path())?;
        let record = all_records(&data)?.into_iter().next().ok_or("no record")?;
        let preprocessor = Preprocessor::new(PreprocessSpec::default())?;
        let input = preprocessor.process_recording(&record.recording)?;
        let reference = preprocessor.process_recording(&regenerated(truth_of(&truth, &record)))?;
        assert_eq!(input.samples.dim(), (12, 5000));
        let worst = (&input.samples - &reference.samples)
            .iter()
            .fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(worst < 0.01, "model input differs by {worst}");
        Ok(())
    }

    #[test]
    fn short_reports_are_dropped_and_counted() -> Result<(), DataError> {
        let (dir, truth) = tree(N);
        for min_words in [0, 6, 10, 1000] {
            let options = MimicOptions {
                min_words,
                ..MimicOptions::default()
            };
            let data = MimicDataset::open_with(dir.path(), options)?;
            let short = truth
                .values()
                .filter(|t| {
                    let words = t["report_mimic"].as_str().unwrap_or_default();
                    words.split_whitespace().count() < min_words
                })
                .count();
            assert_eq!(data.dropped().short_report, short, "min_words {min_words}");
            let kept: usize = SPLITS.iter().map(|&s| data.splits().len(s)).sum();
            assert_eq!(kept, N - short);
        }
        Ok(())
    }

    #[test]
    fn missing_or_implausible_rr_gives_no_rate() -> Result<(), DataError> {
        assert_eq!(rate_from_rr("1000"), Ok(Some(60.0)));
        assert_eq!(rate_from_rr("29999"), Ok(None));
        assert_eq!(rate_from_rr(""), Ok(None));
        assert_eq!(rate_from_rr("0"), Ok(None));
        assert_eq!(rate_from_rr("abc"), Err(()));
        let (dir, _) = tree(1);
        edit_line(dir.path(), "machine_measurements.csv", 2, |l| {
            with_rr(l, "29999")
        });
        let data = MimicDataset::open(dir.path())?;
        let record = all_records(&data)?.into_iter().next().expect("one record");
        assert_eq!(record.rate_bpm, None);
        Ok(())
    }

    #[test]
    fn a_bad_rr_interval_names_its_line() {
        let (dir, _) = tree(2);
        edit_line(dir.path(), "machine_measurements.csv", 3, |l| {
            with_rr(l, "fast")
        });
        let (path, line, message) = table_error(MimicDataset::open(dir.path()));
        assert_eq!(
            (path, line),
            (dir.path().join("machine_measurements.csv"), 3)
        );
        assert!(message.contains("rr_interval"), "{message}");
    }

    #[test]
    fn missing_columns_name_the_file_and_the_header_line() {
        let (dir, _) = tree(1);
        edit_line(dir.path(), "record_list.csv", 1, |l| {
            Some(l.replace("path", "where"))
        });
        let (path, line, message) = table_error(MimicDataset::open(dir.path()));
        assert_eq!((path, line), (dir.path().join("record_list.csv"), 1));
        assert!(message.contains("path"), "{message}");
        edit_line(dir.path(), "machine_measurements.csv", 1, |l| {
            Some(l.replace("report_0,", "statement_0,"))
        });
        let (path, line, message) = table_error(MimicDataset::open(dir.path()));
        assert_eq!(
            (path, line),
            (dir.path().join("machine_measurements.csv"), 1)
        );
        assert!(message.contains("report_0"), "{message}");
    }

    #[test]
    fn a_study_without_measurements_is_dropped_and_a_repeated_one_refused() -> Result<(), DataError>
    {
        let (dir, _) = tree(3);
        let measurements = dir.path().join("machine_measurements.csv");
        let original = std::fs::read_to_string(&measurements).expect("read");
        edit_line(dir.path(), "machine_measurements.csv", 2, |_| None);
        let data = MimicDataset::open(dir.path())?;
        assert_eq!(data.dropped().no_measurements, 1);
        assert_eq!(
            SPLITS.iter().map(|&s| data.splits().len(s)).sum::<usize>(),
            2
        );
        let second = original.lines().nth(2).expect("row").to_string();
        std::fs::write(&measurements, format!("{original}{second}\n")).expect("write");
        let (_, line, message) = table_error(MimicDataset::open(dir.path()));
        assert_eq!(line, 5);
        assert!(message.contains("line 3"), "{message}");
        Ok(())
    }

    #[test]
    fn a_missing_header_file_is_an_error_for_that_record() -> Result<(), DataError> {
        let (dir, _) = tree(1);
        let hea = dir
            .path()
            .join("files/p1000/p10000000/s40000000/40000000.hea");
        std::fs::remove_file(&hea).expect("rm");
        let data = MimicDataset::open(dir.path())?;
        match all_records(&data) {
            Err(DataError::Wfdb { path, .. }) => assert_eq!(path, hea),
            other => panic!("expected a WFDB error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn subjects_split_90_5_5_the_same_way_every_time() {
        let n = 20_000;
        let mut counts = [0usize; 3];
        for id in 10_000_000..10_000_000 + n {
            let split = split_of_subject(&id.to_string());
            assert_eq!(split, split_of_subject(&format!(" {id}")));
            counts[SPLITS.iter().position(|&s| s == split).unwrap_or(0)] += 1;
        }
        let fraction = |c: usize| c as f64 / n as f64;
        assert!((fraction(counts[0]) - 0.90).abs() < 0.01, "{counts:?}");
        assert!((fraction(counts[1]) - 0.05).abs() < 0.01, "{counts:?}");
        assert!((fraction(counts[2]) - 0.05).abs() < 0.01, "{counts:?}");
    }
}
