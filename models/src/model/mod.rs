//! The MEIT model in candle: an ECG encoder whose output joins a Llama decoder as one extra
//! key/value slot in every attention layer (the paper's "concatenation fusion").
//!
//! Read in this order:
//! - [`params`]: where weights come from (seeded initialisation into a `VarMap`, or loaded tensors).
//! - [`ecg_encoder`]: 1-D ResNet + projection MLP -> L2-normalised `head_dim` vector per record.
//! - [`lora`]: a linear layer with an optional low-rank adapter, and its merge.
//! - [`llama`]: the decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) with the ECG slot.
//! - [`instruction`]: the chat wrapper around report text and which tokens carry the loss.
//! - [`meit`]: encoder + decoder together, the masked language-model loss.
//! - [`gguf`]: a pretrained Llama decoder (SmolLM2-135M) from llama.cpp's GGUF.
//! - [`hf`]: a pretrained Llama decoder from a Hugging Face directory (safetensors).
//! - [`pretrained`]: the trainable model on that decoder, with the checkpoint's tokenizer.
//!
//! Every public function returns [`ModelError`]; inside a layer, candle's own errors are used and
//! wrapped once with the name of the step that failed.

pub mod ecg_encoder;
pub mod gguf;
pub mod hf;
pub mod instruction;
pub mod llama;
pub mod lora;
pub mod meit;
pub mod params;
pub mod pretrained;
pub mod statement_head;

/// What went wrong while building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, dtype, device) in the named step.
    #[error("{step}: {source}")]
    Tensor {
        /// The model step that failed, e.g. "llama forward".
        step: &'static str,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// A configuration that cannot describe a working model.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A checkpoint file that cannot be read or does not describe the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Input data whose shape or content does not fit the model.
    #[error("invalid model input: {0}")]
    Input(String),
}

impl ModelError {
    /// Wraps candle errors of one step: `.map_err(ModelError::tensor("llama forward"))`.
    pub fn tensor(step: &'static str) -> impl Fn(candle_core::Error) -> ModelError {
        move |source| ModelError::Tensor { step, source }
    }
}
