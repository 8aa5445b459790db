//! A Llama-architecture decoder (Touvron et al. 2023; the layout of Hugging Face's
//! `LlamaForCausalLM`, which SmolLM2 uses) with MEIT's ECG fusion.
//!
//! Per layer: `h = x + Attention(RMSNorm(x))`, `out = h + SwiGLU(RMSNorm(h))`. Attention is
//! grouped-query (`num_kv_heads` key/value heads shared by `num_heads / num_kv_heads` query heads
//! each), with rotary position embeddings in the "rotate half" layout (pairs `(i, i + d/2)`).
//! The output head is the embedding matrix when `tie_embeddings`.
//!
//! ## The ECG slot (the paper's concatenation fusion, `modeling_ecg_llama.py`)
//! The L2-normalised ECG vector (`head_dim` long) is tiled `num_heads` times into one
//! hidden-size pseudo-token `[e, e, ..., e]`. In every layer that layer's own `k_proj` and
//! `v_proj` (LoRA included) turn it into one extra key and value that every text query attends
//! to: never rotated, never masked. Exactly as the reference, the pseudo-token goes straight into
//! `k_proj` / `v_proj`: it does **not** pass the layer's input RMSNorm, and it is not a sequence
//! position of the hidden states (no query, no MLP, no output for it).
//!
//! ## Positions: the ECG slot is cache position 0, text is 1..=T
//! Here the slot is stored as the first entry of each layer's key/value cache, and text tokens
//! take positions 1..=T. RoPE at position 0 is the identity, so "cache entry 0 at position 0" is
//! exactly "a key that is never rotated". Position ids then equal cache indices, which is what
//! ONNX Runtime's `GroupQueryAttention` and onnxruntime-genai assume: the exported decoder takes
//! the slot as its initial `past_key_values` (length 1) and numbers text from 1.
//! Text-to-text attention depends only on position differences, so the shift by one changes
//! nothing there; it does change the query-to-slot phase by one position relative to the
//! reference (which rotates text from 0 and leaves the slot unrotated). Training and inference
//! both use this numbering, so the model learns it.
//!
//! One attention routine serves training and generation: the full-sequence forward starts a
//! cache holding only the slot and feeds all T tokens with a causal mask; generation feeds one
//! token at a time into the same cache. Batches are right-padded: a padded position is only ever
//! seen by later (also padded) positions, whose outputs the loss ignores.

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::lora::{LoraConfig, LoraLinear, LoraTarget};
use super::params::{Init, Params};

/// The decoder's shape. Serialised in model configs (`[decoder]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Size of one head; the ECG vector has this size.
    pub head_dim: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Longest sequence, ECG slot included.
    pub max_positions: usize,
    /// The output head reuses the token embedding.
    pub tie_embeddings: bool,
}

impl LlamaConfig {
    /// A small decoder trained from scratch (2 layers, hidden 64, 4 heads / 2 KV heads).
    pub fn tiny(vocab_size: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 172,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_positions: 256,
            tie_embeddings: true,
        }
    }

    /// SmolLM2-135M(-Instruct): 30 layers, hidden 576, 9 heads / 3 KV heads of 64, SwiGLU 1536,
    /// vocabulary 49152, RoPE theta 100000, tied embeddings.
    pub fn smollm2_135m() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_positions: 8192,
            tie_embeddings: true,
        }
    }

    /// Weights of the decoder without adapters: embedding, per layer q/k/v/o, gate/up/down and
    /// two norms, the final norm, and the head when untied (134,515,008 for SmolLM2-135M).
    pub fn parameter_count(&self) -> usize {
        let (h, d) = (self.hidden_size, self.head_dim);
        let attention = 2 * h * self.num_heads * d + 2 * h * self.num_kv_heads * d;
        let layer = attention + 3 * h * self.intermediate_size + 2 * h;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        self.vocab_size * h + self.num_layers * layer + h + head
    }

    /// Refuses shapes that cannot build the decoder or carry the ECG slot.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Config(format!("decoder: {what}")));
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.max_positions,
        ];
        if sizes.contains(&0) {
            return bad("every size must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if self.num_heads * self.head_dim != self.hidden_size {
            return bad(format!(
                "the tiled ECG token needs num_heads x head_dim = hidden_size ({} x {} != {})",
                self.num_heads, self.head_dim, self.hidden_size
            ));
        }
        if !(self.rope_theta > 1.0 && self.rms_norm_eps > 0.0) {
            return bad("rope_theta must exceed 1 and rms_norm_eps be positive".into());
        }
        Ok(())
    }
}

