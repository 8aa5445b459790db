//! Export: a trained model directory -> a model bundle the daemon runs through ONNX Runtime.
//!
//! `meit-models export --model DIR --out BUNDLE [--precision int4|fp32]` writes
//! `encoder.onnx` ([`encoder`]), `decoder.onnx` ([`decoder`]), `tokenizer.json` and
//! `manifest.json` (the format is `meit::infer::bundle::Manifest`, one definition shared with
//! the daemon). Graphs are written from Rust with the protobuf types of the official
//! `onnx.proto3` ([`graph`]); 4-bit weights in `MatMulNBits` layout come from [`int4`].
//!
//! - [`weights`]: the trained weights by name, LoRA merged, BatchNorm folded.
//! - [`encoder`]: ECG -> every decoder layer's ECG-slot key and value.
//! - [`decoder`]: the Llama decoder with a KV cache (onnxruntime-genai I/O names).

pub mod decoder;
pub mod encoder;
pub mod graph;
pub mod int4;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meit::infer::bundle::{
    self, Attention, DecoderShape, EncoderShape, FORMAT_VERSION, GraphSpec, MANIFEST_FILE,
    Manifest, ModelIdentity, Precision, PromptSpec, TokenSpec,
};

use crate::model::meit::prompt_ids;
use crate::train::{RUN_CONFIG, TOKENIZER, TrainError, load_model};
use decoder::LinearFormat;
use weights::Weights;

/// The encoder graph's file name.
pub const ENCODER_FILE: &str = "encoder.onnx";
/// The decoder graph's file name.
pub const DECODER_FILE: &str = "decoder.onnx";
/// The default int4 block size (ONNX Runtime's and onnxruntime-genai's).
pub const DEFAULT_BLOCK_SIZE: usize = 32;
/// The default `MatMulNBits` accuracy level: int8 compute, fastest on the CPU provider with
/// the same error (`../shared/notes/stack-facts.md`).
pub const DEFAULT_ACCURACY_LEVEL: i64 = 4;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The model directory could not be loaded.
    #[error("loading the model: {0}")]
    Load(#[from] TrainError),
    /// A weight the graph needs is not in the checkpoint.
    #[error("the checkpoint has no weight `{0}`")]
    MissingWeight(String),
    /// A weight could not be read or combined.
    #[error("weight {0}")]
    Tensor(String),
    /// The requested export is not available.
    #[error("unsupported export: {0}")]
    Unsupported(String),
    /// A bundle file could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The written bundle does not verify.
    #[error("the written bundle does not verify: {0}")]
    Verify(#[from] bundle::BundleError),
}

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Precision of the decoder's linear layers (the encoder is fp32).
    pub precision: Precision,
    /// int4 block size.
    pub block_size: usize,
    /// int4 `MatMulNBits` accuracy level.
    pub accuracy_level: i64,
    /// LoRA merged into the weights or kept as a float branch.
    pub lora: decoder::LoraExport,
    /// Attention as plain operators or GroupQueryAttention.
    pub attention: decoder::AttentionExport,
    /// int4 zero points: packed 4-bit or float.
    pub zero_points: int4::ZeroPoints,
    /// Keep the output head fp32 in an int4 graph.
    pub float_head: bool,
    /// Store the token-embedding table in float16.
    pub half_embedding: bool,
    /// Model id in the manifest (default: `meit-<model directory name>`).
    pub model_id: Option<String>,
    /// Headline evaluation rows to record in the manifest.
    pub evaluation: BTreeMap<String, f64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            precision: Precision::Int4,
            block_size: DEFAULT_BLOCK_SIZE,
            accuracy_level: DEFAULT_ACCURACY_LEVEL,
            lora: decoder::LoraExport::Merge,
            attention: decoder::AttentionExport::Ops,
            zero_points: int4::ZeroPoints::Packed,
            float_head: false,
            half_embedding: false,
            model_id: None,
            evaluation: BTreeMap::new(),
        }
    }
}

