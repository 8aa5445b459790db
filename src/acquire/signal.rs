//! What the device simulator streams: any [`SignalGenerator`]. [`SynthSignal`] puts the
//! physiological synthesizer ([`crate::synth::EcgStream`]) behind it, with the artefacts of a
//! bedside recording and the channels a device exposes (any of the twelve leads, in any order).

use std::ops::RangeInclusive;

use crate::ecg::LeadSet;
use crate::synth::stream::SAMPLE_RATE_RANGE_HZ;
use crate::synth::{
    Acquisition, ConditionSet, EcgStream, HEART_RATE_RANGE_BPM, Overrides, StreamConfig, SynthError,
};

/// A source of multi-lead ECG, one time point at a time, in microvolts.
pub trait SignalGenerator: Send {
    /// Sample rate in Hz.
    fn sample_rate_hz(&self) -> f64;
    /// Leads, in the order [`SignalGenerator::next_frame`] fills them.
    fn leads(&self) -> &LeadSet;
    /// Writes the next time point (one value per lead) into `out`.
    fn next_frame(&mut self, out: &mut [f32]);
}

/// Artefact severities a simulated device accepts (0 is a clean signal).
pub const NOISE_RANGE: RangeInclusive<f32> = 0.0..=1.0;

/// Artefact severity of a simulated device unless told otherwise: a quiet patient on good
/// electrodes (some baseline wander and mains, a little muscle noise, rare motion).
pub const DEFAULT_NOISE: f32 = 0.1;

/// What a simulated device streams.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSettings {
    /// Sample rate in Hz (the synthesizer's 100-1000 Hz).
    pub sample_rate_hz: f64,
    /// Conditions to synthesize.
    pub conditions: ConditionSet,
    /// Mean heart rate in bpm; `None` draws one that fits the conditions.
    pub heart_rate_bpm: Option<f32>,
    /// Severity (0-1) of baseline wander, mains interference, muscle noise and electrode
    /// motion.
    pub noise: f32,
    /// The channels the device exposes, in order (1 to 12 distinct leads).
    pub leads: LeadSet,
    /// Seed of the signal.
    pub seed: u64,
}

impl Default for SynthSettings {
    /// Normal sinus rhythm on all twelve leads at 500 Hz, [`DEFAULT_NOISE`], seed 1.
    fn default() -> Self {
        SynthSettings {
            sample_rate_hz: 500.0,
            conditions: ConditionSet::normal(),
            heart_rate_bpm: None,
            noise: DEFAULT_NOISE,
            leads: LeadSet::standard_12(),
            seed: 1,
        }
    }
}

/// Why a simulated signal cannot be built; each variant names one setting.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The sample rate is outside what the synthesizer produces.
    #[error(
        "sample rate {0} Hz is outside the supported {lo}-{hi} Hz",
        lo = SAMPLE_RATE_RANGE_HZ.start(),
        hi = SAMPLE_RATE_RANGE_HZ.end()
    )]
    SampleRate(f64),
    /// The heart rate is outside what the synthesizer produces.
    #[error(
        "heart rate {0} bpm is outside the supported {lo}-{hi} bpm",
        lo = HEART_RATE_RANGE_BPM.start(),
        hi = HEART_RATE_RANGE_BPM.end()
    )]
    HeartRate(f32),
    /// The artefact severity is not between 0 and 1.
    #[error("artefact severity {0} is outside 0-1")]
    Noise(f32),
    /// The lead set is empty, too long or repeats a lead.
    #[error("{0} leads given; a device exposes 1 to 12 distinct leads")]
    Leads(usize),
    /// The synthesizer refused the settings.
    #[error(transparent)]
    Synth(#[from] SynthError),
}

/// The synthesizer as a device's signal: a 12-lead frame per time point, of which the device's
/// leads are passed on. The per-frame path allocates nothing.
#[derive(Debug, Clone)]
pub struct SynthSignal {
    stream: EcgStream,
    leads: LeadSet,
}

impl SynthSignal {
    /// Starts the signal `settings` describe.
    pub fn new(settings: &SynthSettings) -> Result<Self, SignalError> {
        if !SAMPLE_RATE_RANGE_HZ.contains(&settings.sample_rate_hz) {
            return Err(SignalError::SampleRate(settings.sample_rate_hz));
        }
        if let Some(hr) = settings.heart_rate_bpm
            && !HEART_RATE_RANGE_BPM.contains(&hr)
        {
            return Err(SignalError::HeartRate(hr));
        }
        if !NOISE_RANGE.contains(&settings.noise) {
            return Err(SignalError::Noise(settings.noise));
        }
        let leads = &settings.leads.0;
        let distinct: std::collections::HashSet<_> = leads.iter().collect();
        if leads.is_empty() || leads.len() > 12 || distinct.len() != leads.len() {
            return Err(SignalError::Leads(leads.len()));
        }
        let stream = EcgStream::new(&StreamConfig {
            sample_rate_hz: settings.sample_rate_hz,
            conditions: settings.conditions.clone(),
            acquisition: device_artefacts(settings.noise),
            seed: settings.seed,
            // Only bounds a lead-off episode, which a simulated device does not draw.
            expected_frames: 0,
            overrides: Overrides {
                heart_rate_bpm: settings.heart_rate_bpm,
                ..Overrides::default()
            },
        })?;
        Ok(SynthSignal {
            stream,
            leads: settings.leads.clone(),
        })
    }
}