/// Root-mean-square normalisation: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Wraps a known weight `[dim]`.
    pub fn new(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm { weight, eps }
    }

    /// Normalises over the last dimension.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        x.broadcast_div(&rms)?.broadcast_mul(&self.weight)
    }
}

/// Rotary position embedding tables: angle `p * theta^(-2i/d)` for pair `(i, i + d/2)`.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `[max_positions, head_dim]`, the cosines repeated for both halves.
    cos: Tensor,
    /// `[max_positions, head_dim]`, the sines repeated for both halves.
    sin: Tensor,
}

impl Rope {
    /// Tables for positions `0..max_positions` (angles computed in f64).
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_positions: usize,
        device: &Device,
    ) -> candle_core::Result<Rope> {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for position in 0..max_positions {
            let angles: Vec<f64> = (0..half)
                .map(|i| position as f64 * theta.powf(-2.0 * i as f64 / head_dim as f64))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() as f32));
                sin.extend(angles.iter().map(|a| a.sin() as f32));
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (max_positions, head_dim), device)?,
            sin: Tensor::from_vec(sin, (max_positions, head_dim), device)?,
        })
    }

    /// Rotates `x` `[batch, heads, T, head_dim]` as positions `start..start + T`:
    /// `x * cos + rotate_half(x) * sin` with `rotate_half([a, b]) = [-b, a]`.
    pub fn apply(&self, x: &Tensor, start: usize) -> candle_core::Result<Tensor> {
        let (_, _, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, start, t)?;
        let sin = self.sin.narrow(0, start, t)?;
        let first = x.narrow(D::Minus1, 0, d / 2)?;
        let second = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }
}

/// One layer's cached keys and values, `[batch, num_kv_heads, S, head_dim]` each (keys
/// already rotated). With an ECG, entry 0 is the ECG slot.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Cached positions.
    pub fn len(&self) -> usize {
        self.kv
            .as_ref()
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys and values (for export and inspection).
    pub fn key_value(&self) -> Option<(&Tensor, &Tensor)> {
        self.kv.as_ref().map(|(k, v)| (k, v))
    }

    /// Appends new keys/values along the sequence and returns everything cached.
    fn append(&mut self, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let kv = match self.kv.take() {
            None => (k, v),
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
        };
        self.kv = Some(kv.clone());
        Ok(kv)
    }
}

/// The key/value cache of the whole decoder, one [`LayerCache`] per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    batch: usize,
}

impl KvCache {
    /// Cached positions (= the position id of the next token).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per-layer caches.
    pub fn layers(&self) -> &[LayerCache] {
        &self.layers
    }
}

/// Grouped-query self-attention with the ECG slot.
#[derive(Debug, Clone)]
struct Attention {
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(
        p: &Params,
        c: &LlamaConfig,
        lora: Option<&LoraConfig>,
    ) -> candle_core::Result<Attention> {
        let kv_width = c.num_kv_heads * c.head_dim;
        let q_width = c.num_heads * c.head_dim;
        let proj = |name: &str, target, c_in, c_out| projection(p, lora, name, target, c_in, c_out);
        Ok(Attention {
            q: proj("q_proj", LoraTarget::Q, c.hidden_size, q_width)?,
            k: proj("k_proj", LoraTarget::K, c.hidden_size, kv_width)?,
            v: proj("v_proj", LoraTarget::V, c.hidden_size, kv_width)?,
            o: proj("o_proj", LoraTarget::O, q_width, c.hidden_size)?,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        })
    }

