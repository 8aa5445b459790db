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
        let mut weight = self.get(&format!("{prefix}.weight"))?;
        let a_name = format!("{prefix}.lora_a.weight");
        if let (Some(a), Some(scale)) = (self.tensors.get(&a_name), self.lora_scale) {
            let b_name = format!("{prefix}.lora_b.weight");
            let b = self
                .tensors
                .get(&b_name)
                .ok_or_else(|| ExportError::MissingWeight(b_name.clone()))?;
            let delta = b
                .matmul(a)
                .and_then(|d| d * scale)
                .map_err(|e| ExportError::Tensor(format!("merging LoRA of {prefix}: {e}")))?;
            let delta = to_array(&b_name, &delta)?;
            for (w, d) in weight.data.iter_mut().zip(&delta.data) {
                *w += d;
            }
        }
        Ok(weight)
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
