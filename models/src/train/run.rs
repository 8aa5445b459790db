//! A whole training run: records -> shared preprocessing -> batches -> [`Trainer`] steps, for
//! `epochs` passes over the training set, with the encoder warm-up, checkpoints, resume,
//! progress and a loss curve, written into a model directory (see [`super`]).
//!
//! Data order is a pure function of (seed, epoch): epoch `e` visits the training records in a
//! seeded permutation, so a resumed run sees exactly the batches the interrupted run would have.
//! Records are generated and preprocessed on a second thread while the model trains on the
//! first (candle's matrix kernels use every core they get).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use super::step::{
    AdamW, CHECKPOINT_WEIGHTS, EncoderWarmup, LinearSchedule, StepReport, Trainer, WarmupScope,
    clip_grad_norm,
};
use super::{
    CHECKPOINT_DIR, LOSS_PLOT, METRICS, RUN_CONFIG, TOKENIZER, TrainError, WEIGHTS, build_model,
    file_error,
};
use crate::codec::{EcgRow, PreparedRecord, RecordCodec};
use crate::data::{RunData, Split};
use crate::model::ModelError;
use crate::model::ecg_encoder::{EcgEncoderConfig, Pooling};
use crate::model::meit::{Batch, Meit};
use crate::model::params::{Params, is_base_weight};
use crate::model::statement_head::{
    SentenceVocabulary, StatementHead, label_accuracy, multi_label_loss,
};
use crate::tokenizer::ReportTokenizer;
use meit::dsp::rhythm::RHYTHM_FEATURES;

/// How to run (not part of the model: the same config trains the same model either way).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The model directory.
    pub out: PathBuf,
    /// Continue from `out/checkpoint` if it exists.
    pub resume: bool,
    /// Stop after this many optimiser steps in total (smoke tests); the schedule still spans
    /// the whole run.
    pub max_steps: Option<usize>,
    /// Print nothing.
    pub quiet: bool,
}

/// What a finished (or stopped) run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Optimiser steps completed.
    pub steps: usize,
    /// Steps the run is configured for.
    pub total_steps: usize,
    /// Mean training loss of the last logged steps.
    pub final_loss: f32,
    /// The last validation loss.
    pub validation_loss: Option<f32>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// Training records per second in this invocation.
    pub records_per_second: f64,
}

/// Trains the byte-level BPE on the reports of the first training records.
pub fn train_tokenizer(config: &RunConfig, data: &RunData) -> Result<ReportTokenizer, TrainError> {
    let n = config.data.tokenizer_records.min(config.data.train_records);
    let reports = (0..n as u64)
        .map(|i| data.record(Split::Train, i).map(|r| r.report))
        .collect::<Result<Vec<String>, _>>()?;
    let tokenizer = ReportTokenizer::train(reports.iter(), config.model.decoder.vocab_size, 2)?;
    if tokenizer.vocab_size() > config.model.decoder.vocab_size {
        return Err(ModelError::Config(format!(
            "tokenizer has {} tokens, the decoder {}",
            tokenizer.vocab_size(),
            config.model.decoder.vocab_size
        ))
        .into());
    }
    Ok(tokenizer)
}

/// Optimiser steps in the whole run.
pub fn total_steps(config: &RunConfig) -> usize {
    let per_step = config.train.batch_size * config.train.accumulation_steps;
    (config.data.train_records / per_step).max(1) * config.train.epochs
}

/// The training record at position `position` of the run (epoch-major, seeded permutation).
fn training_index(
    config: &RunConfig,
    permutations: &mut Vec<(usize, Vec<u64>)>,
    position: usize,
) -> u64 {
    let n = config.data.train_records;
    let epoch = position / n;
    if permutations.last().map(|(e, _)| *e) != Some(epoch) {
        let mut order: Vec<u64> = (0..n as u64).collect();
        order.shuffle(&mut StdRng::seed_from_u64(
            config.train.seed ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9),
        ));
        permutations.clear();
        permutations.push((epoch, order));
    }
    permutations
        .last()
        .and_then(|(_, order)| order.get(position % n).copied())
        .unwrap_or(0)
}