    /// `x` `[batch, T, width]` through `proj`, split into `heads`: `[batch, heads, T, head_dim]`.
    fn heads(
        &self,
        proj: &LoraLinear,
        x: &Tensor,
        heads: usize,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        proj.forward_t(x, train)?
            .reshape((b, t, heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// The ECG slot's key and value `[batch, num_kv_heads, 1, head_dim]`: this layer's
    /// `k_proj` / `v_proj` of the tiled ECG token `[batch, 1, hidden]`, not rotated.
    fn slot_key_value(&self, slot: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.heads(&self.k, slot, self.num_kv_heads, train)?,
            self.heads(&self.v, slot, self.num_kv_heads, train)?,
        ))
    }

    /// Attention of the T new tokens `x` `[batch, T, hidden]` over everything cached plus
    /// themselves; the new keys/values are appended to `cache`. `mask` is the
    /// [`causal_mask`] for T > 1 (one new token may see everything).
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let start = cache.len();
        let q = rope.apply(&self.heads(&self.q, x, self.num_heads, train)?, start)?;
        let k = rope.apply(&self.heads(&self.k, x, self.num_kv_heads, train)?, start)?;
        let v = self.heads(&self.v, x, self.num_kv_heads, train)?;
        let (k, v) = cache.append(k, v)?;
        let group = self.num_heads / self.num_kv_heads;
        let (k, v) = (repeat_kv(&k, group)?, repeat_kv(&v, group)?);
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, self.num_heads * self.head_dim))?;
        self.o.forward_t(&out, train)
    }

    fn merge_lora(&self) -> candle_core::Result<Attention> {
        Ok(Attention {
            q: self.q.merge()?,
            k: self.k.merge()?,
            v: self.v.merge()?,
            o: self.o.merge()?,
            ..self.clone()
        })
    }
}

/// The adapter settings for `target`, if LoRA is on and targets it.
fn adapter(lora: Option<&LoraConfig>, target: LoraTarget) -> Option<&LoraConfig> {
    lora.filter(|config| config.adapts(target))
}

/// One projection of a layer (`q_proj`, `gate_proj`, ...): N(0, 0.02) weights, with a LoRA
/// adapter when `lora` targets it.
fn projection(
    p: &Params,
    lora: Option<&LoraConfig>,
    name: &str,
    target: LoraTarget,
    c_in: usize,
    c_out: usize,
) -> candle_core::Result<LoraLinear> {
    LoraLinear::new(
        &p.pp(name),
        c_in,
        c_out,
        Init::Normal(0.02),
        adapter(lora, target),
    )
}

/// `[b, kv_heads, S, d]` -> `[b, kv_heads * group, S, d]`, each KV head serving `group`
/// consecutive query heads (query head h reads KV head h / group).
fn repeat_kv(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (b, kv_heads, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv_heads, group, s, d))?
        .reshape((b, kv_heads * group, s, d))
}

/// `[T, start + T]`: 0 where new token i (position start + i) may see cache entry j
/// (`j <= start + i`), minus infinity after it. Entry 0, the ECG slot, is always visible.
fn causal_mask(t: usize, start: usize, device: &Device) -> candle_core::Result<Tensor> {
    let keys = start + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j <= start + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, keys), device)
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

