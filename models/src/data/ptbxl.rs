//! PTB-XL v1.0.3 (`ptbxl_database.csv` + `records500/` + `records100/`): the index is read
//! and checked when the data set is opened; signals are read one record at a time as a split
//! is walked.
//!
//! - Split: the recommended stratified folds, `strat_fold` 1-8 train, 9 validation, 10 test
//!   (folds 9 and 10 hold only records a cardiologist validated, which is why they are the
//!   usual evaluation folds).
//! - Report: the `report` column as written (German, English or Swedish in the real set).
//! - Codes: every key of the `scp_codes` dictionary, in the order written, whatever its
//!   likelihood (rhythm statements carry 0.0, diagnostic ones 15-100): a statement the
//!   cardiologist wrote is a statement of the report.
//! - Rate: none (PTB-XL's table has no rate column; `heart_axis` and the noise columns are
//!   not used).
//! - Leads: the file's order, which in PTB-XL is the standard one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::table::{CsvTable, IndexedRecord, SplitIndex, header_in};
use super::{DataError, Split};

/// Which copy of the signals to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// `records500/` (`filename_hr`): 500 Hz, 5000 samples per lead.
    Hz500,
    /// `records100/` (`filename_lr`): 100 Hz, 1000 samples per lead.
    Hz100,
}

impl Resolution {
    /// The `ptbxl_database.csv` column holding the record paths.
    fn column(self) -> &'static str {
        match self {
            Resolution::Hz500 => "filename_hr",
            Resolution::Hz100 => "filename_lr",
        }
    }
}

/// The split of a `strat_fold`: 1-8 train, 9 validation, 10 test; anything else is `None`.
pub fn split_of_fold(fold: u32) -> Option<Split> {
    match fold {
        1..=8 => Some(Split::Train),
        9 => Some(Split::Validation),
        10 => Some(Split::Test),
        _ => None,
    }
}

/// An opened PTB-XL tree.
#[derive(Debug, Clone)]
pub struct PtbxlDataset {
    root: PathBuf,
    resolution: Resolution,
    index: SplitIndex,
}

impl PtbxlDataset {
    /// Reads `<root>/ptbxl_database.csv`. A missing column, a bad fold, an `scp_codes` that is
    /// not a dictionary or a path leaving the tree is an error naming the file and line;
    /// signal files are not touched until records are read.
    pub fn open(root: &Path, resolution: Resolution) -> Result<Self, DataError> {
        let mut table = CsvTable::open(&root.join("ptbxl_database.csv"))?;
        let ecg_id = table.column("ecg_id")?;
        let report = table.column("report")?;
        let scp_codes = table.column("scp_codes")?;
        let strat_fold = table.column("strat_fold")?;
        let filename = table.column(resolution.column())?;
        let mut index = SplitIndex::default();
        while let Some(row) = table.next_data_row()? {
            let fold_text = row.get(strat_fold);
            let split = fold_text
                .parse::<u32>()
                .ok()
                .and_then(split_of_fold)
                .ok_or_else(|| {
                    table.error(row.line, format!("strat_fold `{fold_text}` is not 1-10"))
                })?;
            let codes = parse_scp_codes(row.get(scp_codes))
                .map_err(|message| table.error(row.line, message))?;
            let relative = row.get(filename);
            let header = header_in(root, relative).ok_or_else(|| {
                table.error(
                    row.line,
                    format!("record path `{relative}` is not a relative path inside the data set"),
                )
            })?;
            index.push(
                split,
                IndexedRecord {
                    id: format!("ptbxl:{}", row.get(ecg_id)),
                    header,
                    report: row.get(report).to_string(),
                    codes,
                    rate_bpm: None,
                },
            );
        }
        Ok(PtbxlDataset {
            root: root.to_path_buf(),
            resolution,
            index,
        })
    }

    /// The data set's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Which signals are read.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// The records of each split (count, read one, iterate).
    pub fn splits(&self) -> &SplitIndex {
        &self.index
    }
}

