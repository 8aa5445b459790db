//! Signal processing shared by the daemon and the training crate: filtering, resampling,
//! lead mapping, windowing, normalisation, signal quality and beat measurements.
//!
//! There is exactly one implementation of preprocessing; the model bundle's manifest records
//! which settings a model was trained with as a [`PreprocessSpec`], and both sides call a
//! [`Preprocessor`] built from it:
//!
//! ```text
//! daemon:   SampleBlock -> Windower (causal FilterChain, gaps) -> Window -> process_window
//! training: Recording -> process_recording (filter_recording: the same kernel, batch)
//! both:     -> resample to the model rate -> lead order + mask -> quality -> normalise
//!           -> ModelInput
//! ```
//!
//! With a causal filter the daemon's windows carry the streaming filter's output (state kept
//! across windows); training filters each record from its start with the same code. With
//! `zero_phase` both filter each window forward and backward, which costs one window of latency.

pub mod beat_bench;
pub mod beats;
pub mod config;
pub mod filter;
pub mod leads;
pub mod normalize;
pub mod quality;
pub mod resample;
pub mod rhythm;
pub mod window;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::ecg::{Lead, LeadSet, Recording};
use beats::BeatAnalysis;
pub use config::DspConfig;
use filter::{FilterError, FilterSpec, filter_recording};
use leads::{LeadMapper, LeadMask, LeadSetMismatch, LeadStatus};
use normalize::Normalization;
use quality::{QualityContext, QualityReason, QualityReport, QualityThresholds};
use resample::{ResampleError, Resampler};
use rhythm::RhythmFeatures;
use window::{Window, WindowError, WindowTiming, Windower};

/// Everything preprocessing does, as a model bundle's manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// The filter chain.
    pub filter: FilterSpec,
    /// The rate the model sees, in Hz.
    pub model_rate_hz: f64,
    /// The lead order of the model's input rows.
    pub lead_order: LeadSet,
    /// Leads that must be usable for a report (the lead sets the model accepts); empty means
    /// every lead of `lead_order`. Another lead unusable in a window is masked in it (zero, as
    /// one the device lacks) and named in the quality reasons.
    #[serde(default)]
    pub required_leads: Vec<Lead>,
    /// How samples are scaled.
    pub normalization: Normalization,
    /// Window length in seconds.
    pub window_seconds: f64,
    /// Hop between window starts in seconds.
    pub hop_seconds: f64,
    /// Longest gap bridged by interpolation, in seconds.
    pub max_gap_seconds: f64,
    /// Signal quality limits.
    #[serde(default)]
    pub quality: QualityThresholds,
    /// Hand the model the R-R interval statistics ([`rhythm::RhythmFeatures`]) beside the
    /// samples. Off for models trained before it existed (and left out of their manifests).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rhythm_features: bool,
}

impl PreprocessSpec {
    /// The spec a daemon configuration describes, for a model at `model_rate_hz` with
    /// `lead_order` and `normalization`.
    pub fn from_config(
        config: &DspConfig,
        model_rate_hz: f64,
        lead_order: LeadSet,
        normalization: Normalization,
    ) -> Self {
        PreprocessSpec {
            filter: FilterSpec::from_config(config),
            model_rate_hz,
            lead_order,
            required_leads: Vec::new(),
            normalization,
            window_seconds: config.window_seconds,
            hop_seconds: config.hop_seconds,
            max_gap_seconds: config.max_gap_seconds,
            quality: QualityThresholds::default(),
            rhythm_features: false,
        }
    }

    /// This spec on a device with `device` leads: when it names no required leads, those the
    /// device provides (measured, or derived from measured limb leads) become required, so the
    /// leads it lacks are masked instead of refusing every window. A spec that names required
    /// leads is returned unchanged.
    pub fn for_device(&self, device: &LeadSet) -> PreprocessSpec {
        let mut spec = self.clone();
        if spec.required_leads.is_empty() {
            let mask = LeadMapper::new(device, &self.lead_order).mask().clone();
            spec.required_leads = mask
                .leads
                .0
                .iter()
                .zip(mask.available())
                .filter(|(_, available)| *available)
                .map(|(lead, _)| *lead)
                .collect();
        }
        spec
    }