impl Mlp {
    fn new(p: &Params, c: &LlamaConfig, lora: Option<&LoraConfig>) -> candle_core::Result<Mlp> {
        let proj = |name: &str, target, c_in, c_out| projection(p, lora, name, target, c_in, c_out);
        Ok(Mlp {
            gate: proj(
                "gate_proj",
                LoraTarget::Gate,
                c.hidden_size,
                c.intermediate_size,
            )?,
            up: proj(
                "up_proj",
                LoraTarget::Up,
                c.hidden_size,
                c.intermediate_size,
            )?,
            down: proj(
                "down_proj",
                LoraTarget::Down,
                c.intermediate_size,
                c.hidden_size,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let gated = (self.gate.forward_t(x, train)?.silu()? * self.up.forward_t(x, train)?)?;
        self.down.forward_t(&gated, train)
    }

    fn merge_lora(&self) -> candle_core::Result<Mlp> {
        Ok(Mlp {
            gate: self.gate.merge()?,
            up: self.up.merge()?,
            down: self.down.merge()?,
        })
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let normed = self.input_norm.forward(x)?;
        let h = (x + self.attention.forward(&normed, rope, cache, mask, train)?)?;
        &h + self
            .mlp
            .forward(&self.post_attention_norm.forward(&h)?, train)?
    }
}

/// The decoder with its token embedding and output head.
#[derive(Debug, Clone)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: LoraLinear,
    rope: Rope,
}

impl Llama {
    /// Builds the decoder under `p` with Hugging Face's weight names (`embed_tokens.weight`,
    /// `layers.N.self_attn.q_proj.weight`, ..., `norm.weight`, `lm_head.weight` when untied).
    /// With `lora`, everything but the adapters is frozen.
    pub fn new(
        config: &LlamaConfig,
        lora: Option<&LoraConfig>,
        p: &Params,
    ) -> Result<Llama, ModelError> {
        config.validate()?;
        if let Some(lora) = lora {
            lora.validate()?;
        }
        Self::build(config, lora, p).map_err(ModelError::tensor("building the decoder"))
    }

    fn build(c: &LlamaConfig, lora: Option<&LoraConfig>, p: &Params) -> candle_core::Result<Llama> {
        // Under LoRA the pretrained weights stay as they are; adapters are created trainable
        // inside LoraLinear.
        let base = if lora.is_some() {
            p.frozen()
        } else {
            p.clone()
        };
        let norm = |p: &Params| -> candle_core::Result<RmsNorm> {
            Ok(RmsNorm::new(
                p.get(c.hidden_size, "weight", Init::Const(1.0))?,
                c.rms_norm_eps,
            ))
        };
        let embed_tokens = base.pp("embed_tokens").get(
            (c.vocab_size, c.hidden_size),
            "weight",
            Init::Normal(0.02),
        )?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let layer = base.pp(format!("layers.{i}"));
            layers.push(DecoderLayer {
                input_norm: norm(&layer.pp("input_layernorm"))?,
                attention: Attention::new(&layer.pp("self_attn"), c, lora)?,
                post_attention_norm: norm(&layer.pp("post_attention_layernorm"))?,
                mlp: Mlp::new(&layer.pp("mlp"), c, lora)?,
            });
        }
        let head = if c.tie_embeddings {
            embed_tokens.clone()
        } else {
            base.pp("lm_head")
                .get((c.vocab_size, c.hidden_size), "weight", Init::Normal(0.02))?
        };
        Ok(Llama {
            config: c.clone(),
            embed_tokens,
            layers,
            norm: norm(&base.pp("norm"))?,
            lm_head: match base.is_frozen() {
                true => LoraLinear::from_frozen_weight(head),
                false => LoraLinear::from_weight(head),
            },
            rope: Rope::new(c.head_dim, c.rope_theta, c.max_positions, p.device())?,
        })
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The tiled ECG pseudo-token `[batch, 1, hidden]` = `[e, e, ..., e]` (`num_heads` copies)
    /// from the ECG vectors `[batch, head_dim]`.
    pub fn ecg_token(&self, ecg: &Tensor) -> Result<Tensor, ModelError> {
        match ecg.dims() {
            &[_, d] if d == self.config.head_dim => {}
            dims => {
                return Err(ModelError::Input(format!(
                    "ECG vectors must be [batch, {}], got {dims:?}",
                    self.config.head_dim
                )));
            }
        }
        let tile = || ecg.repeat((1, self.config.num_heads))?.unsqueeze(1);
        tile().map_err(ModelError::tensor("tiling the ECG vector"))
    }

    /// A fresh cache for `batch` sequences: with `ecg` `[batch, head_dim]`, every layer's cache
    /// starts with the ECG slot (so text starts at position 1); without, it is empty.
    pub fn start_cache(
        &self,
        batch: usize,
        ecg: Option<&Tensor>,
        train: bool,
    ) -> Result<KvCache, ModelError> {
        let Some(ecg) = ecg else {
            return Ok(KvCache {
                layers: vec![LayerCache::default(); self.layers.len()],
                batch,
            });
        };
        if ecg.dim(0).ok() != Some(batch) {
            return Err(ModelError::Input(format!(
                "{batch} sequences but ECG vectors {:?}",
                ecg.dims()
            )));
        }
        let token = self.ecg_token(ecg)?;
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let (k, v) = layer.attention.slot_key_value(&token, train)?;
                Ok(LayerCache { kv: Some((k, v)) })
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(ModelError::tensor("ECG slot keys and values"))?;
        Ok(KvCache { layers, batch })
    }

    /// Logits `[batch, T, vocab]` of the tokens `[batch, T]` (u32), appended to `cache`; their
    /// positions continue from `cache.len()`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.forward_from(tokens, cache, train, 0)
    }

    /// [`Llama::forward`] with logits only at positions `from..T` of the new tokens
    /// (`[batch, T - from, vocab]`): the output head and its softmax are as large as the
    /// decoder's layers together on a 49k vocabulary, and training scores only report tokens.
    pub fn forward_from(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        train: bool,
        from: usize,
    ) -> Result<Tensor, ModelError> {
        let (batch, t) = self.check_tokens(tokens, cache)?;
        if from >= t {
            return Err(ModelError::Input(format!(
                "logits from position {from} of {t} new tokens"
            )));
        }
        let mut run = || -> candle_core::Result<Tensor> {
            let mut x = self
                .embed_tokens
                .embedding(&tokens.flatten_all()?)?
                .reshape((batch, t, self.config.hidden_size))?;
            let mask = match t {
                1 => None,
                _ => Some(causal_mask(t, cache.len(), tokens.device())?),
            };
            for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
                x = layer.forward(&x, &self.rope, layer_cache, mask.as_ref(), train)?;
            }
            if from > 0 {
                x = x.narrow(1, from, t - from)?;
            }
            self.lm_head.forward_t(&self.norm.forward(&x)?, train)
        };
        run().map_err(ModelError::tensor("decoder forward"))
    }