/// Exports the model directory `model_dir` into the bundle directory `out` (created; files in
/// it are replaced) and returns the manifest written.
pub fn export(
    model_dir: &Path,
    out: &Path,
    options: &ExportOptions,
) -> Result<Manifest, ExportError> {
    let (config, model, codec) = load_model(model_dir)?;
    let weights = Weights::of(&model);
    // The model as built: a pretrained base cut to `max_layers` has fewer layers than the
    // checkpoint's own config says.
    let mc = &model.config().clone();
    let encoder_graph = encoder::build(&weights, &mc.encoder, &mc.decoder)?;
    let format = LinearFormat {
        precision: options.precision,
        block_size: options.block_size,
        accuracy_level: options.accuracy_level,
        lora: options.lora,
        attention: options.attention,
        zero_points: options.zero_points,
        float_head: options.float_head,
        half_embedding: options.half_embedding,
    };
    let decoder_graph = decoder::build(&weights, &mc.decoder, format)?;

    std::fs::create_dir_all(out).map_err(|source| ExportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let write = |name: &str, bytes: &[u8]| -> Result<(), ExportError> {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|source| ExportError::Write { path, source })
    };
    write(ENCODER_FILE, &graph::encode(&encoder_graph))?;
    write(DECODER_FILE, &graph::encode(&decoder_graph))?;
    // The tokenizer the model was trained with (trained on reports, or the base's own).
    let tokenizer_json = codec.tokenizer().to_json().map_err(TrainError::from)?;
    write(TOKENIZER, tokenizer_json.as_bytes())?;

    let mut files = BTreeMap::new();
    for name in [ENCODER_FILE, DECODER_FILE, TOKENIZER] {
        files.insert(name.to_string(), bundle::sha256_file(&out.join(name))?);
    }
    let run_config = std::fs::read_to_string(model_dir.join(RUN_CONFIG)).map_err(|source| {
        ExportError::Write {
            path: model_dir.join(RUN_CONFIG),
            source,
        }
    })?;
    let weights_hash = bundle::sha256_file(&model_dir.join(crate::train::WEIGHTS))?;
    let tok = codec.tokenizer();
    let prompt_text = codec.instruction().prompt(0);
    let prompt = prompt_ids(tok, &prompt_text).map_err(TrainError::from)?;
    let samples = (config.preprocess.window_seconds * config.preprocess.model_rate_hz).round();
    let (enc_in, enc_out) = encoder::interface(&mc.encoder, &mc.decoder);
    let (dec_in, dec_out) = decoder::interface(&mc.decoder);
    let name = model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let d = &mc.decoder;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        model: ModelIdentity {
            id: options
                .model_id
                .clone()
                .unwrap_or_else(|| format!("meit-{name}")),
            version: weights_hash[..12].to_string(),
            trained_on: trained_on(&config),
            run_config,
        },
        encoder: EncoderShape {
            leads: mc.encoder.leads,
            samples: samples as usize,
            feature_dim: mc.encoder.feature_dim(),
            head_dim: mc.encoder.head_dim,
        },
        decoder: DecoderShape {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_layers: d.num_layers,
            num_heads: d.num_heads,
            num_kv_heads: d.num_kv_heads,
            head_dim: d.head_dim,
            max_positions: d.max_positions,
        },
        preprocess: config.preprocess.clone(),
        prompt: PromptSpec {
            template: format!("{:?}", config.instruction)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            text: prompt_text,
            ids: prompt,
        },
        tokens: TokenSpec {
            begin_id: tok.begin_id(),
            end_id: tok.end_id(),
            pad_id: tok.pad_id(),
            // The instruction's end marker, and the tokenizer's end of text where that is
            // another token (ChatML's `<|im_end|>` beside `<|endoftext|>`).
            stop_ids: if codec.stop_id() == tok.end_id() {
                vec![codec.stop_id()]
            } else {
                vec![codec.stop_id(), tok.end_id()]
            },
            max_new_tokens: config.train.max_tokens,
        },
        encoder_graph: GraphSpec {
            file: ENCODER_FILE.into(),
            precision: Precision::Fp32,
            inputs: enc_in,
            outputs: enc_out,
            block_size: None,
            accuracy_level: None,
            attention: Attention::Operators,
        },
        decoder_graph: GraphSpec {
            file: DECODER_FILE.into(),
            precision: options.precision,
            inputs: dec_in,
            outputs: dec_out,
            block_size: (options.precision == Precision::Int4).then_some(options.block_size),
            accuracy_level: (options.precision == Precision::Int4)
                .then_some(options.accuracy_level),
            attention: match options.attention {
                decoder::AttentionExport::Ops => Attention::Operators,
                decoder::AttentionExport::Gqa => Attention::GroupQuery,
            },
        },
        tokenizer: TOKENIZER.into(),
        files,
        evaluation: options.evaluation.clone(),
    };
    write_manifest(out, &manifest)?;
    Ok(manifest)
}

/// Writes `manifest` as `out/manifest.json` (pretty JSON).
pub fn write_manifest(out: &Path, manifest: &Manifest) -> Result<(), ExportError> {
    let path = out.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| ExportError::Tensor(format!("manifest: {e}")))?;
    std::fs::write(&path, text + "\n").map_err(|source| ExportError::Write { path, source })
}

/// One line on the training data of `config`.
fn trained_on(config: &crate::train::config::RunConfig) -> String {
    let d = &config.data;
    let source = if d.synth.is_some() {
        "meit synthesizer (src/synth)"
    } else if d.ptbxl.is_some() {
        "PTB-XL tree"
    } else if d.mimic.is_some() {
        "MIMIC-IV-ECG tree"
    } else {
        "unknown"
    };
    let base = config
        .base
        .as_ref()
        .map(|b| format!(", decoder from a pretrained base {b:?}"))
        .unwrap_or_default();
    format!(
        "{source}: {} training records x {} epochs{base}",
        d.train_records, config.train.epochs
    )
}
