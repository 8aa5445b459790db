//! `encoder.onnx`: the ECG encoder and every layer's ECG-slot key and value in one graph.
//!
//! Read beside `model/ecg_encoder.rs` and `model/llama.rs` (`Llama::start_cache`):
//!
//! ```text
//! ecg [batch, leads, samples]            exactly what meit::dsp::Preprocessor hands the model
//!  -> Conv(k7, s2) + BN -> ReLU [-> MaxPool(3, 2, 1)]          stem
//!  -> residual blocks (Conv + BN, ReLU, Conv + BN, + shortcut, ReLU)
//!  -> ReduceMean over time                                    pooled features
//! [ -> Concat with Sqrt(ReduceMean((x - mean)^2) + 1e-5)         standard deviation, opt-in ]
//! [ -> Concat with Cast(Greater(ReduceMax(Abs(ecg)), 0))       lead-presence flags, opt-in ]
//! [ -> Concat with rhythm [batch, 4], a second input              R-R statistics, opt-in ]
//!  -> Gemm + BN -> ReLU -> Gemm + BN                          projection
//!  -> x / max(||x||, 1e-12)                                    L2 normalisation
//!  -> slot.{i}.key, slot.{i}.value [batch, kv_heads, 1, head_dim] for every layer i
//! ```
//!
//! Inference-form folds (exact up to float rounding): every BatchNorm is folded into the
//! convolution or Gemm before it. The last step is `output_scale * tile(e, num_heads) @ W^T` for
//! each layer's `k_proj` / `v_proj` (LoRA merged); tiling `e` over the heads and multiplying by
//! `W^T` equals `e` times the sum of `W^T`'s per-head row blocks, so all layers' slot keys and
//! values come from one `[head_dim, 2 * layers * kv_width]` matrix (with `output_scale` folded
//! in) and a Split. No rotation: the slot is cache position 0, where RoPE is the identity.

use candle_onnx::onnx::ModelProto;
use meit::dsp::rhythm::RHYTHM_FEATURES;
use meit::infer::bundle::{Dim as ManifestDim, RHYTHM_INPUT, TensorSpec};

use super::ExportError;
use super::graph::{Dim, Elem, Graph, attr_int, attr_ints, named};
use super::weights::Weights;
use crate::model::ecg_encoder::{BlockKind, EcgEncoderConfig, Pooling, STD_POOLING_EPSILON};
use crate::model::llama::LlamaConfig;

/// The output names of layer `i`'s slot key and value.
pub fn slot_names(layer: usize) -> (String, String) {
    (format!("slot.{layer}.key"), format!("slot.{layer}.value"))
}

/// Inputs and outputs of the encoder graph, as the manifest records them.
pub fn interface(
    encoder: &EcgEncoderConfig,
    decoder: &LlamaConfig,
) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let f32_spec = |name: String, shape: Vec<ManifestDim>| TensorSpec {
        name,
        dtype: "float32".into(),
        shape,
    };
    let mut inputs = vec![f32_spec(
        "ecg".into(),
        vec![
            ManifestDim::Symbol("batch".into()),
            ManifestDim::Fixed(encoder.leads as i64),
            ManifestDim::Symbol("samples".into()),
        ],
    )];
    if encoder.rhythm_features {
        inputs.push(f32_spec(
            RHYTHM_INPUT.into(),
            vec![
                ManifestDim::Symbol("batch".into()),
                ManifestDim::Fixed(RHYTHM_FEATURES as i64),
            ],
        ));
    }
    let slot_shape = || {
        vec![
            ManifestDim::Symbol("batch".into()),
            ManifestDim::Fixed(decoder.num_kv_heads as i64),
            ManifestDim::Fixed(1),
            ManifestDim::Fixed(decoder.head_dim as i64),
        ]
    };
    let outputs = (0..decoder.num_layers)
        .flat_map(|i| {
            let (k, v) = slot_names(i);
            [f32_spec(k, slot_shape()), f32_spec(v, slot_shape())]
        })
        .collect();
    (inputs, outputs)
}