    /// The training path: logits of a whole sequence `[batch, T]` after the ECG slot (text at
    /// positions 1..=T), or of plain text from position 0 when `ecg` is `None`.
    pub fn forward_sequence(
        &self,
        tokens: &Tensor,
        ecg: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.forward_sequence_from(tokens, ecg, train, 0)
    }

    /// [`Llama::forward_sequence`] with logits only at text positions `from..T`
    /// ([`Llama::forward_from`]).
    pub fn forward_sequence_from(
        &self,
        tokens: &Tensor,
        ecg: Option<&Tensor>,
        train: bool,
        from: usize,
    ) -> Result<Tensor, ModelError> {
        let batch = tokens.dim(0).map_err(ModelError::tensor("token batch"))?;
        let mut cache = self.start_cache(batch, ecg, train)?;
        self.forward_from(tokens, &mut cache, train, from)
    }

    /// The same decoder with every LoRA adapter folded into its weight.
    pub fn merge_lora(&self) -> Result<Llama, ModelError> {
        let merge = || -> candle_core::Result<Vec<DecoderLayer>> {
            self.layers
                .iter()
                .map(|layer| {
                    Ok(DecoderLayer {
                        attention: layer.attention.merge_lora()?,
                        mlp: layer.mlp.merge_lora()?,
                        ..layer.clone()
                    })
                })
                .collect()
        };
        Ok(Llama {
            layers: merge().map_err(ModelError::tensor("merging LoRA"))?,
            ..self.clone()
        })
    }

