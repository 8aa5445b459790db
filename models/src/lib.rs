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
//! - [`data`]: labelled records (synthetic on the fly, PTB-XL, MIMIC-IV-ECG) for training.
//! - [`codec`]: a record as model input (shared preprocessing, tokenizer, instruction wrapper).
//! - [`train`]: the run config, one optimisation step (`train::step`), a whole training run
//!   (`train::run`: epochs, checkpoints, resume, progress, loss curve) and the model directory
//!   it writes.
//! - [`generate`]: reports from a trained model, window by window, quality-gated.
//! - [`eval`]: clinical correctness and the evaluation suite (`meit-models eval`).
//! - [`export`]: a trained model -> an ONNX bundle for the daemon (`meit-models export`).

pub mod codec;
pub mod data;
pub mod eval;
pub mod export;
pub mod generate;
pub mod metrics;
pub mod model;
pub mod tokenizer;
pub mod train;
