//! Inference: ONNX Runtime provisioning and sessions.
//!
//! Today this module owns finding, checking and loading the ONNX Runtime shared library
//! ([`runtime`]). The engine that runs a model bundle (ECG encoder, 4-bit LLM decoder with a
//! KV cache whose position 0 holds the ECG slot, batching across beds) lands here next.

pub mod runtime;
