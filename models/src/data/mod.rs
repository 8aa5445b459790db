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

use std::path::PathBuf;

use meit::ecg::Recording;

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
    /// Preprocessing refused a record.
    #[error("preprocessing {id}: {source}")]
    Preprocess {
        /// The record.
        id: String,
        /// The cause.
        source: meit::dsp::DspError,
    },
}
