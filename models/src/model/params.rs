//! Where model weights come from: a seeded initialiser writing into a candle `VarMap`.
//!
//! candle's CPU random generator cannot be seeded, so every random weight is drawn here from a
//! `rand` `StdRng` seeded once per model: the same seed gives the same model on every machine.
//! A weight that already sits in the map under the same name (inserted with [`Params::insert`],
//! e.g. from a checkpoint) is reused instead of being drawn, after a shape check.
//! [`Params::frozen`] hands out weights cut off from the gradient graph (the LLM under LoRA).
//! Dropout masks ([`Params::dropout`]) follow the model's seed, the layer's name and how many
//! masks that layer has drawn, so a run resumed from a checkpoint draws the masks a straight run
//! would have.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ModelError;

/// How a fresh weight is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element the same value.
    Const(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Uniform on [-bound, bound]; PyTorch's default for Linear/Conv is `1/sqrt(fan_in)`.
    Uniform(f64),
}

/// The shared state behind every [`Params`] handle of one model.
struct Store {
    varmap: VarMap,
    rng: Mutex<StdRng>,
    seed: u64,
    /// Masks drawn so far by each named dropout layer.
    dropouts: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    device: Device,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.varmap.data().lock().map_or(0, |vars| vars.len());
        f.debug_struct("Store")
            .field("weights", &count)
            .field("device", &self.device)
            .finish()
    }
}

/// A handle that creates or fetches named weights under a name prefix ("layers.0.attn").
#[derive(Debug, Clone)]
pub struct Params {
    store: Arc<Store>,
    prefix: String,
    frozen: bool,
}

impl Params {
    /// An empty store on `device` whose random weights follow `seed`.
    pub fn new(seed: u64, device: &Device) -> Params {
        Params {
            store: Arc::new(Store {
                varmap: VarMap::new(),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                seed,
                dropouts: Mutex::new(BTreeMap::new()),
                device: device.clone(),
            }),
            prefix: String::new(),
            frozen: false,
        }
    }

    /// The same store, with `name` appended to the prefix.
    pub fn pp(&self, name: impl std::fmt::Display) -> Params {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Params {
            prefix,
            ..self.clone()
        }
    }

    /// The same store, handing out weights detached from the gradient graph (not trained).
    pub fn frozen(&self) -> Params {
        Params {
            frozen: true,
            ..self.clone()
        }
    }

    /// Whether this view hands out frozen weights ([`Params::frozen`]).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The same store, handing out trainable weights (undoes [`Params::frozen`]).
    pub fn trainable(&self) -> Params {
        Params {
            frozen: false,
            ..self.clone()
        }
    }

    /// The device weights live on.
    pub fn device(&self) -> &Device {
        &self.store.device
    }

    /// Every weight of the model by full name (for saving with `VarMap::save`).
    pub fn varmap(&self) -> &VarMap {
        &self.store.varmap
    }

    /// The full name of `name` under this prefix.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Writes every weight (frozen ones and BatchNorm statistics included) to a safetensors
    /// file, by full name.
    pub fn save(&self, path: &std::path::Path) -> Result<(), ModelError> {
        self.store
            .varmap
            .save(path)
            .map_err(ModelError::tensor("saving safetensors"))
    }

    /// Writes the weights whose full name satisfies `keep` to a safetensors file: what a model
    /// on a pretrained base needs beside the base's own file ([`is_base_weight`]).
    pub fn save_where(
        &self,
        path: &std::path::Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(), ModelError> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .lock_vars()
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
            .map_err(ModelError::tensor("saving safetensors"))
    }

