//! Acquisition realism: what electrodes, cables and the analogue front end add to the heart's
//! signal (the amplifier's own noise floor, baseline wander, mains interference, muscle noise,
//! electrode motion, lead-off, ADC gain and quantisation), plus the MEIT robustness perturbation.
//!
//! Artefacts that arise at an electrode are added to electrode potentials before the leads are
//! derived, so they spread over leads the way they do on a real cart and the lead identities
//! still hold. Lead-off and the ADC act on the derived leads, as a device reports them.

use std::f64::consts::TAU;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::geometry::{ELECTRODES, LEADS};
use crate::ecg::Recording;

/// Severity of each artefact, 0 (absent) to 1 (severe). All zero is a clean signal.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Acquisition {
    /// Baseline wander (respiration, electrode drift); 1 = about 0.6 mV.
    pub baseline_wander: f32,
    /// Mains interference and its third harmonic; 1 = about 0.15 mV.
    pub mains: f32,
    /// Mains frequency, 50 or 60 Hz.
    pub mains_hz: f32,
    /// Muscle (EMG) noise, mostly above 20 Hz; 1 = about 35 uV rms per electrode.
    pub emg: f32,
    /// Electrode-motion artefacts; 1 = about one 1-2 mV transient every 3 s.
    pub motion: f32,
    /// Probability that one lead goes off (flat or railed) somewhere in the record.
    pub lead_off: f32,
    /// ADC quantisation, if any.
    pub adc: Option<Adc>,
    /// The front end's own input-referred noise, uV rms in a lead (white; IEC 60601-2-25 allows
    /// at most 30 uV peak-to-valley, carts measure 2-5 uV rms). Not an artefact: a real signal
    /// is never exactly constant, and without it a noise-free isoelectric segment looks like a
    /// stuck ADC to the quality check.
    #[serde(default)]
    pub amplifier_noise_uv: f32,
}

/// An analogue-to-digital converter: gain and range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adc {
    /// Microvolts per count (PTB-XL 1.0, MIMIC-IV-ECG 5.0).
    pub uv_per_count: f32,
    /// Resolution in bits (the signed range is +-2^(bits-1)).
    pub bits: u8,
}

impl Acquisition {
    /// A clean signal.
    pub fn clean() -> Self {
        Acquisition {
            mains_hz: 50.0,
            ..Default::default()
        }
    }

    /// Every artefact at one severity (lead-off at a tenth of it), 16-bit ADC at 1 uV/count.
    pub fn uniform(severity: f32) -> Self {
        let s = severity.clamp(0.0, 1.0);
        Acquisition {
            baseline_wander: s,
            mains: s,
            mains_hz: 50.0,
            emg: s,
            motion: s,
            lead_off: 0.1 * s,
            adc: Some(Adc {
                uv_per_count: 1.0,
                bits: 16,
            }),
            amplifier_noise_uv: 0.0,
        }
    }

    /// True when nothing is added.
    pub fn is_clean(&self) -> bool {
        self.baseline_wander <= 0.0
            && self.mains <= 0.0
            && self.emg <= 0.0
            && self.motion <= 0.0
            && self.lead_off <= 0.0
            && self.adc.is_none()
            && self.amplifier_noise_uv <= 0.0
    }
}

/// A sinusoid advanced by rotation (no trigonometry per sample).
#[derive(Debug, Clone, Copy)]
struct Oscillator {
    c: f64,
    s: f64,
    step_c: f64,
    step_s: f64,
}

impl Oscillator {
    fn new(hz: f64, sample_rate_hz: f64, phase: f64) -> Self {
        let w = TAU * hz / sample_rate_hz;
        Oscillator {
            c: phase.cos(),
            s: phase.sin(),
            step_c: w.cos(),
            step_s: w.sin(),
        }
    }

    #[inline]
    fn next(&mut self) -> f32 {
        let v = self.s;
        let c = self.c * self.step_c - self.s * self.step_s;
        let s = self.s * self.step_c + self.c * self.step_s;
        // Keep the amplitude at 1 over hours of streaming.
        let k = 1.5 - 0.5 * (c * c + s * s);
        self.c = c * k;
        self.s = s * k;
        v as f32
    }
}

/// An approximately normal draw from one 64-bit random number (sum of four 16-bit uniforms).
#[inline]
fn fast_normal(rng: &mut SmallRng) -> f32 {
    let r = rng.next_u64();
    let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
    // Sum of 4 U(0, 65536): mean 131070, sd 65536 * sqrt(4/12).
    (sum as f32 - 131_070.0) * (1.0 / 37_837.2)
}

