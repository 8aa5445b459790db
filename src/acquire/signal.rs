//! What the device simulator streams: any [`SignalGenerator`]. Until the physiological
//! synthesizer (`crate::synth`) lands, [`PeriodicPqrst`] provides a simple PQRST-like signal
//! with a seeded rhythm and noise; the synthesizer plugs in by implementing the trait.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ecg::{Lead, LeadSet};

/// A source of multi-lead ECG, one time point at a time, in microvolts.
pub trait SignalGenerator: Send {
    /// Sample rate in Hz.
    fn sample_rate_hz(&self) -> f64;
    /// Leads, in the order [`SignalGenerator::next_frame`] fills them.
    fn leads(&self) -> &LeadSet;
    /// Writes the next time point (one value per lead) into `out`.
    fn next_frame(&mut self, out: &mut [f32]);
}

/// Rhythm of the stand-in signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rhythm {
    /// Regular sinus rhythm.
    Sinus,
    /// Irregularly irregular RR intervals without P waves (an atrial-fibrillation stand-in).
    Irregular,
}

impl Rhythm {
    /// Parses a condition name: `normal`/`sinus`, or `af`/`afib`/`irregular`.
    pub fn from_condition(name: &str) -> Option<Rhythm> {
        match name.to_ascii_lowercase().as_str() {
            "normal" | "sinus" | "nsr" => Some(Rhythm::Sinus),
            "af" | "afib" | "irregular" => Some(Rhythm::Irregular),
            _ => None,
        }
    }
}

/// Settings of [`PeriodicPqrst`].
#[derive(Debug, Clone, PartialEq)]
pub struct PqrstSettings {
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Leads to produce.
    pub leads: LeadSet,
    /// Mean heart rate in beats per minute.
    pub heart_rate_bpm: f64,
    /// Rhythm.
    pub rhythm: Rhythm,
    /// Standard deviation of added white noise, microvolts.
    pub noise_uv: f64,
    /// Seed for rhythm and noise.
    pub seed: u64,
}

/// A sum-of-Gaussians PQRST beat on a cardiac axis, projected onto the requested leads.
#[derive(Debug, Clone)]
pub struct PeriodicPqrst {
    settings: PqrstSettings,
    rng: StdRng,
    /// Seconds since the current beat started.
    phase_s: f64,
    /// Length of the current beat in seconds.
    beat_s: f64,
}

/// (centre as fraction of a 1 s beat, width s, amplitude uV) of P, Q, R, S, T in lead II.
const WAVES: [(f64, f64, f64); 5] = [
    (0.20, 0.025, 150.0),
    (0.335, 0.010, -120.0),
    (0.36, 0.012, 1200.0),
    (0.385, 0.010, -250.0),
    (0.62, 0.050, 300.0),
];

impl PeriodicPqrst {
    /// A generator with `settings`.
    pub fn new(settings: PqrstSettings) -> Self {
        let mut g = PeriodicPqrst {
            rng: StdRng::seed_from_u64(settings.seed),
            settings,
            phase_s: 0.0,
            beat_s: 1.0,
        };
        g.beat_s = g.next_beat_s();
        g
    }

    fn next_beat_s(&mut self) -> f64 {
        let mean = 60.0 / self.settings.heart_rate_bpm.clamp(20.0, 300.0);
        match self.settings.rhythm {
            Rhythm::Sinus => mean,
            Rhythm::Irregular => mean * self.rng.random_range(0.6..1.4),
        }
    }

    /// Lead II value at `phase_s` into a beat of `beat_s` seconds.
    fn lead_ii(&self) -> f64 {
        // P and T scale with the beat; QRS keeps its width.
        let t = self.phase_s;
        let scale = self.beat_s.min(1.2);
        WAVES
            .iter()
            .enumerate()
            .filter(|(i, _)| !(*i == 0 && self.settings.rhythm == Rhythm::Irregular))
            .map(|(_, &(centre, width, amp))| {
                let c = centre * scale;
                amp * (-((t - c) * (t - c)) / (2.0 * width * width)).exp()
            })
            .sum()
    }

