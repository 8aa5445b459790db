//! Beat-timing features for the model: what the beat analysis ([`super::beats`]) measures of
//! the R-R intervals, as a short fixed vector the ECG encoder reads beside its pooled features
//! (opt-in, [`super::PreprocessSpec::rhythm_features`]).
//!
//! Why they exist: the encoder's last stage sees about two seconds (one R-R interval) and the
//! mean over the window keeps the average interval, not how much it varies, so sinus arrhythmia
//! reads as sinus rhythm; the R-R intervals' std / mean from the beat analysis separates the two
//! with AUC 0.993 (`docs/bench/rhythm-separability.md`). They are computed here, inside the
//! shared preprocessing, so daemon and training hand the model the same numbers.
//!
//! The vector, in order (each bounded, never NaN):
//! 0. `measured`: 1 when at least [`MIN_INTERVALS`] intervals were found, else 0 (and the
//!    rest 0: no beats is not the same as a perfectly regular rhythm);
//! 1. the intervals' coefficient of variation (population std / mean) x [`RATIO_SCALE`];
//! 2. their RMSSD / mean x [`RATIO_SCALE`] (beat-to-beat change: high for a premature beat
//!    and atrial fibrillation, low for the slow respiratory swing of sinus arrhythmia);
//! 3. the mean interval in seconds.
//!
//! Scaled so each is of order 1 (sinus rhythm's variation is a few hundredths) and capped
//! ([`RATIO_CAP`], [`MAX_MEAN_INTERVAL_S`]) so an impossible signal cannot hand the model an
//! absurd number.

use crate::dsp::beats;
use crate::ecg::Recording;

/// Length of the feature vector.
pub const RHYTHM_FEATURES: usize = 4;
/// Fewest R-R intervals (four beats) for which a spread means anything.
pub const MIN_INTERVALS: usize = 3;
/// Multiplies the two ratios (a coefficient of variation of 0.1 becomes 1).
pub const RATIO_SCALE: f32 = 10.0;
/// Largest scaled ratio handed on.
pub const RATIO_CAP: f32 = 10.0;
/// Largest mean interval handed on, seconds (15 bpm).
pub const MAX_MEAN_INTERVAL_S: f32 = 4.0;

/// The R-R interval statistics of one window or record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RhythmFeatures {
    /// Whether enough beats were found; when false every other field is 0.
    pub measured: bool,
    /// Population standard deviation / mean of the intervals (unscaled).
    pub interval_variation: f32,
    /// RMSSD / mean of the intervals (unscaled).
    pub successive_variation: f32,
    /// Mean interval, seconds.
    pub mean_interval_s: f32,
}

impl RhythmFeatures {
    /// Runs the beat analysis on `recording` (device rate, microvolts, filtered or raw) and
    /// summarises its intervals; a recording it cannot analyse is unmeasured, not an error, and
    /// so is one holding a non-finite sample ([`beats::analyze_finite`]).
    pub fn measure(recording: &Recording) -> RhythmFeatures {
        Self::from_analysis(beats::analyze_finite(recording).as_ref())
    }

    /// Summarises an analysis already run (the unmeasured value without one).
    pub fn from_analysis(analysis: Option<&beats::BeatAnalysis>) -> RhythmFeatures {
        analysis.map_or_else(RhythmFeatures::default, |a| Self::from_intervals(&a.rr_ms))
    }

