//! Rhythm: when each beat happens and what kind it is, and the continuous atrial activity
//! (fibrillatory or flutter waves) of the atrial arrhythmias.
//!
//! Sinus rhythms follow a sinus node whose rate is modulated by respiration (respiratory sinus
//! arrhythmia), a 0.1 Hz Mayer wave and beat-to-beat jitter. Premature ventricular complexes
//! leave the sinus node alone (full compensatory pause); premature atrial complexes reset it.
//! Atrial fibrillation draws RR intervals independently; atrial flutter conducts every 2nd,
//! 3rd or 4th flutter wave.

use std::f64::consts::TAU;

use rand::Rng;

use super::condition::Condition;
use super::morphology::{BeatKind, RhythmParams};

/// One beat chosen by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduledBeat {
    /// What kind of beat.
    pub kind: BeatKind,
    /// Time of the QRS onset (pacing spike for paced beats), seconds since the stream start.
    pub onset_s: f64,
    /// Interval from the previous beat's onset, seconds.
    pub rr_s: f32,
}

/// A standard normal draw (Box-Muller; used per beat, not per sample).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()) as f32
}

/// Chooses the time and kind of every beat.
#[derive(Debug, Clone)]
pub struct BeatScheduler {
    params: RhythmParams,
    /// Onset of the last beat emitted.
    last_onset: f64,
    /// Last firing of the sinus node (expressed as the QRS onset it would conduct to).
    last_sinus: f64,
    /// Whether the last beat was ectopic (no two ectopics in a row).
    last_ectopic: bool,
    /// Phase offsets of the respiratory and Mayer modulations.
    resp_phase: f64,
    lf_phase: f64,
    /// Flutter: index of the last conducted flutter wave and the AV delay.
    flutter_wave: u64,
    av_delay_s: f64,
    /// The atrial activity shared with the scheduler (flutter timing).
    atrial: AtrialActivity,
}

impl BeatScheduler {
    /// A scheduler whose first beat falls within one RR after `start_s`.
    pub fn new(params: &RhythmParams, start_s: f64, rng: &mut impl Rng) -> Self {
        let rr = 60.0 / f64::from(params.heart_rate_bpm.max(20.0));
        let last = start_s - rr * rng.random_range(0.0..1.0);
        let atrial = AtrialActivity::new(params, start_s - 1.0, rng);
        BeatScheduler {
            params: params.clone(),
            last_onset: last,
            last_sinus: last,
            last_ectopic: false,
            resp_phase: rng.random_range(0.0..TAU),
            lf_phase: rng.random_range(0.0..TAU),
            flutter_wave: 0,
            av_delay_s: rng.random_range(0.2..0.27),
            atrial,
        }
    }

    /// Continues the beat sequence with new rhythm parameters (a condition change); the
    /// atrial activity restarts for the new rhythm.
    pub fn retune(&mut self, params: &RhythmParams, rng: &mut impl Rng) {
        self.params = params.clone();
        self.last_sinus = self.last_onset;
        self.atrial = AtrialActivity::new(params, self.last_onset, rng);
        self.flutter_wave = 0;
    }

    /// The continuous atrial activity of the current rhythm.
    pub fn atrial(&self) -> &AtrialActivity {
        &self.atrial
    }

    /// The respiratory phase at time `t` as a sine (-1..1): the same breathing that modulates
    /// the sinus rate.
    pub fn respiration(&self, t: f64) -> f32 {
        (TAU * f64::from(self.params.resp_hz) * t + self.resp_phase).sin() as f32
    }

    /// The next beat.
    pub fn next_beat(&mut self, rng: &mut impl Rng) -> ScheduledBeat {
        let p = &self.params;
        let (kind, onset) = match p.rhythm {
            Condition::AtrialFibrillation => {
                let rr = self.mean_rr() * lognormal(rng, p.af_rr_cv);
                let rr = rr.clamp(0.3, 2.8);
                self.maybe_pvc(rng)
                    .unwrap_or((BeatKind::Supraventricular, self.last_onset + rr))
            }
            Condition::AtrialFlutter => {
                let ratio = if p.flutter_variable {
                    let i = rng.random_range(0..p.flutter_block.len().max(1));
                    p.flutter_block.get(i).copied().unwrap_or(2)
                } else {
                    p.flutter_block.first().copied().unwrap_or(2)
                };
                let onset = loop {
                    self.flutter_wave += u64::from(ratio.max(1));
                    let t = self.atrial.flutter_wave_time(self.flutter_wave) + self.av_delay_s;
                    if t > self.last_onset + 0.25 {
                        break t;
                    }
                };
                match self.maybe_pvc(rng) {
                    Some(pvc) => pvc,
                    None => (BeatKind::Supraventricular, onset),
                }
            }
            Condition::VentricularPaced => (BeatKind::Paced, self.last_onset + self.mean_rr()),
            _ => self.next_sinus(rng),
        };
        let beat = ScheduledBeat {
            kind,
            onset_s: onset,
            rr_s: (onset - self.last_onset) as f32,
        };
        self.last_onset = onset;
        beat
    }

