//! A model bundle: the directory `meit-models export` writes and the daemon runs.
//!
//! ```text
//! BUNDLE/
//!   manifest.json   what the graphs are, how to feed them, checksums (this module's `Manifest`)
//!   encoder.onnx    ecg [batch, leads, samples] -> slot.{i}.key / slot.{i}.value per layer
//!   decoder.onnx    input_ids, attention_mask, position_ids, past_key_values.{i}.key/value
//!                   -> logits, present.{i}.key/value (onnxruntime-genai's names)
//!   tokenizer.json  the decoder's tokenizer (Hugging Face `tokenizers` format)
//! ```
//!
//! The manifest is the one definition of the format: `meit-models export` fills it, and
//! [`Bundle::open`] refuses a bundle whose format version is newer than this build's, whose
//! files do not match their sha256, whose preprocessing this build cannot run, or whose graphs'
//! inputs and outputs disagree with what the manifest says. Every refusal names the file and
//! what is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dsp::rhythm::RHYTHM_FEATURES;
use crate::dsp::{PreprocessSpec, Preprocessor};
use crate::infer::runtime::OnnxRuntime;

/// The manifest format this build writes and reads. A bundle with a larger number was written
/// by a newer `meit-models` and is refused (fields may have changed meaning).
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a bundle cannot be used. Each variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON or does not have the format's fields.
    #[error("{}: not a valid bundle manifest: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest was written for a newer format.
    #[error(
        "{}: format version {found} is newer than this meit supports ({FORMAT_VERSION}); update meit or re-export the bundle",
        path.display()
    )]
    NewerFormat {
        /// The manifest file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
    /// A file's content does not match the manifest's checksum.
    #[error("{}: sha256 {actual} does not match the manifest's {expected} (corrupt or replaced file)", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// What the manifest says.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The manifest's preprocessing cannot run in this build.
    #[error("{}: preprocessing spec cannot run here: {reason}", path.display())]
    Preprocess {
        /// The manifest file.
        path: PathBuf,
        /// The DSP's refusal.
        reason: String,
    },
    /// ONNX Runtime cannot open a graph (truncated or not ONNX).
    #[error("{}: cannot open the graph: {reason}", path.display())]
    Graph {
        /// The graph file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// A graph's inputs or outputs are not the manifest's.
    #[error("{}: graph disagrees with the manifest: {reason}", path.display())]
    Interface {
        /// The graph file.
        path: PathBuf,
        /// Which name, type or rank differs.
        reason: String,
    },
}

/// One dimension of a tensor in the manifest: a fixed size or a named dynamic one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A dynamic size, by its symbol (`batch`, `sequence`, `past_sequence`, ...).
    Symbol(String),
}

/// A graph input or output as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// The ONNX value name.
    pub name: String,
    /// Element type: `float32`, `float16` or `int64`.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<Dim>,
}

/// Numeric precision of a graph's weights and compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats throughout (the reference).
    Fp32,
    /// 16-bit float weights and compute (GPUs).
    Fp16,
    /// Linear layers as com.microsoft `MatMulNBits` (4 bits, blockwise scales and zero points);
    /// embeddings and norms float.
    Int4,
}

/// How the decoder graph computes attention: what its cache may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// Plain ONNX operators: each call's present is a new tensor, past ++ new (any batch).
    #[default]
    Operators,
    /// com.microsoft `GroupQueryAttention`: the present may be the past's own buffer, written in
    /// place (the engine preallocates it on the host); a prompt after a past is prefilled one
    /// row at a time. ONNX Runtime's CUDA kernel takes fp16 only: an fp32 graph's attention
    /// runs on the CPU provider, so export plain operators (or fp16) for a GPU.
    GroupQuery,
}

impl Attention {
    fn is_operators(&self) -> bool {
        *self == Attention::Operators
    }
}

/// The encoder graph's second input, present when the manifest's preprocessing hands the model
/// the R-R interval statistics ([`PreprocessSpec::rhythm_features`]): `[batch, 4]` float32.
pub const RHYTHM_INPUT: &str = "rhythm";

/// The encoder graph's input the engine binds the windows to: float32 `[batch, leads, samples]`.
pub const ECG_INPUT: &str = "ecg";

/// The encoder graph's outputs are the ECG slot's cache entries, `slot.{i}.key` and
/// `slot.{i}.value` for each decoder layer `i`.
pub const SLOT_PREFIX: &str = "slot";

/// The decoder graph's inputs the engine binds besides its cache (`past_key_values.{i}.*`).
pub const DECODER_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "position_ids"];

