//! Evaluation as a library: the `meit-models` CLI, benchmarks and CI call these functions and
//! write their serialisable results (JSON, Markdown) themselves.
//!
//! - [`clinical`]: clinical correctness — generated report text parsed back into statement
//!   codes and scored per code against the ground truth (F1, exact match, stated heart rate,
//!   claims that need leads the input did not have).
//! - [`suite`]: the whole evaluation of a trained model on held-out synthetic records: text
//!   metrics, clinical scores, the shuffled-ECG control, robustness, lead sets, transfer.
//!
//! The report-text metrics (BLEU, METEOR, ROUGE-L, CIDEr-D) live in [`crate::metrics`].

pub mod clinical;
pub mod suite;