/// The keys of an `scp_codes` cell, a Python dict literal such as
/// `{'NDT': 100.0, 'SR': 0.0}`, in the order written.
fn parse_scp_codes(cell: &str) -> Result<Vec<String>, String> {
    let bad = |why: &str| format!("scp_codes `{cell}`: {why}");
    let body = cell
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| bad("not a {...} dictionary"))?;
    let mut codes = Vec::new();
    for entry in body.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key, likelihood) = entry
            .split_once(':')
            .ok_or_else(|| bad("an entry without `:`"))?;
        let key = key.trim();
        let code = ['\'', '"']
            .iter()
            .find_map(|&q| key.strip_prefix(q).and_then(|k| k.strip_suffix(q)))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("a key that is not a quoted code"))?;
        likelihood
            .trim()
            .parse::<f32>()
            .map_err(|_| bad("a likelihood that is not a number"))?;
        codes.push(code.to_string());
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use meit::synth::dataset::{DatasetSpec, DatasetStyle, write_dataset};

    use super::*;
    use crate::data::LabelledRecord;
    use crate::data::table::tests::table_error;

    const N: usize = 12;

    /// A PTB-XL tree of `n` records and its ground truth (`labels.jsonl`), one JSON per record.
    fn tree(n: usize) -> (tempfile::TempDir, Vec<serde_json::Value>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DatasetSpec {
            n,
            style: DatasetStyle::Ptbxl,
            seed: 17,
            max_noise: 0.2,
        };
        write_dataset(dir.path(), &spec, |_| {}).expect("write dataset");
        let labels = std::fs::read_to_string(dir.path().join("labels.jsonl")).expect("labels");
        let truth = labels
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        (dir, truth)
    }

    /// Rewrites line `line` (1-based) of the database with `edit`.
    fn edit_line(root: &Path, line: usize, edit: impl Fn(&str) -> String) {
        let path = root.join("ptbxl_database.csv");
        let text = std::fs::read_to_string(&path).expect("read");
        let out: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i + 1 == line {
                    edit(l)
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&path, out.join("\n") + "\n").expect("write");
    }

    #[test]
    fn folds_split_the_records_and_labels_match_the_truth() -> Result<(), DataError> {
        let (dir, truth) = tree(N);
        let data = PtbxlDataset::open(dir.path(), Resolution::Hz500)?;
        // The writer cycles strat_fold 1..=10 over the records.
        let fold = |i: usize| (1 + i % 10) as u32;
        for split in [Split::Train, Split::Validation, Split::Test] {
            let want: Vec<usize> = (0..N)
                .filter(|&i| split_of_fold(fold(i)) == Some(split))
                .collect();
            assert_eq!(data.splits().len(split), want.len(), "{split:?}");
            let got: Vec<LabelledRecord> =
                data.splits().records(split).collect::<Result<_, _>>()?;
            for (record, &i) in got.iter().zip(&want) {
                let t = &truth[i]["truth"];
                assert_eq!(record.id, format!("ptbxl:{}", i + 1));
                assert_eq!(Some(record.report.as_str()), t["report_ptbxl"].as_str());
                let codes: Vec<&str> = t["codes"]
                    .as_array()
                    .expect("codes")
                    .iter()
                    .filter_map(|c| c.as_str())
                    .filter(|c| !matches!(*c, "BORD" | "ABN" | "LAD" | "RAD"))
                    .collect();
                assert_eq!(record.codes, codes);
                assert_eq!(record.rate_bpm, None);
                assert_eq!(record.recording.sample_rate_hz, 500.0);
                assert_eq!(record.recording.samples_uv.dim(), (12, 5000));
                assert_eq!(record.recording.leads, meit::ecg::LeadSet::standard_12());
            }
        }
        assert!(
            data.splits()
                .record(Split::Test, data.splits().len(Split::Test))
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn low_resolution_reads_records100() -> Result<(), DataError> {
        let (dir, _) = tree(2);
        let data = PtbxlDataset::open(dir.path(), Resolution::Hz100)?;
        let record = data.splits().record(Split::Train, 0).expect("one record")?;
        assert_eq!(record.recording.sample_rate_hz, 100.0);
        assert_eq!(record.recording.samples_uv.dim(), (12, 1000));
        Ok(())
    }

    #[test]
    fn scp_codes_keys_are_kept_whatever_their_likelihood() {
        assert_eq!(
            parse_scp_codes("{'NORM': 100.0, 'SR': 0.0, \"LVH\": 15.0}"),
            Ok(vec!["NORM".to_string(), "SR".into(), "LVH".into()])
        );
        assert_eq!(parse_scp_codes("{}"), Ok(vec![]));
        for bad in ["NORM", "{'NORM' 100.0}", "{NORM: 100.0}", "{'NORM': high}"] {
            assert!(parse_scp_codes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_column_names_the_file_and_the_header_line() {
        let (dir, _) = tree(1);
        edit_line(dir.path(), 1, |l| l.replace("strat_fold", "fold"));
        let (path, line, message) = table_error(PtbxlDataset::open(dir.path(), Resolution::Hz500));
        assert_eq!(path, dir.path().join("ptbxl_database.csv"));
        assert_eq!(line, 1);
        assert!(message.contains("strat_fold"), "{message}");
    }

    /// Replaces the `strat_fold` of a database line (the third field from the end).
    fn with_fold(line: &str, fold: &str) -> String {
        let fields: Vec<&str> = line.rsplitn(4, ',').collect();
        match fields.as_slice() {
            [hr, lr, _, rest] => format!("{rest},{fold},{lr},{hr}"),
            _ => panic!("not a database row: {line}"),
        }
    }

    #[test]
    fn a_bad_fold_names_its_line() {
        let (dir, _) = tree(3);
        for fold in ["11", "0", "x", ""] {
            edit_line(dir.path(), 3, |l| with_fold(l, fold));
            let (path, line, message) =
                table_error(PtbxlDataset::open(dir.path(), Resolution::Hz500));
            assert_eq!((path, line), (dir.path().join("ptbxl_database.csv"), 3));
            assert!(message.contains("strat_fold"), "{message}");
        }
    }

    #[test]
    fn a_bad_scp_codes_cell_names_its_line() {
        let (dir, _) = tree(2);
        edit_line(dir.path(), 2, |l| l.replacen("\"{", "\"[", 1));
        let (_, line, message) = table_error(PtbxlDataset::open(dir.path(), Resolution::Hz500));
        assert_eq!(line, 2);
        assert!(message.contains("scp_codes"), "{message}");
    }

    #[test]
    fn a_missing_header_file_is_an_error_for_that_record_only() -> Result<(), DataError> {
        let (dir, _) = tree(2);
        std::fs::remove_file(dir.path().join("records500/00000/00001_hr.hea")).expect("rm");
        let data = PtbxlDataset::open(dir.path(), Resolution::Hz500)?;
        let results: Vec<_> = data.splits().records(Split::Train).collect();
        assert_eq!(results.len(), 2);
        match &results[0] {
            Err(DataError::Wfdb { path, .. }) => {
                assert_eq!(path, &dir.path().join("records500/00000/00001_hr.hea"));
            }
            other => panic!("expected a WFDB error, got {other:?}"),
        }
        assert!(results[1].is_ok());
        Ok(())
    }

    #[test]
    fn a_truncated_signal_file_is_a_wfdb_data_error() -> Result<(), DataError> {
        let (dir, _) = tree(1);
        let dat = dir.path().join("records500/00000/00001_hr.dat");
        let bytes = std::fs::read(&dat).expect("read");
        std::fs::write(&dat, &bytes[..bytes.len() / 2]).expect("write");
        let data = PtbxlDataset::open(dir.path(), Resolution::Hz500)?;
        match data.splits().record(Split::Train, 0) {
            Some(Err(DataError::Wfdb {
                path,
                source: meit::wfdb::WfdbError::Data(_),
            })) => assert_eq!(path, dir.path().join("records500/00000/00001_hr.hea")),
            other => panic!("expected a WFDB data error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_path_outside_the_tree_is_refused() {
        let (dir, _) = tree(1);
        edit_line(dir.path(), 2, |l| {
            l.replace("records500/00000/00001_hr", "../../etc/x")
        });
        let (_, line, message) = table_error(PtbxlDataset::open(dir.path(), Resolution::Hz500));
        assert_eq!(line, 2);
        assert!(message.contains("../../etc/x"), "{message}");
    }
}
