//! Evaluation as a library: the `meit-models` CLI, benchmarks and CI call these functions and
//! write their serialisable results (JSON, Markdown) themselves.
//!
//! - [`clinical`]: clinical correctness — generated report text parsed back into statement
//!   codes and scored per code against the ground truth (F1, exact match, stated heart rate,
//!   claims that need leads the input did not have).
//! - [`compare`]: two evaluations of the same records, record by record: the paired bootstrap
//!   interval of their macro F1 difference.
//! - [`external`]: windows of ECGs the project did not make (real recordings, an independent
//!   simulator), scored on rhythm statement, rate class, claims needing absent leads and the
//!   daemon's consistency flag.
//! - [`suite`]: the whole evaluation of a trained model on held-out synthetic records: text
//!   metrics, clinical scores, the shuffled-ECG control, robustness, lead sets, transfer.
//!
//! The report-text metrics (BLEU, METEOR, ROUGE-L, CIDEr-D) live in [`crate::metrics`].

pub mod clinical;
pub mod compare;
pub mod external;
pub mod suite;