/// A convolution with its BatchNorm folded in: `Conv(x, W * s, shift)`.
fn conv_bn(
    g: &mut Graph,
    w: &Weights,
    prefix: &str,
    x: &str,
    stride: i64,
) -> Result<String, ExportError> {
    let mut weight = w.get(&format!("{prefix}.conv.weight"))?;
    let (scale, shift) = w.batch_norm(&format!("{prefix}.bn"))?;
    let per_channel = weight.data.len() / scale.len();
    for (c, s) in scale.iter().enumerate() {
        for v in &mut weight.data[c * per_channel..(c + 1) * per_channel] {
            *v *= s;
        }
    }
    let kernel = weight.dims[2] as i64;
    let wn = g.weight_f32(
        &format!("{prefix}.conv.weight_bn"),
        &weight.dims,
        &weight.data,
    );
    let bn = g.weight_f32(&format!("{prefix}.conv.bias_bn"), &[shift.len()], &shift);
    Ok(g.op(
        "Conv",
        &[x, &wn, &bn],
        vec![
            attr_ints("kernel_shape", &[kernel]),
            attr_ints("strides", &[stride]),
            attr_ints("pads", &[kernel / 2, kernel / 2]),
        ],
    ))
}

/// `nn.Linear` + BatchNorm1d as one Gemm: `x (W * s)^T + (b * s + shift)`.
fn linear_bn(
    g: &mut Graph,
    w: &Weights,
    linear: &str,
    bn: &str,
    x: &str,
) -> Result<String, ExportError> {
    let mut weight = w.get(&format!("{linear}.weight"))?;
    let mut bias = w.get(&format!("{linear}.bias"))?.data;
    let (scale, shift) = w.batch_norm(bn)?;
    let cols = weight.dims[1];
    for (o, s) in scale.iter().enumerate() {
        for v in &mut weight.data[o * cols..(o + 1) * cols] {
            *v *= s;
        }
        bias[o] = bias[o] * s + shift[o];
    }
    let wn = g.weight_f32(&format!("{linear}.weight_bn"), &weight.dims, &weight.data);
    let bn_name = g.weight_f32(&format!("{linear}.bias_bn"), &[bias.len()], &bias);
    Ok(g.op("Gemm", &[x, &wn, &bn_name], vec![attr_int("transB", 1)]))
}

