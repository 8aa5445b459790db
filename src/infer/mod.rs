//! Inference: ONNX Runtime provisioning and sessions.
//!
//! - [`runtime`]: finding, checking and loading the ONNX Runtime shared library.
//! - [`config`]: the `[runtime]` and `[model]` configuration tables.
//! - [`bundle`]: the model bundle format (`manifest.json`, graphs, tokenizer) and its checks.
//! - [`engine`]: the bundle's graphs on ONNX Runtime: encoder -> ECG slot as KV-cache entry 0
//!   -> prompt prefill -> greedy decoding, windows of several beds in one batch.
//! - [`cache`]: the decoder's key/value cache between calls (on the host or a GPU, grown per
//!   call or written in place) and its row operations.
//! - [`draft`]: lookup drafts (n-grams seen before) that greedy decoding checks several at a
//!   call.
//! - [`detokenize`]: token ids -> text for the bundle's byte-level BPE tokenizer.
//! - [`bench`]: the measurements behind `meit bench infer`.

pub mod bench;
pub mod bundle;
pub mod cache;
pub mod config;
pub mod detokenize;
pub mod draft;
pub mod engine;
pub mod runtime;