    fn noise(&mut self) -> f64 {
        if self.settings.noise_uv <= 0.0 {
            return 0.0;
        }
        // Box-Muller: one standard normal draw.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random_range(0.0..1.0);
        self.settings.noise_uv * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Projection of a lead-II-shaped beat onto each lead (I and II from an axis of ~60 degrees,
/// the rest by Einthoven/Goldberger relations and rough precordial amplitudes).
fn lead_value(lead: Lead, ii: f64) -> f64 {
    let i = 0.5 * ii;
    match lead {
        Lead::I => i,
        Lead::II => ii,
        Lead::III => ii - i,
        Lead::AVR => -(i + ii) / 2.0,
        Lead::AVL => i - ii / 2.0,
        Lead::AVF => ii - i / 2.0,
        Lead::V1 => -0.4 * ii,
        Lead::V2 => 0.2 * ii,
        Lead::V3 => 0.6 * ii,
        Lead::V4 => 1.1 * ii,
        Lead::V5 => 1.0 * ii,
        Lead::V6 => 0.8 * ii,
    }
}

impl SignalGenerator for PeriodicPqrst {
    fn sample_rate_hz(&self) -> f64 {
        self.settings.sample_rate_hz
    }

    fn leads(&self) -> &LeadSet {
        &self.settings.leads
    }

    fn next_frame(&mut self, out: &mut [f32]) {
        let ii = self.lead_ii();
        for (slot, lead) in out.iter_mut().zip(self.settings.leads.0.clone()) {
            *slot = (lead_value(lead, ii) + self.noise()) as f32;
        }
        self.phase_s += 1.0 / self.settings.sample_rate_hz;
        if self.phase_s >= self.beat_s {
            self.phase_s -= self.beat_s;
            self.beat_s = self.next_beat_s();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rhythm: Rhythm) -> PqrstSettings {
        PqrstSettings {
            sample_rate_hz: 500.0,
            leads: LeadSet::standard_12(),
            heart_rate_bpm: 60.0,
            rhythm,
            noise_uv: 0.0,
            seed: 1,
        }
    }

    /// Sample indices where lead II crosses 600 uV upwards (one per R wave).
    fn r_peaks(g: &mut PeriodicPqrst, seconds: usize) -> Vec<usize> {
        let mut frame = vec![0.0; 12];
        let mut prev = 0.0;
        let mut peaks = Vec::new();
        for n in 0..seconds * 500 {
            g.next_frame(&mut frame);
            if prev < 600.0 && frame[1] >= 600.0 {
                peaks.push(n);
            }
            prev = frame[1];
        }
        peaks
    }

    #[test]
    fn sinus_rhythm_beats_at_the_requested_rate() {
        let peaks = r_peaks(&mut PeriodicPqrst::new(settings(Rhythm::Sinus)), 10);
        assert_eq!(peaks.len(), 10);
        assert!(peaks.windows(2).all(|w| w[1] - w[0] == 500));
    }

    #[test]
    fn irregular_rhythm_varies_rr_intervals() {
        let peaks = r_peaks(&mut PeriodicPqrst::new(settings(Rhythm::Irregular)), 20);
        let rr: Vec<usize> = peaks.windows(2).map(|w| w[1] - w[0]).collect();
        let (min, max) = (rr.iter().min().unwrap(), rr.iter().max().unwrap());
        assert!(max - min > 100, "RR intervals {rr:?}");
    }

    #[test]
    fn limb_leads_obey_einthoven() {
        let mut g = PeriodicPqrst::new(settings(Rhythm::Sinus));
        let mut frame = vec![0.0f32; 12];
        for _ in 0..400 {
            g.next_frame(&mut frame);
            assert!(
                (frame[0] + frame[2] - frame[1]).abs() < 1e-3,
                "I + III = II"
            );
        }
    }
}