    fn mean_rr(&self) -> f64 {
        60.0 / f64::from(self.params.heart_rate_bpm.max(20.0))
    }

    /// The sinus RR interval at time `t` (respiratory and Mayer modulation plus jitter).
    fn sinus_rr(&self, t: f64, rng: &mut impl Rng) -> f64 {
        let p = &self.params;
        let modulation = f64::from(p.rsa_fraction)
            * (TAU * f64::from(p.resp_hz) * t + self.resp_phase).sin()
            + f64::from(p.lf_fraction) * (TAU * 0.1 * t + self.lf_phase).sin()
            + f64::from(p.jitter_fraction * standard_normal(rng));
        self.mean_rr() * (1.0 + modulation).clamp(0.5, 1.8)
    }

    fn next_sinus(&mut self, rng: &mut impl Rng) -> (BeatKind, f64) {
        let rr = self.sinus_rr(self.last_sinus, rng);
        let due = self.last_sinus + rr;
        if !self.last_ectopic && rng.random::<f32>() < self.params.pvc_probability {
            // The sinus impulse at `due` meets refractory ventricles: full compensatory pause.
            self.last_sinus = due;
            self.last_ectopic = true;
            let coupling = f64::from(self.params.pvc_coupling) * rr;
            return (
                BeatKind::PrematureVentricular,
                self.last_onset + coupling.max(0.3),
            );
        }
        if !self.last_ectopic && rng.random::<f32>() < self.params.pac_probability {
            let coupling = f64::from(self.params.pac_coupling) * rr;
            let onset = self.last_onset + coupling.max(0.35);
            // The ectopic atrial impulse resets the sinus node.
            self.last_sinus = onset;
            self.last_ectopic = true;
            return (BeatKind::PrematureAtrial, onset);
        }
        self.last_sinus = due;
        self.last_ectopic = false;
        (BeatKind::Sinus, due)
    }

    fn maybe_pvc(&mut self, rng: &mut impl Rng) -> Option<(BeatKind, f64)> {
        if !self.last_ectopic && rng.random::<f32>() < self.params.pvc_probability {
            self.last_ectopic = true;
            let coupling = f64::from(self.params.pvc_coupling) * self.mean_rr();
            if self.params.rhythm == Condition::AtrialFlutter {
                // Keep later conducted beats after the PVC.
                self.flutter_wave += 1;
            }
            return Some((
                BeatKind::PrematureVentricular,
                self.last_onset + coupling.max(0.3),
            ));
        }
        self.last_ectopic = false;
        None
    }
}

/// A log-normal factor with mean 1 and coefficient of variation `cv`.
fn lognormal(rng: &mut impl Rng, cv: f32) -> f64 {
    let s2 = f64::from(cv * cv).ln_1p();
    let z = f64::from(standard_normal(rng));
    (z * s2.sqrt() - 0.5 * s2).exp()
}

/// Continuous atrial electrical activity, as a scalar that scales the model's atrial vector.
#[derive(Debug, Clone, PartialEq)]
pub enum AtrialActivity {
    /// Organised atrial activity is part of each beat's P wave.
    None,
    /// Fibrillatory waves: two frequency-modulated components around the dominant frequency.
    Fibrillation {
        /// Dominant frequency, Hz.
        hz: f64,
        /// Random phases of the components and modulations.
        phases: [f64; 4],
    },
    /// Flutter waves: a sawtooth of period `period_s` whose first wave peaks at `origin_s`.
    Flutter {
        /// Flutter cycle length, seconds.
        period_s: f64,
        /// Time of flutter wave 0.
        origin_s: f64,
    },
}

