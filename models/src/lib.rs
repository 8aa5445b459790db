//! # meit-models — training, evaluation and export of meit's models
//!
//! The library behind the `meit-models` binary. Training-only code lives in this crate so the
//! daemon never links it.
//!
//! - [`metrics`]: the report-text metrics of the MEIT paper (BLEU-1..4, METEOR, ROUGE-L,
//!   CIDEr-D), written to agree with pycocoevalcap and NLTK on the same text.
//! - [`model`]: the MEIT model in candle (ECG encoder, Llama decoder with the ECG slot, LoRA,
//!   instruction format, masked loss).
//! - [`tokenizer`]: byte-level BPE trained on report text (`tokenizer.json`).

pub mod metrics;
pub mod model;
pub mod tokenizer;
