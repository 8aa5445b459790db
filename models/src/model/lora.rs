//! LoRA (Hu et al. 2021) as PEFT applies it: `y = W x + (alpha / r) * B A dropout(x)`, with `W`
//! frozen, `A` `[r, in]` drawn like PyTorch's Linear default (uniform, bound `1/sqrt(in)`) and
//! `B` `[out, r]` zero, so a fresh adapter leaves the model unchanged. The paper trains
//! r = 64, alpha = 128, dropout 0.1 on q, k, v, o, gate, up, down and merges at test time:
//! [`LoraLinear::merge`] folds `(alpha / r) B A` into `W` and gives a plain linear layer.
//!
//! Every projection of the decoder is a [`LoraLinear`]; without an adapter it is an ordinary
//! bias-free linear layer whose weight trains. A frozen weight is multiplied by
//! [`frozen_linear`], whose backward pass computes the input's gradient only.

use std::sync::{Mutex, PoisonError};

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Storage, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::params::{Init, Params, SeededDropout};

/// A decoder projection LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query projection.
    Q,
    /// Attention key projection (it also projects the ECG slot).
    K,
    /// Attention value projection (it also projects the ECG slot).
    V,
    /// Attention output projection.
    O,
    /// SwiGLU gate projection.
    Gate,
    /// SwiGLU up projection.
    Up,
    /// SwiGLU down projection.
    Down,
}

impl LoraTarget {
    /// All seven, the paper's choice for Llama-family models.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];
}

/// The adapter settings. Serialised in model configs (`[lora]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of `B A`.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    pub dropout: f32,
    /// Which projections get an adapter.
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// The paper's adapter: r 64, alpha 128, dropout 0.1, all seven projections.
    pub fn paper() -> LoraConfig {
        LoraConfig {
            rank: 64,
            alpha: 128.0,
            dropout: 0.1,
            targets: LoraTarget::ALL.to_vec(),
        }
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Refuses a rank of 0 or a dropout outside [0, 1).
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.rank == 0 {
            return Err(ModelError::Config("lora: rank must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config("lora: dropout must be in [0, 1)".into()));
        }
        Ok(())
    }

    /// Whether `target` gets an adapter.
    pub fn adapts(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }
}

/// The low-rank update `(alpha / r) B A dropout(x)`.
#[derive(Debug, Clone)]
struct Adapter {
    a: Linear,
    b: Linear,
    scale: f64,
    dropout: SeededDropout,
}

/// A bias-free linear layer `[out, in]`, optionally with a LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    base: Linear,
    /// The base weight does not train (the pretrained LLM under LoRA).
    frozen: bool,
    adapter: Option<Adapter>,
}

/// `x W^T` for a weight `[out, in]` that does not train, `x` `[..., in]`.
///
/// candle's matmul backward computes the gradient of both operands whether or not they are
/// variables: for a frozen weight that is a second matrix product as large as the forward one
/// and a weight-sized buffer per layer and step (113 MB for SmolLM2's tied 49,152-way output
/// layer), all thrown away. This op's backward computes `dy W`, the input's gradient, only.
/// Without a gradient to carry (`x` depends on no variable) it is the plain product.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let plain = Linear::new(weight.detach(), None);
    if !x.track_op() || !x.device().is_cpu() {
        // Nothing to save, or no CPU op for another device: candle's own product.
        return plain.forward(x);
    }
    let y = plain.forward(&x.detach())?;
    x.apply_op1(FrozenLinear {
        product: Mutex::new(Some(y)),
        weight: weight.detach(),
    })
}

/// [`frozen_linear`]'s op: the product is computed before (plain tensor operations, no graph);
/// the op hands it out once (candle runs `cpu_fwd` once, eagerly, in `apply_op1`) and defines
/// the backward pass.
struct FrozenLinear {
    product: Mutex<Option<Tensor>>,
    weight: Tensor,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let product = self
            .product
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| candle_core::Error::Msg("frozen-linear: run twice".into()))?
            .contiguous()?;
        let (storage, layout) = product.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("frozen-linear: the product is not on the CPU");
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-linear: strided product".into()))?;
        let data = match cpu {
            CpuStorage::F32(values) => CpuStorage::F32(values[start..end].to_vec()),
            _ => candle_core::bail!("frozen-linear: weights must be f32"),
        };
        Ok((data, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let out = self.weight.dim(0)?;
        let rows = dy.elem_count() / out.max(1);
        let dx = dy.reshape((rows, out))?.matmul(&self.weight)?;
        Ok(Some(dx.reshape(x.shape())?))
    }
}