/// Lead-off episode: a lead that is flat or railed from `start` for `len` frames.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LeadOff {
    /// Index of the lead in the standard order.
    pub lead: usize,
    /// First frame affected.
    pub start_frame: u64,
    /// Number of frames affected.
    pub frames: u64,
    /// Railed at the ADC limit rather than flat.
    pub railed: bool,
}

/// The per-sample state of the acquisition artefacts.
#[derive(Debug, Clone)]
pub struct AcquisitionState {
    config: Acquisition,
    rng: SmallRng,
    sample_rate_hz: f64,
    frame: u64,
    resp: Oscillator,
    drift: Oscillator,
    mains: Oscillator,
    mains3: Oscillator,
    /// Per-electrode weights of the wander, drift and mains components.
    weights: [[f32; 3]; ELECTRODES],
    emg_state: [f32; ELECTRODES],
    motion_state: [f32; ELECTRODES],
    motion_drive: [f32; ELECTRODES],
    lead_off: Option<LeadOff>,
    /// The amplifier noise's own generator, so adding it leaves the other artefacts' draws as
    /// they were.
    floor_rng: SmallRng,
}

impl AcquisitionState {
    /// Prepares the artefacts for a stream at `sample_rate_hz`; `expected_frames` bounds where
    /// a lead-off episode may fall.
    pub fn new(
        config: Acquisition,
        sample_rate_hz: f64,
        expected_frames: u64,
        rng: &mut impl Rng,
    ) -> Self {
        let mut weights = [[0.0f32; 3]; ELECTRODES];
        for w in weights.iter_mut() {
            *w = [
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
            ];
        }
        // Every draw happens whatever the configuration, so the same seed gives the same heart
        // signal with and without artefacts (clean/noisy pairs for robustness tests).
        let total = expected_frames.max(1);
        let off_roll: f32 = rng.random();
        let start = rng.random_range(0..total);
        let off = LeadOff {
            lead: rng.random_range(0..LEADS),
            start_frame: start,
            frames: rng.random_range(1..=total - start),
            railed: rng.random_bool(0.3),
        };
        let lead_off = (off_roll < config.lead_off).then_some(off);
        let seed: u64 = rng.random();
        AcquisitionState {
            config,
            rng: SmallRng::seed_from_u64(seed),
            floor_rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            sample_rate_hz,
            frame: 0,
            resp: Oscillator::new(
                rng.random_range(0.15..0.35),
                sample_rate_hz,
                rng.random_range(0.0..TAU),
            ),
            drift: Oscillator::new(
                rng.random_range(0.03..0.08),
                sample_rate_hz,
                rng.random_range(0.0..TAU),
            ),
            mains: Oscillator::new(
                f64::from(config.mains_hz),
                sample_rate_hz,
                rng.random_range(0.0..TAU),
            ),
            mains3: Oscillator::new(
                3.0 * f64::from(config.mains_hz),
                sample_rate_hz,
                rng.random_range(0.0..TAU),
            ),
            weights,
            emg_state: [0.0; ELECTRODES],
            motion_state: [0.0; ELECTRODES],
            motion_drive: [0.0; ELECTRODES],
            lead_off,
        }
    }

    /// The lead-off episode drawn for this stream, if any.
    pub fn lead_off(&self) -> Option<LeadOff> {
        self.lead_off
    }

