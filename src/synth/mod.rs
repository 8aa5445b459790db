//! The physiological 12-lead ECG synthesizer: signals with ground-truth labels, measurements
//! and report text, used by the device simulator, the training data and the tests.
//!
//! Read it in this order: [`geometry`] (the heart dipole and the leads), [`condition`] (what
//! can be synthesized), [`morphology`] (the waves of a beat), [`rhythm`] (when beats happen),
//! [`acquisition`] (artefacts), [`variability`] (the randomised synthesizer's literature
//! ranges), [`stream`] (sample-by-sample synthesis), [`record`] (10 s
//! records and their ground truth), [`report`] (statement text), then [`dataset`] (PTB-XL and
//! MIMIC-IV-ECG directory trees) and [`plot`] (the 12-lead paper layout).

pub mod acquisition;
pub mod condition;
pub mod dataset;
pub mod geometry;
pub mod morphology;
pub mod plot;
pub mod record;
pub mod report;
pub mod rhythm;
pub mod stream;
pub mod variability;

pub use acquisition::{Acquisition, Adc};
pub use condition::{Condition, ConditionSet};
pub use morphology::{HEART_RATE_RANGE_BPM, Overrides};
pub use record::{GroundTruth, Measurements, RecordSpec, SynthRecord, generate, generate_with};
pub use stream::{EcgStream, StreamConfig};
pub use variability::{AcquisitionChain, Variability};

/// What can go wrong when synthesizing.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A condition name that is not known.
    #[error("unknown condition `{0}` (known: {known})", known = known_conditions())]
    UnknownCondition(String),
    /// Two conditions that cannot be combined.
    #[error("conditions `{0}` and `{1}` cannot be combined")]
    Incompatible(Condition, Condition),
    /// A sample rate outside 100-1000 Hz.
    #[error("sample rate {0} Hz is outside the supported 100-1000 Hz")]
    SampleRate(f64),
    /// A duration that is not positive or too long for one record.
    #[error("record duration {0} s is not positive or too long (stream longer signals)")]
    Duration(f64),
    /// Writing a data set failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a WFDB record failed.
    #[error(transparent)]
    Wfdb(#[from] crate::wfdb::WfdbError),
    /// The acquisition chain's filter cannot run at the record's rate.
    #[error("acquisition chain: {0}")]
    Chain(crate::dsp::filter::FilterError),
    /// Rendering a plot failed.
    #[error("cannot render plot {path}: {reason}")]
    Plot {
        /// The image file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn known_conditions() -> String {
    Condition::ALL
        .iter()
        .map(|c| c.slug())
        .collect::<Vec<_>>()
        .join(", ")
}