impl LoraLinear {
    /// Builds `p.weight` `[c_out, c_in]` drawn with `init`, frozen if `p` is
    /// ([`Params::frozen`], the pretrained LLM under LoRA). With `lora`, trainable
    /// `p.lora_a.weight` and `p.lora_b.weight` are added.
    pub fn new(
        p: &Params,
        c_in: usize,
        c_out: usize,
        init: Init,
        lora: Option<&LoraConfig>,
    ) -> candle_core::Result<LoraLinear> {
        let base = Linear::new(p.get((c_out, c_in), "weight", init)?, None);
        let frozen = p.is_frozen();
        let Some(config) = lora else {
            return Ok(LoraLinear {
                base,
                frozen,
                adapter: None,
            });
        };
        let p = p.trainable();
        let bound = 1.0 / (c_in as f64).sqrt();
        let a = p
            .pp("lora_a")
            .get((config.rank, c_in), "weight", Init::Uniform(bound))?;
        let b = p
            .pp("lora_b")
            .get((c_out, config.rank), "weight", Init::Const(0.0))?;
        Ok(LoraLinear {
            base,
            frozen,
            adapter: Some(Adapter {
                a: Linear::new(a, None),
                b: Linear::new(b, None),
                scale: config.scale(),
                dropout: p.dropout(config.dropout, "lora_dropout"),
            }),
        })
    }

    /// A plain layer around a known weight `[out, in]` (e.g. a merged or loaded one).
    pub fn from_weight(weight: Tensor) -> LoraLinear {
        LoraLinear {
            base: Linear::new(weight, None),
            frozen: false,
            adapter: None,
        }
    }

    /// A plain layer around a weight that does not train (multiplied by [`frozen_linear`]).
    pub fn from_frozen_weight(weight: Tensor) -> LoraLinear {
        LoraLinear {
            base: Linear::new(weight.detach(), None),
            frozen: true,
            adapter: None,
        }
    }

    /// The base weight `[out, in]` (without the adapter's update).
    pub fn weight(&self) -> &Tensor {
        self.base.weight()
    }

