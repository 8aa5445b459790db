//! `decoder.onnx`: the Llama decoder with a key/value cache, in onnxruntime-genai's I/O names.
//!
//! ```text
//! input_ids [batch, sequence] int64          new tokens
//! attention_mask [batch, total] int64        1 for every cache entry and new token to attend to
//! position_ids [batch, sequence] int64       text positions (1..=T: position 0 is the ECG slot)
//! past_key_values.{i}.key/value [batch, kv_heads, past, head_dim]
//!   -> logits [batch, sequence, vocab]
//!   -> present.{i}.key/value [batch, kv_heads, total, head_dim]   (past ++ new)
//! ```
//!
//! The engine starts the cache with the encoder's `slot.{i}.key/value` (past = 1), exactly as
//! `Llama::start_cache` does in training, so the ECG slot is entry 0 and text starts at 1.
//!
//! Per layer, as `model/llama.rs`: `h = x + o(attention(rope(q), rope(k), v))` over the RMS-
//! normalised `x`, then `x' = h + down(silu(gate(n)) * up(n))` over the RMS-normalised `h`.
//! Attention is plain ONNX ops by default, grouped-query by broadcasting: queries
//! `[b, kv, group, T, d]` against keys `[b, kv, 1, S, d]`, so no key/value head is copied; or
//! com.microsoft `GroupQueryAttention` (faster per decode step, but no batched prefill after a
//! past on the CPU provider: `models/README.md`, "Export choices"). Folds that are exact up to rounding:
//! `1 / sqrt(head_dim)` is folded into the query weights; q/k/v are one projection and gate/up
//! another (one MatMul each, then Split); `rotate_half(x) * sin` is `swap_halves(x) * [-sin, sin]`.
//! The mask is built once per call from `attention_mask` and the causal order of the new
//! tokens (padding and finished sequences of a batch are masked, never attended).

use candle_onnx::onnx::ModelProto;
use meit::infer::bundle::{Dim as ManifestDim, Precision, TensorSpec};

use super::ExportError;
use super::graph::{Dim, Elem, Graph, attr_int, attr_ints, named};
use super::int4;
use super::weights::{Array, Projection, Weights};
use crate::model::llama::LlamaConfig;

/// Where a LoRA adapter goes in the exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraExport {
    /// Folded into the weight before quantisation (`W + B A`, one MatMulNBits): the default
    /// (models/README.md, "LoRA: merged or a float branch").
    #[default]
    Merge,
    /// Kept as a float branch beside the (quantised) base weight: `x W^T + (x A^T) B^T`.
    Branch,
}

/// How attention is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionExport {
    /// Plain ONNX operators (MatMul, Softmax, ...): the default. Any attention mask, and a
    /// batch of windows prefilled in one call after the slot.
    #[default]
    Ops,
    /// ONNX Runtime's fused com.microsoft `GroupQueryAttention` (RoPE inside, packed QKV):
    /// twice as fast per decode step on the tiny model, and its cache can be written in place
    /// (the engine's in-place decode); but ONNX Runtime 1.31's CPU kernel refuses a prompt of
    /// several tokens after a past in a batch of more than one ("batch_size must be 1 when
    /// sequence_length > 1 and past context is given"), so the engine prefills such batches row
    /// by row (models/README.md, "Export choices").
    Gqa,
}

/// How the decoder is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearFormat {
    /// Attention as plain operators or the fused contrib operator.
    pub attention: AttentionExport,
    /// fp32 or int4.
    pub precision: Precision,
    /// Merged or branch LoRA.
    pub lora: LoraExport,
    /// int4 zero points: packed 4-bit or float.
    pub zero_points: int4::ZeroPoints,
    /// Keep the output head in fp32 even in an int4 graph.
    pub float_head: bool,
    /// Store the token-embedding table in float16 (gathered rows cast to float32): half the
    /// table's bytes, which is most of a small LLM's int4 graph (SmolLM2-135M: 113 of 204 MB).
    pub half_embedding: bool,
    /// int4 block size along K.
    pub block_size: usize,
    /// `MatMulNBits` accuracy level (4: int8 compute on the CPU provider).
    pub accuracy_level: i64,
}

