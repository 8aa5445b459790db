//! A trainable MEIT model on a pretrained decoder: the run config's `[base]` table names the
//! checkpoint; its weights go under `decoder.*` (frozen under LoRA), the encoder and the LoRA
//! adapters are drawn from the run's seed, and the checkpoint's own tokenizer comes with it.
//!
//! The source is a llama.cpp GGUF (SmolLM2-135M-Instruct from `scripts/fetch-smollm2.sh`). The
//! decoder shape written in the config must be the checkpoint's, so a config cannot silently
//! describe another model; `max_layers` keeps only the first layers (CI, smoke runs).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::gguf::load_llama_layers;
use super::meit::{Meit, MeitConfig};
use super::params::Params;
use crate::tokenizer::PretrainedTokenizer;

/// Where the pretrained decoder comes from. Serialised in run configs (`[base]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    /// The llama.cpp GGUF file (a relative path is taken from the current directory).
    pub gguf: PathBuf,
    /// Keep only the first N decoder layers (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_layers: Option<usize>,
}

/// The model built on a pretrained decoder, and that decoder's tokenizer.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// Encoder + pretrained decoder (+ adapters); its config has the kept layer count.
    pub model: Meit,
    /// The checkpoint's tokenizer (SmolLM2: no begin id, `<|im_end|>` ends and pads).
    pub tokenizer: PretrainedTokenizer,
}

/// Loads `base` into `params` under `decoder.*` and builds the model of `config` around it.
///
/// Fails when the checkpoint's decoder differs from `config.decoder` in anything but the layer
/// count `max_layers` removed, or when a decoder weight did not come from the file.
pub fn load_pretrained(
    config: &MeitConfig,
    base: &BaseConfig,
    params: &Params,
) -> Result<Pretrained, ModelError> {
    let gguf = load_llama_layers(&base.gguf, &params.pp("decoder"), base.max_layers)?;
    let expected = super::llama::LlamaConfig {
        num_layers: base.max_layers.map_or(config.decoder.num_layers, |keep| {
            keep.min(config.decoder.num_layers)
        }),
        ..config.decoder.clone()
    };
    if gguf.config != expected {
        return Err(ModelError::Checkpoint {
            path: base.gguf.clone(),
            message: format!(
                "its decoder {:?} is not the configured {expected:?}",
                gguf.config
            ),
        });
    }
    let config = MeitConfig {
        decoder: gguf.config.clone(),
        ..config.clone()
    };
    let model = Meit::new(&config, params)?;
    let loaded: usize = params
        .vars_where(|name| name.starts_with("decoder.") && !name.contains(".lora_"))
        .iter()
        .map(|v| v.elem_count())
        .sum();
    if loaded != config.decoder.parameter_count() {
        return Err(ModelError::Checkpoint {
            path: base.gguf.clone(),
            message: format!(
                "{loaded} decoder weights after loading, the decoder has {}",
                config.decoder.parameter_count()
            ),
        });
    }
    let tokenizer = gguf.tokenizer().map_err(|e| ModelError::Checkpoint {
        path: base.gguf.clone(),
        message: e.to_string(),
    })?;
    Ok(Pretrained { model, tokenizer })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn a_missing_checkpoint_is_a_checkpoint_error() {
        let base = BaseConfig {
            gguf: PathBuf::from("/nonexistent/model.gguf"),
            max_layers: Some(2),
        };
        let result = load_pretrained(
            &MeitConfig::smollm2_edge(),
            &base,
            &Params::new(0, &Device::Cpu),
        );
        assert!(matches!(result, Err(ModelError::Checkpoint { .. })));
    }

    #[test]
    fn base_reads_from_toml_with_optional_layers() -> Result<(), toml::de::Error> {
        let base: BaseConfig = toml::from_str("gguf = \"a.gguf\"")?;
        assert_eq!(base.max_layers, None);
        let base: BaseConfig = toml::from_str("gguf = \"a.gguf\"\nmax_layers = 2")?;
        assert_eq!(base.max_layers, Some(2));
        assert!(toml::from_str::<BaseConfig>("gguf = \"a.gguf\"\nlayers = 2").is_err());
        Ok(())
    }
}
