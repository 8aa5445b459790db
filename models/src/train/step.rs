//! One optimisation step at a time: AdamW, a linear learning-rate schedule with warm-up,
//! gradient-norm clipping, all seeded through the model's [`Params`](crate::model::params::Params).
//!
//! The recipe is the paper's (Open-Instruct's `finetune.py`): AdamW (beta 0.9 / 0.999,
//! eps 1e-8, weight decay 0), `get_linear_schedule_with_warmup` with 3% warm-up, clipping the
//! global gradient norm. As there, the schedule is advanced after each optimiser step, so the
//! first step runs at the learning rate of step 0 (zero when there is a warm-up).
//! Data loading and epochs live in [`super::run`]; this module only needs [`Batch`]es.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::ModelError;
use crate::model::meit::{Batch, Meit};

/// Optimisation settings. Serialised in run configs (`[train]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The run's seed: the caller gives it to `Params::new` (weights, LoRA dropout) and uses it
    /// for the data order.
    pub seed: u64,
    /// Peak learning rate (the paper: 2e-5 for LoRA on 7B models).
    pub learning_rate: f64,
    /// Fraction of all steps spent warming up linearly from 0 (the paper: 0.03).
    pub warmup_fraction: f64,
    /// AdamW decoupled weight decay (the paper: 0).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (Open-Instruct's default 1.0).
    pub max_grad_norm: f64,
    /// Records per batch (at least 2: BatchNorm needs batch statistics).
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Tokens per sample after the ECG slot; longer samples lose the end of the report.
    pub max_tokens: usize,
    /// Micro-batches of `batch_size` whose gradients make one optimiser step.
    #[serde(default = "one")]
    pub accumulation_steps: usize,
    /// Write a checkpoint every this many optimiser steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Compute the validation loss every this many optimiser steps.
    #[serde(default = "default_validate_every")]
    pub validate_every: usize,
    /// Train the encoder alone first (see [`crate::model::statement_head`]); absent = the paper.
    #[serde(default)]
    pub encoder_warmup: Option<EncoderWarmup>,
    /// Start from a trained model directory's weights (and tokenizer) instead of fresh ones:
    /// continued training with a new schedule. The directory's `[model]` and `[base]` must equal
    /// this config's; its encoder is already warmed up, so `encoder_warmup` must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// Start the ECG encoder's convolutional trunk and the projection's first layer from a
    /// trained model directory (another backbone's, e.g. the tiny model's), everything else as a
    /// fresh run would: one trained encoder reused across decoders. The directory's encoder must
    /// have the same trunk and lead flags and its `[preprocess]` must equal this config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_from: Option<std::path::PathBuf>,
    /// The ECG encoder's own peak learning rate (same schedule shape) for every `encoder.*`
    /// weight, its projection into the decoder included; absent = `learning_rate` for every
    /// trainable weight, as the paper. A convolutional encoder trained from scratch
    /// learns at rates (1e-3) that would break a pretrained decoder's adapters (1e-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_learning_rate: Option<f64>,
    /// Weight of the unlikelihood term (Welleck et al. 2019): on a reduced-lead record, the
    /// first token of each statement its leads cannot support, where that statement would
    /// begin, is pushed down by `-log(1 - p)` (see
    /// [`crate::model::meit::unlikelihood_loss_from`]). 0 (the default) = the paper's loss.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlikelihood_weight: f64,
}

fn is_zero(weight: &f64) -> bool {
    *weight == 0.0
}

/// The encoder warm-up before instruction tuning (`[train.encoder_warmup]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderWarmup {
    /// Training records to show the encoder (the training set's order, cycling).
    pub records: usize,
    /// Records per step.
    pub batch_size: usize,
    /// Peak learning rate (3% warm-up, linear decay).
    pub learning_rate: f64,
    /// What it trains beside the read-out: the whole encoder (the default) or only the
    /// projection's inputs for the R-R interval statistics.
    #[serde(default, skip_serializing_if = "WarmupScope::is_encoder")]
    pub scope: WarmupScope,
}