/// Names of layer `i`'s cache inputs and outputs.
pub fn cache_names(layer: usize) -> [String; 4] {
    [
        format!("past_key_values.{layer}.key"),
        format!("past_key_values.{layer}.value"),
        format!("present.{layer}.key"),
        format!("present.{layer}.value"),
    ]
}

/// Inputs and outputs of the decoder graph, as the manifest records them.
pub fn interface(c: &LlamaConfig) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let sym = |s: &str| ManifestDim::Symbol(s.into());
    let fixed = |n: usize| ManifestDim::Fixed(n as i64);
    let spec = |name: &str, dtype: &str, shape: Vec<ManifestDim>| TensorSpec {
        name: name.into(),
        dtype: dtype.into(),
        shape,
    };
    let cache = |len: &str| {
        vec![
            sym("batch"),
            fixed(c.num_kv_heads),
            sym(len),
            fixed(c.head_dim),
        ]
    };
    let mut inputs = vec![
        spec("input_ids", "int64", vec![sym("batch"), sym("sequence")]),
        spec(
            "attention_mask",
            "int64",
            vec![sym("batch"), sym("total_sequence")],
        ),
        spec("position_ids", "int64", vec![sym("batch"), sym("sequence")]),
    ];
    let mut outputs = vec![spec(
        "logits",
        "float32",
        vec![sym("batch"), sym("sequence"), fixed(c.vocab_size)],
    )];
    for layer in 0..c.num_layers {
        let [pk, pv, ok, ov] = cache_names(layer);
        inputs.push(spec(&pk, "float32", cache("past_sequence")));
        inputs.push(spec(&pv, "float32", cache("past_sequence")));
        outputs.push(spec(&ok, "float32", cache("total_sequence")));
        outputs.push(spec(&ov, "float32", cache("total_sequence")));
    }
    (inputs, outputs)
}

/// One graph builder plus the format of its linear layers.
struct Builder<'a> {
    g: Graph,
    format: LinearFormat,
    w: &'a Weights,
}

/// The cache names of one layer.
struct LayerCache<'a> {
    past_k: &'a str,
    past_v: &'a str,
    present_k: &'a str,
    present_v: &'a str,
}

/// Values every layer's attention shares, built once per graph.
enum AttentionContext {
    /// Plain operators: RoPE tables gathered at the position ids `[b, 1, T, d]`, and the
    /// additive mask `[b, 1, 1, T, S]`.
    Ops {
        cos: String,
        sin: String,
        bias: String,
    },
    /// GroupQueryAttention: per-row `seqlens_k` (attended entries - 1, int32), the total length
    /// (int32 scalar), and half-width RoPE caches `[max_positions, d / 2]`.
    Gqa {
        seqlens: String,
        total: String,
        cos: String,
        sin: String,
    },
}

