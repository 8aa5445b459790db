//! One optimisation step at a time: AdamW, a linear learning-rate schedule with warm-up,
//! gradient-norm clipping, all seeded through the model's [`Params`](super::params::Params).
//!
//! The recipe is the paper's (Open-Instruct's `finetune.py`): AdamW (beta 0.9 / 0.999,
//! eps 1e-8, weight decay 0), `get_linear_schedule_with_warmup` with 3% warm-up, clipping the
//! global gradient norm. As there, the schedule is advanced after each optimiser step, so the
//! first step runs at the learning rate of step 0 (zero when there is a warm-up).
//! Data loading and epochs live with the caller; this module only needs [`Batch`]es.

use candle_core::Var;
use candle_core::backprop::GradStore;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::instruction::InstructionStyle;
use super::meit::{Batch, Meit, MeitConfig};

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
}

impl TrainConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str| Err(ModelError::Config(format!("train: {what}")));
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate must be positive");
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
        Ok(())
    }
}

/// A whole training run as written in `models/configs/*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// How reports are wrapped.
    pub instruction: InstructionStyle,
    /// Optimisation.
    pub train: TrainConfig,
    /// The model.
    pub model: MeitConfig,
}

impl RunConfig {
    /// Parses and validates a run config.
    pub fn from_toml(text: &str) -> Result<RunConfig, ModelError> {
        let config: RunConfig =
            toml::from_str(text).map_err(|e| ModelError::Config(e.to_string()))?;
        config.train.validate()?;
        config.model.validate()?;
        if config.train.max_tokens + 1 > config.model.decoder.max_positions {
            return Err(ModelError::Config(format!(
                "max_tokens {} + the ECG slot exceed the decoder's max_positions {}",
                config.train.max_tokens, config.model.decoder.max_positions
            )));
        }
        Ok(config)
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
}

/// A model with its optimiser state and schedule.
#[derive(Debug)]
pub struct Trainer {
    model: Meit,
    vars: Vec<Var>,
    optimizer: AdamW,
    schedule: LinearSchedule,
    max_grad_norm: f64,
    step: usize,
}

impl Trainer {
    /// Prepares to train `model`'s trainable variables for `total_steps` steps.
    pub fn new(
        model: Meit,
        config: &TrainConfig,
        total_steps: usize,
    ) -> Result<Trainer, ModelError> {
        config.validate()?;
        let vars = model.trainable_vars();
        let schedule =
            LinearSchedule::new(config.learning_rate, config.warmup_fraction, total_steps);
        let params = ParamsAdamW {
            lr: schedule.learning_rate(0),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: config.weight_decay,
        };
        let optimizer =
            AdamW::new(vars.clone(), params).map_err(ModelError::tensor("creating AdamW"))?;
        Ok(Trainer {
            model,
            vars,
            optimizer,
            schedule,
            max_grad_norm: config.max_grad_norm,
            step: 0,
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &Meit {
        &self.model
    }

    /// Loss, backward, clip, AdamW update at the scheduled learning rate.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport, ModelError> {
        let loss = self.model.loss(batch, true)?;
        let learning_rate = self.schedule.learning_rate(self.step);
        let mut update = || -> candle_core::Result<(f32, f64)> {
            let mut grads = loss.backward()?;
            let grad_norm = clip_grad_norm(&mut grads, &self.vars, self.max_grad_norm)?;
            self.optimizer.set_learning_rate(learning_rate);
            self.optimizer.step(&grads)?;
            Ok((loss.to_scalar::<f32>()?, grad_norm))
        };
        let (loss, grad_norm) = update().map_err(ModelError::tensor("training step"))?;
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss,
            grad_norm,
            learning_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::instruction::Prompts;
    use crate::model::meit::{Example, random_ecg};
    use crate::model::params::Params;
    use crate::tokenizer::ReportTokenizer;

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
        let config = TrainConfig {
            seed,
            learning_rate: 3e-3,
            warmup_fraction: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_size: 4,
            epochs: 1,
            max_tokens: 64,
        };
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

    #[test]
    fn run_configs_parse_and_validate() -> Result<(), ModelError> {
        let tiny = RunConfig::from_toml(include_str!("../../configs/tiny.toml"))?;
        assert!(
            tiny.model.lora.is_none(),
            "the tiny model trains from scratch"
        );
        let edge = RunConfig::from_toml(include_str!("../../configs/smollm2-edge.toml"))?;
        assert_eq!(edge.model, MeitConfig::smollm2_edge());
        let broken =
            include_str!("../../configs/tiny.toml").replace("batch_size = 8", "batch_size = 1");
        assert!(RunConfig::from_toml(&broken).is_err());
        Ok(())
    }
}