/// The decoder graph's output the engine reads the next token from: `[batch, positions, vocab]`.
pub const LOGITS_OUTPUT: &str = "logits";

/// The longest sequence a manifest may declare (`decoder.max_positions`): the engine sizes
/// cache buffers by it, and no model it runs comes near (SmolLM2: 8,192).
pub const MAX_POSITIONS: usize = 1 << 17;

/// One graph of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// File name inside the bundle.
    pub file: String,
    /// Its precision.
    pub precision: Precision,
    /// Its inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs, in order.
    pub outputs: Vec<TensorSpec>,
    /// For `int4`: the quantisation block size along K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// For `int4`: `MatMulNBits` accuracy level (4 = int8 compute on the CPU provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_level: Option<i64>,
    /// For the decoder: how it computes attention (absent: plain operators).
    #[serde(default, skip_serializing_if = "Attention::is_operators")]
    pub attention: Attention,
}

/// The ECG encoder's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderShape {
    /// Input rows (leads) in the manifest's lead order.
    pub leads: usize,
    /// Samples per lead of one window at the model rate.
    pub samples: usize,
    /// The projection's input: the pooled ResNet statistics (+ one flag per lead).
    pub feature_dim: usize,
    /// The embedding's size (= the decoder's head_dim).
    pub head_dim: usize,
}

/// The decoder's shape, as the engine needs it to size its cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderShape {
    /// Vocabulary size (logits width).
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Layers (each has one key and one value cache).
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Longest sequence, the ECG slot included.
    pub max_positions: usize,
}

/// The instruction the decoder is given before it writes a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// The instruction style of training (e.g. `tulu`).
    pub template: String,
    /// The prompt text (chat wrapper included).
    pub text: String,
    /// Its token ids, begin id first when the tokenizer has one. Text positions are numbered
    /// from 1 (position 0 is the ECG slot).
    pub ids: Vec<u32>,
}

/// Special token ids and decoding limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The begin id (`<s>`), if the tokenizer has one.
    pub begin_id: Option<u32>,
    /// The id that ends a report (`</s>`).
    pub end_id: u32,
    /// The padding id.
    pub pad_id: u32,
    /// Ids that stop generation (the end id included).
    pub stop_ids: Vec<u32>,
    /// Most tokens generated per report.
    pub max_new_tokens: usize,
}

/// The model's name and origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// Short id, e.g. `meit-tiny`.
    pub id: String,
    /// Version of this export (the training run's content hash prefix).
    pub version: String,
    /// What trained it: the data source and size.
    pub trained_on: String,
    /// The training run configuration (run.toml) as text.
    pub run_config: String,
}

/// A bundle's manifest (`manifest.json`). Field by field in `models/README.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Model id, version and training origin.
    pub model: ModelIdentity,
    /// The encoder's sizes.
    pub encoder: EncoderShape,
    /// The decoder's sizes.
    pub decoder: DecoderShape,
    /// The daemon's preprocessing for this model (the run's `[preprocess]`).
    pub preprocess: PreprocessSpec,
    /// The instruction before each report.
    pub prompt: PromptSpec,
    /// Special ids and limits.
    pub tokens: TokenSpec,
    /// The encoder graph.
    pub encoder_graph: GraphSpec,
    /// The decoder graph.
    pub decoder_graph: GraphSpec,
    /// The tokenizer file name.
    pub tokenizer: String,
    /// sha256 (hex) of every file of the bundle but the manifest.
    pub files: BTreeMap<String, String>,
    /// Headline evaluation rows (metric -> value) measured on this bundle's graphs.
    #[serde(default)]
    pub evaluation: BTreeMap<String, f64>,
}