/// RoPE tables gathered at `positions`, and the mask: 0 where key j is in `attention_mask` and
/// j <= S - T + i (the causal order of the new tokens), the most negative float elsewhere.
fn ops_context(
    g: &mut Graph,
    c: &LlamaConfig,
    ids: &str,
    mask: &str,
    positions: &str,
) -> AttentionContext {
    let d = c.head_dim;
    g.set_prefix("rope");
    let (cos_table, sin_table) = rope_tables(c);
    let cos_t = g.weight_f32("rope.cos", &[c.max_positions, d], &cos_table);
    let sin_t = g.weight_f32("rope.signed_sin", &[c.max_positions, d], &sin_table);
    let axis1 = g.const_i64(&[1]);
    let cos = g.op("Gather", &[&cos_t, positions], vec![attr_int("axis", 0)]);
    let cos = g.op("Unsqueeze", &[&cos, &axis1], vec![]);
    let sin = g.op("Gather", &[&sin_t, positions], vec![attr_int("axis", 0)]);
    let sin = g.op("Unsqueeze", &[&sin, &axis1], vec![]);

    g.set_prefix("mask");
    let mask_shape = g.op("Shape", &[mask], vec![]);
    let ids_shape = g.op("Shape", &[ids], vec![]);
    let one = g.scalar_i64(1);
    let zero = g.scalar_i64(0);
    let total = g.op("Gather", &[&mask_shape, &one], vec![attr_int("axis", 0)]);
    let new = g.op("Gather", &[&ids_shape, &one], vec![attr_int("axis", 0)]);
    let start = g.op("Sub", &[&total, &new], vec![]);
    let keys = g.op("Range", &[&zero, &total, &one], vec![]);
    let queries = g.op("Range", &[&start, &total, &one], vec![]);
    let axis0 = g.const_i64(&[0]);
    let keys = g.op("Unsqueeze", &[&keys, &axis0], vec![]);
    let queries = g.op("Unsqueeze", &[&queries, &axis1], vec![]);
    let causal = g.op("LessOrEqual", &[&keys, &queries], vec![]);
    let attend = g.op("Cast", &[mask], vec![attr_int("to", 9)]);
    let axes = g.const_i64(&[1, 2, 3]);
    let attend = g.op("Unsqueeze", &[&attend, &axes], vec![]);
    let allowed = g.op("And", &[&attend, &causal], vec![]);
    let open = g.scalar_f32(0.0);
    let closed = g.scalar_f32(f32::MIN);
    let bias = g.op("Where", &[&allowed, &open, &closed], vec![]);
    AttentionContext::Ops { cos, sin, bias }
}

/// GroupQueryAttention's inputs derived from `attention_mask` (right-padded rows: the attended
/// entries come first), and its half-width RoPE caches.
fn gqa_context(g: &mut Graph, c: &LlamaConfig, mask: &str) -> AttentionContext {
    g.set_prefix("gqa");
    let (cos_table, sin_table) = rope_tables(c);
    let (d, half) = (c.head_dim, c.head_dim / 2);
    // The full tables repeat each angle for both halves, with the sine's first half negated:
    // GroupQueryAttention takes each angle once, unsigned.
    let pick = |table: &[f32], sign: f32| -> Vec<f32> {
        table
            .chunks(d)
            .flat_map(|row| row[half..].iter().map(move |v| v * sign))
            .collect()
    };
    let cos = g.weight_f32(
        "gqa.cos_cache",
        &[c.max_positions, half],
        &pick(&cos_table, 1.0),
    );
    let sin = g.weight_f32(
        "gqa.sin_cache",
        &[c.max_positions, half],
        &pick(&sin_table, 1.0),
    );
    let axis = g.const_i64(&[1]);
    let attended = g.op("ReduceSum", &[mask, &axis], vec![attr_int("keepdims", 0)]);
    let one = g.scalar_i64(1);
    let last = g.op("Sub", &[&attended, &one], vec![]);
    let seqlens = g.op("Cast", &[&last], vec![attr_int("to", 6)]);
    let shape = g.op("Shape", &[mask], vec![]);
    let width = g.op("Gather", &[&shape, &one], vec![attr_int("axis", 0)]);
    let total = g.op("Cast", &[&width], vec![attr_int("to", 6)]);
    AttentionContext::Gqa {
        seqlens,
        total,
        cos,
        sin,
    }
}