    /// Whether an adapter is attached.
    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// `W x`, plus the adapter's update if there is one (dropout only when `train`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = match self.frozen {
            true => frozen_linear(x, self.base.weight())?,
            false => self.base.forward(x)?,
        };
        match &self.adapter {
            None => Ok(y),
            Some(adapter) => {
                let update = adapter
                    .b
                    .forward(&adapter.a.forward(&adapter.dropout.forward(x, train)?)?)?;
                y + (update * adapter.scale)?
            }
        }
    }

    /// The plain layer with weight `W + (alpha / r) B A` (the layer itself if no adapter).
    pub fn merge(&self) -> candle_core::Result<LoraLinear> {
        match &self.adapter {
            None => Ok(self.clone()),
            Some(adapter) => {
                let delta = (adapter.b.weight().matmul(adapter.a.weight())? * adapter.scale)?;
                Ok(LoraLinear::from_weight(
                    (self.base.weight() + delta)?.detach(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn config() -> LoraConfig {
        LoraConfig {
            rank: 2,
            alpha: 6.0,
            dropout: 0.5,
            targets: vec![LoraTarget::Q],
        }
    }

    fn input() -> candle_core::Result<Tensor> {
        Tensor::new(&[[[0.5f32, -1.0, 2.0], [1.5, 0.25, -0.75]]], &Device::Cpu)
    }

    #[test]
    fn a_frozen_weight_passes_the_same_gradients_and_gets_none_itself() -> candle_core::Result<()> {
        // A trainable input (an upstream variable) through a frozen-weight layer with an adapter,
        // against the same layer with candle's plain product: the same output, the same
        // gradients for the input and both adapter matrices; the plain path also computes a
        // gradient for the frozen weight, the frozen one none.
        let params = Params::new(5, &Device::Cpu);
        let frozen = params.frozen();
        let mut lora = config();
        lora.dropout = 0.0;
        let layer = LoraLinear::new(&frozen.pp("q"), 3, 4, Init::Normal(0.5), Some(&lora))?;
        assert!(layer.frozen);
        params
            .pp("q.lora_b")
            .insert(
                "weight",
                &Tensor::new(
                    &[[1f32, -2.], [0.5, 0.25], [0., 3.], [-1., 1.]],
                    &Device::Cpu,
                )?,
            )
            .map_err(candle_core::Error::wrap)?;
        let layer = LoraLinear::new(&frozen.pp("q"), 3, 4, Init::Normal(0.5), Some(&lora))?;
        let plain = LoraLinear {
            frozen: false,
            ..layer.clone()
        };
        let x = candle_core::Var::from_tensor(&input()?)?;
        let weights = Tensor::new(&[[[1f32, -1., 2., 0.5], [0.25, 3., -2., 1.]]], &Device::Cpu)?;
        let run =
            |l: &LoraLinear| -> candle_core::Result<(Tensor, candle_core::backprop::GradStore)> {
                let y = l.forward_t(x.as_tensor(), true)?;
                let grads = (&y * &weights)?.sum_all()?.backward()?;
                Ok((y, grads))
            };
        let ((y_frozen, g_frozen), (y_plain, g_plain)) = (run(&layer)?, run(&plain)?);
        let gap = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        assert!(gap(&y_frozen, &y_plain)? < 1e-6);
        let adapter = layer.adapter.as_ref().expect("adapter");
        for t in [x.as_tensor(), adapter.a.weight(), adapter.b.weight()] {
            let (f, p) = (
                g_frozen.get(t).expect("gradient"),
                g_plain.get(t).expect("gradient"),
            );
            assert!(gap(f, p)? < 1e-5, "gradients differ by {}", gap(f, p)?);
            assert!(p.abs()?.max_all()?.to_scalar::<f32>()? > 0.0);
        }
        // candle files the wasted product under the transposed weight's id ([in, out] = [3, 4]).
        let weight_sized = |g: &candle_core::backprop::GradStore| {
            g.get_ids()
                .filter_map(|id| g.get_id(*id))
                .filter(|t| t.dims() == [3, 4])
                .count()
        };
        assert_eq!(weight_sized(&g_plain), 1, "candle's product computes it");
        assert_eq!(weight_sized(&g_frozen), 0, "the frozen product does not");
        // Without a variable upstream it is the plain product, no op recorded.
        let base_only = LoraLinear::from_frozen_weight(layer.weight().clone());
        let constant = base_only.forward_t(&input()?, false)?;
        assert!(!constant.track_op());
        let reference =
            LoraLinear::from_weight(layer.weight().clone()).forward_t(&input()?, false)?;
        assert!(gap(&constant, &reference)? < 1e-6);
        Ok(())
    }

    #[test]
    fn fresh_adapter_leaves_the_layer_unchanged() -> candle_core::Result<()> {
        let params = Params::new(3, &Device::Cpu);
        let with = LoraLinear::new(&params.pp("q"), 3, 4, Init::Normal(0.5), Some(&config()))?;
        let plain = LoraLinear::from_weight(with.weight().clone());
        let diff = (with.forward_t(&input()?, false)? - plain.forward_t(&input()?, false)?)?;
        assert_eq!(diff.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    #[test]
    fn merged_layer_equals_base_plus_scaled_update() -> candle_core::Result<()> {
        let params = Params::new(3, &Device::Cpu);
        // A trained-looking B: non-zero, so the update matters.
        let b = Tensor::new(
            &[[1f32, -2.], [0.5, 0.25], [0., 3.], [-1., 1.]],
            &Device::Cpu,
        )?;
        params
            .pp("q.lora_b")
            .insert("weight", &b)
            .map_err(candle_core::Error::wrap)?;
        let layer = LoraLinear::new(&params.pp("q"), 3, 4, Init::Normal(0.5), Some(&config()))?;
        let merged = layer.merge()?;
        assert!(!merged.has_adapter());
        let x = input()?;
        let adapted = layer.forward_t(&x, false)?;
        let base_only = LoraLinear::from_weight(layer.weight().clone()).forward_t(&x, false)?;
        let gap = (&adapted - &base_only)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(gap > 0.1, "the adapter must change the output (gap {gap})");
        let err = (merged.forward_t(&x, false)? - adapted)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(err < 1e-5, "merged differs by {err}");
        Ok(())
    }

    #[test]
    fn adapter_freezes_the_base_weight_and_trains_a_and_b() -> candle_core::Result<()> {
        let params = Params::new(3, &Device::Cpu);
        let b = Tensor::ones((4, 2), candle_core::DType::F32, &Device::Cpu)?;
        params
            .pp("q.lora_b")
            .insert("weight", &b)
            .map_err(candle_core::Error::wrap)?;
        let layer = LoraLinear::new(
            &params.pp("q").frozen(),
            3,
            4,
            Init::Normal(0.5),
            Some(&config()),
        )?;
        let loss = layer.forward_t(&input()?, true)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        let named = |name: &str| params.vars_where(|n| n == name);
        assert!(grads.get(named("q.weight")[0].as_tensor()).is_none());
        assert!(grads.get(named("q.lora_a.weight")[0].as_tensor()).is_some());
        assert!(grads.get(named("q.lora_b.weight")[0].as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn config_checks_rank_and_dropout() {
        assert!(LoraConfig::paper().validate().is_ok());
        assert_eq!(LoraConfig::paper().scale(), 2.0);
        let zero_rank = LoraConfig {
            rank: 0,
            ..config()
        };
        assert!(zero_rank.validate().is_err());
        let all_dropped = LoraConfig {
            dropout: 1.0,
            ..config()
        };
        assert!(all_dropped.validate().is_err());
    }
}