    /// Summarises successive R-R intervals in ms; fewer than [`MIN_INTERVALS`], or any that is
    /// not a finite positive number, gives the unmeasured value.
    pub fn from_intervals(rr_ms: &[f32]) -> RhythmFeatures {
        if rr_ms.len() < MIN_INTERVALS || rr_ms.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return RhythmFeatures::default();
        }
        let rr: Vec<f64> = rr_ms.iter().map(|&v| f64::from(v) / 1000.0).collect();
        let n = rr.len() as f64;
        let mean = rr.iter().sum::<f64>() / n;
        let variance = rr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let successive = rr.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum::<f64>() / (n - 1.0);
        RhythmFeatures {
            measured: true,
            interval_variation: (variance.sqrt() / mean) as f32,
            successive_variation: (successive.sqrt() / mean) as f32,
            mean_interval_s: mean as f32,
        }
    }

    /// The vector the encoder reads (see the module comment for its order and scaling).
    pub fn to_array(&self) -> [f32; RHYTHM_FEATURES] {
        if !self.measured {
            return [0.0; RHYTHM_FEATURES];
        }
        let bounded = |v: f32, cap: f32| {
            if v.is_finite() {
                v.clamp(0.0, cap)
            } else {
                0.0
            }
        };
        [
            1.0,
            bounded(self.interval_variation * RATIO_SCALE, RATIO_CAP),
            bounded(self.successive_variation * RATIO_SCALE, RATIO_CAP),
            bounded(self.mean_interval_s, MAX_MEAN_INTERVAL_S),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{ConditionSet, RecordSpec, generate};

    fn record(conditions: &str, seed: u64) -> Recording {
        let spec = RecordSpec::ten_seconds(ConditionSet::parse_list(conditions).unwrap());
        generate(&spec, seed).unwrap().recording
    }

    #[test]
    fn the_statistics_are_those_of_the_intervals() {
        // Intervals 0.8, 1.0, 0.8, 1.0 s: mean 0.9, population std 0.1, every successive
        // difference 0.2.
        let f = RhythmFeatures::from_intervals(&[800.0, 1000.0, 800.0, 1000.0]);
        assert!(f.measured);
        assert!((f.mean_interval_s - 0.9).abs() < 1e-6, "{f:?}");
        assert!((f.interval_variation - 0.1 / 0.9).abs() < 1e-6, "{f:?}");
        assert!((f.successive_variation - 0.2 / 0.9).abs() < 1e-6, "{f:?}");
        let v = f.to_array();
        assert_eq!(v[0], 1.0);
        assert!((v[1] - 10.0 * 0.1 / 0.9).abs() < 1e-5, "{v:?}");
        assert!((v[3] - 0.9).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn too_few_or_impossible_intervals_are_unmeasured_and_zero() {
        for rr in [
            &[800.0, 810.0][..],
            &[800.0, f32::NAN, 800.0, 800.0],
            &[800.0, f32::INFINITY, 800.0, 800.0],
            &[800.0, 0.0, 800.0, 800.0],
            &[800.0, -5.0, 800.0, 800.0],
        ] {
            let f = RhythmFeatures::from_intervals(rr);
            assert!(!f.measured, "{rr:?}");
            assert_eq!(f.to_array(), [0.0; RHYTHM_FEATURES], "{rr:?}");
        }
    }

    #[test]
    fn absurd_values_are_capped_not_passed_on() {
        let f = RhythmFeatures {
            measured: true,
            interval_variation: 1e9,
            successive_variation: f32::NAN,
            mean_interval_s: 60.0,
        };
        assert_eq!(f.to_array(), [1.0, RATIO_CAP, 0.0, MAX_MEAN_INTERVAL_S]);
    }

    #[test]
    fn sinus_arrhythmia_varies_more_than_sinus_rhythm_and_flat_or_holed_signals_are_unmeasured() {
        let regular: Vec<f32> = (0..4)
            .map(|s| RhythmFeatures::measure(&record("SR", s)).to_array()[1])
            .collect();
        let varying: Vec<f32> = (0..4)
            .map(|s| RhythmFeatures::measure(&record("sinus-arrhythmia", s)).to_array()[1])
            .collect();
        let most_regular = regular.iter().copied().fold(f32::MIN, f32::max);
        let least_varying = varying.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            most_regular < least_varying,
            "SR {regular:?} vs SARRH {varying:?}"
        );

        let mut flat = record("SR", 0);
        flat.samples_uv.fill(0.0);
        assert_eq!(RhythmFeatures::measure(&flat), RhythmFeatures::default());

        // One non-finite sample anywhere: unmeasured, though the same record is measured.
        for bad in [f32::NAN, f32::INFINITY] {
            let mut holed = record("SR", 0);
            assert!(RhythmFeatures::measure(&holed).measured);
            holed.samples_uv[[4, 700]] = bad;
            assert_eq!(
                RhythmFeatures::measure(&holed),
                RhythmFeatures::default(),
                "{bad}"
            );
        }
    }
}