/// What the encoder warm-up trains (`[train.encoder_warmup] scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupScope {
    /// Every encoder weight, trunk and projection: a fresh encoder.
    #[default]
    Encoder,
    /// Only the projection's input columns for the R-R interval statistics
    /// (`rhythm_features`): a trained model continued with them (`init_from`), whose other
    /// weights the decoder already reads and which the warm-up leaves as they were (only the
    /// batch norms' running statistics follow the data).
    /// In one pass of instruction tuning from zero those columns stay near zero (the decoder
    /// has no use for a direction that is not there yet); the read-out's sentence labels, sinus
    /// arrhythmia among them, give them a direct target first.
    RhythmInputs,
}

impl WarmupScope {
    fn is_encoder(&self) -> bool {
        *self == WarmupScope::Encoder
    }
}

fn one() -> usize {
    1
}

fn default_checkpoint_every() -> usize {
    200
}

fn default_validate_every() -> usize {
    100
}

impl TrainConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str| Err(ModelError::Config(format!("train: {what}")));
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate must be positive");
        }
        if let Some(rate) = self.encoder_learning_rate
            && !(rate > 0.0 && rate.is_finite())
        {
            return bad("encoder_learning_rate must be positive");
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad("warmup_fraction must be in [0, 1)");
        }
        if self.weight_decay < 0.0 || self.max_grad_norm <= 0.0 {
            return bad("weight_decay must be >= 0 and max_grad_norm > 0");
        }
        if self.batch_size < 2 || self.epochs == 0 || self.max_tokens < 2 {
            return bad("batch_size >= 2, epochs >= 1 and max_tokens >= 2 are needed");
        }
        if self.accumulation_steps == 0 || self.checkpoint_every == 0 || self.validate_every == 0 {
            return bad("accumulation_steps, checkpoint_every and validate_every must be >= 1");
        }
        if let Some(w) = &self.encoder_warmup
            && (w.batch_size < 2
                || w.records < w.batch_size
                || w.learning_rate <= 0.0
                || !w.learning_rate.is_finite())
        {
            return bad(
                "encoder_warmup: batch_size >= 2, records >= batch_size, learning_rate > 0",
            );
        }
        if !(0.0..=10.0).contains(&self.unlikelihood_weight) {
            return bad("unlikelihood_weight must be in [0, 10]");
        }
        if self.init_from.is_some()
            && self
                .encoder_warmup
                .as_ref()
                .is_some_and(|w| w.scope == WarmupScope::Encoder)
        {
            return bad(
                "init_from continues a trained model whose encoder is warmed up: remove [train.encoder_warmup] \
                 (or give it scope = \"rhythm_inputs\" to fit only the new rhythm columns)",
            );
        }
        if self.init_from.is_some() && self.encoder_from.is_some() {
            return bad(
                "init_from already brings the model's encoder: remove encoder_from or init_from",
            );
        }
        Ok(())
    }
}

/// Hugging Face's `get_linear_schedule_with_warmup`: 0 -> peak over the warm-up steps, then
/// linearly down to 0 at the last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    peak: f64,
    warmup_steps: usize,
    total_steps: usize,
}

impl LinearSchedule {
    /// `warmup_fraction` of `total_steps` (rounded down, as Open-Instruct's `int(...)`).
    pub fn new(peak: f64, warmup_fraction: f64, total_steps: usize) -> LinearSchedule {
        LinearSchedule {
            peak,
            warmup_steps: (warmup_fraction * total_steps as f64) as usize,
            total_steps,
        }
    }

    /// The learning rate after `step` completed optimiser steps.
    pub fn learning_rate(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let remaining = self.total_steps.saturating_sub(step) as f64;
            remaining / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64
        };
        self.peak * factor
    }
}

/// Scales the gradients of `vars` so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (factor `max_norm / (norm + 1e-6)` when above).
/// Returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut squared = 0.0;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            squared += f64::from(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = squared.sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for var in vars {
            if let Some(grad) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (grad * factor)?);
            }
        }
    }
    Ok(norm)
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: usize,
    /// The batch loss before the update.
    pub loss: f32,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate this step used.
    pub learning_rate: f64,
    /// The unlikelihood term before weighting (mean over the micro-batches that had tokens to
    /// avoid; `None` when none had or the weight is 0). `loss` includes it weighted.
    pub unlikelihood: Option<f32>,
}