    fn check_tokens(&self, tokens: &Tensor, cache: &KvCache) -> Result<(usize, usize), ModelError> {
        let (batch, t) = match tokens.dims() {
            &[b, t] if b > 0 && t > 0 && tokens.dtype() == DType::U32 => (b, t),
            dims => {
                return Err(ModelError::Input(format!(
                    "tokens must be non-empty u32 [batch, T], got {dims:?} {:?}",
                    tokens.dtype()
                )));
            }
        };
        if batch != cache.batch || cache.layers.len() != self.layers.len() {
            return Err(ModelError::Input(format!(
                "{batch} sequences for a cache of {} (or a cache from another model)",
                cache.batch
            )));
        }
        if cache.len() + t > self.config.max_positions {
            return Err(ModelError::Input(format!(
                "{} cached + {t} new positions exceed max_positions {}",
                cache.len(),
                self.config.max_positions
            )));
        }
        let largest = tokens
            .max_all()
            .and_then(|m| m.to_scalar::<u32>())
            .map_err(ModelError::tensor("token range"))?;
        if largest as usize >= self.config.vocab_size {
            return Err(ModelError::Input(format!(
                "token id {largest} outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok((batch, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn rms_norm_matches_hand_computed_values() -> candle_core::Result<()> {
        // x = [3, 4]: mean square 12.5, so x / sqrt(12.5) = [0.848528, 1.131371]; weight [1, 2].
        let norm = RmsNorm::new(Tensor::new(&[1f32, 2.], &Device::Cpu)?, 0.0);
        let out = norm
            .forward(&Tensor::new(&[[3f32, 4.]], &Device::Cpu)?)?
            .to_vec2::<f32>()?;
        assert!((out[0][0] - 0.848_528).abs() < 1e-5, "{out:?}");
        assert!((out[0][1] - 2.262_742).abs() < 1e-5, "{out:?}");
        Ok(())
    }

    #[test]
    fn rope_rotates_each_pair_by_position_times_frequency() -> candle_core::Result<()> {
        // head_dim 4, theta 100: frequencies 1 and 100^(-1/2) = 0.1 for pairs (0, 2) and (1, 3).
        let rope = Rope::new(4, 100.0, 8, &Device::Cpu)?;
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)?.reshape((1, 1, 1, 4))?;
        let at_2 = rope.apply(&x, 2)?.flatten_all()?.to_vec1::<f32>()?;
        let (a, b) = (2f32, 0.2f32);
        let expected = [
            a.cos() - 3.0 * a.sin(),
            2.0 * b.cos() - 4.0 * b.sin(),
            3.0 * a.cos() + a.sin(),
            4.0 * b.cos() + 2.0 * b.sin(),
        ];
        for (got, want) in at_2.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{at_2:?} vs {expected:?}");
        }
        let at_0 = rope.apply(&x, 0)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(
            at_0,
            vec![1., 2., 3., 4.],
            "position 0 must be the identity"
        );
        Ok(())
    }

    /// One layer, one head, head_dim 2, identity projections.
    fn one_head_identity() -> Result<(Attention, Rope), Box<dyn std::error::Error>> {
        let config = LlamaConfig {
            vocab_size: 4,
            hidden_size: 2,
            intermediate_size: 2,
            num_layers: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_positions: 8,
            tie_embeddings: true,
        };
        let params = Params::new(0, &Device::Cpu);
        let eye = Tensor::eye(2, DType::F32, &Device::Cpu)?;
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            params.pp("attn").pp(name).insert("weight", &eye)?;
        }
        let attention = Attention::new(&params.pp("attn"), &config, None)?;
        Ok((attention, Rope::new(2, 10_000.0, 8, &Device::Cpu)?))
    }

    #[test]
    fn attention_with_the_ecg_slot_matches_hand_computation()
    -> Result<(), Box<dyn std::error::Error>> {
        // ECG e = [0, 1] is key and value of the slot (identity projections, not rotated).
        // Text x = [1, 0] at position 1 (frequency 1): q = k = [cos 1, sin 1], v = x.
        // Scores / sqrt(2): slot q.e = sin 1, self q.k = 1. Output = p_slot e + p_self x.
        let (attention, rope) = one_head_identity()?;
        let e = Tensor::new(&[[[0f32, 1.]]], &Device::Cpu)?;
        let (k, v) = attention.slot_key_value(&e, false)?;
        let mut cache = LayerCache { kv: Some((k, v)) };
        let x = Tensor::new(&[[[1f32, 0.]]], &Device::Cpu)?;
        let out = attention
            .forward(&x, &rope, &mut cache, None, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let s_slot = 1f32.sin() / 2f32.sqrt();
        let s_self = 1.0 / 2f32.sqrt();
        let p_slot = s_slot.exp() / (s_slot.exp() + s_self.exp());
        let expected = [1.0 - p_slot, p_slot];
        assert!(
            (out[0] - expected[0]).abs() < 1e-6 && (out[1] - expected[1]).abs() < 1e-6,
            "{out:?} vs {expected:?}"
        );
        assert_eq!(cache.len(), 2, "slot + one text token");
        Ok(())
    }

    #[test]
    fn query_heads_share_key_value_heads_in_consecutive_groups() -> candle_core::Result<()> {
        // 2 KV heads, group 2: query heads 0, 1 read KV head 0; heads 2, 3 read KV head 1.
        let kv = Tensor::new(&[10f32, 20.], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
        let repeated = repeat_kv(&kv, 2)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(repeated, vec![10., 10., 20., 20.]);
        Ok(())
    }

    #[test]
    fn slot_key_is_k_proj_of_the_tiled_vector_without_norm_or_rotation()
    -> Result<(), Box<dyn std::error::Error>> {
        let (llama, params) = tiny_with_lora(5)?;
        let (_, ecg) = inputs()?;
        let cache = llama.start_cache(2, Some(&ecg), false)?;
        let (key, _) = cache.layers()[1].key_value().ok_or("no slot cached")?;
        // By hand: [e, e, e, e] (4 heads x 16) times layer 1's k_proj weight (the fresh
        // adapter adds nothing), split into 2 KV heads of 16.
        let tiled = Tensor::cat(&[&ecg, &ecg, &ecg, &ecg], 1)?;
        let weight = params.vars_where(|n| n == "layers.1.self_attn.k_proj.weight");
        let weight = weight.first().ok_or("k_proj weight missing")?.as_tensor();
        let expected = tiled.matmul(&weight.t()?)?.reshape((2, 2, 1, 16))?;
        assert_eq!(key.dims(), &[2, 2, 1, 16]);
        assert!(max_abs_diff(key, &expected)? < 1e-6);
        Ok(())
    }

    #[test]
    fn causal_mask_hides_later_tokens_but_never_the_slot() -> candle_core::Result<()> {
        let mask = causal_mask(2, 1, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(mask[0], vec![0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(mask[1], vec![0.0, 0.0, 0.0]);
        Ok(())
    }

    fn tiny_with_lora(seed: u64) -> Result<(Llama, Params), ModelError> {
        let params = Params::new(seed, &Device::Cpu);
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets: LoraTarget::ALL.to_vec(),
        };
        let llama = Llama::new(&LlamaConfig::tiny(40), Some(&lora), &params)?;
        Ok((llama, params))
    }

    fn inputs() -> candle_core::Result<(Tensor, Tensor)> {
        let tokens = Tensor::new(
            &[[3u32, 17, 5, 9, 30, 2], [1, 1, 38, 0, 12, 7]],
            &Device::Cpu,
        )?;
        let ecg: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let ecg = super::super::ecg_encoder::l2_normalize(&Tensor::from_vec(
            ecg,
            (2, 16),
            &Device::Cpu,
        )?)?;
        Ok((tokens, ecg))
    }

    #[test]
    fn full_sequence_and_incremental_forward_agree() -> Result<(), Box<dyn std::error::Error>> {
        let (llama, _) = tiny_with_lora(5)?;
        let (tokens, ecg) = inputs()?;
        let full = llama.forward_sequence(&tokens, Some(&ecg), false)?;
        let mut cache = llama.start_cache(2, Some(&ecg), false)?;
        assert_eq!(cache.len(), 1, "the ECG slot is cache entry 0");
        let mut steps = Vec::new();
        for i in 0..tokens.dim(1)? {
            steps.push(llama.forward(&tokens.narrow(1, i, 1)?, &mut cache, false)?);
        }
        let incremental = Tensor::cat(&steps, 1)?;
        assert_eq!(cache.len(), 7);
        let diff = max_abs_diff(&full, &incremental)?;
        assert!(diff < 1e-4, "full vs incremental logits differ by {diff}");
        Ok(())
    }

    #[test]
    fn the_ecg_vector_changes_the_logits() -> Result<(), Box<dyn std::error::Error>> {
        let (llama, _) = tiny_with_lora(5)?;
        let (tokens, ecg) = inputs()?;
        let with = llama.forward_sequence(&tokens, Some(&ecg), false)?;
        let other = llama.forward_sequence(&tokens, Some(&ecg.neg()?), false)?;
        assert!(max_abs_diff(&with, &other)? > 1e-4);
        Ok(())
    }

    #[test]
    fn merged_lora_gives_the_same_logits() -> Result<(), Box<dyn std::error::Error>> {
        let params = Params::new(9, &Device::Cpu);
        // Non-zero B everywhere, as after training.
        for layer in 0..2 {
            for (name, out) in [
                ("self_attn.q_proj", 64),
                ("self_attn.k_proj", 32),
                ("self_attn.v_proj", 32),
                ("self_attn.o_proj", 64),
                ("mlp.gate_proj", 172),
                ("mlp.up_proj", 172),
                ("mlp.down_proj", 64),
            ] {
                let b = Tensor::from_vec(
                    (0..out * 4)
                        .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
                        .collect::<Vec<f32>>(),
                    (out, 4),
                    &Device::Cpu,
                )?;
                params
                    .pp(format!("layers.{layer}.{name}.lora_b"))
                    .insert("weight", &b)?;
            }
        }
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets: LoraTarget::ALL.to_vec(),
        };
        let llama = Llama::new(&LlamaConfig::tiny(40), Some(&lora), &params)?;
        let (tokens, ecg) = inputs()?;
        let adapted = llama.forward_sequence(&tokens, Some(&ecg), false)?;
        let merged = llama
            .merge_lora()?
            .forward_sequence(&tokens, Some(&ecg), false)?;
        let diff = max_abs_diff(&adapted, &merged)?;
        assert!(diff < 1e-4, "merged logits differ by {diff}");
        Ok(())
    }

    #[test]
    fn out_of_range_tokens_and_positions_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (llama, _) = tiny_with_lora(5)?;
        let too_big = Tensor::new(&[[40u32]], &Device::Cpu)?;
        assert!(matches!(
            llama.forward_sequence(&too_big, None, false),
            Err(ModelError::Input(_))
        ));
        let too_long = Tensor::zeros((1, 256), DType::U32, &Device::Cpu)?;
        let ecg = Tensor::ones((1, 16), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            llama.forward_sequence(&too_long, Some(&ecg), false),
            Err(ModelError::Input(_))
        ));
        assert!(
            llama.forward_sequence(&too_long, None, false).is_ok(),
            "256 positions fit without the slot"
        );
        Ok(())
    }

    #[test]
    fn parameter_count_matches_the_built_model_and_smollm2()
    -> Result<(), Box<dyn std::error::Error>> {
        for tie_embeddings in [true, false] {
            let config = LlamaConfig {
                tie_embeddings,
                ..LlamaConfig::tiny(40)
            };
            let params = Params::new(1, &Device::Cpu);
            Llama::new(&config, None, &params)?;
            let built: usize = params
                .vars_where(|_| true)
                .iter()
                .map(|v| v.elem_count())
                .sum();
            assert_eq!(config.parameter_count(), built, "tied: {tie_embeddings}");
        }
        // SmolLM2-135M's shape: 134,515,008, the "135M" of its name (its GGUF holds the same
        // 30 x 7 matrices, 61 norm vectors and one embedding).
        assert_eq!(LlamaConfig::smollm2_135m().parameter_count(), 134_515_008);
        Ok(())
    }

    #[test]
    fn config_rejects_a_hidden_size_the_ecg_token_cannot_fill() {
        assert!(LlamaConfig::smollm2_135m().validate().is_ok());
        let bad = LlamaConfig {
            hidden_size: 60,
            ..LlamaConfig::tiny(10)
        };
        assert!(matches!(bad.validate(), Err(ModelError::Config(_))));
        let odd_groups = LlamaConfig {
            num_kv_heads: 3,
            ..LlamaConfig::tiny(10)
        };
        assert!(odd_groups.validate().is_err());
    }
}
