//! The pipeline: for each bed, source events in, window reports out.
//!
//! ```text
//! acquire::source::start ──SourceEvent──▶ BedPipeline ──WindowReport──▶ publish::Sink
//!                                         (Windower → Preprocessor → outcome)
//! ```
//!
//! [`BedPipeline`] is plain synchronous state (one per bed) so it can be tested without a
//! runtime; [`run`] drives it from a source channel into a sink. The inference engine slots in
//! where [`BedPipeline::judge`] decides the outcome.

use tokio::sync::mpsc;

use crate::acquire::SourceEvent;
use crate::config::Config;
use crate::dsp::normalize::Normalization;
use crate::dsp::window::{Window, Windower};
use crate::dsp::{DspError, PreprocessSpec, Preprocessor};
use crate::ecg::{LeadSet, SampleBlock};
use crate::publish::{PublishError, Sink};
use crate::report::{Outcome, WindowReport};

/// Why a bed's pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The sink failed.
    #[error("bed {bed:?}: {source}")]
    Publish {
        /// The bed.
        bed: String,
        /// Why.
        source: PublishError,
    },
}

/// The model's view of the signal for a configuration: until model bundles carry their own
/// [`PreprocessSpec`] in the manifest, the 12 standard leads at 500 Hz, min-max scaled as in
/// MEIT, with the deployment's filters and windows and `model.required_leads`.
pub fn preprocess_spec(config: &Config) -> PreprocessSpec {
    let mut spec = PreprocessSpec::from_config(
        &config.dsp,
        500.0,
        LeadSet::standard_12(),
        Normalization::MinMaxRecord,
    );
    spec.required_leads = config.model.required_leads.clone();
    spec
}

/// Why reportable windows get no sentence in this build: the inference engine has not landed.
pub fn model_status(config: &Config) -> String {
    let bundle = &config.model.bundle;
    if bundle.join("manifest.json").is_file() {
        format!(
            "no report generated: the inference engine is not in this build (bundle {})",
            bundle.display()
        )
    } else {
        format!(
            "no report generated: no model bundle at {}",
            bundle.display()
        )
    }
}

/// The per-bed state between a source and a sink.
pub struct BedPipeline {
    bed: String,
    preprocessor: Preprocessor,
    windower: Option<(LeadSet, f64, Windower)>,
    next_index: u64,
    model_status: String,
}

impl BedPipeline {
    /// A pipeline for `bed` using `preprocessor`; `model_status` says why no model runs
    /// (until the inference engine lands, every reportable window reports that).
    pub fn new(
        bed: impl Into<String>,
        preprocessor: Preprocessor,
        model_status: impl Into<String>,
    ) -> Self {
        BedPipeline {
            bed: bed.into(),
            preprocessor,
            windower: None,
            next_index: 0,
            model_status: model_status.into(),
        }
    }

    /// Takes one source event; returns the reports of the windows it completed.
    pub fn on_event(&mut self, event: &SourceEvent) -> Vec<WindowReport> {
        match event {
            SourceEvent::Block(block) => self.on_block(block),
            SourceEvent::Disconnected { reason } => {
                // A partial window must not be stitched to samples from after a reconnect.
                tracing::warn!(bed = %self.bed, %reason, "device disconnected; partial window dropped");
                self.windower = None;
                Vec::new()
            }
            SourceEvent::Connected(info) => {
                tracing::info!(bed = %self.bed, device = ?info, "device connected");
                Vec::new()
            }
            SourceEvent::Waiting { reason } => {
                tracing::warn!(bed = %self.bed, %reason, "waiting for device");
                Vec::new()
            }
            SourceEvent::Gap(gap) => {
                tracing::debug!(bed = %self.bed, ?gap, "blocks lost");
                Vec::new()
            }
            SourceEvent::Status(status) => {
                tracing::debug!(bed = %self.bed, ?status, "device status");
                Vec::new()
            }
        }
    }

    fn on_block(&mut self, block: &SampleBlock) -> Vec<WindowReport> {
        let same_device = matches!(&self.windower, Some((leads, rate, _)) if *leads == block.leads && *rate == block.sample_rate_hz);
        if !same_device {
            match self
                .preprocessor
                .windower(&block.leads, block.sample_rate_hz)
            {
                Ok(w) => self.windower = Some((block.leads.clone(), block.sample_rate_hz, w)),
                Err(e) => {
                    tracing::error!(bed = %self.bed, error = %e, "cannot window this device's signal");
                    self.windower = None;
                    return Vec::new();
                }
            }
        }
        let Some((_, _, windower)) = self.windower.as_mut() else {
            return Vec::new();
        };
        match windower.push(block) {
            Ok(windows) => windows.iter().map(|w| self.judge(w)).collect(),
            Err(e) => {
                tracing::warn!(bed = %self.bed, error = %e, "block rejected by the windower");
                Vec::new()
            }
        }
    }

    /// Decides what a finished window yields.
    fn judge(&mut self, window: &Window) -> WindowReport {
        let index = self.next_index;
        self.next_index += 1;
        let processed = self.preprocessor.process_window(window);
        let (quality_index, quality_reasons, outcome) = match processed {
            Ok(input) => {
                let q = input.quality;
                let outcome = if q.is_reportable() {
                    Outcome::NoModel {
                        reason: self.model_status.clone(),
                    }
                } else {
                    Outcome::NoReport {
                        reasons: q
                            .reasons
                            .iter()
                            .filter(|r| r.blocks_report())
                            .map(ToString::to_string)
                            .collect(),
                    }
                };
                (q.index, q.reasons, outcome)
            }
            Err(e) => (
                0.0,
                Vec::new(),
                Outcome::NoReport {
                    reasons: vec![dsp_failure(&e)],
                },
            ),
        };
        WindowReport {
            bed: self.bed.clone(),
            window_index: index,
            device_start_ns: window.start_device_time_ns,
            device_end_ns: window.end_device_time_ns,
            interpolated_fraction: window.interpolated_fraction(),
            quality_index,
            quality_reasons,
            outcome,
        }
    }
}

fn dsp_failure(e: &DspError) -> String {
    format!("signal processing failed: {e}")
}

/// Drives `pipeline` from `events` into `sink` until the source closes or `max_windows`
/// reports have been published. Returns how many were published.
pub async fn run(
    mut pipeline: BedPipeline,
    mut events: mpsc::Receiver<SourceEvent>,
    sink: &mut impl Sink,
    max_windows: Option<u64>,
) -> Result<u64, PipelineError> {
    let mut published = 0;
    while let Some(event) = events.recv().await {
        for report in pipeline.on_event(&event) {
            sink.publish(&report)
                .await
                .map_err(|source| PipelineError::Publish {
                    bed: pipeline.bed.clone(),
                    source,
                })?;
            published += 1;
            if max_windows.is_some_and(|max| published >= max) {
                return Ok(published);
            }
        }
    }
    Ok(published)
}