/// The artefacts of a simulated device at `severity`. Lead-off is left out (the device
/// reports no lead-off state) and so is the synthesizer's ADC (the device quantises itself).
fn device_artefacts(severity: f32) -> Acquisition {
    Acquisition {
        lead_off: 0.0,
        adc: None,
        ..Acquisition::uniform(severity)
    }
}

impl SignalGenerator for SynthSignal {
    fn sample_rate_hz(&self) -> f64 {
        self.stream.sample_rate_hz()
    }

    fn leads(&self) -> &LeadSet {
        &self.leads
    }

    #[inline]
    fn next_frame(&mut self, out: &mut [f32]) {
        let frame = self.stream.next_frame();
        for (slot, lead) in out.iter_mut().zip(&self.leads.0) {
            // The frame holds the twelve leads in the standard order `Lead::index` counts.
            *slot = frame[lead.index()];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::Lead;

    fn frames(g: &mut impl SignalGenerator, n: usize) -> Vec<Vec<f32>> {
        let mut frame = vec![0.0f32; g.leads().len()];
        (0..n)
            .map(|_| {
                g.next_frame(&mut frame);
                frame.clone()
            })
            .collect()
    }

    #[test]
    fn a_lead_subset_passes_on_those_channels_of_the_twelve_lead_frame_in_device_order() {
        let twelve = SynthSettings::default();
        let subset = SynthSettings {
            leads: LeadSet(vec![Lead::V1, Lead::II, Lead::AVR]),
            ..twelve.clone()
        };
        let all = frames(&mut SynthSignal::new(&twelve).unwrap(), 1000);
        let some = frames(&mut SynthSignal::new(&subset).unwrap(), 1000);
        for (a, s) in all.iter().zip(&some) {
            assert_eq!(s, &vec![a[6], a[1], a[3]]);
        }
    }

    /// Onsets of the beats generated in `seconds` by a stream built like the device's.
    fn beat_onsets(settings: &SynthSettings, seconds: f64) -> Vec<f64> {
        let mut signal = SynthSignal::new(settings).unwrap();
        signal.stream.record_beats();
        let frames = (seconds * settings.sample_rate_hz) as usize;
        let mut frame = vec![0.0; signal.leads.len()];
        for _ in 0..frames {
            signal.next_frame(&mut frame);
        }
        signal
            .stream
            .take_beats()
            .iter()
            .map(|b| b.onset_s)
            .filter(|&t| (0.0..seconds).contains(&t))
            .collect()
    }

    #[test]
    fn the_heart_rate_setting_sets_the_beat_rate() {
        for hr in [45.0f32, 120.0] {
            let onsets = beat_onsets(
                &SynthSettings {
                    heart_rate_bpm: Some(hr),
                    ..SynthSettings::default()
                },
                30.0,
            );
            let (first, last) = (onsets[0], onsets[onsets.len() - 1]);
            let bpm = 60.0 * (onsets.len() - 1) as f64 / (last - first);
            assert!((bpm - f64::from(hr)).abs() < 0.1 * f64::from(hr), "{bpm}");
        }
    }

    #[test]
    fn noise_adds_artefacts_to_the_same_heart_signal_and_keeps_einthoven() {
        let clean = SynthSettings {
            noise: 0.0,
            ..SynthSettings::default()
        };
        let noisy = SynthSettings {
            noise: 0.5,
            ..clean.clone()
        };
        let a = frames(&mut SynthSignal::new(&clean).unwrap(), 5000);
        let b = frames(&mut SynthSignal::new(&noisy).unwrap(), 5000);
        let rms = |i: usize| {
            let sum: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(y[i] - x[i]).powi(2))
                .sum();
            (sum / a.len() as f64).sqrt()
        };
        for lead in 0..12 {
            // Artefacts of tens of microvolts, not a different heart signal.
            let r = rms(lead);
            assert!((5.0..400.0).contains(&r), "lead {lead}: {r} uV rms");
        }
        for f in &b {
            assert!((f[0] + f[2] - f[1]).abs() < 0.05, "I + III = II: {f:?}");
        }
    }

    #[test]
    fn invalid_settings_are_refused_with_the_setting_named() {
        let bad = |s: SynthSettings| SynthSignal::new(&s).unwrap_err();
        let d = SynthSettings::default;
        assert!(matches!(
            bad(SynthSettings {
                sample_rate_hz: 50.0,
                ..d()
            }),
            SignalError::SampleRate(_)
        ));
        assert!(matches!(
            bad(SynthSettings {
                heart_rate_bpm: Some(400.0),
                ..d()
            }),
            SignalError::HeartRate(_)
        ));
        assert!(matches!(
            bad(SynthSettings { noise: 1.5, ..d() }),
            SignalError::Noise(_)
        ));
        for leads in [vec![], vec![Lead::I, Lead::I]] {
            assert!(matches!(
                bad(SynthSettings {
                    leads: LeadSet(leads),
                    ..d()
                }),
                SignalError::Leads(_)
            ));
        }
    }
}
