//! Training and evaluation data: labelled ECG records and how they become model input.
//!
//! A [`LabelledRecord`] is one ECG (device rate, device lead order, microvolts) with its
//! reference report. Records come from:
//! - [`synth`]: the `meit` synthesizer, generated on the fly from a seed (unbounded, no disk);
//! - [`ptbxl`] / [`mimic`]: the directory layouts of PTB-XL and MIMIC-IV-ECG, read lazily
//!   (one WFDB read per record; tested on the trees `meit synth dataset` writes).
//!
//! Every record reaches the model through `meit::dsp::Preprocessor::process_recording`, the
//! same preprocessing the daemon runs: there is no second implementation here.

pub mod mimic;
pub mod ptbxl;
pub mod synth;
mod table;

pub use table::SplitIndex;

use std::path::PathBuf;
use std::sync::Arc;

use meit::ecg::Recording;
use serde::{Deserialize, Serialize};

use mimic::{MimicDataset, MimicOptions};
use ptbxl::{PtbxlDataset, Resolution};
use synth::SynthData;

/// Where training records come from and how many. Serialised in run configs (`[data]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Records in the training set (one epoch).
    pub train_records: usize,
    /// Records for the validation loss during training.
    pub validation_records: usize,
    /// Records for the held-out evaluation.
    pub test_records: usize,
    /// Training reports the byte-level BPE tokenizer is trained on.
    #[serde(default = "default_tokenizer_records")]
    pub tokenizer_records: usize,
    /// Synthetic records drawn on the fly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthData>,
    /// A PTB-XL tree on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptbxl: Option<PtbxlSource>,
    /// A MIMIC-IV-ECG tree on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimic: Option<MimicSource>,
}

fn default_tokenizer_records() -> usize {
    4000
}

/// One ECG with its reference report.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRecord {
    /// Where it came from: a data-set record name or `synth:<seed>`.
    pub id: String,
    /// The signal at the device's rate and lead order, in microvolts.
    pub recording: Recording,
    /// The reference report text.
    pub report: String,
    /// Statement codes of the reference (synth and PTB-XL SCP codes); empty when the source
    /// has none (MIMIC-IV-ECG gives text only).
    pub codes: Vec<String>,
    /// Ventricular rate in bpm when the source states one.
    pub rate_bpm: Option<f32>,
    /// For each statement the record's leads cannot support (dropped from `report`), the
    /// report with that one statement put back in its place: what the model must not write
    /// (the unlikelihood term of `[train] unlikelihood_weight`). Empty when the source knows of
    /// no such statement (full-lead records, PTB-XL, MIMIC).
    pub withheld_reports: Vec<String>,
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training records.
    Train,
    /// Validation records (model selection).
    Validation,
    /// Held-out test records (reported figures).
    Test,
}

/// Why data could not be read or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A table (CSV) that does not have the expected content.
    #[error("{path}:{line}: {message}")]
    Table {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A WFDB record that cannot be read.
    #[error("record {path}: {source}")]
    Wfdb {
        /// The header file.
        path: PathBuf,
        /// The cause.
        source: meit::wfdb::WfdbError,
    },
    /// The synthesizer refused a record.
    #[error("synthesizer: {0}")]
    Synth(#[from] meit::synth::SynthError),
    /// A data set holds fewer records than the run asks for.
    #[error(
        "{source_name}: the {split:?} split has {available} records, the run asks for {wanted}"
    )]
    TooFew {
        /// The data set (its root).
        source_name: String,
        /// The split.
        split: Split,
        /// Records it has.
        available: usize,
        /// Records asked for.
        wanted: usize,
    },
    /// A run config names no data source, or more than one.
    #[error(
        "[data]: name exactly one source ([data.synth], [data.ptbxl] or [data.mimic]); found {0}"
    )]
    Sources(usize),
    /// Preprocessing refused a record.
    #[error("preprocessing {id}: {source}")]
    Preprocess {
        /// The record.
        id: String,
        /// The cause.
        source: meit::dsp::DspError,
    },
}

