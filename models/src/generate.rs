//! Reports from a trained model: one record's model input -> greedy decoding -> text, and a
//! whole WFDB record cut into the model's windows, each judged for quality first.
//!
//! Windows are cut, judged and reported with the `meit` library's code, as the daemon does: the
//! window cut (`meit::dsp::window::recording_windows`), the quality check and its blocking
//! reasons, and the [`Outcome`] of a window. A window the signal-quality check refuses
//! (lead-off, flat, railed, noise, non-finite samples) gets a no-report result with the
//! reasons, never a generated sentence. Leads the record lacks
//! are masked (zeros) exactly as in training, and the result names them; the leads it has must
//! be usable (unless the model's spec names its own required leads).

use std::path::Path;

use candle_core::{Device, Tensor};
use meit::dsp::window::recording_windows;
use meit::dsp::{ModelInput, Preprocessor};
use meit::ecg::{LeadSet, Recording};
use meit::report::Outcome;
use meit::wfdb::read_standard_leads;
use serde::Serialize;

use crate::codec::RecordCodec;
use crate::model::ModelError;
use crate::model::meit::{Meit, prompt_ids};
use crate::train::TrainError;

/// Greedy report for one preprocessed input (the prompt of instruction phrasing `prompt`).
pub fn report_for_input(
    model: &Meit,
    codec: &RecordCodec,
    input: &ModelInput,
    prompt: usize,
    max_new_tokens: usize,
) -> Result<String, TrainError> {
    let (leads, length) = input.samples.dim();
    let samples: Vec<f32> = input.samples.iter().copied().collect();
    let ecg = Tensor::from_vec(samples, (1, leads, length), &Device::Cpu)
        .map_err(ModelError::tensor("ECG input"))?;
    let rhythm = input
        .rhythm
        .map(|r| Tensor::new(&[r.to_array()], &Device::Cpu))
        .transpose()
        .map_err(ModelError::tensor("R-R statistics"))?;
    let tokenizer = codec.tokenizer();
    let prompt_text = codec.instruction().prompt(prompt);
    let prompt = prompt_ids(tokenizer, &prompt_text)?;
    let ids = model.generate_greedy(
        &ecg,
        rhythm.as_ref(),
        &prompt,
        max_new_tokens,
        codec.stop_id(),
    )?;
    Ok(tokenizer.decode(&ids, true)?.trim().to_string())
}

/// Writes reports for preprocessed windows: the trained candle model ([`CandleReporter`]) or an
/// exported bundle through ONNX Runtime ([`BundleReporter`]). The evaluation suite takes either.
pub trait Reporter {
    /// One report per input; `prompts[i]` picks the instruction phrasing of input i (a bundle
    /// has one prompt, its manifest's, and ignores it).
    fn reports(
        &mut self,
        inputs: &[&ModelInput],
        prompts: &[usize],
    ) -> Result<Vec<String>, TrainError>;
    /// What generates, for the evaluation's header (`candle model`, `bundle DIR (int4)`).
    fn describe(&self) -> String;
}

/// The trained model in candle, one window at a time (the reference).
pub struct CandleReporter<'a> {
    /// The model.
    pub model: &'a Meit,
    /// Its preprocessing and tokenizer.
    pub codec: &'a RecordCodec,
    /// Most tokens per report.
    pub max_new_tokens: usize,
}

impl Reporter for CandleReporter<'_> {
    fn reports(
        &mut self,
        inputs: &[&ModelInput],
        prompts: &[usize],
    ) -> Result<Vec<String>, TrainError> {
        inputs
            .iter()
            .zip(prompts)
            .map(|(input, &p)| {
                report_for_input(self.model, self.codec, input, p, self.max_new_tokens)
            })
            .collect()
    }

    fn describe(&self) -> String {
        "candle model (training crate)".into()
    }
}

/// An exported bundle on ONNX Runtime's CPU provider (the daemon's engine), windows batched.
pub struct BundleReporter {
    /// The engine over the bundle.
    pub engine: meit::infer::engine::Engine,
    /// Windows per engine batch.
    pub batch: usize,
}