/// AdamW as `torch.optim.AdamW` (and candle's `AdamW`): bias-corrected moments, decoupled
/// weight decay. Written out here, not taken from candle, so that its moments can be saved in a
/// checkpoint and a resumed run continues exactly where it stopped.
#[derive(Debug)]
pub(crate) struct AdamW {
    slots: Vec<Slot>,
    /// Updates applied so far (the bias correction's `t`).
    steps: usize,
    weight_decay: f64,
}

/// One trainable variable, its learning-rate factor and its first and second moments.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    lr_scale: f64,
    first: Tensor,
    second: Tensor,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    pub(crate) fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> candle_core::Result<AdamW> {
        AdamW::with_lr_scales(vars, weight_decay, |_| 1.0)
    }

    /// [`AdamW::new`] where each variable's learning rate is the step's times `lr_scale(name)`.
    pub(crate) fn with_lr_scales(
        vars: Vec<(String, Var)>,
        weight_decay: f64,
        lr_scale: impl Fn(&str) -> f64,
    ) -> candle_core::Result<AdamW> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok(Slot {
                    lr_scale: lr_scale(&name),
                    name,
                    first: zeros.clone(),
                    second: zeros,
                    var,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(AdamW {
            slots,
            steps: 0,
            weight_decay,
        })
    }

    pub(crate) fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (scale_m, scale_v) = (1.0 / (1.0 - BETA1.powi(t)), 1.0 / (1.0 - BETA2.powi(t)));
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // Gradients remember the graph they were computed from; a moment kept across
            // steps must not, or every step's activations stay alive (detach = values only).
            slot.first = ((&slot.first * BETA1)? + (g * (1.0 - BETA1))?)?.detach();
            slot.second = ((&slot.second * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let update = ((&slot.first * scale_m)? / ((&slot.second * scale_v)?.sqrt()? + EPS)?)?;
            let lr = lr * slot.lr_scale;
            let decayed = (slot.var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments by name (`first.<var>`, `second.<var>`).
    fn state(&self) -> HashMap<String, Tensor> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("first.{}", s.name), s.first.clone()),
                    (format!("second.{}", s.name), s.second.clone()),
                ]
            })
            .collect()
    }

    /// Puts saved moments back; every variable must have both, with its own shape.
    fn restore(&mut self, mut state: HashMap<String, Tensor>, steps: usize) -> Result<(), String> {
        for slot in &mut self.slots {
            for (kind, moment) in [("first", &mut slot.first), ("second", &mut slot.second)] {
                let key = format!("{kind}.{}", slot.name);
                let saved = state
                    .remove(&key)
                    .ok_or_else(|| format!("no {key} in the optimiser state"))?;
                if saved.shape() != slot.var.shape() {
                    return Err(format!(
                        "{key} has shape {:?}, the model has {:?}",
                        saved.shape(),
                        slot.var.shape()
                    ));
                }
                *moment = saved;
            }
        }
        if let Some(extra) = state.keys().next() {
            return Err(format!(
                "{extra} belongs to no trainable variable of this model"
            ));
        }
        self.steps = steps;
        Ok(())
    }
}

/// What a checkpoint records besides the weights and the optimiser moments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Steps the schedule was built for.
    pub total_steps: usize,
    /// Masks each named dropout layer has drawn (absent in checkpoints written before it was
    /// recorded: those resume with fresh mask streams).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dropout_calls: std::collections::BTreeMap<String, u64>,
}

/// A model with its optimiser state and schedule.
#[derive(Debug)]
pub struct Trainer {
    model: Meit,
    vars: Vec<Var>,
    optimizer: AdamW,
    schedule: LinearSchedule,
    max_grad_norm: f64,
    unlikelihood_weight: f64,
    step: usize,
    total_steps: usize,
}

/// File names inside a checkpoint directory.
pub const CHECKPOINT_WEIGHTS: &str = "model.safetensors";
const CHECKPOINT_OPTIMIZER: &str = "optimizer.safetensors";
const CHECKPOINT_STATE: &str = "trainer.json";

