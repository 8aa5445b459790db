//! # meit-models — training, evaluation and export of meit's models
//!
//! The library behind the `meit-models` binary. Training-only code lives in this crate so the
//! daemon never links it.
//!
//! - [`metrics`]: the report-text metrics of the MEIT paper (BLEU-1..4, METEOR, ROUGE-L,
//!   CIDEr-D), written to agree with pycocoevalcap and NLTK on the same text.

pub mod metrics;