impl Reporter for BundleReporter {
    fn reports(
        &mut self,
        inputs: &[&ModelInput],
        _prompts: &[usize],
    ) -> Result<Vec<String>, TrainError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.batch.max(1)) {
            let (generated, _) = self
                .engine
                .generate(chunk)
                .map_err(|e| ModelError::Input(format!("bundle engine: {e}")))?;
            out.extend(generated.into_iter().map(|g| g.text));
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let bundle = self.engine.bundle();
        format!(
            "bundle {} ({:?} decoder, ONNX Runtime CPU)",
            bundle.dir.display(),
            bundle.manifest.decoder_graph.precision
        )
    }
}

/// What came of one window of a record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowResult {
    /// Window start, seconds from the record's start.
    pub start_s: f64,
    /// Window end, seconds.
    pub end_s: f64,
    /// Leads the model did not get (masked).
    pub masked_leads: Vec<String>,
    /// Signal quality index in [0, 1].
    pub quality_index: f64,
    /// The report (its codes read back and its unsupported claims flagged, as the daemon
    /// publishes it) or why there is none: the `meit` library's [`Outcome`].
    pub outcome: Outcome,
}

/// Reports for every whole window of `recording` (device rate and leads, microvolts), cut as
/// the daemon cuts a stream (`meit::dsp::window::recording_windows`); a tail shorter than a
/// window is left out (the caller may say so).
pub fn report_windows(
    model: &Meit,
    codec: &RecordCodec,
    recording: &Recording,
    max_new_tokens: usize,
) -> Result<Vec<WindowResult>, TrainError> {
    let preprocessor = device_preprocessor(codec, &recording.leads)?;
    let windows = recording_windows(recording, codec.preprocessor().spec().timing())
        .map_err(|e| ModelError::Config(format!("preprocess: {e}")))?;
    windows
        .iter()
        .map(|(start_s, slice)| {
            report_window(model, codec, &preprocessor, slice, *start_s, max_new_tokens)
        })
        .collect()
}

/// The model's preprocessing on a device with `device` leads: the leads the device lacks are
/// masked, the ones it has must be usable (`PreprocessSpec::for_device`).
pub fn device_preprocessor(
    codec: &RecordCodec,
    device: &LeadSet,
) -> Result<Preprocessor, TrainError> {
    Preprocessor::new(codec.preprocessor().spec().for_device(device))
        .map_err(|e| ModelError::Config(format!("preprocess: {e}")).into())
}

fn report_window(
    model: &Meit,
    codec: &RecordCodec,
    preprocessor: &Preprocessor,
    slice: &Recording,
    start_s: f64,
    max_new_tokens: usize,
) -> Result<WindowResult, TrainError> {
    let end_s = start_s + slice.duration_s();
    let input = preprocessor.process_recording(slice).map_err(|source| {
        crate::data::DataError::Preprocess {
            id: format!("window at {start_s:.1} s"),
            source,
        }
    })?;
    let masked = input.lead_mask.missing();
    let outcome = if input.quality.is_reportable() {
        let text = report_for_input(model, codec, &input, 0, max_new_tokens)?;
        Outcome::report(text, None, &masked)
    } else {
        Outcome::NoReport {
            reasons: input.quality.blocking_reasons(),
        }
    };
    Ok(WindowResult {
        start_s,
        end_s,
        masked_leads: masked.iter().map(|l| l.name().to_string()).collect(),
        quality_index: input.quality.index,
        outcome,
    })
}

/// The standard leads of a WFDB record (other signals, such as Frank leads, are returned by
/// name and not used): `meit::wfdb::read_standard_leads`, as `meit replay` reads it.
pub fn read_wfdb(hea: &Path) -> Result<(Recording, Vec<String>), TrainError> {
    let (_, selection) =
        read_standard_leads(hea).map_err(|source| crate::data::DataError::Wfdb {
            path: hea.to_path_buf(),
            source,
        })?;
    Ok((selection.recording, selection.ignored))
}