impl Trainer {
    /// Prepares to train `model`'s trainable variables for `total_steps` steps.
    pub fn new(
        model: Meit,
        config: &TrainConfig,
        total_steps: usize,
    ) -> Result<Trainer, ModelError> {
        config.validate()?;
        let named = model.trainable_named_vars();
        let vars = named.iter().map(|(_, v)| v.clone()).collect();
        let schedule =
            LinearSchedule::new(config.learning_rate, config.warmup_fraction, total_steps);
        let encoder_scale = config
            .encoder_learning_rate
            .map_or(1.0, |rate| rate / config.learning_rate);
        let scale = |name: &str| match name.starts_with("encoder.") {
            true => encoder_scale,
            false => 1.0,
        };
        let optimizer = AdamW::with_lr_scales(named, config.weight_decay, scale)
            .map_err(ModelError::tensor("creating AdamW"))?;
        Ok(Trainer {
            model,
            vars,
            optimizer,
            schedule,
            max_grad_norm: config.max_grad_norm,
            unlikelihood_weight: config.unlikelihood_weight,
            step: 0,
            total_steps,
        })
    }

    /// Continues from a checkpoint written by [`Trainer::save_checkpoint`]: `model` must have
    /// been built from that checkpoint's weights (`Params::load` of [`CHECKPOINT_WEIGHTS`]).
    pub fn resume(model: Meit, config: &TrainConfig, dir: &Path) -> Result<Trainer, ModelError> {
        let bad = |message: String| ModelError::Checkpoint {
            path: dir.to_path_buf(),
            message,
        };
        let state_path = dir.join(CHECKPOINT_STATE);
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| bad(format!("{}: {e}", state_path.display())))?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| bad(format!("{CHECKPOINT_STATE}: {e}")))?;
        let mut trainer = Trainer::new(model, config, state.total_steps)?;
        let moments = candle_core::safetensors::load(
            dir.join(CHECKPOINT_OPTIMIZER),
            trainer
                .vars
                .first()
                .map_or(&candle_core::Device::Cpu, |v| v.device()),
        )
        .map_err(|e| bad(format!("{CHECKPOINT_OPTIMIZER}: {e}")))?;
        trainer
            .optimizer
            .restore(moments, state.step)
            .map_err(bad)?;
        trainer
            .model
            .params()
            .restore_dropout_calls(&state.dropout_calls)
            .map_err(bad)?;
        trainer.step = state.step;
        Ok(trainer)
    }

    /// Writes weights, optimiser moments and the step count into `dir` (created if missing).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::Checkpoint {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        self.model.params().save(&dir.join(CHECKPOINT_WEIGHTS))?;
        candle_core::safetensors::save(&self.optimizer.state(), dir.join(CHECKPOINT_OPTIMIZER))
            .map_err(|e| bad(format!("{CHECKPOINT_OPTIMIZER}: {e}")))?;
        let state = TrainerState {
            step: self.step,
            total_steps: self.total_steps,
            dropout_calls: self.model.params().dropout_calls(),
        };
        let json = serde_json::to_string_pretty(&state).map_err(|e| bad(e.to_string()))?;
        std::fs::write(dir.join(CHECKPOINT_STATE), json).map_err(|e| bad(e.to_string()))
    }

    /// The model being trained.
    pub fn model(&self) -> &Meit {
        &self.model
    }

    /// Optimiser steps completed.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One optimiser step on one batch.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport, ModelError> {
        self.step_accumulated(std::slice::from_ref(batch))
    }

    /// One optimiser step over several micro-batches (gradient accumulation): the gradients of
    /// each micro-batch's mean loss are averaged, then clipped, then applied at the scheduled
    /// learning rate. The reported loss is the mean of the micro-batch losses.
    pub fn step_accumulated(&mut self, batches: &[Batch]) -> Result<StepReport, ModelError> {
        if batches.is_empty() {
            return Err(ModelError::Input("a step needs at least one batch".into()));
        }
        let learning_rate = self.schedule.learning_rate(self.step);
        let share = 1.0 / batches.len() as f64;
        let mut total_loss = 0f32;
        let mut unlikelihood = Vec::new();
        let mut summed: Option<GradStore> = None;
        for batch in batches {
            let terms = self
                .model
                .training_loss(batch, true, self.unlikelihood_weight)?;
            let loss = terms.total;
            let mut accumulate = || -> candle_core::Result<()> {
                total_loss += loss.to_scalar::<f32>()?;
                if let Some(term) = &terms.unlikelihood {
                    unlikelihood.push(term.to_scalar::<f32>()?);
                }
                let grads = (&loss * share)?.backward()?;
                match summed.as_mut() {
                    None => summed = Some(grads),
                    Some(acc) => {
                        for var in &self.vars {
                            if let Some(g) = grads.get(var.as_tensor()) {
                                let sum = match acc.get(var.as_tensor()) {
                                    Some(prev) => (prev + g)?,
                                    None => g.clone(),
                                };
                                acc.insert(var.as_tensor(), sum);
                            }
                        }
                    }
                }
                Ok(())
            };
            accumulate().map_err(ModelError::tensor("accumulating gradients"))?;
        }
        let Some(mut grads) = summed else {
            return Err(ModelError::Input("no gradients".into()));
        };
        let mut update = || -> candle_core::Result<f64> {
            let grad_norm = clip_grad_norm(&mut grads, &self.vars, self.max_grad_norm)?;
            self.optimizer.step(&grads, learning_rate)?;
            Ok(grad_norm)
        };
        let grad_norm = update().map_err(ModelError::tensor("training step"))?;
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss: total_loss * share as f32,
            grad_norm,
            learning_rate,
            unlikelihood: (!unlikelihood.is_empty())
                .then(|| unlikelihood.iter().sum::<f32>() / unlikelihood.len() as f32),
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::instruction::{InstructionStyle, Prompts};
    use crate::model::meit::{Example, MeitConfig, random_ecg};
    use crate::model::params::Params;
    use crate::tokenizer::ReportTokenizer;

    /// The optimisation settings of these tests: batch 4, 64 tokens, peak rate 3e-3.
    fn test_config(seed: u64, warmup_fraction: f64, weight_decay: f64) -> TrainConfig {
        TrainConfig {
            seed,
            learning_rate: 3e-3,
            warmup_fraction,
            weight_decay,
            max_grad_norm: 1.0,
            batch_size: 4,
            epochs: 1,
            max_tokens: 64,
            accumulation_steps: 1,
            checkpoint_every: 100,
            validate_every: 100,
            encoder_warmup: None,
            init_from: None,
            encoder_from: None,
            encoder_learning_rate: None,
            unlikelihood_weight: 0.0,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        // 100 steps, 10% warm-up, peak 1: 0, 0.5 at step 5, 1 at 10, 0.5 at 55, 0 at 100.
        let s = LinearSchedule::new(1.0, 0.1, 100);
        for (step, want) in [
            (0, 0.0),
            (5, 0.5),
            (10, 1.0),
            (55, 0.5),
            (100, 0.0),
            (120, 0.0),
        ] {
            assert!((s.learning_rate(step) - want).abs() < 1e-12, "step {step}");
        }
        assert_eq!(
            LinearSchedule::new(2.0, 0.0, 4).learning_rate(0),
            2.0,
            "no warm-up"
        );
    }

    #[test]
    fn clipping_scales_the_global_norm_down_only_when_above() -> candle_core::Result<()> {
        // Two gradients [3] and [4]: global norm 5.
        let a = Var::new(&[1f32], &Device::Cpu)?;
        let b = Var::new(&[1f32], &Device::Cpu)?;
        let loss = ((a.as_tensor() * 3.0)? + (b.as_tensor() * 4.0)?)?.sum_all()?;
        let vars = [a.clone(), b.clone()];
        let mut grads = loss.backward()?;
        assert!((clip_grad_norm(&mut grads, &vars, 10.0)? - 5.0).abs() < 1e-6);
        assert_eq!(
            grads
                .get(a.as_tensor())
                .map(|g| g.to_vec1::<f32>())
                .transpose()?,
            Some(vec![3.0])
        );
        let norm = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped: Vec<f32> = vars
            .iter()
            .filter_map(|v| grads.get(v.as_tensor()))
            .map(|g| g.to_vec1::<f32>().map(|v| v[0]))
            .collect::<candle_core::Result<_>>()?;
        assert!(
            (clipped[0] - 0.6).abs() < 1e-5 && (clipped[1] - 0.8).abs() < 1e-5,
            "{clipped:?}"
        );
        Ok(())
    }

    fn fixed_batch(
        tokenizer: &ReportTokenizer,
        style: InstructionStyle,
    ) -> Result<Batch, ModelError> {
        let reports = [
            "sinus rhythm. normal ecg",
            "sinus bradycardia. abnormal ecg",
            "atrial fibrillation. abnormal ecg",
            "sinus tachycardia. borderline ecg",
        ];
        let examples: Vec<Example> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| Example::encode(tokenizer, &style.segments(r, i), 64))
            .collect::<Result<_, _>>()
            .map_err(|e| ModelError::Input(e.to_string()))?;
        let ecg = random_ecg(4, 12, 128, 11, &Device::Cpu)?;
        Batch::collate(ecg, &examples, tokenizer.pad_id(), &Device::Cpu)
    }

    fn run(seed: u64, steps: usize) -> Result<Vec<StepReport>, Box<dyn std::error::Error>> {
        let corpus = [
            "sinus rhythm. normal ecg",
            "sinus bradycardia. abnormal ecg",
            "atrial fibrillation. abnormal ecg",
        ];
        let tokenizer = ReportTokenizer::train(corpus.iter().cycle().take(30), 300, 2)?;
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let config = test_config(seed, 0.1, 0.0);
        let model = Meit::new(
            &MeitConfig::tiny(tokenizer.vocab_size()),
            &Params::new(seed, &Device::Cpu),
        )?;
        let mut trainer = Trainer::new(model, &config, steps)?;
        let batch = fixed_batch(&tokenizer, style)?;
        (0..steps)
            .map(|_| trainer.step(&batch).map_err(Into::into))
            .collect()
    }

    #[test]
    fn steps_on_a_fixed_batch_reduce_the_loss() -> Result<(), Box<dyn std::error::Error>> {
        let reports = run(3, 25)?;
        let (first, last) = (reports[0].loss, reports[reports.len() - 1].loss);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        assert_eq!(reports[0].learning_rate, 0.0, "warm-up starts at zero");
        Ok(())
    }

    #[test]
    fn same_seed_trains_identically_and_another_seed_does_not()
    -> Result<(), Box<dyn std::error::Error>> {
        let losses = |seed| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
            Ok(run(seed, 4)?.iter().map(|r| r.loss).collect())
        };
        assert_eq!(losses(5)?, losses(5)?);
        assert_ne!(losses(5)?, losses(6)?);
        Ok(())
    }

    fn trainer(seed: u64, steps: usize) -> Result<(Trainer, Batch), Box<dyn std::error::Error>> {
        let corpus = [
            "sinus rhythm. normal ecg",
            "atrial fibrillation. abnormal ecg",
        ];
        let tokenizer = ReportTokenizer::train(corpus.iter().cycle().take(20), 300, 2)?;
        let style = InstructionStyle::Tulu {
            prompts: Prompts::Ptbxl,
        };
        let config = test_config(seed, 0.0, 0.01);
        let model = Meit::new(
            &MeitConfig::tiny(tokenizer.vocab_size()),
            &Params::new(seed, &Device::Cpu),
        )?;
        Ok((
            Trainer::new(model, &config, steps)?,
            fixed_batch(&tokenizer, style)?,
        ))
    }

    #[test]
    fn the_encoder_learning_rate_scales_only_the_encoders_updates()
    -> Result<(), Box<dyn std::error::Error>> {
        // Adam's first update is linear in the learning rate (moments from one gradient), so
        // with the encoder's rate 4x the decoder's, each encoder weight moves exactly 4x as far
        // as in a run at the shared rate, and each decoder weight just as far.
        let weights = |t: &Trainer| -> candle_core::Result<Vec<(String, Vec<f32>)>> {
            t.model()
                .trainable_named_vars()
                .into_iter()
                .map(|(name, var)| Ok((name, var.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
                .collect()
        };
        let (mut shared, batch) = trainer(12, 2)?;
        let (model, _) = trainer(12, 2)?;
        let mut config = test_config(12, 0.0, 0.01);
        config.encoder_learning_rate = Some(4.0 * config.learning_rate);
        let mut split = Trainer::new(model.model().clone(), &config, 2)?;
        let before = weights(&shared)?;
        shared.step(&batch)?;
        split.step(&batch)?;
        let (after_shared, after_split) = (weights(&shared)?, weights(&split)?);
        let (mut encoder_vars, mut decoder_vars) = (0, 0);
        for ((name, w0), ((_, w1), (_, w2))) in
            before.iter().zip(after_shared.iter().zip(&after_split))
        {
            let moved = |w: &[f32]| -> f32 {
                w0.iter()
                    .zip(w)
                    .map(|(a, b)| (b - a).abs())
                    .fold(0.0, f32::max)
            };
            let (by_shared, by_split) = (moved(w1), moved(w2));
            assert!(by_shared > 0.0, "{name} did not move");
            let want = if name.starts_with("encoder.") {
                encoder_vars += 1;
                4.0
            } else {
                decoder_vars += 1;
                1.0
            };
            let ratio = by_split / by_shared;
            assert!(
                (ratio - want).abs() < 1e-2 * want,
                "{name}: moved {ratio}x, want {want}x"
            );
        }
        assert!(encoder_vars > 0 && decoder_vars > 0);
        config.encoder_learning_rate = Some(f64::NAN);
        assert!(matches!(config.validate(), Err(ModelError::Config(_))));
        Ok(())
    }

    #[test]
    fn an_unlikelihood_weight_outside_0_to_10_is_refused() {
        let mut config = test_config(1, 0.0, 0.0);
        for (weight, ok) in [
            (0.0, true),
            (1.0, true),
            (10.0, true),
            (-0.1, false),
            (10.5, false),
        ] {
            config.unlikelihood_weight = weight;
            assert_eq!(config.validate().is_ok(), ok, "{weight}");
        }
        config.unlikelihood_weight = f64::NAN;
        assert!(
            matches!(config.validate(), Err(ModelError::Config(m)) if m.contains("unlikelihood_weight"))
        );
    }

    #[test]
    fn a_resumed_run_continues_exactly_where_it_stopped() -> Result<(), Box<dyn std::error::Error>>
    {
        let (mut straight, batch) = trainer(9, 4)?;
        let expected: Vec<f32> = (0..4)
            .map(|_| straight.step(&batch).map(|r| r.loss))
            .collect::<Result<_, _>>()?;
        let (mut first, _) = trainer(9, 4)?;
        first.step(&batch)?;
        first.step(&batch)?;
        let dir = tempfile::tempdir()?;
        first.save_checkpoint(dir.path())?;
        let config = test_config(9, 0.0, 0.01);
        let params = Params::load(&dir.path().join(CHECKPOINT_WEIGHTS), 1, &Device::Cpu)?;
        let model = Meit::new(first.model().config(), &params)?;
        let mut resumed = Trainer::resume(model, &config, dir.path())?;
        assert_eq!(resumed.steps_done(), 2);
        let rest: Vec<f32> = (0..2)
            .map(|_| resumed.step(&batch).map(|r| r.loss))
            .collect::<Result<_, _>>()?;
        assert_eq!(rest, expected[2..]);
        // A checkpoint of another model shape is refused with a message, not a panic.
        let mut other = first.model().config().clone();
        other.decoder.num_layers += 1;
        let wrong = Meit::new(&other, &Params::new(3, &Device::Cpu))?;
        assert!(matches!(
            Trainer::resume(wrong, &config, dir.path()),
            Err(ModelError::Checkpoint { .. })
        ));
        Ok(())
    }

    #[test]
    fn accumulating_identical_micro_batches_equals_one_step()
    -> Result<(), Box<dyn std::error::Error>> {
        let (mut one, batch) = trainer(4, 2)?;
        let (mut two, _) = trainer(4, 2)?;
        let a = one.step(&batch)?;
        let b = two.step_accumulated(&[batch.clone(), batch.clone()])?;
        assert!((a.loss - b.loss).abs() < 1e-6);
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm);
        let after_one = one.step(&batch)?.loss;
        let after_two = two.step(&batch)?.loss;
        assert!(
            (after_one - after_two).abs() < 1e-5,
            "{after_one} vs {after_two}"
        );
        assert!(matches!(
            two.step_accumulated(&[]),
            Err(ModelError::Input(_))
        ));
        Ok(())
    }
}
