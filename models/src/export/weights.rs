//! The trained weights by name, as the exporters read them: plain f32 arrays with their shapes,
//! LoRA adapters merged (`W + alpha / r * B A`) and BatchNorm folded into the layer before it.

use std::collections::HashMap;

use candle_core::Tensor;

use super::ExportError;
use crate::model::meit::Meit;

/// A weight as a row-major f32 array.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Array {
    /// `[rows, cols]` -> `[cols, rows]`.
    pub fn transposed(&self) -> Array {
        let (rows, cols) = (self.dims[0], self.dims[1]);
        let mut data = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Array {
            dims: vec![cols, rows],
            data,
        }
    }
}

/// A LoRA update `B A` with the scale folded into `B`: `a` `[rank, in]`, `b` `[out, rank]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    /// `[rank, in]`.
    pub a: Array,
    /// `[out, rank]`, times `alpha / rank`.
    pub b: Array,
}

/// A linear layer: its base weight `[out, in]` and an optional low-rank update.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The (pretrained, frozen) weight.
    pub base: Array,
    /// The LoRA update, if the layer was adapted.
    pub low_rank: Option<LowRank>,
}

impl Projection {
    /// `base + B A` (the update merged; the base alone without one).
    pub fn merged(&self) -> Result<Array, ExportError> {
        let mut out = self.base.clone();
        if let Some(LowRank { a, b }) = &self.low_rank {
            let (rows, rank, cols) = (b.dims[0], b.dims[1], a.dims[1]);
            if a.dims[0] != rank || out.dims != [rows, cols] {
                return Err(ExportError::Tensor(format!(
                    "LoRA shapes {:?} x {:?} do not fit the weight {:?}",
                    b.dims, a.dims, out.dims
                )));
            }
            for r in 0..rows {
                for k in 0..rank {
                    let bv = b.data[r * rank + k];
                    if bv == 0.0 {
                        continue;
                    }
                    let row = &mut out.data[r * cols..(r + 1) * cols];
                    for (o, av) in row.iter_mut().zip(&a.data[k * cols..(k + 1) * cols]) {
                        *o += bv * av;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Multiplies every output row (of the base and of the update) by `factor`.
    pub fn scale_rows(&mut self, factor: f32) {
        self.base.data.iter_mut().for_each(|v| *v *= factor);
        if let Some(low_rank) = &mut self.low_rank {
            low_rank.b.data.iter_mut().for_each(|v| *v *= factor);
        }
    }

    /// Several projections of the same input as one (output rows stacked): the bases stacked,
    /// the updates as one `A` (ranks stacked) and a block-diagonal `B`.
    pub fn stack(parts: Vec<Projection>) -> Projection {
        let base = stack_rows(parts.iter().map(|p| &p.base));
        let low_rank = if parts.iter().all(|p| p.low_rank.is_some()) {
            let updates: Vec<&LowRank> = parts.iter().filter_map(|p| p.low_rank.as_ref()).collect();
            let a = stack_rows(updates.iter().map(|u| &u.a));
            let ranks: usize = updates.iter().map(|u| u.b.dims[1]).sum();
            let rows: usize = updates.iter().map(|u| u.b.dims[0]).sum();
            let mut b = vec![0f32; rows * ranks];
            let (mut row0, mut col0) = (0, 0);
            for u in &updates {
                let (r, k) = (u.b.dims[0], u.b.dims[1]);
                for i in 0..r {
                    b[(row0 + i) * ranks + col0..(row0 + i) * ranks + col0 + k]
                        .copy_from_slice(&u.b.data[i * k..(i + 1) * k]);
                }
                row0 += r;
                col0 += k;
            }
            Some(LowRank {
                a,
                b: Array {
                    dims: vec![rows, ranks],
                    data: b,
                },
            })
        } else {
            None
        };
        Projection { base, low_rank }
    }
}

/// Rows `[out, in]` of several arrays stacked into one `[sum(out), in]`.
pub fn stack_rows<'a>(parts: impl Iterator<Item = &'a Array> + Clone) -> Array {
    let cols = parts.clone().next().map_or(0, |p| p.dims[1]);
    let rows = parts.clone().map(|p| p.dims[0]).sum();
    Array {
        dims: vec![rows, cols],
        data: parts.flat_map(|p| p.data.iter().copied()).collect(),
    }
}

/// BatchNorm's epsilon in the encoder (candle-nn's and PyTorch's default).
pub const BATCH_NORM_EPS: f32 = 1e-5;

/// The model's weights by full name (`encoder.stem.conv.weight`, `decoder.layers.0...`).
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    lora_scale: Option<f64>,
}

impl Weights {
    /// Every weight of `model`.
    pub fn of(model: &Meit) -> Weights {
        let tensors = model
            .params()
            .named_vars_where(|_| true)
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        Weights {
            tensors,
            lora_scale: model.config().lora.as_ref().map(|l| l.scale()),
        }
    }

    /// The weight `name`.
    pub fn get(&self, name: &str) -> Result<Array, ExportError> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| ExportError::MissingWeight(name.to_string()))?;
        to_array(name, tensor)
    }

    /// A linear layer's weight `[out, in]` under `prefix` (`prefix.weight`), with its LoRA
    /// adapter (`prefix.lora_a.weight`, `prefix.lora_b.weight`) merged when it has one.
    pub fn linear(&self, prefix: &str) -> Result<Array, ExportError> {
        self.projection(prefix)?.merged()
    }

    /// A linear layer under `prefix` as its base weight and, if it has a LoRA adapter, the
    /// low-rank update `(alpha / r) B A` kept apart.
    pub fn projection(&self, prefix: &str) -> Result<Projection, ExportError> {
        let base = self.get(&format!("{prefix}.weight"))?;
        let a_name = format!("{prefix}.lora_a.weight");
        let low_rank = match (self.tensors.contains_key(&a_name), self.lora_scale) {
            (true, Some(scale)) => {
                let a = self.get(&a_name)?;
                let mut b = self.get(&format!("{prefix}.lora_b.weight"))?;
                b.data.iter_mut().for_each(|v| *v *= scale as f32);
                Some(LowRank { a, b })
            }
            _ => None,
        };
        Ok(Projection { base, low_rank })
    }

    /// BatchNorm under `prefix` as a per-channel affine map `x * scale + shift` (inference form).
    pub fn batch_norm(&self, prefix: &str) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
        let get = |what: &str| self.get(&format!("{prefix}.{what}")).map(|a| a.data);
        let (mean, var, gamma, beta) = (
            get("running_mean")?,
            get("running_var")?,
            get("weight")?,
            get("bias")?,
        );
        let scale: Vec<f32> = var
            .iter()
            .zip(&gamma)
            .map(|(v, g)| g / (v + BATCH_NORM_EPS).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }
}

fn to_array(name: &str, tensor: &Tensor) -> Result<Array, ExportError> {
    let read = || -> candle_core::Result<Vec<f32>> {
        tensor
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let data = read().map_err(|e| ExportError::Tensor(format!("{name}: {e}")))?;
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        return Err(ExportError::Tensor(format!(
            "{name}: non-finite value {} at index {bad}",
            data[bad]
        )));
    }
    Ok(Array {
        dims: tensor.dims().to_vec(),
        data,
    })
}
