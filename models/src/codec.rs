//! A record as model input: the shared preprocessing (`meit::dsp::Preprocessor`), the run's
//! tokenizer and the instruction wrapper, and batches of such records. The same
//! [`RecordCodec`] prepares training batches, prompts generation and reads generated tokens
//! back as text.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use meit::dsp::Preprocessor;
use meit::dsp::rhythm::RHYTHM_FEATURES;

use crate::data::{DataError, LabelledRecord};
use crate::model::ModelError;
use crate::model::meit::{Batch, Example};
use crate::tokenizer::TextTokenizer;
use crate::train::TrainError;
use crate::train::config::RunConfig;

/// Records as model input: the shared preprocessing, the tokenizer and the instruction wrapper.
#[derive(Debug, Clone)]
pub struct RecordCodec {
    config: RunConfig,
    preprocessor: Preprocessor,
    tokenizer: SharedTokenizer,
    stop_id: u32,
}

/// The tokenizer of a run: trained on the reports, or the pretrained decoder's own.
pub type SharedTokenizer = Arc<dyn TextTokenizer + Send + Sync>;

/// One record's encoder input, as the shared preprocessing hands it over.
#[derive(Debug, Clone)]
pub struct EcgRow {
    /// The preprocessed samples, `leads x samples`, row-major.
    pub samples: Vec<f32>,
    /// Samples per lead.
    pub length: usize,
    /// The R-R interval statistics ([`meit::dsp::rhythm::RhythmFeatures::to_array`]), when
    /// the run's preprocessing computes them.
    pub rhythm: Option<[f32; RHYTHM_FEATURES]>,
}

/// One record ready for collation.
#[derive(Debug, Clone)]
pub struct PreparedRecord {
    /// The record's encoder input.
    pub ecg: EcgRow,
    /// Tokens and loss mask.
    pub example: Example,
    /// Rows of this record's ECG that train only the unlikelihood of a statement its leads
    /// cannot support ([`Example::avoiding_after_end`]); empty unless `[train]
    /// unlikelihood_weight` is above 0.
    pub negatives: Vec<Example>,
}

impl RecordCodec {
    /// The preprocessing and tokenisation of `config` with `tokenizer`.
    pub fn new(config: &RunConfig, tokenizer: SharedTokenizer) -> Result<RecordCodec, TrainError> {
        let stop_id = config.instruction.check_tokenizer(tokenizer.as_ref())?;
        let preprocessor = Preprocessor::new(config.preprocess.clone())
            .map_err(|e| ModelError::Config(format!("preprocess: {e}")))?;
        Ok(RecordCodec {
            config: config.clone(),
            preprocessor,
            tokenizer,
            stop_id,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &(dyn TextTokenizer + Send + Sync) {
        self.tokenizer.as_ref()
    }

    /// The token that ends a generated report.
    pub fn stop_id(&self) -> u32 {
        self.stop_id
    }

    /// The preprocessor.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// How reports are wrapped in instructions.
    pub fn instruction(&self) -> &crate::model::instruction::InstructionStyle {
        &self.config.instruction
    }

    /// Preprocesses and tokenises `record`; `index` picks the instruction phrasing.
    pub fn prepare(
        &self,
        record: &LabelledRecord,
        index: usize,
    ) -> Result<PreparedRecord, TrainError> {
        let ecg = self.ecg_row(record)?;
        let encode = |report: &str| {
            let segments = self.config.instruction.segments(report, index);
            Example::encode(
                self.tokenizer.as_ref(),
                &segments,
                self.config.train.max_tokens,
            )
        };
        let mut example = encode(&record.report)?;
        let mut negatives = Vec::new();
        if self.config.train.unlikelihood_weight > 0.0 {
            // Where each report with a statement the leads cannot support departs from this
            // one: inside the report, a token to avoid there; past its end, one extra row for the
            // first such statement (the one the model would write next).
            for withheld in &record.withheld_reports {
                let other = encode(withheld)?;
                example.avoid_departure(&other);
                if negatives.is_empty() {
                    negatives.extend(example.avoiding_after_end(&other));
                }
            }
        }
        Ok(PreparedRecord {
            ecg,
            example,
            negatives,
        })
    }

    /// The encoder input of `record` through the shared preprocessing.
    pub fn ecg_row(&self, record: &LabelledRecord) -> Result<EcgRow, TrainError> {
        let input = self
            .preprocessor
            .process_recording(&record.recording)
            .map_err(|source| DataError::Preprocess {
                id: record.id.clone(),
                source,
            })?;
        Ok(EcgRow {
            samples: input.samples.iter().copied().collect(),
            length: input.samples.ncols(),
            rhythm: input.rhythm.map(|r| r.to_array()),
        })
    }

    /// Stacks encoder inputs of one length into `[rows, leads, length]` on `device`, with their
    /// R-R statistics `[rows, 4]` when every row has them (none when no row has).
    pub fn stack(
        &self,
        rows: &[&EcgRow],
        device: &Device,
    ) -> Result<(Tensor, Option<Tensor>), TrainError> {
        let length = rows.first().map_or(0, |r| r.length);
        let leads = self.config.model.encoder.leads;
        if rows
            .iter()
            .any(|r| r.length != length || r.samples.len() != leads * length)
        {
            return Err(
                ModelError::Input("records of different lengths in one batch".into()).into(),
            );
        }
        let samples: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.samples.iter().copied())
            .collect();
        let ecg = Tensor::from_vec(samples, (rows.len(), leads, length), device)
            .map_err(ModelError::tensor("ECG batch"))?;
        let rhythm = match rows.iter().filter(|r| r.rhythm.is_some()).count() {
            0 => None,
            n if n == rows.len() => {
                let values: Vec<f32> = rows
                    .iter()
                    .flat_map(|r| r.rhythm.unwrap_or_default())
                    .collect();
                Some(
                    Tensor::from_vec(values, (rows.len(), RHYTHM_FEATURES), device)
                        .map_err(ModelError::tensor("R-R statistics batch"))?,
                )
            }
            _ => {
                return Err(ModelError::Input(
                    "R-R statistics for some rows of a batch and not others".into(),
                )
                .into());
            }
        };
        Ok((ecg, rhythm))
    }

    /// Stacks prepared records into a batch on `device`: one row per record, then one per
    /// negative ([`PreparedRecord::negatives`]) with its record's ECG.
    pub fn collate(
        &self,
        records: &[PreparedRecord],
        device: &Device,
    ) -> Result<Batch, TrainError> {
        // Each record's row, then one row per negative with its record's ECG again.
        let rows: Vec<(&PreparedRecord, &Example)> = records
            .iter()
            .map(|r| (r, &r.example))
            .chain(
                records
                    .iter()
                    .flat_map(|r| r.negatives.iter().map(move |n| (r, n))),
            )
            .collect();
        let ecg_rows: Vec<&EcgRow> = rows.iter().map(|(r, _)| &r.ecg).collect();
        let (ecg, rhythm) = self.stack(&ecg_rows, device)?;
        let examples: Vec<Example> = rows.iter().map(|(_, e)| (*e).clone()).collect();
        let batch = Batch::collate(ecg, &examples, self.tokenizer.pad_id(), device)?;
        Ok(match rhythm {
            Some(rhythm) => batch.with_rhythm(rhythm)?,
            None => batch,
        })
    }
}
