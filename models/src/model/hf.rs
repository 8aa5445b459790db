//! Loads a Llama-architecture model given as a Hugging Face directory as the pretrained decoder:
//! `config.json` (the shape), `model.safetensors` or the shards `model.safetensors.index.json`
//! names (the weights, any float dtype; converted to f32), `tokenizer.json` (the tokenizer) and,
//! when present, `tokenizer_config.json` (which token ends a turn and which pads).
//!
//! Hugging Face stores `q_proj`/`k_proj` in the row order this decoder rotates with (pairs
//! `(i, i + d/2)`), so unlike a GGUF nothing is permuted. What this decoder cannot run is refused
//! with the key that says so: RoPE scaling (Llama 3.1's `rope_scaling`), attention or MLP biases,
//! a `head_dim` other than `hidden_size / num_attention_heads`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::DType;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::ModelError;
use super::llama::LlamaConfig;
use super::params::Params;
use crate::tokenizer::PretrainedTokenizer;

/// The weights of a single-file checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The shard index of a multi-file checkpoint.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// What a Hugging Face directory gives besides the weights.
#[derive(Debug, Clone)]
pub struct HfDecoder {
    /// The decoder's shape, from `config.json` (with the kept layer count).
    pub config: LlamaConfig,
    /// The directory's tokenizer with its begin, end and padding ids.
    pub tokenizer: PretrainedTokenizer,
}

/// The `config.json` keys this loader reads (others, e.g. `torch_dtype`, are ignored).
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    bos_token_id: Option<TokenIds>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
}

/// Hugging Face's default RoPE base.
fn default_rope_theta() -> f64 {
    10_000.0
}

/// A token id or a list of them (`eos_token_id` is a list in Llama 3's config).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::Many(ids) => ids.first().copied(),
        }
    }
}

/// The `tokenizer_config.json` keys this loader reads.
#[derive(Debug, Default, Deserialize)]
struct HfTokenizerConfig {
    #[serde(default)]
    eos_token: Option<TokenName>,
    #[serde(default)]
    pad_token: Option<TokenName>,
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenName {
    Text(String),
    Added { content: String },
}

impl TokenName {
    fn text(&self) -> &str {
        match self {
            TokenName::Text(text) | TokenName::Added { content: text } => text,
        }
    }
}

/// Reads the directory `dir`, inserts its weights into `params` (the decoder's prefix, e.g.
/// `params.pp("decoder")`), keeping only the first `max_layers` layers when given, and returns
/// the decoder's configuration and tokenizer.
pub fn load_llama_dir(
    dir: &Path,
    params: &Params,
    max_layers: Option<usize>,
) -> Result<HfDecoder, ModelError> {
    let fail = |file: &str, message: String| ModelError::Checkpoint {
        path: dir.join(file),
        message,
    };
    let hf: HfConfig = read_json(dir, "config.json")?;
    let config = decoder_config(&hf, max_layers).map_err(|m| fail("config.json", m))?;
    config.validate()?;
    let tokenizer = load_tokenizer(dir, &hf, &config)?;
    let mut loaded = BTreeSet::new();
    for (file, names) in weight_files(dir)? {
        let path = dir.join(&file);
        let tensors = candle_core::safetensors::load(&path, params.device())
            .map_err(|e| fail(&file, e.to_string()))?;
        for (hf_name, tensor) in tensors {
            if !names.as_ref().is_none_or(|names| names.contains(&hf_name)) {
                continue;
            }
            let Some(name) = decoder_name(&hf_name, &config).map_err(|m| fail(&file, m))? else {
                continue;
            };
            let tensor = tensor
                .to_dtype(DType::F32)
                .map_err(|e| fail(&file, format!("{hf_name}: {e}")))?;
            params.insert(&name, &tensor)?;
            loaded.insert(name);
        }
    }
    if let Some(missing) = expected_names(&config)
        .into_iter()
        .find(|name| !loaded.contains(name))
    {
        return Err(fail(
            WEIGHTS_FILE,
            format!("no tensor model.{missing} (lm_head.{missing} when untied)"),
        ));
    }
    Ok(HfDecoder { config, tokenizer })
}

/// The decoder shape `config.json` describes, or why this decoder cannot run it.
fn decoder_config(hf: &HfConfig, max_layers: Option<usize>) -> Result<LlamaConfig, String> {
    if let Some(model_type) = hf.model_type.as_deref().filter(|t| *t != "llama") {
        return Err(format!(
            "model_type {model_type:?}: only Llama-architecture models (\"llama\") load here"
        ));
    }
    if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err("rope_scaling is set; this decoder runs plain RoPE only".into());
    }
    if hf.attention_bias || hf.mlp_bias {
        return Err("attention_bias/mlp_bias: this decoder's projections have no bias".into());
    }
    let num_heads = hf.num_attention_heads;
    let head_dim = hf.hidden_size / num_heads.max(1);
    if hf.head_dim.is_some_and(|d| d != head_dim) {
        return Err(format!(
            "head_dim {:?} is not hidden_size / num_attention_heads = {head_dim}",
            hf.head_dim
        ));
    }
    Ok(LlamaConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: max_layers.map_or(hf.num_hidden_layers, |keep| keep.min(hf.num_hidden_layers)),
        num_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(num_heads),
        head_dim,
        rope_theta: hf.rope_theta,
        rms_norm_eps: hf.rms_norm_eps,
        max_positions: hf.max_position_embeddings,
        tie_embeddings: hf.tie_word_embeddings,
    })
}