/// A PTB-XL tree to train on (`[data.ptbxl]`): the real data set or one `meit synth dataset
/// --style ptbxl` wrote. Splits are PTB-XL's folds (1-8 train, 9 validation, 10 test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtbxlSource {
    /// The directory holding `ptbxl_database.csv` (relative paths: from the working directory).
    pub root: PathBuf,
    /// Which copy of the signals to read (`hz500` or `hz100`).
    pub resolution: Resolution,
}

/// A MIMIC-IV-ECG tree to train on (`[data.mimic]`). Splits by subject (90/5/5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimicSource {
    /// The directory holding `record_list.csv` and `machine_measurements.csv`.
    pub root: PathBuf,
    /// Report preparation (default: the paper's, lower-cased, at least 4 words).
    #[serde(default)]
    pub options: MimicOptions,
}

/// The records of a run, from its one configured source, opened once (cheap to clone: the
/// on-disk indexes are shared).
#[derive(Debug, Clone)]
pub enum RunData {
    /// Synthesised on the fly.
    Synth(SynthData),
    /// A PTB-XL tree.
    Ptbxl(Arc<PtbxlDataset>),
    /// A MIMIC-IV-ECG tree.
    Mimic(Arc<MimicDataset>),
}

impl RunData {
    /// Opens the source `config` names and checks that each split holds the records the run
    /// asks for (a synthesised source always does).
    pub fn open(config: &DataConfig) -> Result<RunData, DataError> {
        let named = usize::from(config.synth.is_some())
            + usize::from(config.ptbxl.is_some())
            + usize::from(config.mimic.is_some());
        if named != 1 {
            return Err(DataError::Sources(named));
        }
        let data = match (&config.synth, &config.ptbxl, &config.mimic) {
            (Some(synth), _, _) => RunData::Synth(synth.clone()),
            (_, Some(p), _) => RunData::Ptbxl(Arc::new(PtbxlDataset::open(&p.root, p.resolution)?)),
            (_, _, Some(m)) => {
                RunData::Mimic(Arc::new(MimicDataset::open_with(&m.root, m.options)?))
            }
            (None, None, None) => return Err(DataError::Sources(0)),
        };
        for (split, wanted) in [
            (Split::Train, config.train_records),
            (Split::Validation, config.validation_records),
            (Split::Test, config.test_records),
        ] {
            if let Some(available) = data.available(split)
                && available < wanted
            {
                return Err(DataError::TooFew {
                    source_name: data.name(),
                    split,
                    available,
                    wanted,
                });
            }
        }
        Ok(data)
    }

    /// Records `split` holds; `None` for a synthesised source (any number).
    pub fn available(&self, split: Split) -> Option<usize> {
        match self {
            RunData::Synth(_) => None,
            RunData::Ptbxl(d) => Some(d.splits().len(split)),
            RunData::Mimic(d) => Some(d.splits().len(split)),
        }
    }

    /// Record `index` of `split`.
    pub fn record(&self, split: Split, index: u64) -> Result<LabelledRecord, DataError> {
        let stored = match self {
            RunData::Synth(synth) => return synth.record(split, index),
            RunData::Ptbxl(d) => d.splits().record(split, index as usize),
            RunData::Mimic(d) => d.splits().record(split, index as usize),
        };
        stored.unwrap_or_else(|| {
            Err(DataError::TooFew {
                source_name: self.name(),
                split,
                available: self.available(split).unwrap_or(0),
                wanted: index as usize + 1,
            })
        })
    }

    /// The synthesizer, when that is the source (the evaluation suite changes its records).
    pub fn synth(&self) -> Option<&SynthData> {
        match self {
            RunData::Synth(synth) => Some(synth),
            _ => None,
        }
    }

    fn name(&self) -> String {
        match self {
            RunData::Synth(_) => "synthesizer".into(),
            RunData::Ptbxl(d) => format!("PTB-XL at {}", d.root().display()),
            RunData::Mimic(d) => format!("MIMIC-IV-ECG at {}", d.root().display()),
        }
    }
}