impl Builder<'_> {
    /// Attention as plain operators over the packed `qkv` `[b, T, (heads + 2 kv) d]`; binds the
    /// layer's present outputs and returns `[b, T, hidden]`.
    fn attention_ops(
        &mut self,
        c: &LlamaConfig,
        qkv: &str,
        cos: &str,
        sin: &str,
        bias: &str,
        cache: &LayerCache<'_>,
    ) -> String {
        let (h, d, heads, kv) = (c.hidden_size, c.head_dim, c.num_heads, c.num_kv_heads);
        let group = heads / kv;
        let sizes = self
            .g
            .const_i64(&[(heads * d) as i64, (kv * d) as i64, (kv * d) as i64]);
        let parts = self
            .g
            .op_multi("Split", &[qkv, &sizes], 3, vec![attr_int("axis", 2)]);
        let q = self.split_heads(&parts[0], heads, d);
        let k = self.split_heads(&parts[1], kv, d);
        let v = self.split_heads(&parts[2], kv, d);
        let q = self.rope(&q, cos, sin);
        let k = self.rope(&k, cos, sin);
        let g = &mut self.g;
        let keys = g.op("Concat", &[cache.past_k, &k], vec![attr_int("axis", 2)]);
        let values = g.op("Concat", &[cache.past_v, &v], vec![attr_int("axis", 2)]);
        g.bind_output(&keys, cache.present_k);
        g.bind_output(&values, cache.present_v);
        // Grouped-query attention by broadcasting over the group axis.
        let q_shape = g.const_i64(&[0, kv as i64, group as i64, -1, d as i64]);
        let q5 = g.op("Reshape", &[&q, &q_shape], vec![]);
        let axis2 = g.const_i64(&[2]);
        let k5 = g.op("Unsqueeze", &[&keys, &axis2], vec![]);
        let k5t = g.op(
            "Transpose",
            &[&k5],
            vec![attr_ints("perm", &[0, 1, 2, 4, 3])],
        );
        let scores = g.op("MatMul", &[&q5, &k5t], vec![]);
        let scores = g.op("Add", &[&scores, bias], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let v5 = g.op("Unsqueeze", &[&values, &axis2], vec![]);
        let out = g.op("MatMul", &[&probs, &v5], vec![]);
        let heads_shape = g.const_i64(&[0, heads as i64, -1, d as i64]);
        let out = g.op("Reshape", &[&out, &heads_shape], vec![]);
        let out = g.op("Transpose", &[&out], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let flat = g.const_i64(&[0, 0, h as i64]);
        g.op("Reshape", &[&out, &flat], vec![])
    }

    /// Attention as com.microsoft `GroupQueryAttention` on the packed `qkv` (RoPE inside, at
    /// positions continuing each row's cache: the same numbering as the plain graph).
    #[allow(clippy::too_many_arguments)]
    fn attention_gqa(
        &mut self,
        c: &LlamaConfig,
        qkv: &str,
        seqlens: &str,
        total: &str,
        cos: &str,
        sin: &str,
        cache: &LayerCache<'_>,
    ) -> String {
        let out = self.g.fresh_name("gqa");
        self.g.node(
            "GroupQueryAttention",
            &[
                qkv,
                "",
                "",
                cache.past_k,
                cache.past_v,
                seqlens,
                total,
                cos,
                sin,
            ],
            &[&out, cache.present_k, cache.present_v],
            vec![
                attr_int("num_heads", c.num_heads as i64),
                attr_int("kv_num_heads", c.num_kv_heads as i64),
                attr_int("do_rotary", 1),
                attr_int("rotary_interleaved", 0),
                // 1 / sqrt(head_dim) is folded into the query weights.
                super::graph::attr_float("scale", 1.0),
            ],
            super::graph::MS_DOMAIN,
        );
        out
    }
}

impl Builder<'_> {
    /// `x` through a projection: the base weight (merged with its update, or with the update
    /// as a float branch, per [`LoraExport`]).
    fn project(&mut self, name: &str, p: &Projection, x: &str) -> Result<String, ExportError> {
        match (&p.low_rank, self.format.lora) {
            (Some(update), LoraExport::Branch) => {
                let y = self.linear(name, &p.base, x);
                let a_t = update.a.transposed();
                let b_t = update.b.transposed();
                let a = self
                    .g
                    .weight_f32(&format!("{name}.lora_a_t"), &a_t.dims, &a_t.data);
                let b = self
                    .g
                    .weight_f32(&format!("{name}.lora_b_t"), &b_t.dims, &b_t.data);
                let low = self.g.op("MatMul", &[x, &a], vec![]);
                let delta = self.g.op("MatMul", &[&low, &b], vec![]);
                Ok(self.g.op("Add", &[&y, &delta], vec![]))
            }
            _ => Ok(self.linear(name, &p.merged()?, x)),
        }
    }

    /// `x @ weight^T` for `weight` `[out, in]`, as MatMul (fp32) or MatMulNBits (int4).
    fn linear(&mut self, name: &str, weight: &Array, x: &str) -> String {
        let (n, k) = (weight.dims[0], weight.dims[1]);
        match self.format.precision {
            Precision::Int4 => {
                let q = int4::quantize(
                    &weight.data,
                    n,
                    k,
                    self.format.block_size,
                    self.format.zero_points,
                );
                let blocks = q.blocks();
                let b = self.g.weight_u8(
                    &format!("{name}.q4"),
                    &[n, blocks, self.format.block_size / 2],
                    q.packed,
                );
                let scales = self
                    .g
                    .weight_f32(&format!("{name}.scales"), &[n * blocks], &q.scales);
                let zp = match self.format.zero_points {
                    int4::ZeroPoints::Packed => self.g.weight_u8(
                        &format!("{name}.zero_points"),
                        &[n * blocks.div_ceil(2)],
                        q.zero_points,
                    ),
                    int4::ZeroPoints::Float => self.g.weight_f32(
                        &format!("{name}.zero_points"),
                        &[n * blocks],
                        &q.float_zero_points,
                    ),
                };
                let attrs = vec![
                    attr_int("K", k as i64),
                    attr_int("N", n as i64),
                    attr_int("bits", 4),
                    attr_int("block_size", self.format.block_size as i64),
                    attr_int("accuracy_level", self.format.accuracy_level),
                ];
                self.g.ms_op("MatMulNBits", &[x, &b, &scales, &zp], attrs)
            }
            Precision::Fp32 | Precision::Fp16 => {
                let t = weight.transposed();
                let w = self
                    .g
                    .weight_f32(&format!("{name}.weight_t"), &t.dims, &t.data);
                self.g.op("MatMul", &[x, &w], vec![])
            }
        }
    }

    /// RMSNorm with the weight under `prefix` (Pow, ReduceMean, Add, Sqrt, Div, Mul: the
    /// pattern ONNX Runtime fuses into one kernel).
    fn rms_norm(&mut self, prefix: &str, x: &str, eps: f64) -> Result<String, ExportError> {
        let weight = self.w.get(&format!("{prefix}.weight"))?;
        let w = self
            .g
            .weight_f32(&format!("{prefix}.weight"), &weight.dims, &weight.data);
        let two = self.g.scalar_f32(2.0);
        let eps = self.g.scalar_f32(eps as f32);
        let g = &mut self.g;
        let sq = g.op("Pow", &[x, &two], vec![]);
        let axes = vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)];
        let mean = g.op("ReduceMean", &[&sq], axes);
        let shifted = g.op("Add", &[&mean, &eps], vec![]);
        let rms = g.op("Sqrt", &[&shifted], vec![]);
        let normed = g.op("Div", &[x, &rms], vec![]);
        Ok(g.op("Mul", &[&normed, &w], vec![]))
    }

    /// `x * cos + swap_halves(x) * signed_sin` for `x` `[b, heads, T, d]`.
    fn rope(&mut self, x: &str, cos: &str, sin: &str) -> String {
        let g = &mut self.g;
        let halves = g.op_multi("Split", &[x], 2, vec![attr_int("axis", -1)]);
        let swapped = g.op(
            "Concat",
            &[&halves[1], &halves[0]],
            vec![attr_int("axis", -1)],
        );
        let a = g.op("Mul", &[x, cos], vec![]);
        let b = g.op("Mul", &[&swapped, sin], vec![]);
        g.op("Add", &[&a, &b], vec![])
    }

    /// `[b, T, heads * d]` -> `[b, heads, T, d]`.
    fn split_heads(&mut self, x: &str, heads: usize, d: usize) -> String {
        let shape = self.g.const_i64(&[0, 0, heads as i64, d as i64]);
        let r = self.g.op("Reshape", &[x, &shape], vec![]);
        self.g
            .op("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
    }
}

