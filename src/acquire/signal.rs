//! What the device simulator streams: any [`SignalGenerator`]. [`SynthSignal`] puts the
//! physiological synthesizer ([`crate::synth::EcgStream`]) behind it, with the artefacts of a
//! bedside recording and the channels a device exposes (any of the twelve leads, in any order);
//! [`ScenarioSignal`] plays several of them in sequence (a scripted patient, electrodes coming
//! off and back on included).

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
    /// Electrodes off at the next time point (firmware-bridge lead-off bits, see
    /// [`super::simulator::electrode_bit`]), beyond those the device is configured with.
    fn electrodes_off(&self) -> u16 {
        0
    }
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
    /// A scenario without steps.
    #[error("a scenario has {0} steps; it needs at least one")]
    Steps(usize),
    /// A scenario's steps differ in sample rate or leads (one device streams them all).
    #[error("the steps of a scenario must share one sample rate and lead set")]
    StepsDiffer,
    /// A scenario step's length is not a number of frames.
    #[error("scenario step of {0} s: allowed: above 0 s")]
    StepSeconds(f64),
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

/// One step of a [`ScenarioSignal`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioPart {
    /// What is streamed during the step (every step: the same rate and leads).
    pub settings: SynthSettings,
    /// How long the step lasts, in seconds (above 0).
    pub seconds: f64,
    /// Electrodes off during the step (firmware-bridge lead-off bits).
    pub electrodes_off: u16,
}

/// Several signals in sequence, each for its own number of frames, then again from the first
/// (each step's signal goes on where it stopped): a scripted patient for a simulated device.
#[derive(Debug, Clone)]
pub struct ScenarioSignal {
    steps: Vec<(u64, SynthSignal, u16)>,
    current: usize,
    left: u64,
}

impl ScenarioSignal {
    /// Builds every step's signal; each step lasts its `seconds` rounded to whole frames
    /// (at least one).
    pub fn new(parts: &[ScenarioPart]) -> Result<Self, SignalError> {
        let Some(first) = parts.first() else {
            return Err(SignalError::Steps(0));
        };
        let mut steps = Vec::with_capacity(parts.len());
        for part in parts {
            let s = &part.settings;
            if s.sample_rate_hz != first.settings.sample_rate_hz || s.leads != first.settings.leads
            {
                return Err(SignalError::StepsDiffer);
            }
            let frames = (part.seconds * s.sample_rate_hz).round();
            if !(frames.is_finite() && frames >= 0.0) {
                return Err(SignalError::StepSeconds(part.seconds));
            }
            steps.push((
                (frames as u64).max(1),
                SynthSignal::new(s)?,
                part.electrodes_off,
            ));
        }
        let left = steps[0].0;
        Ok(ScenarioSignal {
            steps,
            current: 0,
            left,
        })
    }
}

impl SignalGenerator for ScenarioSignal {
    fn sample_rate_hz(&self) -> f64 {
        self.steps[0].1.sample_rate_hz()
    }

    fn leads(&self) -> &LeadSet {
        self.steps[0].1.leads()
    }

    fn next_frame(&mut self, out: &mut [f32]) {
        if self.left == 0 {
            self.current = (self.current + 1) % self.steps.len();
            self.left = self.steps[self.current].0;
        }
        self.left -= 1;
        self.steps[self.current].1.next_frame(out);
    }

    fn electrodes_off(&self) -> u16 {
        // The step the next frame belongs to.
        let next = if self.left == 0 {
            (self.current + 1) % self.steps.len()
        } else {
            self.current
        };
        self.steps[next].2
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
    fn a_scenario_plays_each_steps_signal_for_its_frames_then_starts_again() {
        let part = |condition: &str, seconds: f64, electrodes_off: u16, seed: u64| ScenarioPart {
            settings: SynthSettings {
                conditions: ConditionSet::parse_list(condition).unwrap(),
                sample_rate_hz: 100.0,
                seed,
                ..SynthSettings::default()
            },
            seconds,
            electrodes_off,
        };
        let parts = [part("normal", 1.0, 0, 1), part("af", 0.5, 0b10, 2)];
        let mut scenario = ScenarioSignal::new(&parts).unwrap();
        let mut a = SynthSignal::new(&parts[0].settings).unwrap();
        let mut b = SynthSignal::new(&parts[1].settings).unwrap();
        let (mut got, mut want) = (vec![0.0f32; 12], vec![0.0f32; 12]);
        // 100 frames of step 0, 50 of step 1, then step 0 going on where it stopped.
        for (frames, from, off) in [(100, 0, 0), (50, 1, 0b10), (100, 0, 0)] {
            for _ in 0..frames {
                assert_eq!(scenario.electrodes_off(), off);
                scenario.next_frame(&mut got);
                if from == 0 {
                    a.next_frame(&mut want)
                } else {
                    b.next_frame(&mut want)
                }
                assert_eq!(got, want);
            }
        }
        assert!(matches!(
            ScenarioSignal::new(&[]),
            Err(SignalError::Steps(0))
        ));
        let mut other_rate = part("af", 1.0, 0, 3);
        other_rate.settings.sample_rate_hz = 250.0;
        assert!(matches!(
            ScenarioSignal::new(&[parts[0].clone(), other_rate]),
            Err(SignalError::StepsDiffer)
        ));
        assert!(matches!(
            ScenarioSignal::new(&[part("af", f64::NAN, 0, 3)]),
            Err(SignalError::StepSeconds(_))
        ));
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
