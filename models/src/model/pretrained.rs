//! A trainable MEIT model on a pretrained decoder: the run config's `[base]` table names the
//! checkpoint; its weights go under `decoder.*` (frozen under LoRA), the encoder and the LoRA
//! adapters are drawn from the run's seed, and the checkpoint's own tokenizer comes with it.
//!
//! The source is a llama.cpp GGUF (`gguf = FILE`: SmolLM2-135M-Instruct from
//! `scripts/fetch-smollm2.sh`) or a Hugging Face directory of any Llama-architecture model
//! (`hf_dir = DIR`: config.json, safetensors, tokenizer.json). The decoder shape written in the
//! config must be the checkpoint's, so a config cannot silently describe another model;
//! `max_layers` keeps only the first layers (CI, smoke runs).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::gguf::load_llama_layers;
use super::hf::load_llama_dir;
use super::meit::{Meit, MeitConfig};
use super::params::Params;
use crate::tokenizer::PretrainedTokenizer;

/// Where the pretrained decoder comes from: exactly one of `gguf` and `hf_dir`. Serialised in
/// run configs (`[base]`); relative paths are taken from the current directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    /// A llama.cpp GGUF file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<PathBuf>,
    /// A Hugging Face model directory (config.json, model.safetensors or its shards,
    /// tokenizer.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_dir: Option<PathBuf>,
    /// Keep only the first N decoder layers (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_layers: Option<usize>,
}

/// The checkpoint a [`BaseConfig`] names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BaseSource<'a> {
    /// A llama.cpp GGUF file.
    Gguf(&'a Path),
    /// A Hugging Face model directory.
    HfDir(&'a Path),
}

impl BaseConfig {
    /// A GGUF base with all its layers.
    pub fn gguf(path: impl Into<PathBuf>) -> BaseConfig {
        BaseConfig {
            gguf: Some(path.into()),
            hf_dir: None,
            max_layers: None,
        }
    }

    /// The one checkpoint this names; naming none or both is a config error.
    pub fn source(&self) -> Result<BaseSource<'_>, ModelError> {
        match (&self.gguf, &self.hf_dir) {
            (Some(gguf), None) => Ok(BaseSource::Gguf(gguf)),
            (None, Some(dir)) => Ok(BaseSource::HfDir(dir)),
            (gguf, dir) => Err(ModelError::Config(format!(
                "[base] names {} checkpoints; give exactly one of gguf = FILE or hf_dir = DIR",
                usize::from(gguf.is_some()) + usize::from(dir.is_some())
            ))),
        }
    }
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
    let decoder = params.pp("decoder");
    let (path, loaded_config, tokenizer) = match base.source()? {
        BaseSource::Gguf(path) => {
            let gguf = load_llama_layers(path, &decoder, base.max_layers)?;
            let tokenizer = gguf.tokenizer().map_err(|e| ModelError::Checkpoint {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            (path, gguf.config, tokenizer)
        }
        BaseSource::HfDir(dir) => {
            let hf = load_llama_dir(dir, &decoder, base.max_layers)?;
            (dir, hf.config, hf.tokenizer)
        }
    };
    let expected = super::llama::LlamaConfig {
        num_layers: base.max_layers.map_or(config.decoder.num_layers, |keep| {
            keep.min(config.decoder.num_layers)
        }),
        ..config.decoder.clone()
    };
    if loaded_config != expected {
        return Err(ModelError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("its decoder {loaded_config:?} is not the configured {expected:?}"),
        });
    }
    let config = MeitConfig {
        decoder: loaded_config,
        ..config.clone()
    };
    let model = Meit::new(&config, params)?;
    let loaded: usize = params
        .vars_where(super::params::is_base_weight)
        .iter()
        .map(|v| v.elem_count())
        .sum();
    if loaded != config.decoder.parameter_count() {
        return Err(ModelError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "{loaded} decoder weights after loading, the decoder has {}",
                config.decoder.parameter_count()
            ),
        });
    }
    Ok(Pretrained { model, tokenizer })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn a_missing_checkpoint_is_a_checkpoint_error() {
        let base = BaseConfig {
            max_layers: Some(2),
            ..BaseConfig::gguf("/nonexistent/model.gguf")
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
        assert_eq!(
            base.source().ok(),
            Some(BaseSource::Gguf(Path::new("a.gguf")))
        );
        let base: BaseConfig = toml::from_str("hf_dir = \"smollm2\"\nmax_layers = 2")?;
        assert_eq!(base.max_layers, Some(2));
        assert_eq!(
            base.source().ok(),
            Some(BaseSource::HfDir(Path::new("smollm2")))
        );
        assert!(toml::from_str::<BaseConfig>("gguf = \"a.gguf\"\nlayers = 2").is_err());
        for neither_or_both in ["max_layers = 2", "gguf = \"a.gguf\"\nhf_dir = \"d\""] {
            let base: BaseConfig = toml::from_str(neither_or_both)?;
            assert!(
                matches!(base.source(), Err(ModelError::Config(m)) if m.contains("exactly one")),
                "{neither_or_both}"
            );
        }
        Ok(())
    }
}
