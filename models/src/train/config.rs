//! The run config: one file (`models/configs/*.toml`, copied to a model directory as
//! `run.toml`) that names everything a training run needs: instruction style, optimisation,
//! model shape, data, preprocessing and the pretrained base.

use meit::dsp::PreprocessSpec;
use serde::{Deserialize, Serialize};

use super::step::{TrainConfig, WarmupScope};
use crate::data::{DataConfig, DataError};
use crate::model::ModelError;
use crate::model::instruction::InstructionStyle;
use crate::model::meit::MeitConfig;
use crate::model::pretrained::BaseConfig;

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
    /// Where records come from.
    pub data: DataConfig,
    /// The preprocessing the model is trained with (and the daemon must run): the `meit`
    /// library's spec, recorded in the model directory.
    pub preprocess: PreprocessSpec,
    /// The pretrained decoder to start from (`[base]`); absent when training from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseConfig>,
}

impl RunConfig {
    /// Parses and validates a run config.
    pub fn from_toml(text: &str) -> Result<RunConfig, ModelError> {
        let config: RunConfig =
            toml::from_str(text).map_err(|e| ModelError::Config(e.to_string()))?;
        config.train.validate()?;
        config.model.validate()?;
        let sources = [
            config.data.synth.is_some(),
            config.data.ptbxl.is_some(),
            config.data.mimic.is_some(),
        ];
        let named = sources.iter().filter(|named| **named).count();
        if named != 1 {
            return Err(ModelError::Config(DataError::Sources(named).to_string()));
        }
        if let Some(synth) = &config.data.synth {
            synth.validate().map_err(ModelError::Config)?;
        }
        if config.data.train_records < config.train.batch_size || config.data.test_records == 0 {
            return Err(ModelError::Config(
                "data: train_records must be >= batch_size and test_records >= 1".into(),
            ));
        }
        if config.preprocess.lead_order.len() != config.model.encoder.leads {
            return Err(ModelError::Config(format!(
                "preprocess.lead_order has {} leads, the encoder takes {}",
                config.preprocess.lead_order.len(),
                config.model.encoder.leads
            )));
        }
        if config.preprocess.rhythm_features != config.model.encoder.rhythm_features {
            return Err(ModelError::Config(format!(
                "preprocess.rhythm_features is {} but model.encoder.rhythm_features is {}: the \
                 preprocessing computes the R-R statistics exactly when the encoder reads them",
                config.preprocess.rhythm_features, config.model.encoder.rhythm_features
            )));
        }
        if config
            .train
            .encoder_warmup
            .as_ref()
            .is_some_and(|w| w.scope == WarmupScope::RhythmInputs)
            && !config.model.encoder.rhythm_features
        {
            return Err(ModelError::Config(
                "train.encoder_warmup scope = \"rhythm_inputs\" fits the projection's columns for \
                 the R-R statistics, and this encoder has none: set rhythm_features = true in \
                 [model.encoder] and [preprocess]"
                    .into(),
            ));
        }
        meit::dsp::Preprocessor::new(config.preprocess.clone())
            .map_err(|e| ModelError::Config(format!("preprocess: {e}")))?;
        if let Some(base) = &config.base {
            base.source()?;
        }
        if matches!(config.instruction, InstructionStyle::ChatMl { .. }) && config.base.is_none() {
            return Err(ModelError::Config(
                "instruction style chat_ml needs a pretrained ChatML model ([base])".into(),
            ));
        }
        if config.train.max_tokens + 1 > config.model.decoder.max_positions {
            return Err(ModelError::Config(format!(
                "max_tokens {} + the ECG slot exceed the decoder's max_positions {}",
                config.train.max_tokens, config.model.decoder.max_positions
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config` without its encoder warm-up, which must be scoped to the R-R statistics' columns.
    fn without_rhythm_warmup(mut config: RunConfig) -> RunConfig {
        let warmup = config.train.encoder_warmup.take();
        assert_eq!(
            warmup.map(|w| w.scope),
            Some(WarmupScope::RhythmInputs),
            "a warm-up of only the R-R statistics' columns"
        );
        config
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
            include_str!("../../configs/tiny.toml").replace("batch_size = 16", "batch_size = 1");
        assert!(RunConfig::from_toml(&broken).is_err());
        // The R-R statistics are computed exactly when the encoder reads them: one without the
        // other is refused, naming both; tiny-rhythm has both.
        let rhythm = include_str!("../../configs/tiny-rhythm.toml");
        let parsed = RunConfig::from_toml(rhythm)?;
        assert!(parsed.preprocess.rhythm_features && parsed.model.encoder.rhythm_features);
        let flagged: Vec<(usize, &str)> = rhythm
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("rhythm_features = true"))
            .collect();
        assert_eq!(
            flagged.len(),
            2,
            "one line in [model.encoder], one in [preprocess]"
        );
        for (i, line) in flagged {
            let one_side: String = rhythm
                .lines()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            let error = RunConfig::from_toml(&one_side).expect_err(line).to_string();
            assert!(
                error.contains("preprocess.rhythm_features") && error.contains("model.encoder"),
                "{error}"
            );
        }
        let default = RunConfig::from_toml(include_str!("../../configs/tiny-unlikely.toml"))?;
        let mut widened = default.model.clone();
        widened.encoder.rhythm_features = true;
        assert_eq!(
            parsed.model, widened,
            "tiny-rhythm is the default model plus the statistics"
        );
        let tiny_warm = RunConfig::from_toml(include_str!("../../configs/tiny-rhythm-warm.toml"))?;
        // tiny-oversample is tiny-rhythm-warm with the training mix rebalanced, and nothing else.
        let mut tiny_oversample =
            RunConfig::from_toml(include_str!("../../configs/tiny-oversample.toml"))?;
        let rebalanced = tiny_oversample
            .data
            .synth
            .as_mut()
            .map(|synth| std::mem::take(&mut synth.oversample));
        assert_eq!(
            rebalanced,
            Some(
                [("pac", 0.05), ("sinus-arrhythmia", 0.10)]
                    .map(|(slug, fraction)| (slug.to_string(), fraction))
                    .into()
            )
        );
        assert_eq!(tiny_oversample, tiny_warm);
        assert_eq!(without_rhythm_warmup(tiny_warm), parsed);
        let lora = RunConfig::from_toml(include_str!("../../configs/smollm2-lora.toml"))?;
        assert_eq!(lora.model, MeitConfig::smollm2_edge());
        assert_eq!(
            lora.base,
            Some(BaseConfig::gguf(crate::model::gguf::SMOLLM2_GGUF_DEFAULT))
        );
        assert!(matches!(lora.instruction, InstructionStyle::ChatMl { .. }));
        // tiny-wide is tiny-realism with the wider synthesizer and nothing else.
        let realism = RunConfig::from_toml(include_str!("../../configs/tiny-realism.toml"))?;
        let wide = RunConfig::from_toml(include_str!("../../configs/tiny-wide.toml"))?;
        assert_eq!(
            wide.data.synth.as_ref().map(|s| s.variability),
            Some(meit::synth::Variability::Wide)
        );
        assert_eq!((&wide.model, &wide.train), (&realism.model, &realism.train));
        // tiny-leads continues the tiny-wide model with lead-presence flags: the
        // same data, preprocessing and decoder; only the encoder's flags and the schedule differ.
        let leads = RunConfig::from_toml(include_str!("../../configs/tiny-leads.toml"))?;
        assert!(leads.model.encoder.lead_presence && !wide.model.encoder.lead_presence);
        let mut widened = wide.model.clone();
        widened.encoder.lead_presence = true;
        assert_eq!(leads.model, widened);
        assert_eq!(
            (&leads.data, &leads.preprocess, &leads.instruction),
            (&wide.data, &wide.preprocess, &wide.instruction)
        );
        assert_eq!(
            leads.train.init_from.as_deref(),
            Some(std::path::Path::new("models/trained/tiny-wide"))
        );
        // tiny-unlikely (the default) continues tiny-leads with the unlikelihood term: the same
        // model, data, preprocessing and instruction; only the schedule and the term differ.
        let unlikely = RunConfig::from_toml(include_str!("../../configs/tiny-unlikely.toml"))?;
        assert_eq!(
            (
                &unlikely.model,
                &unlikely.data,
                &unlikely.preprocess,
                &unlikely.instruction
            ),
            (
                &leads.model,
                &leads.data,
                &leads.preprocess,
                &leads.instruction
            )
        );
        assert_eq!(
            (
                leads.train.unlikelihood_weight,
                unlikely.train.unlikelihood_weight
            ),
            (0.0, 1.0)
        );
        assert_eq!(
            unlikely.train.init_from.as_deref(),
            Some(std::path::Path::new("models/trained/tiny-leads"))
        );
        // The SmolLM2 model with the tiny-leads model's encoder: its trunk, data and
        // preprocessing.
        let tinyenc =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-tinyenc.toml"))?;
        assert_eq!(
            tinyenc.train.encoder_from.as_deref(),
            Some(std::path::Path::new("models/trained/tiny-leads"))
        );
        assert!(tinyenc.model.encoder.lead_presence);
        assert_eq!(tinyenc.data.synth, leads.data.synth);
        assert_eq!(tinyenc.preprocess, leads.preprocess);
        let eight = RunConfig::from_toml(include_str!("../../configs/smollm2-8layer.toml"))?;
        assert_eq!(eight.base.as_ref().and_then(|b| b.max_layers), Some(8));
        assert_eq!(
            eight.instruction,
            InstructionStyle::ChatMl {
                prompts: crate::model::instruction::Prompts::Ptbxl,
                system_turn: false,
            }
        );
        assert!(eight.train.encoder_warmup.is_some());
        assert_eq!(
            (eight.model.decoder, eight.model.lora),
            (lora.model.decoder.clone(), lora.model.lora.clone()),
            "the checkpoint's shape and the paper's LoRA"
        );
        // The statistics-pooling run continues the realism model: its model with the standard
        // deviations added, its data and preprocessing.
        let realism8 =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-realism.toml"))?;
        let stdpool =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-stdpool.toml"))?;
        let mut with_std = realism8.model.clone();
        with_std.encoder.pooling = crate::model::ecg_encoder::Pooling::MeanStd;
        assert_eq!(stdpool.model, with_std);
        assert_eq!(
            (&stdpool.data.synth, &stdpool.preprocess, &stdpool.base),
            (&realism8.data.synth, &realism8.preprocess, &realism8.base)
        );
        assert_eq!(
            stdpool.train.init_from.as_deref(),
            Some(std::path::Path::new(
                "models/trained/smollm2-8layer-realism"
            ))
        );
        // The R-R statistics run continues the realism model the same way: its model and
        // preprocessing plus the statistics, its data and base.
        let rhythm8 =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-rhythm.toml"))?;
        let mut with_rhythm = realism8.model.clone();
        with_rhythm.encoder.rhythm_features = true;
        assert_eq!(rhythm8.model, with_rhythm);
        let mut preprocess = realism8.preprocess.clone();
        preprocess.rhythm_features = true;
        assert_eq!(
            (&rhythm8.data.synth, &rhythm8.preprocess, &rhythm8.base),
            (&realism8.data.synth, &preprocess, &realism8.base)
        );
        assert_eq!(rhythm8.train, stdpool.train, "the stdpool run's schedule");
        // rhythm-warm is that run with a warm-up of the new columns first, and nothing else.
        let warm8 = RunConfig::from_toml(include_str!(
            "../../configs/smollm2-8layer-rhythm-warm.toml"
        ))?;
        assert_eq!(without_rhythm_warmup(warm8.clone()), rhythm8);
        // oversample is rhythm-warm with the training mix rebalanced and lower rates only.
        let oversample8 =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-oversample.toml"))?;
        let mut rebalanced = warm8;
        if let Some(synth) = rebalanced.data.synth.as_mut() {
            synth.oversample = [("pac", 0.05), ("sinus-arrhythmia", 0.10)]
                .map(|(slug, fraction)| (slug.to_string(), fraction))
                .into();
        }
        rebalanced.train.learning_rate = 1e-4;
        rebalanced.train.encoder_learning_rate = Some(3e-4);
        assert_eq!(oversample8, rebalanced);
        // natural continues oversample on the natural mix: no warm-up, no rebalancing, lower
        // rates, the same model, preprocessing and base.
        let natural =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-natural.toml"))?;
        let mut unbalanced = oversample8.data.synth.clone();
        if let Some(synth) = unbalanced.as_mut() {
            synth.oversample.clear();
        }
        assert_eq!(natural.data.synth, unbalanced);
        assert_eq!(
            (&natural.model, &natural.preprocess, &natural.base),
            (
                &oversample8.model,
                &oversample8.preprocess,
                &oversample8.base
            )
        );
        assert!(natural.train.encoder_warmup.is_none());
        assert_eq!(
            natural.train.init_from.as_deref(),
            Some(std::path::Path::new(
                "models/trained/smollm2-8layer-oversample"
            ))
        );
        // balanced trains realism's model from the checkpoint with both levers from the start,
        // its warm-up and pass shortened to fit one session.
        let balanced =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-balanced.toml"))?;
        assert_eq!(
            (&balanced.model, &balanced.preprocess, &balanced.data.synth),
            (
                &oversample8.model,
                &oversample8.preprocess,
                &oversample8.data.synth
            )
        );
        assert_eq!(balanced.train.init_from, None);
        assert_eq!(
            (
                balanced.train.learning_rate,
                balanced.train.encoder_learning_rate
            ),
            (
                realism8.train.learning_rate,
                realism8.train.encoder_learning_rate
            )
        );
        // balanced-natural is natural's second stage over balanced: shorter, a sixth of
        // balanced's rates, and nothing else.
        let balanced_natural = RunConfig::from_toml(include_str!(
            "../../configs/smollm2-8layer-balanced-natural.toml"
        ))?;
        let mut second_stage = natural;
        second_stage.train.init_from = Some("models/trained/smollm2-8layer-balanced".into());
        second_stage.train.seed = 19;
        second_stage.train.encoder_learning_rate = Some(1.67e-4);
        second_stage.data.train_records = 3200;
        assert_eq!(balanced_natural, second_stage);
        // recall continues natural with a fiftieth of the training records redrawn for each of
        // five codes natural under-calls; recall-natural goes on from it on the natural mix at
        // lower rates.
        let recall =
            RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-recall.toml"))?;
        let mut third_stage = second_stage;
        third_stage.train.init_from = Some("models/trained/smollm2-8layer-natural".into());
        third_stage.train.encoder_learning_rate = Some(1.5e-4);
        third_stage.data.train_records = 9600;
        if let Some(synth) = third_stage.data.synth.as_mut() {
            synth.oversample = [
                ("avb1", 0.02),
                ("t-inversion", 0.02),
                ("long-qt", 0.02),
                ("lvh", 0.02),
                ("sinus-arrhythmia", 0.02),
            ]
            .map(|(slug, fraction)| (slug.to_string(), fraction))
            .into();
        }
        assert_eq!(recall, third_stage);
        let recall_natural = RunConfig::from_toml(include_str!(
            "../../configs/smollm2-8layer-recall-natural.toml"
        ))?;
        let mut fourth_stage = recall;
        fourth_stage.train.init_from = Some("models/trained/smollm2-8layer-recall".into());
        fourth_stage.train.seed = 20;
        fourth_stage.train.learning_rate = 3e-5;
        fourth_stage.train.encoder_learning_rate = Some(1e-4);
        fourth_stage.data.train_records = 4800;
        if let Some(synth) = fourth_stage.data.synth.as_mut() {
            synth.oversample.clear();
        }
        assert_eq!(recall_natural, fourth_stage);
        // full is balanced at realism's length (warm-up and pass) with recall's gentle rebalance
        // instead of balanced's strong one, from the pretrained checkpoint.
        let full = RunConfig::from_toml(include_str!("../../configs/smollm2-8layer-full.toml"))?;
        let mut long_pass = balanced;
        long_pass.train.seed = 21;
        long_pass.train.encoder_warmup = realism8.train.encoder_warmup.clone();
        long_pass.data.train_records = realism8.data.train_records;
        long_pass.data.synth = third_stage.data.synth.clone();
        assert_eq!(full, long_pass);
        let without_base =
            include_str!("../../configs/smollm2-lora.toml").replace("[base]\ngguf = ", "# ");
        assert!(
            RunConfig::from_toml(&without_base).is_err(),
            "chat_ml without a base"
        );
        Ok(())
    }
}
