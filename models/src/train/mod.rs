//! Training: a whole run, one optimisation step, the run config, and the model directory a run
//! writes (and `generate`, `eval` and `export` read).
//!
//! - [`config`]: the run config ([`config::RunConfig`], `models/configs/*.toml`).
//! - [`step`]: one optimisation step (AdamW, learning-rate schedule, gradient clipping) on a
//!   batch: [`step::Trainer`].
//! - [`run`]: a whole training run: records -> shared preprocessing -> batches -> steps, for
//!   `epochs` passes, with the encoder warm-up, checkpoints, resume, progress and the loss curve.
//!
//! The model directory:
//!
//! ```text
//! DIR/run.toml            the run config, verbatim (model shape, data, preprocessing)
//! DIR/tokenizer.json      the byte-level BPE trained on the training reports
//! DIR/model.safetensors   final weights
//! DIR/checkpoint/         latest checkpoint: weights, optimiser moments, step (resume)
//! DIR/metrics.jsonl       one line per logged step and per validation
//! DIR/loss.png            training and validation loss against steps
//! ```

pub mod config;
pub mod run;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use crate::codec::{RecordCodec, SharedTokenizer};
use crate::data::DataError;
use crate::model::ModelError;
use crate::model::meit::Meit;
use crate::model::params::Params;
use crate::model::pretrained::{Pretrained, load_pretrained};
use crate::tokenizer::{ReportTokenizer, TokenizerError};
use config::RunConfig;

/// File names inside a model directory.
pub const RUN_CONFIG: &str = "run.toml";
/// The tokenizer file.
pub const TOKENIZER: &str = "tokenizer.json";
/// The final weights.
pub const WEIGHTS: &str = "model.safetensors";
/// The latest checkpoint (weights, optimiser moments, step) inside a model directory.
pub(crate) const CHECKPOINT_DIR: &str = "checkpoint";
/// The step and validation losses, one JSON object per line.
pub const METRICS: &str = "metrics.jsonl";
/// The loss curve drawn from [`METRICS`].
pub const LOSS_PLOT: &str = "loss.png";

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Records could not be produced.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A file of the model directory could not be written or read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

pub(crate) fn file_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Loads the model of a model directory (for `generate` and `eval`).
pub fn load_model(dir: &Path) -> Result<(RunConfig, Meit, RecordCodec), TrainError> {
    let config_path = dir.join(RUN_CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(file_error(&config_path))?;
    let config = RunConfig::from_toml(&text)?;
    let (model, tokenizer) = build_model(&config, Some(&dir.join(WEIGHTS)), dir)?;
    let codec = RecordCodec::new(&config, tokenizer)?;
    Ok((config, model, codec))
}

/// The model of `config` with its tokenizer: weights from `weights` (a checkpoint or the final
/// file) or freshly initialised; the tokenizer from `dir` (trained on reports) or, for a
/// pretrained base, from its GGUF, whose frozen decoder weights are (re)loaded as well.
pub(crate) fn build_model(
    config: &RunConfig,
    weights: Option<&Path>,
    dir: &Path,
) -> Result<(Meit, SharedTokenizer), TrainError> {
    let device = Device::Cpu;
    let params = match weights {
        Some(path) => Params::load(path, config.train.seed, &device)?,
        None => Params::new(config.train.seed, &device),
    };
    match &config.base {
        Some(base) => {
            let Pretrained { model, tokenizer } = load_pretrained(&config.model, base, &params)?;
            Ok((model, Arc::new(tokenizer)))
        }
        None => {
            let tokenizer = ReportTokenizer::load(&dir.join(TOKENIZER))?;
            Ok((Meit::new(&config.model, &params)?, Arc::new(tokenizer)))
        }
    }
}