/// A weight file to read and, for a shard, the tensors the index puts in it.
type WeightFile = (String, Option<BTreeSet<String>>);

/// The weight files to read.
fn weight_files(dir: &Path) -> Result<Vec<WeightFile>, ModelError> {
    if dir.join(WEIGHTS_FILE).is_file() {
        return Ok(vec![(WEIGHTS_FILE.to_string(), None)]);
    }
    if !dir.join(WEIGHTS_INDEX).is_file() {
        return Err(ModelError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!("neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX} is there"),
        });
    }
    #[derive(Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = read_json(dir, WEIGHTS_INDEX)?;
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tensor, file) in index.weight_map {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(ModelError::Checkpoint {
                path: dir.join(WEIGHTS_INDEX),
                message: format!("shard {file:?} is not a file name in the directory"),
            });
        }
        files.entry(file).or_default().insert(tensor);
    }
    Ok(files
        .into_iter()
        .map(|(file, names)| (file, Some(names)))
        .collect())
}

/// The decoder parameter name of a Hugging Face tensor; `None` for tensors that are not weights
/// of the kept decoder (RoPE buffers, dropped layers, a tied model's copy of `lm_head`).
fn decoder_name(hf_name: &str, config: &LlamaConfig) -> Result<Option<String>, String> {
    if hf_name.ends_with("rotary_emb.inv_freq") {
        return Ok(None);
    }
    if hf_name == "lm_head.weight" {
        return Ok((!config.tie_embeddings).then(|| hf_name.to_string()));
    }
    let unexpected = || format!("unexpected tensor {hf_name} for a Llama decoder");
    let name = hf_name.strip_prefix("model.").ok_or_else(unexpected)?;
    if let Some(rest) = name.strip_prefix("layers.") {
        let (layer, tensor) = rest.split_once('.').ok_or_else(unexpected)?;
        let layer: usize = layer.parse().map_err(|_| unexpected())?;
        if !LAYER_TENSORS.contains(&tensor) {
            return Err(unexpected());
        }
        return Ok((layer < config.num_layers).then(|| name.to_string()));
    }
    match name {
        "embed_tokens.weight" | "norm.weight" => Ok(Some(name.to_string())),
        _ => Err(unexpected()),
    }
}