/// The weights file of `[train] init_from = dir` after checking that `dir` holds a model of
/// `config`'s shape and base; a from-scratch model's tokenizer is copied into `out` (its ids
/// are the weights' rows).
fn init_weights(config: &RunConfig, dir: &Path, out: &Path) -> Result<PathBuf, TrainError> {
    let config_path = dir.join(RUN_CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(file_error(&config_path))?;
    let trained = RunConfig::from_toml(&text)?;
    let mismatch = |what: &str| {
        Err(TrainError::File {
            path: config_path.clone(),
            message: format!(
                "init_from: this model's {what} differs from the config's; continued training needs the same"
            ),
        })
    };
    // The changes of shape allowed: lead-presence flags, the standard deviation pooling or the
    // R-R statistics added to a model trained without them (`widen_projection_input`); nothing
    // taken away.
    let (theirs, ours) = (&trained.model.encoder, &config.model.encoder);
    let mut widened = trained.model.clone();
    widened.encoder.lead_presence = ours.lead_presence;
    widened.encoder.pooling = ours.pooling;
    widened.encoder.rhythm_features = ours.rhythm_features;
    let only_adds = (ours.lead_presence || !theirs.lead_presence)
        && (ours.rhythm_features || !theirs.rhythm_features)
        && (theirs.pooling == Pooling::Mean || ours.pooling == theirs.pooling);
    if widened != config.model || !only_adds {
        return mismatch("[model]");
    }
    let widen = trained.model != config.model;
    if trained.base != config.base {
        return mismatch("[base]");
    }
    if trained.instruction != config.instruction {
        return mismatch("instruction");
    }
    if config.base.is_none() {
        let from = dir.join(TOKENIZER);
        std::fs::copy(&from, out.join(TOKENIZER)).map_err(file_error(&from))?;
    }
    if widen {
        return widen_projection_input(theirs, ours, &dir.join(WEIGHTS), out);
    }
    Ok(dir.join(WEIGHTS))
}

/// The weights of `[train] encoder_from = dir` that start this run: the encoder's trunk (stem,
/// stages) and the projection's first layer with its BatchNorm, written to `out` (everything
/// else is drawn or loaded as a fresh run's). Refused unless `dir`'s encoder has this config's
/// trunk and lead flags and its preprocessing equals this config's (the trunk learned that input).
fn encoder_weights(config: &RunConfig, dir: &Path, out: &Path) -> Result<PathBuf, TrainError> {
    let config_path = dir.join(RUN_CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(file_error(&config_path))?;
    let trained = RunConfig::from_toml(&text)?;
    let refuse = |message: String| {
        Err(TrainError::File {
            path: config_path.clone(),
            message: format!("encoder_from: {message}"),
        })
    };
    let (theirs, ours) = (&trained.model.encoder, &config.model.encoder);
    let trunk = |e: &EcgEncoderConfig| {
        (
            e.leads,
            e.block,
            e.stage_blocks.clone(),
            e.base_width,
            e.stem_max_pool,
            e.lead_presence,
            e.pooling,
            e.rhythm_features,
        )
    };
    if trunk(theirs) != trunk(ours) {
        return refuse(format!(
            "its encoder trunk (leads, block, stage_blocks, base_width, stem_max_pool, \
             lead_presence, pooling, rhythm_features) is {:?}, this config's {:?}",
            trunk(theirs),
            trunk(ours)
        ));
    }
    if trained.preprocess != config.preprocess {
        return refuse(
            "its [preprocess] differs from this config's; the encoder learned that input".into(),
        );
    }
    let from = dir.join(WEIGHTS);
    let tensor_error = |e: candle_core::Error| TrainError::File {
        path: from.clone(),
        message: format!("encoder_from: {e}"),
    };
    let kept: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(&from, &Device::Cpu)
            .map_err(tensor_error)?
            .into_iter()
            .filter(|(name, _)| is_transferred_encoder_weight(name))
            .collect();
    if !kept.keys().any(|n| n.starts_with("encoder.stem.")) {
        return refuse(format!("{} holds no encoder.stem weights", from.display()));
    }
    let path = out.join("init-encoder.safetensors");
    candle_core::safetensors::save(&kept, &path).map_err(tensor_error)?;
    Ok(path)
}

/// The weights `encoder_from` carries over: everything of the encoder before the projection's
/// last layer (whose width is the decoder's head dimension).
fn is_transferred_encoder_weight(name: &str) -> bool {
    [
        "encoder.stem.",
        "encoder.stages.",
        "encoder.projection.hidden.",
        "encoder.projection.hidden_bn.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The name of the projection's first weight, the one whose input the lead-presence flags, the
/// standard deviation pooling and the R-R statistics extend.
const PROJECTION_INPUT_WEIGHT: &str = "encoder.projection.hidden.weight";

/// A copy of the weights at `from` (a model whose encoder is `trained`) in `out`, with the
/// projection's first weight given zero columns for the inputs `wanted` adds: the standard
/// deviations after the means, the lead flags after them, the R-R statistics at the end. The
/// widened model computes exactly what the trained one did until training moves those columns
/// (Net2Net's function-preserving widening).
fn widen_projection_input(
    trained: &EcgEncoderConfig,
    wanted: &EcgEncoderConfig,
    from: &Path,
    out: &Path,
) -> Result<PathBuf, TrainError> {
    let bad = |message: String| TrainError::File {
        path: from.to_path_buf(),
        message,
    };
    let tensor_error = |e: candle_core::Error| bad(format!("widening the encoder's input: {e}"));
    let mut weights = candle_core::safetensors::load(from, &Device::Cpu).map_err(tensor_error)?;
    let weight = weights
        .get(PROJECTION_INPUT_WEIGHT)
        .ok_or_else(|| bad(format!("no {PROJECTION_INPUT_WEIGHT}")))?;
    let (rows, cols) = weight.dims2().map_err(tensor_error)?;
    if cols != trained.feature_dim() {
        return Err(bad(format!(
            "{PROJECTION_INPUT_WEIGHT} has {cols} inputs, the trained encoder has {}",
            trained.feature_dim()
        )));
    }
    // Column blocks of the trained weight, each kept or replaced by zeros as `wanted` lays out
    // its input: [means][standard deviations][lead flags][R-R statistics].
    let (channels, leads) = (trained.channels(), trained.leads);
    let column_block = |start: usize, width: usize, present: bool| {
        if present {
            weight.narrow(1, start, width)
        } else {
            candle_core::Tensor::zeros((rows, width), weight.dtype(), &Device::Cpu)
        }
    };
    let has_std = trained.pooling == Pooling::MeanStd;
    let mut blocks = vec![column_block(0, channels, true)];
    if wanted.pooling == Pooling::MeanStd {
        blocks.push(column_block(channels, channels, has_std));
    }
    if wanted.lead_presence {
        blocks.push(column_block(
            trained.pooled_dim(),
            leads,
            trained.lead_presence,
        ));
    }
    if wanted.rhythm_features {
        blocks.push(column_block(
            trained.pooled_dim() + trained.flag_dim(),
            RHYTHM_FEATURES,
            trained.rhythm_features,
        ));
    }
    let blocks = blocks
        .into_iter()
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(tensor_error)?;
    let wider = candle_core::Tensor::cat(&blocks, 1).map_err(tensor_error)?;
    weights.insert(PROJECTION_INPUT_WEIGHT.to_string(), wider);
    let path = out.join("init-widened.safetensors");
    candle_core::safetensors::save(&weights, &path).map_err(tensor_error)?;
    Ok(path)
}

/// Runs (or resumes) the training of `config` (whose TOML text is `config_text`) into
/// `options.out`.
pub fn train(
    config: &RunConfig,
    config_text: &str,
    options: &RunOptions,
) -> Result<RunSummary, TrainError> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(file_error(out))?;
    let config_path = out.join(RUN_CONFIG);
    std::fs::write(&config_path, config_text).map_err(file_error(&config_path))?;
    let checkpoint = out.join(CHECKPOINT_DIR);
    let resuming = options.resume && checkpoint.join(CHECKPOINT_WEIGHTS).exists();
    let data = RunData::open(&config.data)?;
    let init = match (
        &config.train.init_from,
        &config.train.encoder_from,
        resuming,
    ) {
        (Some(dir), _, false) => Some(init_weights(config, dir, out)?),
        (None, Some(dir), false) => Some(encoder_weights(config, dir, out)?),
        _ => None,
    };
    if config.base.is_none() && !resuming && config.train.init_from.is_none() {
        train_tokenizer(config, &data)?.save(&out.join(TOKENIZER))?;
    }
    let device = Device::Cpu;
    let total = total_steps(config);
    let (mut trainer, codec) = if resuming {
        let (model, tokenizer) =
            build_model(config, Some(&checkpoint.join(CHECKPOINT_WEIGHTS)), out)?;
        (
            Trainer::resume(model, &config.train, &checkpoint)?,
            RecordCodec::new(config, tokenizer)?,
        )
    } else {
        let (model, tokenizer) = build_model(config, init.as_deref(), out)?;
        (
            Trainer::new(model, &config.train, total)?,
            RecordCodec::new(config, tokenizer)?,
        )
    };
    let metrics_path = out.join(METRICS);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(file_error(&metrics_path))?;
    if !resuming {
        metrics.set_len(0).map_err(file_error(&metrics_path))?;
    } else {
        forget_metrics_after(&metrics_path, trainer.steps_done())?;
    }
    let validation = validation_batches(config, &data, &codec, &device)?;
    if let (Some(warmup), false) = (&config.train.encoder_warmup, resuming) {
        let summary = warm_up_encoder(
            config,
            &data,
            warmup,
            &codec,
            trainer.model(),
            options.quiet,
        )?;
        write_metric(&mut metrics, &metrics_path, &summary)?;
        // A checkpoint at step 0: a run stopped before its first scheduled checkpoint resumes
        // after the warm-up (an hour on SmolLM2's box), not before it.
        save_checkpoint(&trainer, out)?;
    }
    let stop_at = options.max_steps.map_or(total, |m| m.min(total));
    let start_step = trainer.steps_done();
    let micro = config.train.batch_size;
    let per_step = micro * config.train.accumulation_steps;

    // The producer: records for steps start_step..stop_at, in order, one micro-batch a message.
    let (sender, receiver) = mpsc::sync_channel::<Result<Vec<PreparedRecord>, TrainError>>(6);
    let producer_codec = codec.clone();
    let (producer_config, producer_data) = (config.clone(), data.clone());
    let producer = std::thread::spawn(move || {
        let mut permutations = Vec::new();
        for position in (start_step * per_step..stop_at * per_step).step_by(micro) {
            let batch: Result<Vec<PreparedRecord>, TrainError> = (position..position + micro)
                .map(|p| {
                    let index = training_index(&producer_config, &mut permutations, p);
                    let record = producer_data.record(Split::Train, index)?;
                    producer_codec.prepare(&record, index as usize)
                })
                .collect();
            if sender.send(batch).is_err() {
                return;
            }
        }
    });

    let started = Instant::now();
    let mut progress = Progress::new(options.quiet, total, start_step);
    let mut recent = Vec::new();
    let mut validation_loss = None;
    let mut micro_batches = Vec::with_capacity(config.train.accumulation_steps);
    while trainer.steps_done() < stop_at {
        micro_batches.clear();
        for _ in 0..config.train.accumulation_steps {
            let prepared = receiver.recv().map_err(|_| TrainError::File {
                path: out.clone(),
                message: "the data thread stopped".into(),
            })??;
            micro_batches.push(codec.collate(&prepared, &device)?);
        }
        let report = trainer.step_accumulated(&micro_batches)?;
        recent.push(report.loss);
        if recent.len() > 20 {
            recent.remove(0);
        }
        let step = report.step;
        let epoch = (step * per_step) / config.data.train_records.max(1) + 1;
        let done = step - start_step;
        let rate = (done * per_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        write_metric(
            &mut metrics,
            &metrics_path,
            &StepLine::from_report(&report, epoch, rate),
        )?;
        progress.show(&report, epoch, config.train.epochs, rate);
        let last = step == stop_at;
        if step % config.train.validate_every == 0 || last {
            let loss = validation_loss_of(trainer.model(), &validation)?;
            validation_loss = Some(loss);
            write_metric(
                &mut metrics,
                &metrics_path,
                &ValidationLine {
                    step,
                    validation_loss: loss,
                },
            )?;
            progress.note(&format!("step {step}: validation loss {loss:.4}"));
        }
        if step % config.train.checkpoint_every == 0 || last {
            save_checkpoint(&trainer, out)?;
            plot_loss(&metrics_path, &out.join(LOSS_PLOT))?;
        }
    }
    drop(receiver);
    let _ = producer.join();
    let weights = out.join(WEIGHTS);
    if config.base.is_some() {
        // On a pretrained base, only what training changed: the encoder, its projection and
        // the adapters (`load_model` reloads the base's frozen weights from its file).
        trainer
            .model()
            .params()
            .save_where(&weights, |name| !is_base_weight(name))?;
    } else {
        trainer.model().params().save(&weights)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = trainer.steps_done() - start_step;
    Ok(RunSummary {
        steps: trainer.steps_done(),
        total_steps: total,
        final_loss: recent.iter().sum::<f32>() / recent.len().max(1) as f32,
        validation_loss,
        seconds,
        records_per_second: (done * per_step) as f64 / seconds.max(1e-9),
    })
}

/// What the encoder warm-up reached (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmupSummary {
    /// Steps taken.
    pub warmup_steps: usize,
    /// Distinct report sentences (labels).
    pub sentences: usize,
    /// Mean loss of the last 20 steps.
    pub final_loss: f32,
    /// On the validation records: fraction of sentence labels right.
    pub validation_label_accuracy: f32,
    /// On the validation records: fraction of records with every sentence right.
    pub validation_exact: f32,
    /// Seconds spent.
    pub seconds: f64,
}

/// Ones in the last `columns` columns of `weight` (`[outputs, inputs]`), zeros elsewhere: the
/// gradient mask of the rhythm-scoped warm-up ([`WarmupScope::RhythmInputs`]).
fn rhythm_column_mask(weight: &Tensor, columns: usize) -> Result<Tensor, TrainError> {
    let (rows, cols) = weight
        .dims2()
        .map_err(ModelError::tensor("rhythm column mask"))?;
    if columns == 0 || columns > cols {
        return Err(TrainError::File {
            path: PathBuf::from("encoder warm-up"),
            message: format!(
                "{PROJECTION_INPUT_WEIGHT} has {cols} inputs, the rhythm scope needs {columns} of them"
            ),
        });
    }
    let row: Vec<f32> = (0..cols).map(|c| f32::from(c >= cols - columns)).collect();
    Tensor::from_vec(row.repeat(rows), (rows, cols), weight.device())
        .and_then(|m| m.to_dtype(weight.dtype()))
        .map_err(|e| ModelError::tensor("rhythm column mask")(e).into())
}

/// A warm-up batch before stacking: the encoder input and the sentence targets per record.
type WarmupRows = Vec<(EcgRow, Vec<f32>)>;

/// Trains the encoder (and projection) of `model` alone with a sentence read-out
/// ([`crate::model::statement_head`]), then drops the read-out; with
/// [`WarmupScope::RhythmInputs`] only the projection's R-R statistics columns train.
pub fn warm_up_encoder(
    config: &RunConfig,
    data: &RunData,
    warmup: &EncoderWarmup,
    codec: &RecordCodec,
    model: &Meit,
    quiet: bool,
) -> Result<WarmupSummary, TrainError> {
    let device = Device::Cpu;
    let n = config.data.tokenizer_records.min(config.data.train_records) as u64;
    let reports = (0..n)
        .map(|i| data.record(Split::Train, i).map(|r| r.report))
        .collect::<Result<Vec<_>, _>>()?;
    let vocabulary = SentenceVocabulary::from_reports(&reports);
    let head_params = Params::new(config.train.seed ^ 0x6865_6164, &device);
    let head = StatementHead::new(
        &head_params,
        config.model.encoder.head_dim,
        vocabulary.len(),
    )?;
    let rhythm_only = warmup.scope == WarmupScope::RhythmInputs;
    let mut vars: Vec<(String, Var)> = model
        .trainable_named_vars()
        .into_iter()
        .filter(|(name, _)| {
            if rhythm_only {
                name == PROJECTION_INPUT_WEIGHT
            } else {
                name.starts_with("encoder.")
            }
        })
        .collect();
    // With the rhythm scope only the projection weight's last columns (the R-R statistics'
    // inputs) may move: its gradient is masked to them, so with AdamW's zero weight decay every
    // other encoder weight stays exactly as trained (the batch norms' running statistics follow
    // the data, as in any training step).
    let masked: Option<(Tensor, Var)> = if rhythm_only {
        let (_, weight) = vars.first().ok_or_else(|| TrainError::File {
            path: PathBuf::from("encoder warm-up"),
            message: format!("the model has no trainable {PROJECTION_INPUT_WEIGHT}"),
        })?;
        let mask = rhythm_column_mask(weight.as_tensor(), config.model.encoder.rhythm_dim())?;
        Some((mask, weight.clone()))
    } else {
        None
    };
    vars.extend(head_params.named_vars_where(|_| true));
    let plain: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(vars, 0.0).map_err(ModelError::tensor("warm-up AdamW"))?;
    let steps = warmup.records / warmup.batch_size;
    let schedule = LinearSchedule::new(warmup.learning_rate, 0.03, steps);
    let batch = warmup.batch_size;
    let labels = vocabulary.len();

    let to_tensors = |rows: WarmupRows| -> Result<(Tensor, Option<Tensor>, Tensor), TrainError> {
        let ecg_rows: Vec<&EcgRow> = rows.iter().map(|(e, _)| e).collect();
        let (ecg, rhythm) = codec.stack(&ecg_rows, &device)?;
        let targets: Vec<f32> = rows.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let targets = Tensor::from_vec(targets, (rows.len(), labels), &device)
            .map_err(ModelError::tensor("warm-up targets"))?;
        Ok((ecg, rhythm, targets))
    };

    let (sender, receiver) = mpsc::sync_channel::<Result<WarmupRows, TrainError>>(4);
    let (producer_config, producer_data, producer_codec, producer_vocabulary) = (
        config.clone(),
        data.clone(),
        codec.clone(),
        vocabulary.clone(),
    );
    let producer = std::thread::spawn(move || {
        let mut permutations = Vec::new();
        for position in (0..steps * batch).step_by(batch) {
            let rows = (position..position + batch)
                .map(|p| {
                    let index = training_index(&producer_config, &mut permutations, p);
                    let r = producer_data.record(Split::Train, index)?;
                    let ecg = producer_codec.ecg_row(&r)?;
                    Ok((ecg, producer_vocabulary.targets(&r.report)))
                })
                .collect();
            if sender.send(rows).is_err() {
                return;
            }
        }
    });

    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut recent: Vec<f32> = Vec::new();
    for step in 0..steps {
        let rows = receiver.recv().map_err(|_| TrainError::File {
            path: PathBuf::from("encoder warm-up"),
            message: "the data thread stopped".into(),
        })??;
        let (ecg, rhythm, targets) = to_tensors(rows)?;
        let embedding = model.encoder().forward_with(&ecg, rhythm.as_ref(), true)?;
        let loss = multi_label_loss(&head.logits(&embedding)?, &targets)?;
        let lr = schedule.learning_rate(step);
        let mut update = || -> candle_core::Result<f32> {
            let mut grads = loss.backward()?;
            if let Some((mask, weight)) = &masked
                && let Some(grad) = grads.get(weight)
            {
                let kept = grad.mul(mask)?;
                grads.insert(weight, kept);
            }
            clip_grad_norm(&mut grads, &plain, config.train.max_grad_norm)?;
            optimizer.step(&grads, lr)?;
            loss.to_scalar::<f32>()
        };
        recent.push(update().map_err(ModelError::tensor("warm-up step"))?);
        if recent.len() > 20 {
            recent.remove(0);
        }
        if !quiet && (last_line.elapsed().as_secs_f64() > 10.0 || step + 1 == steps) {
            last_line = Instant::now();
            let rate = ((step + 1) * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "encoder warm-up: step {}/{steps} loss {:.4} lr {lr:.2e} {rate:.0} rec/s",
                step + 1,
                recent.iter().sum::<f32>() / recent.len() as f32
            );
        }
    }
    drop(receiver);
    let _ = producer.join();

    let rows = (0..config.data.validation_records as u64)
        .map(|i| {
            let r = data.record(Split::Validation, i)?;
            let ecg = codec.ecg_row(&r)?;
            Ok((ecg, vocabulary.targets(&r.report)))
        })
        .collect::<Result<WarmupRows, TrainError>>()?;
    let (ecg, rhythm, targets) = to_tensors(rows)?;
    let logits = head.logits(&model.encoder().forward_with(&ecg, rhythm.as_ref(), false)?)?;
    let (label, exact) = label_accuracy(&logits, &targets)?;
    if !quiet {
        eprintln!(
            "encoder warm-up: {} sentences, validation label accuracy {label:.4}, records exactly right {exact:.3}",
            vocabulary.len()
        );
    }
    Ok(WarmupSummary {
        warmup_steps: steps,
        sentences: vocabulary.len(),
        final_loss: recent.iter().sum::<f32>() / recent.len().max(1) as f32,
        validation_label_accuracy: label,
        validation_exact: exact,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Drops the lines of `metrics.jsonl` about steps after `step` (a run stopped after its last
/// checkpoint logged steps that the resumed run repeats); lines without a step stay.
fn forget_metrics_after(path: &Path, step: usize) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(path).map_err(file_error(path))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            let logged = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
            logged.is_none_or(|logged| logged <= step as u64)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        std::fs::write(path, kept).map_err(file_error(path))?;
    }
    Ok(())
}

/// Writes the checkpoint beside the old one and swaps it in, so a crash never leaves a torn one.
fn save_checkpoint(trainer: &Trainer, out: &Path) -> Result<(), TrainError> {
    let fresh = out.join("checkpoint.new");
    let current = out.join(CHECKPOINT_DIR);
    let old = out.join("checkpoint.old");
    trainer.save_checkpoint(&fresh)?;
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old).map_err(file_error(&current))?;
    }
    std::fs::rename(&fresh, &current).map_err(file_error(&fresh))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The validation set as batches (prepared once).
fn validation_batches(
    config: &RunConfig,
    data: &RunData,
    codec: &RecordCodec,
    device: &Device,
) -> Result<Vec<Batch>, TrainError> {
    let prepared = (0..config.data.validation_records as u64)
        .map(|i| codec.prepare(&data.record(Split::Validation, i)?, i as usize))
        .collect::<Result<Vec<_>, _>>()?;
    prepared
        .chunks(config.train.batch_size.max(2))
        .filter(|chunk| chunk.len() >= 2)
        .map(|chunk| codec.collate(chunk, device))
        .collect()
}

/// Mean loss over the validation batches (evaluation mode: BatchNorm running statistics).
fn validation_loss_of(model: &Meit, batches: &[Batch]) -> Result<f32, TrainError> {
    let mut sum = 0.0;
    for batch in batches {
        sum += model
            .loss(batch, false)?
            .to_scalar::<f32>()
            .map_err(ModelError::tensor("validation loss"))?;
    }
    Ok(sum / batches.len().max(1) as f32)
}

/// One logged training step (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepLine {
    step: usize,
    epoch: usize,
    loss: f32,
    learning_rate: f64,
    grad_norm: f64,
    records_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unlikelihood: Option<f32>,
}

impl StepLine {
    fn from_report(report: &StepReport, epoch: usize, rate: f64) -> StepLine {
        StepLine {
            step: report.step,
            epoch,
            loss: report.loss,
            learning_rate: report.learning_rate,
            grad_norm: report.grad_norm,
            records_per_second: rate,
            unlikelihood: report.unlikelihood,
        }
    }
}

/// One validation (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ValidationLine {
    step: usize,
    validation_loss: f32,
}

fn write_metric(
    file: &mut std::fs::File,
    path: &Path,
    line: &impl Serialize,
) -> Result<(), TrainError> {
    let json = serde_json::to_string(line).map_err(|e| TrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    writeln!(file, "{json}").map_err(file_error(path))
}

/// The progress line on standard error: redrawn in place on a terminal, a line every few
/// seconds otherwise (logs of background runs).
struct Progress {
    quiet: bool,
    terminal: bool,
    total: usize,
    last_line: Instant,
    started: Instant,
    start_step: usize,
}

impl Progress {
    fn new(quiet: bool, total: usize, start_step: usize) -> Progress {
        Progress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            total,
            last_line: Instant::now(),
            started: Instant::now(),
            start_step,
        }
    }

    fn show(&mut self, report: &StepReport, epoch: usize, epochs: usize, rate: f64) {
        if self.quiet
            || (!self.terminal
                && self.last_line.elapsed().as_secs_f64() < 10.0
                && report.step != self.total)
        {
            return;
        }
        self.last_line = Instant::now();
        let done = (report.step - self.start_step) as f64;
        let left = (self.total - report.step) as f64;
        let eta = self.started.elapsed().as_secs_f64() / done.max(1.0) * left;
        let width = 30;
        let filled = (width * report.step / self.total.max(1)).min(width);
        let line = format!(
            "[{}{}] step {}/{} epoch {epoch}/{epochs} loss {:.4} lr {:.2e} {rate:.1} rec/s eta {:.0}m",
            "#".repeat(filled),
            ".".repeat(width - filled),
            report.step,
            self.total,
            report.loss,
            report.learning_rate,
            eta / 60.0
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            if self.terminal {
                eprint!("\r\x1b[K");
            }
            eprintln!("{text}");
        }
    }
}

/// Draws the training loss (mean of each 20 steps) and the validation loss against steps, on a
/// log axis.
pub fn plot_loss(metrics: &Path, png: &Path) -> Result<(), TrainError> {
    use plotters::prelude::*;
    let text = std::fs::read_to_string(metrics).map_err(file_error(metrics))?;
    let mut train: Vec<(f64, f64)> = Vec::new();
    let mut valid: Vec<(f64, f64)> = Vec::new();
    let mut bucket: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<ValidationLine>(line) {
            valid.push((v.step as f64, f64::from(v.validation_loss)));
        } else if let Ok(s) = serde_json::from_str::<StepLine>(line) {
            bucket.push((s.step as f64, f64::from(s.loss)));
            if bucket.len() == 20 {
                let n = bucket.len() as f64;
                train.push((
                    bucket.iter().map(|p| p.0).sum::<f64>() / n,
                    bucket.iter().map(|p| p.1).sum::<f64>() / n,
                ));
                bucket.clear();
            }
        }
    }
    let points = train.iter().chain(&valid);
    let max_step = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let losses: Vec<f64> = points
        .map(|p| p.1)
        .filter(|l| l.is_finite() && *l > 0.0)
        .collect();
    // A log axis from the decade below the smallest loss to the decade above the largest: the
    // tail, where a from-scratch run spends most of its steps, is visible next to the start.
    let decade_lo = losses.iter().copied().fold(1.0, f64::min).log10().floor() as i32;
    let decade_hi = losses
        .iter()
        .copied()
        .fold(0.1, f64::max)
        .log10()
        .ceil()
        .max(f64::from(decade_lo + 1)) as i32;
    let plot_error = |e: &dyn std::fmt::Display| TrainError::File {
        path: png.to_path_buf(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(png, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let (left, top, right, bottom) = (70i32, 40i32, 880i32, 460i32);
    let x = |step: f64| left + ((step / max_step) * f64::from(right - left)) as i32;
    let span = f64::from(decade_hi - decade_lo);
    let y = |loss: f64| {
        let up = ((loss.max(1e-12).log10() - f64::from(decade_lo)) / span).clamp(0.0, 1.0);
        bottom - (up * f64::from(bottom - top)) as i32
    };
    for decade in decade_lo..=decade_hi {
        let py = y(10f64.powi(decade));
        root.draw(&PathElement::new(
            vec![(left, py), (right, py)],
            RGBColor(220, 220, 220),
        ))
        .map_err(|e| plot_error(&e))?;
        meit::synth::plot::draw_text(&root, &format!("1E{decade}"), 4, py - 7, 2)
            .map_err(|e| plot_error(&e))?;
    }
    root.draw(&PathElement::new(
        vec![(left, top), (left, bottom), (right, bottom)],
        BLACK,
    ))
    .map_err(|e| plot_error(&e))?;
    for (series, colour) in [(&train, BLUE), (&valid, RED)] {
        let path: Vec<(i32, i32)> = series.iter().map(|&(s, l)| (x(s), y(l))).collect();
        root.draw(&PathElement::new(path, colour.stroke_width(2)))
            .map_err(|e| plot_error(&e))?;
    }
    let label = |t: &str, px: i32, py: i32| {
        meit::synth::plot::draw_text(&root, t, px, py, 2).map_err(|e| plot_error(&e))
    };
    label("LOSS, LOG SCALE (BLUE TRAIN, RED VALIDATION)", left, 10)?;
    label(&format!("STEP {max_step:.0}"), right - 130, bottom + 14)?;
    root.present().map_err(|e| plot_error(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ecg_encoder::BlockKind;

    /// An encoder of 2 channels (base width 2, one stage) on 3 leads.
    fn small(pooling: Pooling, lead_presence: bool) -> EcgEncoderConfig {
        small_with(pooling, lead_presence, false)
    }

    /// [`small`] with or without the R-R statistics.
    fn small_with(
        pooling: Pooling,
        lead_presence: bool,
        rhythm_features: bool,
    ) -> EcgEncoderConfig {
        EcgEncoderConfig {
            leads: 3,
            block: BlockKind::Basic,
            stage_blocks: vec![1],
            base_width: 2,
            stem_max_pool: false,
            head_dim: 4,
            output_scale: 1.0,
            lead_presence,
            pooling,
            rhythm_features,
        }
    }

    /// Every (trained, wanted) pair `init_from` accepts: each trained column lands under the
    /// input it reads in the wanted layout [means][standard deviations][flags][R-R statistics],
    /// each new input gets a zero column. Column j of the trained weight holds 10 + j, so a
    /// misplaced block shows.
    #[test]
    fn widening_keeps_each_trained_column_under_its_input_and_zeroes_the_new_ones()
    -> Result<(), Box<dyn std::error::Error>> {
        use Pooling::{Mean, MeanStd};
        let cases = [
            ((Mean, false, false), (Mean, true, false)),
            ((Mean, false, false), (MeanStd, false, false)),
            ((Mean, false, false), (MeanStd, true, false)),
            ((Mean, true, false), (MeanStd, true, false)),
            ((MeanStd, false, false), (MeanStd, true, false)),
            ((Mean, true, false), (Mean, true, true)),
            ((Mean, false, false), (MeanStd, true, true)),
            ((MeanStd, true, true), (MeanStd, true, true)),
            ((Mean, false, true), (MeanStd, true, true)),
        ];
        for ((tp, tf, tr), (wp, wf, wr)) in cases {
            let (trained, wanted) = (small_with(tp, tf, tr), small_with(wp, wf, wr));
            let dir = tempfile::tempdir()?;
            let from = dir.path().join("model.safetensors");
            let cols = trained.feature_dim();
            let values: Vec<f32> = (0..2 * cols).map(|i| (10 + i % cols) as f32).collect();
            let weight = Tensor::from_vec(values, (2, cols), &Device::Cpu)?;
            let other = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?;
            let tensors = std::collections::HashMap::from([
                (PROJECTION_INPUT_WEIGHT.to_string(), weight),
                ("encoder.projection.hidden.bias".to_string(), other.clone()),
            ]);
            candle_core::safetensors::save(&tensors, &from)?;
            let path = widen_projection_input(&trained, &wanted, &from, dir.path())?;
            let widened = candle_core::safetensors::load(&path, &Device::Cpu)?;
            assert_eq!(
                widened["encoder.projection.hidden.bias"].to_vec1::<f32>()?,
                other.to_vec1::<f32>()?
            );
            let row = widened[PROJECTION_INPUT_WEIGHT].to_vec2::<f32>()?[1].clone();
            // The wanted layout, naming the trained column each input reads (None: new).
            let c = 2;
            let mut expected: Vec<Option<usize>> = (0..c).map(Some).collect();
            if wp == MeanStd {
                expected.extend((0..c).map(|j| (tp == MeanStd).then_some(c + j)));
            }
            if wf {
                let at = trained.pooled_dim();
                expected.extend((0..3).map(|l| tf.then_some(at + l)));
            }
            if wr {
                let at = trained.pooled_dim() + trained.flag_dim();
                expected.extend((0..RHYTHM_FEATURES).map(|r| tr.then_some(at + r)));
            }
            let expected: Vec<f32> = expected
                .iter()
                .map(|column| column.map_or(0.0, |j| (10 + j) as f32))
                .collect();
            assert_eq!(row, expected, "{trained:?} -> {wanted:?}");
        }
        Ok(())
    }

    /// A weight whose width is not the trained encoder's input is refused, naming it.
    #[test]
    fn a_projection_of_another_width_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let from = dir.path().join("model.safetensors");
        let weight = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu)?;
        let tensors =
            std::collections::HashMap::from([(PROJECTION_INPUT_WEIGHT.to_string(), weight)]);
        candle_core::safetensors::save(&tensors, &from)?;
        let error = widen_projection_input(
            &small(Pooling::Mean, false),
            &small(Pooling::MeanStd, false),
            &from,
            dir.path(),
        )
        .expect_err("5 columns for an encoder of 2");
        assert!(error.to_string().contains("has 5 inputs"), "{error}");
        Ok(())
    }
}