    /// Adds electrode artefacts for the current frame to electrode potentials `e` (uV).
    #[inline]
    pub fn add_electrode_noise(&mut self, e: &mut [f32; ELECTRODES]) {
        let c = self.config;
        if c.amplifier_noise_uv > 0.0 {
            // Per electrode, so a lead (a difference of two) carries about the configured rms
            // and the leads a cart derives (III, aVR, ...) stay consistent with I and II.
            let amp = c.amplifier_noise_uv * std::f32::consts::FRAC_1_SQRT_2;
            for p in e.iter_mut() {
                *p += fast_normal(&mut self.floor_rng) * amp;
            }
        }
        if c.baseline_wander > 0.0 {
            let resp = self.resp.next() * 350.0 * c.baseline_wander;
            let drift = self.drift.next() * 250.0 * c.baseline_wander;
            for (p, w) in e.iter_mut().zip(&self.weights) {
                *p += w[0] * resp + w[1] * drift;
            }
        }
        if c.mains > 0.0 && f64::from(c.mains_hz) * 2.0 < self.sample_rate_hz {
            let m = self.mains.next();
            let m3 = if f64::from(c.mains_hz) * 6.0 < self.sample_rate_hz {
                self.mains3.next()
            } else {
                0.0
            };
            let amp = 150.0 * c.mains;
            for (p, w) in e.iter_mut().zip(&self.weights) {
                *p += amp * w[2] * (m + 0.3 * m3);
            }
        }
        if c.emg > 0.0 {
            // Muscle noise: surface EMG has little power below 20 Hz, so white noise is
            // differenced (a high-pass with its zero at DC).
            let amp = 35.0 * std::f32::consts::FRAC_1_SQRT_2 * c.emg;
            for (p, last) in e.iter_mut().zip(self.emg_state.iter_mut()) {
                let white = fast_normal(&mut self.rng) * amp;
                *p += white - *last;
                *last = white;
            }
        }
        if c.motion > 0.0 {
            let rate_per_frame = 0.35 * c.motion / self.sample_rate_hz as f32;
            if (self.rng.next_u32() as f32) < rate_per_frame * u32::MAX as f32 {
                let electrode = (self.rng.next_u32() as usize) % ELECTRODES;
                if let Some(d) = self.motion_drive.get_mut(electrode) {
                    *d += fast_normal(&mut self.rng) * 1500.0;
                }
            }
            let rise = (1.0 / (0.04 * self.sample_rate_hz)) as f32;
            let decay = (1.0 / (0.5 * self.sample_rate_hz)) as f32;
            for (s, d) in self
                .motion_state
                .iter_mut()
                .zip(self.motion_drive.iter_mut())
            {
                *s += (*d - *s) * rise;
                *d -= *d * decay;
                *s -= *s * decay * 0.3;
            }
            for (p, s) in e.iter_mut().zip(&self.motion_state) {
                *p += *s;
            }
        }
    }

    /// Applies lead-off and the ADC to derived leads, then advances one frame.
    #[inline]
    pub fn finish_frame(&mut self, leads: &mut [f32; LEADS]) {
        let limit = self
            .config
            .adc
            .map(|a| a.uv_per_count * ((1u64 << (a.bits.clamp(2, 32) - 1)) - 1) as f32);
        if let Some(a) = self.config.adc {
            let step = a.uv_per_count.max(1e-6);
            let lim = limit.unwrap_or(f32::MAX);
            for v in leads.iter_mut() {
                *v = ((*v / step).round() * step).clamp(-lim, lim);
            }
        }
        if let Some(off) = self.lead_off {
            let active = self.frame >= off.start_frame && self.frame - off.start_frame < off.frames;
            if let (true, Some(v)) = (active, leads.get_mut(off.lead)) {
                *v = if off.railed {
                    limit.unwrap_or(32_767.0)
                } else {
                    0.0
                };
            }
        }
        self.frame += 1;
    }
}

/// Where the MEIT perturbation put its noise.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perturbation {
    /// First perturbed sample.
    pub start: usize,
    /// Number of perturbed samples.
    pub len: usize,
    /// Noise standard deviation in microvolts.
    pub sigma_uv: f32,
}

