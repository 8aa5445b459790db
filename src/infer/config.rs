//! The `[runtime]` and `[model]` tables: ONNX Runtime and the model bundle to serve.

use std::path::PathBuf;

use serde::Deserialize;

use crate::ecg::Lead;

/// An ONNX Runtime execution provider the engine may use, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    /// The CPU provider (always available).
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT (Jetson).
    Tensorrt,
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path to `libonnxruntime.so*`; when absent, `ORT_DYLIB_PATH` and then the project-local
    /// folder `.onnxruntime/<arch>/` are tried.
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers in order of preference; a provider that cannot start is an error,
    /// never a silent fallback.
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<ExecutionProviderKind>,
    /// Threads per inference session.
    #[serde(default = "default_threads")]
    pub intra_threads: usize,
}

fn default_providers() -> Vec<ExecutionProviderKind> {
    vec![ExecutionProviderKind::Cpu]
}
fn default_threads() -> usize {
    2
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            onnxruntime: None,
            execution_providers: default_providers(),
            intra_threads: default_threads(),
        }
    }
}

/// Which model bundle to serve.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Directory of the model bundle (manifest, encoder, decoder, tokenizer).
    #[serde(default = "default_bundle")]
    pub bundle: PathBuf,
    /// Leads the daemon insists on before it reports (others are masked and flagged); empty:
    /// the leads each device provides.
    #[serde(default)]
    pub required_leads: Vec<Lead>,
    /// Refuse to start when the bundle cannot be used (default: start, publish quality and
    /// measurements, and say on every reportable window why there is no report).
    #[serde(default)]
    pub required: bool,
}

fn default_bundle() -> PathBuf {
    PathBuf::from("models/bundles/tiny")
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            bundle: default_bundle(),
            required_leads: Vec::new(),
            required: false,
        }
    }
}