/// The weights of one decoder layer, by their Hugging Face names below `layers.N.`.
const LAYER_TENSORS: [&str; 9] = [
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// Every decoder weight `config` needs, by decoder parameter name.
fn expected_names(config: &LlamaConfig) -> Vec<String> {
    let mut names = vec!["embed_tokens.weight".to_string(), "norm.weight".to_string()];
    for layer in 0..config.num_layers {
        names.extend(LAYER_TENSORS.iter().map(|t| format!("layers.{layer}.{t}")));
    }
    if !config.tie_embeddings {
        names.push("lm_head.weight".into());
    }
    names
}

/// The directory's tokenizer: its end id is `tokenizer_config.json`'s `eos_token` (the token that
/// ends a chat turn, `<|im_end|>` for SmolLM2-Instruct), else `config.json`'s `eos_token_id`;
/// padding is `pad_token` when it names a token, else the end id; the begin id is the one the
/// tokenizer itself puts before text (Llama's `<s>`), none when it adds nothing.
fn load_tokenizer(
    dir: &Path,
    hf: &HfConfig,
    config: &LlamaConfig,
) -> Result<PretrainedTokenizer, ModelError> {
    let path = dir.join("tokenizer.json");
    let fail = |path: &Path, message: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let inner = Tokenizer::from_file(&path).map_err(|e| fail(&path, e.to_string()))?;
    let size = inner.get_vocab_size(true);
    if size > config.vocab_size {
        return Err(fail(
            &path,
            format!(
                "{size} tokens, more than the {} rows of the embedding",
                config.vocab_size
            ),
        ));
    }
    let tokenizer_config: HfTokenizerConfig = if dir.join("tokenizer_config.json").is_file() {
        read_json(dir, "tokenizer_config.json")?
    } else {
        HfTokenizerConfig::default()
    };
    let id_of = |name: &Option<TokenName>| name.as_ref().and_then(|n| inner.token_to_id(n.text()));
    let end_id = id_of(&tokenizer_config.eos_token)
        .or_else(|| hf.eos_token_id.as_ref().and_then(TokenIds::first))
        .ok_or_else(|| {
            fail(
                &dir.join("config.json"),
                "no end-of-text token (eos_token_id, or eos_token in tokenizer_config.json)".into(),
            )
        })?;
    let pad_id = id_of(&tokenizer_config.pad_token).unwrap_or(end_id);
    let begin_id = added_begin_id(&inner).map_err(|m| fail(&path, m))?;
    if let (Some(begin), Some(declared)) = (begin_id, hf.bos_token_id.as_ref())
        && declared.first() != Some(begin)
    {
        return Err(fail(
            &path,
            format!("it begins text with id {begin}, config.json says bos_token_id {declared:?}"),
        ));
    }
    PretrainedTokenizer::new(inner, pad_id, begin_id, end_id)
        .map_err(|e| fail(&path, e.to_string()))
}

/// The id the tokenizer's post-processor puts before text, if any.
fn added_begin_id(inner: &Tokenizer) -> Result<Option<u32>, String> {
    let probe = "sinus rhythm";
    let plain = inner.encode(probe, false).map_err(|e| e.to_string())?;
    let with = inner.encode(probe, true).map_err(|e| e.to_string())?;
    let (plain, with) = (plain.get_ids(), with.get_ids());
    Ok(match with.first() {
        Some(first) if with.len() > plain.len() && !with.starts_with(plain) => Some(*first),
        _ => None,
    })
}

/// Parses the JSON file `name` of `dir`.
fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T, ModelError> {
    let path = dir.join(name);
    let fail = |message: String| ModelError::Checkpoint {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::llama::Llama;
    use crate::tokenizer::{ReportTokenizer, TextTokenizer};

    /// A tiny random decoder written as a Hugging Face directory (`dtype` weights), with the
    /// report tokenizer as its `tokenizer.json`; returns the decoder written.
    fn write_dir(
        dir: &Path,
        config: &LlamaConfig,
        dtype: DType,
    ) -> Result<Llama, Box<dyn std::error::Error>> {
        let params = Params::new(11, &Device::Cpu);
        let llama = Llama::new(config, None, &params)?;
        let mut tensors = HashMap::new();
        for (name, var) in params.named_vars_where(|_| true) {
            let hf = if name == "lm_head.weight" {
                name
            } else {
                format!("model.{name}")
            };
            tensors.insert(hf, var.as_tensor().to_dtype(dtype)?);
        }
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))?;
        let tokenizer = ReportTokenizer::train(
            [
                "sinus rhythm. normal ecg",
                "atrial fibrillation. abnormal ecg",
            ]
            .into_iter(),
            config.vocab_size,
            1,
        )?;
        tokenizer.save(&dir.join("tokenizer.json"))?;
        let json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.num_kv_heads,
            "rms_norm_eps": config.rms_norm_eps,
            "rope_theta": config.rope_theta,
            "max_position_embeddings": config.max_positions,
            "tie_word_embeddings": config.tie_embeddings,
            "rope_scaling": null,
            "eos_token_id": tokenizer.end_id(),
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.join("config.json"), json.to_string())?;
        Ok(llama)
    }

    fn logits(llama: &Llama) -> Result<Tensor, Box<dyn std::error::Error>> {
        let ids = Tensor::new(&[[3u32, 17, 42, 5]], &Device::Cpu)?;
        Ok(llama.forward_sequence(&ids, None, false)?)
    }

    #[test]
    fn a_directory_loads_the_decoder_it_was_written_from() -> Result<(), Box<dyn std::error::Error>>
    {
        for tie in [true, false] {
            let dir = tempfile::tempdir()?;
            let config = LlamaConfig {
                tie_embeddings: tie,
                ..LlamaConfig::tiny(300)
            };
            let written = write_dir(dir.path(), &config, DType::F32)?;
            let params = Params::new(99, &Device::Cpu);
            let loaded = load_llama_dir(dir.path(), &params, None)?;
            assert_eq!(loaded.config, config);
            let llama = Llama::new(&loaded.config, None, &params)?;
            let diff = (logits(&written)? - logits(&llama)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "tie_embeddings {tie}");
            assert_eq!(
                loaded.tokenizer.end_id(),
                ReportTokenizer::load(&dir.path().join("tokenizer.json"))?.end_id()
            );
        }
        Ok(())
    }

    #[test]
    fn bf16_weights_and_kept_layers_load() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = LlamaConfig::tiny(300);
        write_dir(dir.path(), &config, DType::BF16)?;
        let params = Params::new(99, &Device::Cpu);
        let loaded = load_llama_dir(dir.path(), &params, Some(1))?;
        assert_eq!(loaded.config.num_layers, 1);
        assert!(
            params
                .named_vars_where(|n| n.starts_with("layers.1."))
                .is_empty()
        );
        let embed = params
            .named_vars_where(|n| n == "embed_tokens.weight")
            .pop()
            .ok_or("no embedding")?
            .1;
        assert_eq!(embed.dtype(), DType::F32);
        Ok(())
    }

    #[test]
    fn what_the_decoder_cannot_run_is_refused_by_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        write_dir(dir.path(), &LlamaConfig::tiny(300), DType::F32)?;
        let config_path = dir.path().join("config.json");
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
        let cases = [
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
                "rope_scaling",
            ),
            ("model_type", serde_json::json!("mistral"), "mistral"),
            ("attention_bias", serde_json::json!(true), "bias"),
            ("head_dim", serde_json::json!(8), "head_dim"),
        ];
        for (key, value, expected) in cases {
            let mut changed = original.clone();
            changed[key] = value;
            std::fs::write(&config_path, changed.to_string())?;
            let err = load_llama_dir(dir.path(), &Params::new(0, &Device::Cpu), None)
                .err()
                .ok_or(key)?;
            assert!(err.to_string().contains(expected), "{key}: {err}");
        }
        Ok(())
    }

    #[test]
    fn missing_files_and_tensors_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = LlamaConfig::tiny(300);
        write_dir(dir.path(), &config, DType::F32)?;
        let weights = dir.path().join(WEIGHTS_FILE);
        let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        tensors.remove("model.layers.1.mlp.up_proj.weight");
        candle_core::safetensors::save(&tensors, &weights)?;
        let err = load_llama_dir(dir.path(), &Params::new(0, &Device::Cpu), None)
            .err()
            .ok_or("loaded without a tensor")?;
        assert!(
            err.to_string()
                .contains("model.layers.1.mlp.up_proj.weight"),
            "{err}"
        );
        // One layer kept: the missing tensor is not needed.
        load_llama_dir(dir.path(), &Params::new(0, &Device::Cpu), Some(1))?;
        std::fs::remove_file(&weights)?;
        let err = load_llama_dir(dir.path(), &Params::new(0, &Device::Cpu), None)
            .err()
            .ok_or("loaded without weights")?;
        assert!(err.to_string().contains(WEIGHTS_INDEX), "{err}");
        Ok(())
    }

    #[test]
    fn a_tensor_this_decoder_has_no_place_for_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        write_dir(dir.path(), &LlamaConfig::tiny(300), DType::F32)?;
        let weights = dir.path().join(WEIGHTS_FILE);
        let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        let bias = Tensor::zeros(64, DType::F32, &Device::Cpu)?;
        tensors.insert("model.layers.0.self_attn.q_proj.bias".into(), bias);
        candle_core::safetensors::save(&tensors, &weights)?;
        let err = load_llama_dir(dir.path(), &Params::new(0, &Device::Cpu), None)
            .err()
            .ok_or("loaded a bias the decoder has no place for")?;
        let text = err.to_string();
        assert!(
            text.contains("q_proj.bias") && text.contains(WEIGHTS_FILE),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn shards_load_by_their_index() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = LlamaConfig::tiny(300);
        let written = write_dir(dir.path(), &config, DType::F32)?;
        let weights = dir.path().join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        std::fs::remove_file(&weights)?;
        let (mut first, mut second) = (HashMap::new(), HashMap::new());
        let mut map = serde_json::Map::new();
        for (name, tensor) in tensors {
            let (shard, file) = if name.contains("layers.1.") {
                (&mut second, "model-00002-of-00002.safetensors")
            } else {
                (&mut first, "model-00001-of-00002.safetensors")
            };
            shard.insert(name.clone(), tensor);
            map.insert(name, serde_json::Value::String(file.into()));
        }
        candle_core::safetensors::save(
            &first,
            dir.path().join("model-00001-of-00002.safetensors"),
        )?;
        candle_core::safetensors::save(
            &second,
            dir.path().join("model-00002-of-00002.safetensors"),
        )?;
        let index = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(dir.path().join(WEIGHTS_INDEX), index.to_string())?;
        let params = Params::new(5, &Device::Cpu);
        let loaded = load_llama_dir(dir.path(), &params, None)?;
        let llama = Llama::new(&loaded.config, None, &params)?;
        let diff = (logits(&written)? - logits(&llama)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