impl Manifest {
    /// Everything about the manifest that needs no other file: the files it names (plain names
    /// in the bundle, each checksummed), the decoding limits and token ids, that its
    /// preprocessing runs here, that the encoder's window is the preprocessing's window at the
    /// model rate, the rhythm input, that the decoder's layer count is the graphs' cache and
    /// slot names, and that the graphs declare every name the engine binds. `manifest_path` names the manifest in refusals. The
    /// daemon adopts a manifest's preprocessing only after this check.
    pub fn check(&self, manifest_path: &Path) -> Result<(), BundleError> {
        let invalid = |reason: String| BundleError::Manifest {
            path: manifest_path.to_path_buf(),
            reason,
        };
        self.check_file_names().map_err(invalid)?;
        for needed in [
            &self.encoder_graph.file,
            &self.decoder_graph.file,
            &self.tokenizer,
        ] {
            if !self.files.contains_key(needed) {
                return Err(invalid(format!("`files` has no checksum for {needed}")));
            }
        }
        self.check_decoding().map_err(invalid)?;
        Preprocessor::new(self.preprocess.clone()).map_err(|e| BundleError::Preprocess {
            path: manifest_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let rhythm_input = self
            .encoder_graph
            .inputs
            .iter()
            .find(|input| input.name == RHYTHM_INPUT);
        if let Some(input) = rhythm_input {
            // What the engine binds: float32 [batch, 4] (`RhythmFeatures::to_array` per row).
            let expected = [
                Dim::Symbol("batch".into()),
                Dim::Fixed(RHYTHM_FEATURES as i64),
            ];
            if input.dtype != "float32" || input.shape != expected {
                return Err(BundleError::Manifest {
                    path: manifest_path.to_path_buf(),
                    reason: format!(
                        "the encoder input `{RHYTHM_INPUT}` is {} {:?}; the engine feeds float32 \
                         [batch, {RHYTHM_FEATURES}]",
                        input.dtype, input.shape
                    ),
                });
            }
        }
        let reads_rhythm = rhythm_input.is_some();
        if reads_rhythm != self.preprocess.rhythm_features {
            let (graph, spec) = if reads_rhythm {
                ("reads", "does not compute them")
            } else {
                ("has no such input", "computes them (`rhythm_features`)")
            };
            return Err(BundleError::Preprocess {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "the encoder graph {graph} `{RHYTHM_INPUT}` (R-R interval statistics) but \
                     the preprocessing {spec}"
                ),
            });
        }
        let rows = self.preprocess.lead_order.0.len();
        if rows != self.encoder.leads {
            return Err(BundleError::Preprocess {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "lead_order has {rows} leads, the encoder takes {}",
                    self.encoder.leads
                ),
            });
        }
        let spec = &self.preprocess;
        let window = (spec.window_seconds * spec.model_rate_hz).round();
        if window != self.encoder.samples as f64 {
            return Err(BundleError::Preprocess {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "window_seconds {} at {} Hz is {window} samples, the encoder takes {}",
                    spec.window_seconds, spec.model_rate_hz, self.encoder.samples
                ),
            });
        }
        if !(spec.hop_seconds > 0.0 && spec.hop_seconds <= spec.window_seconds) {
            return Err(BundleError::Preprocess {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "hop_seconds is {}; allowed: above 0, at most window_seconds ({})",
                    spec.hop_seconds, spec.window_seconds
                ),
            });
        }
        self.check_cache_names().map_err(invalid)?;
        self.check_bound_names().map_err(invalid)
    }

    /// Every file the manifest names is a plain file name inside the bundle directory: no
    /// directory part, no `..`, not absolute, not the manifest (a name such as `/dev/zero`
    /// would be read without end when its checksum is computed).
    pub fn check_file_names(&self) -> Result<(), String> {
        let named = self.files.keys().chain([
            &self.encoder_graph.file,
            &self.decoder_graph.file,
            &self.tokenizer,
        ]);
        for name in named {
            let mut parts = Path::new(name).components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            );
            if !plain || name == MANIFEST_FILE {
                return Err(format!(
                    "the file name `{name}` is not a plain file name in the bundle directory"
                ));
            }
        }
        Ok(())
    }

    /// The decoding limits and token ids can be used: at least one new token fits after the
    /// ECG slot and the prompt, a report can end (a stop id), and every id the engine feeds or
    /// stops at is inside the vocabulary.
    fn check_decoding(&self) -> Result<(), String> {
        let (d, t, p) = (&self.decoder, &self.tokens, &self.prompt);
        if d.max_positions > MAX_POSITIONS {
            return Err(format!(
                "decoder.max_positions is {}; at most {MAX_POSITIONS}",
                d.max_positions
            ));
        }
        if t.max_new_tokens == 0 {
            return Err("tokens.max_new_tokens is 0: no report could be written".into());
        }
        if t.stop_ids.is_empty() {
            return Err("tokens.stop_ids is empty: no report could end".into());
        }
        if !t.stop_ids.contains(&t.end_id) {
            return Err(format!(
                "tokens.stop_ids {:?} lacks end_id {}",
                t.stop_ids, t.end_id
            ));
        }
        if p.ids.is_empty() {
            return Err("prompt.ids is empty".into());
        }
        // Position 0 is the ECG slot; the prompt follows; one position must be left to write.
        if 1 + p.ids.len() >= d.max_positions {
            return Err(format!(
                "the ECG slot and the prompt's {} ids fill decoder.max_positions {}: no token \
                 could be generated",
                p.ids.len(),
                d.max_positions
            ));
        }
        let ids = [("tokens.end_id", t.end_id), ("tokens.pad_id", t.pad_id)]
            .into_iter()
            .chain(t.begin_id.map(|id| ("tokens.begin_id", id)))
            .chain(t.stop_ids.iter().map(|&id| ("tokens.stop_ids", id)))
            .chain(p.ids.iter().map(|&id| ("prompt.ids", id)));
        for (field, id) in ids {
            if id as usize >= d.vocab_size {
                return Err(format!(
                    "{field} holds id {id}, outside decoder.vocab_size {}",
                    d.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// The graphs declare the names the engine binds: [`ECG_INPUT`] (and [`RHYTHM_INPUT`],
    /// checked with the preprocessing), [`DECODER_INPUTS`] and [`LOGITS_OUTPUT`]; the slot
    /// outputs are checked with the cache names.
    fn check_bound_names(&self) -> Result<(), String> {
        let needed = [("encoder", "input", &self.encoder_graph.inputs, ECG_INPUT)]
            .into_iter()
            .chain(
                DECODER_INPUTS.map(|name| ("decoder", "input", &self.decoder_graph.inputs, name)),
            )
            .chain([(
                "decoder",
                "output",
                &self.decoder_graph.outputs,
                LOGITS_OUTPUT,
            )]);
        for (graph, side, tensors, name) in needed {
            if !tensors.iter().any(|t| t.name == name) {
                return Err(format!(
                    "the {graph} graph has no {side} `{name}`, which the engine binds"
                ));
            }
        }
        Ok(())
    }

    /// The decoder graph's past inputs and present outputs, and the encoder graph's slot
    /// outputs, are exactly one key and one value per layer of `decoder.num_layers`, in order
    /// (the engine binds them by these names, and sizes its cache by the count).
    fn check_cache_names(&self) -> Result<(), String> {
        let layers = self.decoder.num_layers;
        for (graph, side, prefix, tensors) in [
            (
                "decoder",
                "input",
                "past_key_values",
                &self.decoder_graph.inputs,
            ),
            ("decoder", "output", "present", &self.decoder_graph.outputs),
            (
                "encoder",
                "output",
                SLOT_PREFIX,
                &self.encoder_graph.outputs,
            ),
        ] {
            let found: Vec<&str> = tensors
                .iter()
                .map(|t| t.name.as_str())
                .filter(|n| n.starts_with(&format!("{prefix}.")))
                .collect();
            // The count first: an absurd `num_layers` must not size anything.
            let same = layers.checked_mul(2) == Some(found.len())
                && (0..layers).all(|i| {
                    found[2 * i] == format!("{prefix}.{i}.key")
                        && found[2 * i + 1] == format!("{prefix}.{i}.value")
                });
            if !same {
                return Err(format!(
                    "decoder.num_layers is {layers} but the {graph} graph's {prefix} {side}s are \
                     {} (expected {prefix}.0.key .. {prefix}.{}.value)",
                    found.len(),
                    layers.saturating_sub(1)
                ));
            }
        }
        Ok(())
    }
}

/// A verified bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// Reads and checks `dir`: manifest format and fields, every file's sha256, and that the
    /// preprocessing spec runs here; then opens both graphs on the CPU provider and checks
    /// their inputs and outputs against the manifest.
    pub fn open(dir: &Path, runtime: &OnnxRuntime) -> Result<Bundle, BundleError> {
        let bundle = Bundle::open_unchecked_graphs(dir)?;
        for graph in [
            &bundle.manifest.encoder_graph,
            &bundle.manifest.decoder_graph,
        ] {
            bundle.check_graph(graph, runtime)?;
        }
        Ok(bundle)
    }

    /// [`Bundle::open`] without ONNX Runtime: manifest, checksums and preprocessing only
    /// (`meit doctor`, and callers that open the graphs themselves next).
    pub fn open_unchecked_graphs(dir: &Path) -> Result<Bundle, BundleError> {
        let manifest = read_manifest(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        // Names first: a checksum is computed only of plain files inside the bundle.
        manifest
            .check_file_names()
            .map_err(|reason| BundleError::Manifest {
                path: manifest_path.clone(),
                reason,
            })?;
        for (file, expected) in &manifest.files {
            let path = dir.join(file);
            regular_file(&path)?;
            let actual = sha256_file(&path)?;
            same_checksum(path, expected, actual)?;
        }
        manifest.check(&manifest_path)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The path of a bundle file.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The bytes of `file`, read once and checked against the manifest's checksum: what the
    /// engine builds its sessions and detokenizer from, so a file replaced after
    /// [`Bundle::open`] checked it (a new bundle copied over a running one) is refused, never run.
    pub fn read_verified(&self, file: &str) -> Result<Vec<u8>, BundleError> {
        let path = self.path(file);
        let expected = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| BundleError::Manifest {
                path: self.path(MANIFEST_FILE),
                reason: format!("`files` has no checksum for {file}"),
            })?;
        regular_file(&path)?;
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Read {
            path: path.clone(),
            source,
        })?;
        same_checksum(path, expected, hex(Sha256::digest(&bytes).as_slice()))?;
        Ok(bytes)
    }

    fn check_graph(&self, graph: &GraphSpec, runtime: &OnnxRuntime) -> Result<(), BundleError> {
        let path = self.path(&graph.file);
        let session = runtime
            .cpu_session(&path, 1)
            .map_err(|e| BundleError::Graph {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let interface = |reason: String| BundleError::Interface {
            path: path.clone(),
            reason,
        };
        compare_outlets("input", &graph.inputs, session.inputs()).map_err(interface)?;
        compare_outlets("output", &graph.outputs, session.outputs()).map_err(interface)
    }
}

/// The manifest of `dir`, with its format version checked before anything else is parsed.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read {
        path: path.clone(),
        source,
    })?;
    let invalid = |reason: String| BundleError::Manifest {
        path: path.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| invalid("no numeric `format_version`".into()))?;
    if version > u64::from(FORMAT_VERSION) {
        return Err(BundleError::NewerFormat {
            path,
            found: version,
        });
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// The sha256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let read = |source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(hasher.finalize().as_slice()))
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`BundleError::Read`] unless `path` is a regular file (a device such as `/dev/zero`, a
/// directory or a FIFO behind a bundle name would be read without end or not at all).
fn regular_file(path: &Path) -> Result<(), BundleError> {
    let meta = std::fs::metadata(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(BundleError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        })
    }
}

/// A [`BundleError::Checksum`] unless `actual` is `expected` (hex is hex in either case: a
/// manifest written by hand, or by another tool).
fn same_checksum(path: PathBuf, expected: &str, actual: String) -> Result<(), BundleError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(BundleError::Checksum {
            path,
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Checks names, element types and ranks (and fixed sizes) of a session's outlets.
fn compare_outlets(
    kind: &str,
    declared: &[TensorSpec],
    actual: &[ort::value::Outlet],
) -> Result<(), String> {
    let names = |v: Vec<&str>| v.join(", ");
    if declared.len() != actual.len() {
        return Err(format!(
            "{} {kind}s in the graph ({}), {} in the manifest ({})",
            actual.len(),
            names(actual.iter().map(|o| o.name()).collect()),
            declared.len(),
            names(declared.iter().map(|d| d.name.as_str()).collect())
        ));
    }
    for (want, got) in declared.iter().zip(actual) {
        if want.name != got.name() {
            return Err(format!(
                "{kind} `{}` in the graph where the manifest has `{}`",
                got.name(),
                want.name
            ));
        }
        let ty = got.dtype();
        let dtype = match ty.tensor_type() {
            Some(ort::value::TensorElementType::Float32) => "float32",
            Some(ort::value::TensorElementType::Float16) => "float16",
            Some(ort::value::TensorElementType::Int64) => "int64",
            other => return Err(format!("{kind} `{}` has type {other:?}", want.name)),
        };
        if dtype != want.dtype {
            return Err(format!(
                "{kind} `{}` is {dtype} in the graph, {} in the manifest",
                want.name, want.dtype
            ));
        }
        let shape: Vec<i64> = ty
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if shape.len() != want.shape.len() {
            return Err(format!(
                "{kind} `{}` has rank {} in the graph, {} in the manifest",
                want.name,
                shape.len(),
                want.shape.len()
            ));
        }
        for (axis, (d, &n)) in want.shape.iter().zip(&shape).enumerate() {
            if let Dim::Fixed(size) = d
                && *size != n
            {
                return Err(format!(
                    "{kind} `{}` axis {axis} is {n} in the graph, {size} in the manifest",
                    want.name
                ));
            }
        }
    }
    Ok(())
}