/// Builds the encoder graph of a model with `encoder` and `decoder` configurations.
pub fn build(
    w: &Weights,
    encoder: &EcgEncoderConfig,
    decoder: &LlamaConfig,
) -> Result<ModelProto, ExportError> {
    let mut g = Graph::new();
    let ecg = g.input(
        "ecg",
        Elem::F32,
        &[
            named("batch"),
            Dim::Fixed(encoder.leads as i64),
            named("samples"),
        ],
    );
    let rhythm = encoder.rhythm_features.then(|| {
        g.input(
            RHYTHM_INPUT,
            Elem::F32,
            &[named("batch"), Dim::Fixed(RHYTHM_FEATURES as i64)],
        )
    });

    // Stem.
    g.set_prefix("stem");
    let mut x = conv_bn(&mut g, w, "encoder.stem", &ecg, 2)?;
    x = g.op("Relu", &[&x], vec![]);
    if encoder.stem_max_pool {
        x = g.op(
            "MaxPool",
            &[&x],
            vec![
                attr_ints("kernel_shape", &[3]),
                attr_ints("strides", &[2]),
                attr_ints("pads", &[1, 1]),
            ],
        );
    }

    // Residual stages.
    let mut c_in = encoder.base_width;
    for (s, &blocks) in encoder.stage_blocks.iter().enumerate() {
        let width = encoder.base_width << s;
        let c_out = width * encoder.block.expansion();
        for b in 0..blocks {
            let prefix = format!("encoder.stages.{s}.{b}");
            g.set_prefix(format!("stages.{s}.{b}"));
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            // (conv index, stride) along the chain, as `Block::new`.
            let chain: Vec<(usize, i64)> = match encoder.block {
                BlockKind::Basic => vec![(1, stride), (2, 1)],
                BlockKind::Bottleneck => vec![(1, 1), (2, stride), (3, 1)],
            };
            let mut out = x.clone();
            for (j, &(conv, st)) in chain.iter().enumerate() {
                out = conv_bn(&mut g, w, &format!("{prefix}.conv{conv}"), &out, st)?;
                if j + 1 < chain.len() {
                    out = g.op("Relu", &[&out], vec![]);
                }
            }
            let identity = if stride != 1 || c_in != c_out {
                conv_bn(&mut g, w, &format!("{prefix}.shortcut"), &x, stride)?
            } else {
                x.clone()
            };
            let sum = g.op("Add", &[&out, &identity], vec![]);
            x = g.op("Relu", &[&sum], vec![]);
            c_in = c_out;
        }
    }

    // Pooling, projection, L2 normalisation.
    g.set_prefix("projection");
    let mut pooled = g.op(
        "ReduceMean",
        &[&x],
        vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)],
    );
    if encoder.pooling == Pooling::MeanStd {
        // `Pooling::MeanStd`: sqrt of the variance over time (no Bessel correction) + epsilon.
        let mean = g.op(
            "ReduceMean",
            &[&x],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)],
        );
        let centred = g.op("Sub", &[&x, &mean], vec![]);
        let squared = g.op("Mul", &[&centred, &centred], vec![]);
        let variance = g.op(
            "ReduceMean",
            &[&squared],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)],
        );
        let epsilon = g.scalar_f32(STD_POOLING_EPSILON as f32);
        let shifted = g.op("Add", &[&variance, &epsilon], vec![]);
        let std = g.op("Sqrt", &[&shifted], vec![]);
        pooled = g.op("Concat", &[&pooled, &std], vec![attr_int("axis", 1)]);
    }
    if encoder.lead_presence {
        // `ecg_encoder::lead_presence`: 1 where a lead's row has any non-zero sample.
        let magnitude = g.op("Abs", &[&ecg], vec![]);
        let peak = g.op(
            "ReduceMax",
            &[&magnitude],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)],
        );
        let zero = g.scalar_f32(0.0);
        let present = g.op("Greater", &[&peak, &zero], vec![]);
        let flags = g.op("Cast", &[&present], vec![attr_int("to", 1)]);
        pooled = g.op("Concat", &[&pooled, &flags], vec![attr_int("axis", 1)]);
    }
    if let Some(rhythm) = &rhythm {
        // `meit::dsp::rhythm::RhythmFeatures`, computed by the preprocessing, read as they are.
        pooled = g.op("Concat", &[&pooled, rhythm], vec![attr_int("axis", 1)]);
    }
    let hidden = linear_bn(
        &mut g,
        w,
        "encoder.projection.hidden",
        "encoder.projection.hidden_bn",
        &pooled,
    )?;
    let hidden = g.op("Relu", &[&hidden], vec![]);
    let projected = linear_bn(
        &mut g,
        w,
        "encoder.projection.out",
        "encoder.projection.out_bn",
        &hidden,
    )?;
    let norm = g.op(
        "ReduceL2",
        &[&projected],
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
    );
    let floor = g.scalar_f32(1e-12);
    let norm = g.op("Max", &[&norm, &floor], vec![]);
    let unit = g.op("Div", &[&projected, &norm], vec![]);

    // Every layer's slot key and value from one matrix.
    g.set_prefix("slot");
    let (d, heads, kv_width) = (
        decoder.head_dim,
        decoder.num_heads,
        decoder.num_kv_heads * decoder.head_dim,
    );
    let layers = decoder.num_layers;
    let columns = 2 * layers * kv_width;
    let mut folded = vec![0f32; d * columns];
    let scale = encoder.output_scale as f32;
    for layer in 0..layers {
        for (which, proj) in ["k_proj", "v_proj"].iter().enumerate() {
            let weight = w.linear(&format!("decoder.layers.{layer}.self_attn.{proj}"))?;
            let block = (2 * layer + which) * kv_width;
            // weight [kv_width, hidden = heads * d]: column c of the block is
            // sum over heads h of weight[c, h * d + i] for row i.
            for c in 0..kv_width {
                for i in 0..d {
                    let sum: f32 = (0..heads)
                        .map(|h| weight.data[c * heads * d + h * d + i])
                        .sum();
                    folded[i * columns + block + c] = sum * scale;
                }
            }
        }
    }
    let wslot = g.weight_f32("slot.kv_weight", &[d, columns], &folded);
    let all = g.op("MatMul", &[&unit, &wslot], vec![]);
    let shape = g.const_i64(&[
        -1,
        2 * layers as i64,
        decoder.num_kv_heads as i64,
        1,
        d as i64,
    ]);
    let all = g.op("Reshape", &[&all, &shape], vec![]);
    let parts = g.op_multi("Split", &[&all], 2 * layers, vec![attr_int("axis", 1)]);
    let squeeze_axis = g.const_i64(&[1]);
    let slot_dims = [
        named("batch"),
        Dim::Fixed(decoder.num_kv_heads as i64),
        Dim::Fixed(1),
        Dim::Fixed(d as i64),
    ];
    for layer in 0..layers {
        let (k_name, v_name) = slot_names(layer);
        for (part, name) in [(2 * layer, k_name), (2 * layer + 1, v_name)] {
            let value = g.op("Squeeze", &[&parts[part], &squeeze_axis], vec![]);
            g.output(&value, &name, Elem::F32, &slot_dims);
        }
    }
    Ok(g.into_model(
        "meit_ecg_encoder",
        "MEIT ECG encoder: ecg [batch, leads, samples] -> each decoder layer's ECG-slot key/value",
    ))
}