impl AtrialActivity {
    fn new(params: &RhythmParams, origin_s: f64, rng: &mut impl Rng) -> Self {
        match params.rhythm {
            Condition::AtrialFibrillation => AtrialActivity::Fibrillation {
                hz: f64::from(params.fwave_hz),
                phases: [
                    rng.random_range(0.0..TAU),
                    rng.random_range(0.0..TAU),
                    rng.random_range(0.0..TAU),
                    rng.random_range(0.0..TAU),
                ],
            },
            Condition::AtrialFlutter => AtrialActivity::Flutter {
                period_s: 1.0 / f64::from(params.flutter_hz.max(1.0)),
                origin_s,
            },
            _ => AtrialActivity::None,
        }
    }

    /// Time of flutter wave `n` (zero when the activity is not flutter).
    fn flutter_wave_time(&self, n: u64) -> f64 {
        match self {
            AtrialActivity::Flutter { period_s, origin_s } => origin_s + n as f64 * period_s,
            _ => 0.0,
        }
    }

    /// The activity at time `t`, roughly in -1..1.
    #[inline]
    pub fn value(&self, t: f64) -> f32 {
        match *self {
            AtrialActivity::None => 0.0,
            AtrialActivity::Fibrillation { hz, phases } => {
                let a = (TAU * hz * t + phases[0] + 1.6 * (TAU * 0.23 * t + phases[2]).sin()).sin();
                let b =
                    (TAU * 1.37 * hz * t + phases[1] + 2.2 * (TAU * 0.17 * t + phases[3]).sin())
                        .sin();
                let envelope = 1.0 + 0.35 * (TAU * 0.37 * t + phases[2]).sin();
                (envelope * (0.7 * a + 0.4 * b)) as f32
            }
            AtrialActivity::Flutter { period_s, origin_s } => {
                let phase = ((t - origin_s) / period_s).rem_euclid(1.0);
                // Slow descent, then a quicker return: negative sawtooth in II, III, aVF.
                let v = if phase < 0.72 {
                    1.0 - 2.0 * phase / 0.72
                } else {
                    -1.0 + 2.0 * (phase - 0.72) / 0.28
                };
                -(v as f32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::condition::ConditionSet;
    use crate::synth::morphology::BeatModel;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn beats(list: &str, n: usize) -> Vec<ScheduledBeat> {
        let mut rng = StdRng::seed_from_u64(3);
        let model = BeatModel::sample(&ConditionSet::parse_list(list).unwrap(), 500.0, &mut rng);
        let mut s = BeatScheduler::new(&model.rhythm, 0.0, &mut rng);
        (0..n).map(|_| s.next_beat(&mut rng)).collect()
    }

    #[test]
    fn beats_are_strictly_increasing_in_time() {
        for list in [
            "normal",
            "af,pvc",
            "flutter",
            "pac",
            "paced",
            "pvc,sinus-arrhythmia",
        ] {
            let b = beats(list, 200);
            assert!(
                b.windows(2).all(|w| w[1].onset_s > w[0].onset_s + 0.2),
                "{list}"
            );
        }
    }

    #[test]
    fn pvcs_are_followed_by_a_compensatory_pause() {
        let b = beats("pvc", 400);
        let mut normal: Vec<f64> = b
            .windows(2)
            .filter(|w| w[0].kind == BeatKind::Sinus && w[1].kind == BeatKind::Sinus)
            .map(|w| w[1].onset_s - w[0].onset_s)
            .collect();
        normal.sort_by(f64::total_cmp);
        let rr = normal[normal.len() / 2];
        let mut checked = 0;
        for w in b.windows(3) {
            if w[1].kind == BeatKind::PrematureVentricular && w[0].kind == BeatKind::Sinus {
                let pair = w[2].onset_s - w[0].onset_s;
                assert!((pair - 2.0 * rr).abs() < 0.1 * rr, "pair {pair} vs rr {rr}");
                checked += 1;
            }
        }
        assert!(checked > 5);
    }

    #[test]
    fn flutter_beats_are_multiples_of_the_flutter_cycle() {
        let mut rng = StdRng::seed_from_u64(3);
        let set = ConditionSet::parse_list("flutter").unwrap();
        let model = BeatModel::sample(&set, 500.0, &mut rng);
        let mut s = BeatScheduler::new(&model.rhythm, 0.0, &mut rng);
        let AtrialActivity::Flutter { period_s, .. } = *s.atrial() else {
            panic!("flutter model without flutter waves");
        };
        let mut last = s.next_beat(&mut rng).onset_s;
        for _ in 0..50 {
            let b = s.next_beat(&mut rng);
            let k = (b.onset_s - last) / period_s;
            assert!(
                (k - k.round()).abs() < 1e-6 && k.round() >= 2.0,
                "ratio {k}"
            );
            last = b.onset_s;
        }
    }
}