/// Builds the decoder graph.
pub fn build(
    w: &Weights,
    c: &LlamaConfig,
    format: LinearFormat,
) -> Result<ModelProto, ExportError> {
    if format.precision == Precision::Fp16 {
        return Err(ExportError::Unsupported(
            "fp16 decoder graphs are not written yet; export fp32 or int4".into(),
        ));
    }
    let mut b = Builder {
        g: Graph::new(),
        format,
        w,
    };
    let (d, kv) = (c.head_dim, c.num_kv_heads);
    let batch = named("batch");
    let ids =
        b.g.input("input_ids", Elem::I64, &[batch.clone(), named("sequence")]);
    let mask = b.g.input(
        "attention_mask",
        Elem::I64,
        &[batch.clone(), named("total_sequence")],
    );
    let positions = b.g.input(
        "position_ids",
        Elem::I64,
        &[batch.clone(), named("sequence")],
    );
    let cache_dims = |len: &str| {
        [
            named("batch"),
            Dim::Fixed(kv as i64),
            named(len),
            Dim::Fixed(d as i64),
        ]
    };
    let mut past = Vec::with_capacity(c.num_layers);
    for layer in 0..c.num_layers {
        let [pk, pv, _, _] = cache_names(layer);
        let k = b.g.input(&pk, Elem::F32, &cache_dims("past_sequence"));
        let v = b.g.input(&pv, Elem::F32, &cache_dims("past_sequence"));
        past.push((k, v));
    }
    // Outputs in onnxruntime-genai's order: logits, then each layer's present key and value.
    b.g.declare_output(
        "logits",
        Elem::F32,
        &[
            named("batch"),
            named("sequence"),
            Dim::Fixed(c.vocab_size as i64),
        ],
    );
    for layer in 0..c.num_layers {
        let [_, _, ok, ov] = cache_names(layer);
        b.g.declare_output(&ok, Elem::F32, &cache_dims("total_sequence"));
        b.g.declare_output(&ov, Elem::F32, &cache_dims("total_sequence"));
    }

    // Token embedding.
    b.g.set_prefix("embed");
    let embed = w.get("decoder.embed_tokens.weight")?;
    let mut x = if format.half_embedding {
        let table =
            b.g.weight_f16("embed_tokens.weight", &embed.dims, &embed.data);
        let rows = b.g.op("Gather", &[&table, &ids], vec![attr_int("axis", 0)]);
        // to = 1: FLOAT.
        b.g.op("Cast", &[&rows], vec![attr_int("to", 1)])
    } else {
        let table =
            b.g.weight_f32("embed_tokens.weight", &embed.dims, &embed.data);
        b.g.op("Gather", &[&table, &ids], vec![attr_int("axis", 0)])
    };

    let context = match format.attention {
        AttentionExport::Ops => ops_context(&mut b.g, c, &ids, &mask, &positions),
        AttentionExport::Gqa => gqa_context(&mut b.g, c, &mask),
    };

    let q_scale = 1.0 / (d as f32).sqrt();
    for (layer, (past_k, past_v)) in past.iter().enumerate() {
        let p = format!("decoder.layers.{layer}");
        b.g.set_prefix(format!("layers.{layer}"));
        let normed = b.rms_norm(&format!("{p}.input_layernorm"), &x, c.rms_norm_eps)?;
        let mut q_w = w.projection(&format!("{p}.self_attn.q_proj"))?;
        q_w.scale_rows(q_scale);
        let k_w = w.projection(&format!("{p}.self_attn.k_proj"))?;
        let v_w = w.projection(&format!("{p}.self_attn.v_proj"))?;
        let qkv_w = Projection::stack(vec![q_w, k_w, v_w]);
        let qkv = b.project(&format!("{p}.self_attn.qkv_proj"), &qkv_w, &normed)?;
        let [_, _, present_k, present_v] = cache_names(layer);
        let names = LayerCache {
            past_k,
            past_v,
            present_k: &present_k,
            present_v: &present_v,
        };
        let out = match &context {
            AttentionContext::Ops { cos, sin, bias } => {
                b.attention_ops(c, &qkv, cos, sin, bias, &names)
            }
            AttentionContext::Gqa {
                seqlens,
                total,
                cos,
                sin,
            } => b.attention_gqa(c, &qkv, seqlens, total, cos, sin, &names),
        };
        let o_w = w.projection(&format!("{p}.self_attn.o_proj"))?;
        let attended = b.project(&format!("{p}.self_attn.o_proj"), &o_w, &out)?;
        let hidden = b.g.op("Add", &[&x, &attended], vec![]);

        let normed = b.rms_norm(
            &format!("{p}.post_attention_layernorm"),
            &hidden,
            c.rms_norm_eps,
        )?;
        let gate_up = Projection::stack(vec![
            w.projection(&format!("{p}.mlp.gate_proj"))?,
            w.projection(&format!("{p}.mlp.up_proj"))?,
        ]);
        let gu = b.project(&format!("{p}.mlp.gate_up_proj"), &gate_up, &normed)?;
        let halves = b.g.op_multi("Split", &[&gu], 2, vec![attr_int("axis", 2)]);
        let sig = b.g.op("Sigmoid", &[&halves[0]], vec![]);
        let silu = b.g.op("Mul", &[&halves[0], &sig], vec![]);
        let act = b.g.op("Mul", &[&silu, &halves[1]], vec![]);
        let down_w = w.projection(&format!("{p}.mlp.down_proj"))?;
        let down = b.project(&format!("{p}.mlp.down_proj"), &down_w, &act)?;
        x = b.g.op("Add", &[&hidden, &down], vec![]);
    }

    b.g.set_prefix("head");
    let normed = b.rms_norm("decoder.norm", &x, c.rms_norm_eps)?;
    let head = if c.tie_embeddings {
        embed
    } else {
        w.get("decoder.lm_head.weight")?
    };
    let logits = if format.float_head {
        let t = head.transposed();
        let w = b.g.weight_f32("lm_head.weight_t", &t.dims, &t.data);
        b.g.op("MatMul", &[&normed, &w], vec![])
    } else {
        b.linear("lm_head", &head, &normed)
    };
    b.g.bind_output(&logits, "logits");
    Ok(b.g.into_model(
        "meit_decoder",
        "MEIT Llama decoder with KV cache (onnxruntime-genai I/O names); cache entry 0 is the ECG slot",
    ))
}

/// RoPE tables `[max_positions, d]` as `Rope::new` computes them (angles in f64): cosines, and
/// sines with the first half negated (`rotate_half(x) * sin == swap_halves(x) * signed_sin`).
fn rope_tables(c: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let (d, half) = (c.head_dim, c.head_dim / 2);
    let mut cos = Vec::with_capacity(c.max_positions * d);
    let mut sin = Vec::with_capacity(c.max_positions * d);
    for position in 0..c.max_positions {
        let angles: Vec<f64> = (0..half)
            .map(|i| position as f64 * c.rope_theta.powf(-2.0 * i as f64 / d as f64))
            .collect();
        for sign in [-1.0, 1.0] {
            cos.extend(angles.iter().map(|a| a.cos() as f32));
            sin.extend(angles.iter().map(|a| (sign * a.sin()) as f32));
        }
    }
    (cos, sin)
}