    /// Window timing for a [`Windower`].
    pub fn timing(&self) -> WindowTiming {
        WindowTiming {
            window_seconds: self.window_seconds,
            hop_seconds: self.hop_seconds,
            max_gap_seconds: self.max_gap_seconds,
        }
    }
}

impl Default for PreprocessSpec {
    /// MEIT's input: 12 leads in the standard order at 500 Hz, 10 s, min-max per record.
    fn default() -> Self {
        PreprocessSpec::from_config(
            &DspConfig::default(),
            500.0,
            LeadSet::standard_12(),
            Normalization::MinMaxRecord,
        )
    }
}

/// Anything that stops a window or record from being preprocessed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DspError {
    /// The filter could not be built.
    #[error("filter: {0}")]
    Filter(#[from] FilterError),
    /// No resampler between the device and model rates.
    #[error("resampling: {0}")]
    Resample(#[from] ResampleError),
    /// A recording's leads do not match.
    #[error("lead mapping: {0}")]
    Leads(#[from] LeadSetMismatch),
    /// Windowing failed.
    #[error("windowing: {0}")]
    Window(#[from] WindowError),
    /// A causal spec got a window without the streaming filter's output.
    #[error("window has no causal filter output but the spec filters causally")]
    MissingFilteredWindow,
    /// A spec field is unusable.
    #[error("preprocess spec: `{field}` {reason}")]
    Spec {
        /// The field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// What the encoder gets, and whether it may be reported on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    /// Normalised samples, `lead_order x samples` at the model rate; masked leads are 0.
    pub samples: Array2<f32>,
    /// Which rows are measured, derived or missing.
    pub lead_mask: LeadMask,
    /// Signal quality; check [`QualityReport::is_reportable`] before reporting.
    pub quality: QualityReport,
    /// The R-R interval statistics of the filtered signal at the device rate, when the spec
    /// asks for them ([`PreprocessSpec::rhythm_features`]).
    pub rhythm: Option<RhythmFeatures>,
    /// The beat analysis of that same filtered device-rate signal, run once per window: the
    /// daemon's measurements and the rhythm statistics both come from it. None when the path
    /// did not need it (training without rhythm statistics) or the window could not be analysed
    /// ([`beats::analyze_finite`]).
    pub beats: Option<BeatAnalysis>,
}

/// Runs a [`PreprocessSpec`]: the one preprocessing function of daemon and training.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: PreprocessSpec,
}

impl Preprocessor {
    /// Checks the spec and builds the preprocessor.
    pub fn new(spec: PreprocessSpec) -> Result<Self, DspError> {
        let bad = |field, reason: String| Err(DspError::Spec { field, reason });
        if !(spec.model_rate_hz.is_finite() && spec.model_rate_hz > 0.0) {
            return bad(
                "model_rate_hz",
                format!("is {}; must be positive", spec.model_rate_hz),
            );
        }
        if spec.lead_order.is_empty() {
            return bad("lead_order", "is empty; name at least one lead".into());
        }
        if let Some(lead) = spec
            .required_leads
            .iter()
            .find(|l| spec.lead_order.position(**l).is_none())
        {
            return bad(
                "required_leads",
                format!("names {lead}, which is not in lead_order"),
            );
        }
        // The daemon's `[dsp]` limit, for a spec read from a bundle too: a longer bridge would
        // interpolate (and allocate) whatever a device's clock jump asks for.
        if !(0.0..=1.0).contains(&spec.max_gap_seconds) {
            return bad(
                "max_gap_seconds",
                format!(
                    "is {}; allowed: 0 (never interpolate) to 1 s",
                    spec.max_gap_seconds
                ),
            );
        }
        spec.filter.design(spec.model_rate_hz)?;
        Ok(Preprocessor { spec })
    }

    /// The spec.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// The daemon's windower for one device.
    pub fn windower(&self, leads: &LeadSet, sample_rate_hz: f64) -> Result<Windower, DspError> {
        Ok(Windower::new(
            leads,
            sample_rate_hz,
            self.spec.timing(),
            &self.spec.filter,
        )?)
    }

    /// Daemon path: one window from a [`Windower`] built by [`Preprocessor::windower`].
    pub fn process_window(&self, window: &Window) -> Result<ModelInput, DspError> {
        let filtered = if self.spec.filter.zero_phase {
            filter_recording(&self.spec.filter, &window.raw)?
        } else {
            window
                .filtered
                .clone()
                .ok_or(DspError::MissingFilteredWindow)?
        };
        self.finish(
            &window.raw,
            filtered,
            &window.lead_off_fraction,
            window.interpolated_fraction(),
            true,
        )
    }

    /// Training path: a whole record (device order and rate, microvolts), filtered from its
    /// first sample with the same kernel the daemon streams through.
    pub fn process_recording(&self, recording: &Recording) -> Result<ModelInput, DspError> {
        let filtered = filter_recording(&self.spec.filter, recording)?;
        let no_lead_off = vec![0.0; recording.leads.len()];
        self.finish(recording, filtered, &no_lead_off, 0.0, false)
    }

    /// The shared tail: analyse beats, resample, map leads, judge quality, normalise. The beat
    /// analysis runs when `analyse_beats` (the daemon's measurements) or the spec's rhythm
    /// statistics need it, once for both.
    fn finish(
        &self,
        raw: &Recording,
        filtered: Recording,
        lead_off_fraction: &[f64],
        interpolated_fraction: f64,
        analyse_beats: bool,
    ) -> Result<ModelInput, DspError> {
        let resampled = Resampler::new(filtered.sample_rate_hz, self.spec.model_rate_hz)?
            .process_recording(&filtered);
        // Beats are timed on the device-rate signal (a 500 Hz R peak is placed to 2 ms, a
        // 100 Hz one to 10 ms), before lead mapping and normalisation.
        let beats = (analyse_beats || self.spec.rhythm_features)
            .then(|| beats::analyze_finite(&filtered))
            .flatten();
        let rhythm = self
            .spec
            .rhythm_features
            .then(|| RhythmFeatures::from_analysis(beats.as_ref()));
        let mapper = LeadMapper::new(&raw.leads, &self.spec.lead_order);
        let mapped = mapper.map(&resampled)?;
        let mut quality = quality::assess(
            raw,
            QualityContext {
                lead_off_fraction,
                interpolated_fraction,
                mapper: &mapper,
                required: &self.spec.required_leads,
                filter: &self.spec.filter,
                thresholds: &self.spec.quality,
            },
        );
        let mut lead_mask = mapper.mask().clone();
        let mut samples = mapped.samples_uv;
        // A lead the report does not require but this window cannot use (lead-off, flat,
        // railed, noisy, implausible) is treated as one the device lacks: zero-filled and
        // masked before normalisation, so it neither shapes the model's input nor lets the
        // report claim what it would show (its statements are withheld); the reasons still
        // name it. A required one blocks the window instead.
        let unusable = quality.reasons.iter().filter_map(|reason| match reason {
            QualityReason::Lead {
                lead,
                required: false,
                ..
            } => Some(*lead),
            _ => None,
        });
        for lead in unusable.collect::<Vec<_>>() {
            if let Some(i) = self.spec.lead_order.position(lead) {
                samples.row_mut(i).fill(0.0);
                if let Some(status) = lead_mask.status.get_mut(i) {
                    *status = LeadStatus::Missing;
                }
            }
        }
        self.spec
            .normalization
            .apply(&mut samples, &lead_mask.available());
        // Whatever the raw signal looked like, the model is never handed a non-finite value:
        // such a lead is flagged (blocking the window when it is required) and, like a lead the
        // device does not record, zero-filled and masked, so a window reported from the other
        // leads neither carries the NaN to the model nor claims what that lead would show.
        for ((i, mut row), &lead) in samples
            .rows_mut()
            .into_iter()
            .enumerate()
            .zip(&self.spec.lead_order.0)
        {
            if row.iter().any(|v| !v.is_finite()) {
                quality.flag_non_finite(lead, &self.spec.required_leads);
                row.fill(0.0);
                if let Some(status) = lead_mask.status.get_mut(i) {
                    *status = LeadStatus::Missing;
                }
            }
        }
        Ok(ModelInput {
            samples,
            lead_mask,
            quality,
            rhythm,
            beats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() {
        let spec = PreprocessSpec {
            required_leads: vec![Lead::I, Lead::II],
            ..PreprocessSpec::default()
        };
        let json = serde_json::to_string_pretty(&spec).unwrap();
        let back: PreprocessSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert!(json.contains("\"min_max_record\""), "{json}");
    }

    #[test]
    fn rhythm_features_are_measured_only_when_the_spec_asks_and_old_manifests_still_read() {
        let spec = PreprocessSpec::default();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("rhythm_features"), "{json}");
        let with: PreprocessSpec = serde_json::from_str(
            &json.replace("\"quality\"", "\"rhythm_features\":true,\"quality\""),
        )
        .unwrap();
        assert!(with.rhythm_features);
        let record = crate::synth::generate(
            &crate::synth::RecordSpec::ten_seconds(
                crate::synth::ConditionSet::parse_list("SR").unwrap(),
            ),
            3,
        )
        .unwrap()
        .recording;
        let without = Preprocessor::new(spec)
            .unwrap()
            .process_recording(&record)
            .unwrap();
        assert_eq!(without.rhythm, None);
        // Training without the statistics needs no beat analysis and runs none.
        assert_eq!(without.beats, None);
        let input = Preprocessor::new(with)
            .unwrap()
            .process_recording(&record)
            .unwrap();
        // One analysis behind both: the statistics are those of the analysis handed on.
        let analysis = input.beats.as_ref().expect("analysed for the statistics");
        let measured = input.rhythm.unwrap();
        assert_eq!(measured, RhythmFeatures::from_analysis(Some(analysis)));
        let rate = crate::dsp::beats::analyze(&record)
            .unwrap()
            .heart_rate_bpm
            .unwrap();
        assert!(measured.measured, "{measured:?}");
        assert!(
            (60.0 / measured.mean_interval_s - rate).abs() < 3.0,
            "{measured:?} vs {rate} bpm"
        );
    }

    #[test]
    fn a_device_requires_the_leads_it_provides_unless_the_spec_names_some() {
        let monitor = LeadSet(vec![Lead::I, Lead::II, Lead::V1]);
        let spec = PreprocessSpec::default().for_device(&monitor);
        assert_eq!(
            spec.required_leads,
            [
                Lead::I,
                Lead::II,
                Lead::III,
                Lead::AVR,
                Lead::AVL,
                Lead::AVF,
                Lead::V1
            ],
            "limb leads derived from I and II, V1 measured, V2-V6 masked"
        );
        let named = PreprocessSpec {
            required_leads: vec![Lead::II],
            ..PreprocessSpec::default()
        };
        assert_eq!(named.for_device(&monitor), named);
    }

    /// A noisy V1 that the spec does not require reaches the model as a lead the device lacks
    /// (zero, masked: the report withholds what it would need V1 for), named in the reasons;
    /// the same noise on the required lead II blocks the window.
    #[test]
    fn an_unusable_lead_the_report_does_not_require_is_masked_not_measured() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let clean = crate::synth::generate(
            &crate::synth::RecordSpec::ten_seconds(
                crate::synth::ConditionSet::parse_list("SR").unwrap(),
            ),
            5,
        )
        .unwrap()
        .recording;
        let pre = Preprocessor::new(PreprocessSpec {
            required_leads: vec![Lead::I, Lead::II],
            ..PreprocessSpec::default()
        })
        .unwrap();
        let with_noise_on = |lead: Lead| {
            let mut rec = clean.clone();
            let row = rec.leads.position(lead).unwrap();
            let mut rng = StdRng::seed_from_u64(9);
            rec.samples_uv
                .row_mut(row)
                .mapv_inplace(|v| v + rng.random_range(-400.0..400.0));
            rec
        };
        let v1 = pre.spec().lead_order.position(Lead::V1).unwrap();
        let before = pre.process_recording(&clean).unwrap();
        assert!(before.quality.is_reportable());
        assert!(before.lead_mask.missing().is_empty());
        assert!(before.samples.row(v1).iter().any(|v| *v != 0.0));

        let input = pre.process_recording(&with_noise_on(Lead::V1)).unwrap();
        assert!(input.quality.is_reportable(), "{:?}", input.quality.reasons);
        assert!(input.quality.reasons.iter().any(|r| matches!(
            r,
            QualityReason::Lead {
                lead: Lead::V1,
                required: false,
                ..
            }
        )));
        assert_eq!(input.lead_mask.missing(), vec![Lead::V1]);
        assert!(input.samples.row(v1).iter().all(|v| *v == 0.0));
        // The other leads are what they were without the noise.
        for (i, (row, clean_row)) in input
            .samples
            .rows()
            .into_iter()
            .zip(before.samples.rows())
            .enumerate()
        {
            if i != v1 {
                assert_eq!(row, clean_row, "row {i}");
            }
        }

        let blocked = pre.process_recording(&with_noise_on(Lead::II)).unwrap();
        assert!(!blocked.quality.is_reportable());
        assert!(
            blocked
                .quality
                .blocking_reasons()
                .iter()
                .any(|r| r.starts_with("II ")),
            "{:?}",
            blocked.quality.blocking_reasons()
        );
    }

    #[test]
    fn unusable_specs_name_the_field() {
        let err = Preprocessor::new(PreprocessSpec {
            required_leads: vec![Lead::V1],
            lead_order: LeadSet(vec![Lead::I]),
            ..PreprocessSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("`required_leads`"), "{err}");
        let err = Preprocessor::new(PreprocessSpec {
            model_rate_hz: 0.0,
            ..PreprocessSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("`model_rate_hz`"), "{err}");
        for gap in [f64::NAN, -0.1, 1.5, 1e9] {
            let err = Preprocessor::new(PreprocessSpec {
                max_gap_seconds: gap,
                ..PreprocessSpec::default()
            })
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    DspError::Spec {
                        field: "max_gap_seconds",
                        ..
                    }
                ),
                "{gap}: {err}"
            );
        }
    }

    /// A 12-lead record whose V1 is unreadable in a stretch (WFDB's invalid-sample value reads
    /// as NaN) but is not required: the window stays reportable from the other leads, and the
    /// model input carries no NaN: V1 is zero-filled, masked and named in the quality report.
    #[test]
    fn a_non_finite_lead_that_is_not_required_is_zeroed_and_masked() {
        let spec = PreprocessSpec {
            required_leads: vec![Lead::I, Lead::II],
            ..PreprocessSpec::default()
        };
        let pre = Preprocessor::new(spec).unwrap();
        let spec12 = crate::synth::RecordSpec::ten_seconds(crate::synth::ConditionSet::normal());
        let mut record = crate::synth::generate(&spec12, 7).unwrap().recording;
        let v1 = record.leads.position(Lead::V1).unwrap();
        for t in 1000..1010 {
            record.samples_uv[[v1, t]] = f32::NAN;
        }
        let input = pre.process_recording(&record).unwrap();
        assert!(input.samples.iter().all(|v| v.is_finite()));
        let row = pre.spec().lead_order.position(Lead::V1).unwrap();
        assert!(input.samples.row(row).iter().all(|v| *v == 0.0));
        assert_eq!(input.lead_mask.status[row], LeadStatus::Missing);
        assert!(input.lead_mask.missing().contains(&Lead::V1));
        assert!(input.quality.is_reportable(), "{:?}", input.quality.reasons);
        let v1_quality = input.quality.per_lead.iter().find(|q| q.lead == Lead::V1);
        assert!(
            v1_quality.is_some_and(|q| q.issues.contains(&quality::LeadIssue::NonFinite)),
            "{:?}",
            input.quality.per_lead
        );
        // The other leads are untouched by V1's repair.
        let ii = pre.spec().lead_order.position(Lead::II).unwrap();
        assert!(input.samples.row(ii).iter().any(|v| *v != 0.0));
        assert_eq!(input.lead_mask.status[ii], LeadStatus::Measured);
    }
}