    /// Loads a safetensors file written by [`Params::save`] into an empty store, so the model
    /// built from it reuses those weights instead of drawing new ones.
    pub fn load(path: &std::path::Path, seed: u64, device: &Device) -> Result<Params, ModelError> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(ModelError::tensor("loading safetensors"))?;
        let params = Params::new(seed, device);
        for (name, tensor) in &tensors {
            params.insert(name, tensor)?;
        }
        Ok(params)
    }

    /// Puts a known tensor (from a checkpoint) under `name` before the model is built.
    pub fn insert(&self, name: &str, tensor: &Tensor) -> Result<(), ModelError> {
        let var = Var::from_tensor(tensor).map_err(ModelError::tensor("params insert"))?;
        self.lock_vars().insert(self.full_name(name), var);
        Ok(())
    }

    /// The f32 weight `name` of `shape`: the stored one if present, else freshly drawn.
    pub fn get(
        &self,
        shape: impl Into<Shape>,
        name: &str,
        init: Init,
    ) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let full = self.full_name(name);
        let mut vars = self.lock_vars();
        let tensor = match vars.get(&full) {
            Some(var) => {
                if var.shape() != &shape {
                    candle_core::bail!(
                        "weight {full} has shape {:?}, the model expects {:?}",
                        var.shape(),
                        shape
                    );
                }
                var.as_tensor().clone()
            }
            None => {
                let values = self.draw(shape.elem_count(), init);
                let tensor = Tensor::from_vec(values, shape, &self.store.device)?;
                let var = Var::from_tensor(&tensor)?;
                let tensor = var.as_tensor().clone();
                vars.insert(full, var);
                tensor
            }
        };
        Ok(if self.frozen { tensor.detach() } else { tensor })
    }

    /// Dropout with probability `p` named `name` under this prefix: its masks follow the model's
    /// seed, the full name and the count of masks it has drawn ([`Params::dropout_calls`]), not
    /// the order in which weights were drawn, so a model rebuilt from a checkpoint and given its
    /// counts back draws the same masks.
    pub fn dropout(&self, p: f32, name: &str) -> SeededDropout {
        let full = self.full_name(name);
        // FNV-1a of the name, mixed with the model's seed.
        let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let calls = self
            .store
            .dropouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(full)
            .or_default()
            .clone();
        SeededDropout {
            p,
            seed: hash ^ self.store.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            calls,
        }
    }

    /// Masks drawn so far by each named dropout layer (saved with a checkpoint).
    pub fn dropout_calls(&self) -> BTreeMap<String, u64> {
        self.store
            .dropouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, calls)| (name.clone(), calls.load(Ordering::Relaxed)))
            .collect()
    }

    /// Puts back counts saved by [`Params::dropout_calls`]; a name this model has no dropout
    /// under is refused. Layers absent from `saved` keep their count.
    pub fn restore_dropout_calls(&self, saved: &BTreeMap<String, u64>) -> Result<(), String> {
        let dropouts = self
            .store
            .dropouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, count) in saved {
            let calls = dropouts
                .get(name)
                .ok_or_else(|| format!("dropout {name} belongs to no layer of this model"))?;
            calls.store(*count, Ordering::Relaxed);
        }
        Ok(())
    }

    fn draw(&self, count: usize, init: Init) -> Vec<f32> {
        let mut rng = self
            .store
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match init {
            Init::Const(value) => vec![value as f32; count],
            Init::Uniform(bound) => (0..count)
                .map(|_| rng.random_range(-bound..=bound) as f32)
                .collect(),
            Init::Normal(std) => (0..count)
                .map(|_| (standard_normal(&mut rng) * std) as f32)
                .collect(),
        }
    }

    fn lock_vars(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Var>> {
        self.store
            .varmap
            .data()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The trainable variables whose full name satisfies `keep` (sorted by name, so optimiser
    /// state lines up run after run).
    pub fn vars_where(&self, keep: impl Fn(&str) -> bool) -> Vec<Var> {
        self.named_vars_where(keep)
            .into_iter()
            .map(|(_, var)| var)
            .collect()
    }

    /// [`Params::vars_where`] with each variable's full name (optimiser checkpoints use it).
    pub fn named_vars_where(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Var)> {
        let vars = self.lock_vars();
        let mut named: Vec<(String, Var)> = vars
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
}

/// One standard-normal draw (Box-Muller), so no extra distribution crate is needed.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A dropout whose masks come from a seeded generator (candle's own `dropout` is unseeded).
#[derive(Debug, Clone)]
pub struct SeededDropout {
    p: f32,
    seed: u64,
    /// Masks drawn so far (shared with the store's record for a named layer).
    calls: Arc<AtomicU64>,
}

impl SeededDropout {
    /// Drops each element with probability `p` in training, scaling the rest by `1/(1-p)`; an
    /// unnamed layer (see [`Params::dropout`] for a named one).
    pub fn new(p: f32, seed: u64) -> SeededDropout {
        SeededDropout {
            p,
            seed,
            calls: Arc::default(),
        }
    }

    /// `x` itself outside training or when `p == 0`, else `x` times the next mask (mask `k` is
    /// drawn from a generator seeded by the layer's seed and `k`).
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let k = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = StdRng::seed_from_u64(
            self.seed
                .wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// The element type every weight is created in (training runs in f32 on CPU).
pub const WEIGHT_DTYPE: DType = DType::F32;

/// Whether `name` is a weight of a pretrained decoder, loaded from its checkpoint file
/// (`decoder.*` except the LoRA adapters): frozen under LoRA, so a trained model need not store it.
pub fn is_base_weight(name: &str) -> bool {
    name.starts_with("decoder.") && !name.contains(".lora_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_weights_and_other_seed_differs() -> candle_core::Result<()> {
        let draw = |seed| -> candle_core::Result<Vec<f32>> {
            Params::new(seed, &Device::Cpu)
                .pp("layer")
                .get((4, 3), "weight", Init::Normal(0.02))?
                .flatten_all()?
                .to_vec1()
        };
        assert_eq!(draw(7)?, draw(7)?);
        assert_ne!(draw(7)?, draw(8)?);
        Ok(())
    }

    #[test]
    fn inserted_weight_is_reused_and_shape_checked() -> candle_core::Result<()> {
        let params = Params::new(0, &Device::Cpu);
        let known = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?;
        params
            .pp("a")
            .insert("w", &known)
            .map_err(candle_core::Error::wrap)?;
        let got = params.pp("a").get((2, 2), "w", Init::Const(0.0))?;
        assert_eq!(got.to_vec2::<f32>()?, vec![vec![1., 2.], vec![3., 4.]]);
        assert!(params.pp("a").get((3, 2), "w", Init::Const(0.0)).is_err());
        Ok(())
    }

    #[test]
    fn normal_init_has_requested_spread() -> candle_core::Result<()> {
        let values: Vec<f32> = Params::new(1, &Device::Cpu)
            .get(20_000, "w", Init::Normal(0.5))?
            .to_vec1()?;
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
        Ok(())
    }

    #[test]
    fn dropout_is_identity_in_eval_and_seeded_in_training() -> candle_core::Result<()> {
        let x = Tensor::ones(1000, DType::F32, &Device::Cpu)?;
        let eval = SeededDropout::new(0.5, 3).forward(&x, false)?;
        assert_eq!(eval.to_vec1::<f32>()?, x.to_vec1::<f32>()?);
        let a = SeededDropout::new(0.5, 3)
            .forward(&x, true)?
            .to_vec1::<f32>()?;
        let b = SeededDropout::new(0.5, 3)
            .forward(&x, true)?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((400..600).contains(&zeros), "{zeros} of 1000 dropped");
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        Ok(())
    }
}