/// The MEIT robustness perturbation: Gaussian noise N(0, s), s ~ U(0, 0.1) of the record's
/// min-max range, in one random contiguous window of U(0, `max_fraction`) of the record, the
/// same noise on every lead.
pub fn meit_perturbation(
    recording: &mut Recording,
    max_fraction: f32,
    rng: &mut impl Rng,
) -> Perturbation {
    let n = recording.samples_uv.ncols();
    let (lo, hi) = recording
        .samples_uv
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let range = if hi > lo { hi - lo } else { 0.0 };
    let frac = if max_fraction > 0.0 {
        rng.random_range(0.0..max_fraction.min(1.0))
    } else {
        0.0
    };
    let len = ((frac * n as f32) as usize).min(n);
    let start = if n > len {
        rng.random_range(0..=n - len)
    } else {
        0
    };
    let sigma_uv = rng.random_range(0.0..0.1f32) * range;
    for t in start..start + len {
        let z = super::rhythm::standard_normal(rng) * sigma_uv;
        for mut lead in recording.samples_uv.rows_mut() {
            if let Some(v) = lead.get_mut(t) {
                *v += z;
            }
        }
    }
    Perturbation {
        start,
        len,
        sigma_uv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::LeadSet;
    use rand::rngs::StdRng;

    #[test]
    fn fast_normal_has_unit_variance_and_zero_mean() {
        let mut rng = SmallRng::seed_from_u64(1);
        let xs: Vec<f32> = (0..100_000).map(|_| fast_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }

    #[test]
    fn oscillator_tracks_a_sine() {
        let mut o = Oscillator::new(1.0, 100.0, 0.0);
        for i in 0..1000 {
            let want = (TAU * i as f64 / 100.0).sin() as f32;
            assert!((o.next() - want).abs() < 1e-3);
        }
    }

    #[test]
    fn the_amplifier_floor_has_its_rms_in_a_lead_and_leaves_the_other_draws_alone()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::synth::{ConditionSet, RecordSpec, generate};
        let spec = |floor: f32| RecordSpec {
            acquisition: Acquisition {
                emg: 0.3,
                baseline_wander: 0.3,
                amplifier_noise_uv: floor,
                ..Acquisition::clean()
            },
            ..RecordSpec::ten_seconds(ConditionSet::normal())
        };
        let without = generate(&spec(0.0), 9)?.recording.samples_uv;
        let with = generate(&spec(4.0), 9)?.recording.samples_uv;
        let added = &with - &without;
        let rms = |row: usize| {
            let r = added.row(row);
            (r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / r.len() as f64).sqrt()
        };
        // Leads I and II are differences of two electrodes: the configured rms.
        for lead in [0, 1] {
            assert!(
                (3.6..4.4).contains(&rms(lead)),
                "lead {lead}: {}",
                rms(lead)
            );
        }
        // Only the floor was added (EMG and wander drew the same), and III = II - I still holds.
        let einthoven = (0..added.ncols())
            .map(|t| (added[[2, t]] - (added[[1, t]] - added[[0, t]])).abs())
            .fold(0.0f32, f32::max);
        assert!(
            einthoven < 1e-2,
            "III - (II - I) of the added noise: {einthoven}"
        );
        Ok(())
    }

    #[test]
    fn adc_quantises_to_whole_counts() {
        let mut s = AcquisitionState::new(
            Acquisition {
                adc: Some(Adc {
                    uv_per_count: 5.0,
                    bits: 12,
                }),
                ..Acquisition::clean()
            },
            500.0,
            10,
            &mut StdRng::seed_from_u64(1),
        );
        let mut leads = [12.4f32; LEADS];
        leads[1] = 1e6;
        s.finish_frame(&mut leads);
        assert_eq!(leads[0], 10.0);
        assert_eq!(leads[1], 5.0 * 2047.0);
    }

    #[test]
    fn a_drawn_lead_off_flattens_or_rails_one_lead_for_its_frames() {
        let config = Acquisition {
            lead_off: 1.0,
            adc: Some(Adc {
                uv_per_count: 1.0,
                bits: 16,
            }),
            ..Acquisition::clean()
        };
        let mut s = AcquisitionState::new(config, 500.0, 1000, &mut StdRng::seed_from_u64(4));
        let off = s.lead_off().expect("lead_off = 1 always draws an episode");
        for frame in 0..1000u64 {
            let mut leads = [100.0f32; LEADS];
            s.finish_frame(&mut leads);
            let inside = frame >= off.start_frame && frame < off.start_frame + off.frames;
            let want = match (inside, off.railed) {
                (false, _) => 100.0,
                (true, true) => 32_767.0,
                (true, false) => 0.0,
            };
            assert_eq!(leads[off.lead], want, "frame {frame}");
        }
    }

    #[test]
    fn meit_perturbation_adds_the_same_noise_to_every_lead_inside_one_window() {
        let mut rec = Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet::standard_12(),
            samples_uv: ndarray::Array2::from_shape_fn((12, 5000), |(l, t)| {
                (l as f32) * 10.0 + (t as f32 * 0.01).sin() * 500.0
            }),
        };
        let before = rec.clone();
        let p = meit_perturbation(&mut rec, 0.2, &mut StdRng::seed_from_u64(9));
        assert!(p.len <= 1000);
        let diff = &rec.samples_uv - &before.samples_uv;
        for t in 0..5000 {
            let inside = t >= p.start && t < p.start + p.len;
            let col = diff.column(t);
            if !inside {
                assert!(col.iter().all(|&d| d == 0.0));
            }
            assert!(col.iter().all(|&d| (d - col[0]).abs() < 1e-3));
        }
    }
}
