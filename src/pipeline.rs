//! The pipeline: for each bed, source events in, window reports out.
//!
//! ```text
//! acquire::source::start ──SourceEvent──▶ BedPipeline ──WindowReport──▶ publish::Sink
//!                                         (Windower → Preprocessor → outcome)
//! ```
//!
//! [`BedPipeline`] is plain synchronous state (one per bed) so it can be tested without a
//! runtime; [`run`] drives it from a source channel into a sink. The inference engine slots in
//! where `BedPipeline::judge` decides the outcome.

use tokio::sync::mpsc;

use crate::acquire::SourceEvent;
use crate::config::Config;
use crate::dsp::beats;
use crate::dsp::normalize::Normalization;
use crate::dsp::quality::QualityReason;
use crate::dsp::window::{Window, Windower};
use crate::dsp::{DspError, PreprocessSpec, Preprocessor};
use crate::ecg::{LeadSet, SampleBlock};
use crate::publish::{PublishError, Sink};
use crate::report::{Measurements, Outcome, WindowReport};

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
        let (quality_index, quality_reasons, measurements, outcome) =
            match self.preprocessor.process_window(window) {
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
                    let measurements = if whole_window_unusable(&q.reasons) {
                        None
                    } else {
                        measure(window)
                    };
                    (q.index, q.reasons, measurements, outcome)
                }
                Err(e) => (
                    0.0,
                    Vec::new(),
                    None,
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
            measurements,
            outcome,
        }
    }
}

/// True when the window as a whole is unusable for measurements. A missing or noisy chest lead
/// blocks a report but not a heart rate from the limb leads.
fn whole_window_unusable(reasons: &[QualityReason]) -> bool {
    reasons.iter().any(|r| {
        matches!(
            r,
            QualityReason::InterpolatedGaps { .. } | QualityReason::LowIndex { .. }
        )
    })
}

/// Beat analysis on the window's filtered signal (its raw signal under zero-phase filtering);
/// none when a sample is not finite (an axis from a NaN lead would be a number, and wrong).
fn measure(window: &Window) -> Option<Measurements> {
    let signal = window.filtered.as_ref().unwrap_or(&window.raw);
    if signal.samples_uv.iter().any(|v| !v.is_finite()) {
        tracing::debug!("no beat measurements for a window with non-finite samples");
        return None;
    }
    match beats::analyze(signal) {
        Ok(analysis) if !analysis.r_peaks.is_empty() => Some(Measurements::from(&analysis)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "no beat measurements for this window");
            None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DspConfig;
    use crate::dsp::quality::LeadIssue;
    use crate::ecg::{Lead, Recording};
    use crate::synth::{ConditionSet, RecordSpec, generate};

    /// A pipeline with `window_s` windows and no model.
    fn pipeline(window_s: f64) -> BedPipeline {
        let config = Config {
            dsp: DspConfig {
                window_seconds: window_s,
                hop_seconds: window_s,
                ..DspConfig::default()
            },
            ..Config::default()
        };
        BedPipeline::new(
            "bed-t",
            Preprocessor::new(preprocess_spec(&config)).unwrap(),
            "no model in test",
        )
    }

    fn record(conditions: &str, seconds: f64, seed: u64) -> (Recording, f32) {
        let mut spec = RecordSpec::ten_seconds(ConditionSet::parse_list(conditions).unwrap());
        spec.seconds = seconds;
        let r = generate(&spec, seed).unwrap();
        (r.recording, r.truth.measurements.ventricular_rate_bpm)
    }

    /// Cuts a recording into 100 ms sample blocks, as a device would send them.
    fn blocks(rec: &Recording, lead_off: impl Fn(usize) -> Vec<bool>) -> Vec<SampleBlock> {
        let per_block = (rec.sample_rate_hz / 10.0) as usize;
        (0..rec.len() / per_block)
            .map(|b| {
                let cols = b * per_block..(b + 1) * per_block;
                let samples_uv = cols
                    .clone()
                    .flat_map(|t| rec.samples_uv.column(t).to_vec())
                    .collect();
                SampleBlock {
                    sequence: b as u64,
                    device_time_ns: (cols.start as f64 / rec.sample_rate_hz * 1e9) as u64,
                    sample_rate_hz: rec.sample_rate_hz,
                    leads: rec.leads.clone(),
                    samples_uv,
                    lead_off: lead_off(b),
                }
            })
            .collect()
    }

    fn feed(p: &mut BedPipeline, blocks: &[SampleBlock]) -> Vec<WindowReport> {
        blocks
            .iter()
            .flat_map(|b| p.on_event(&SourceEvent::Block(b.clone())))
            .collect()
    }

    #[test]
    fn clean_sinus_windows_are_reportable_with_the_labelled_rate() {
        let (rec, rate) = record("normal", 20.0, 11);
        let reports = feed(&mut pipeline(10.0), &blocks(&rec, |_| vec![false; 12]));
        assert_eq!(reports.len(), 2);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.window_index, i as u64);
            assert!(
                matches!(r.outcome, Outcome::NoModel { .. }),
                "{}",
                r.to_line()
            );
            let hr = r
                .measurements
                .as_ref()
                .and_then(|m| m.heart_rate_bpm)
                .unwrap();
            assert!((hr - rate).abs() <= 3.0, "measured {hr}, labelled {rate}");
        }
    }

    #[test]
    fn a_lead_off_electrode_gives_no_report_with_the_reason() {
        let (rec, _) = record("normal", 10.0, 12);
        let v2 = rec.leads.position(Lead::V2).unwrap();
        let reports = feed(
            &mut pipeline(10.0),
            &blocks(&rec, |_| (0..12).map(|i| i == v2).collect()),
        );
        assert_eq!(reports.len(), 1);
        let Outcome::NoReport { reasons } = &reports[0].outcome else {
            panic!("{}", reports[0].to_line())
        };
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("V2") && r.contains("lead off")),
            "{reasons:?}"
        );
        assert!(reports[0].quality_reasons.iter().any(|r| matches!(
            r,
            QualityReason::Lead {
                lead: Lead::V2,
                issue: LeadIssue::LeadOff,
                required: true
            }
        )));
        // The limb leads still give a rate.
        assert!(
            reports[0]
                .measurements
                .as_ref()
                .and_then(|m| m.heart_rate_bpm)
                .is_some()
        );
    }

    #[test]
    fn a_disconnect_drops_the_partial_window_instead_of_stitching() {
        let (rec, _) = record("normal", 10.0, 13);
        let all = blocks(&rec, |_| vec![false; 12]);
        let mut p = pipeline(4.0);
        let mut reports = feed(&mut p, &all[..30]); // 3 s: no window yet
        reports.extend(p.on_event(&SourceEvent::Disconnected {
            reason: "unplugged".into(),
        }));
        reports.extend(feed(&mut p, &all[30..])); // 7 s after the reconnect: one 4 s window
        assert_eq!(
            reports.len(),
            1,
            "{:?}",
            reports
                .iter()
                .map(WindowReport::to_line)
                .collect::<Vec<_>>()
        );
        assert_eq!(reports[0].device_start_ns, all[30].device_time_ns);
    }
}
