//! Resampling from a device rate to the model rate: a rational polyphase resampler with a
//! Kaiser-windowed sinc anti-aliasing filter (the design of scipy's `resample_poly`).
//!
//! Why not a general-purpose crate: ECG device rates are integers (130, 250, 256, 360, 500,
//! 1000 Hz), so every conversion is an exact ratio `up / down` and a polyphase FIR computes only
//! the outputs it needs, deterministically, with no FFT and no dependency, identically on x86_64
//! and aarch64. The filter is linear-phase and centred, so resampling adds no delay.
//!
//! The cutoff sits at the lower of the two Nyquist frequencies; with `HALF_TAPS_PER_PHASE` 16
//! and Kaiser beta 8 the stopband is designed for about 80 dB (the tests require aliases 60 dB
//! down) and the passband is flat to within 0.1 dB up to 75% of that Nyquist frequency (tested
//! for every device rate). Signal ends are extended with their edge value, so a
//! DC offset does not produce an edge transient.

use ndarray::Array2;

use crate::ecg::Recording;

/// Filter half-length, in input samples of the slower side, on each side of the centre.
const HALF_TAPS_PER_PHASE: usize = 16;
/// Kaiser window shape: about 80 dB stopband attenuation.
const KAISER_BETA: f64 = 8.0;
/// Largest `up` or `down` factor accepted (keeps the filter a few thousand taps long).
const MAX_FACTOR: u64 = 1000;

/// Why a resampler could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResampleError {
    /// A rate is not a positive finite number.
    #[error("sample rate {0} Hz is not a positive number")]
    Rate(f64),
    /// The two rates have no ratio with small enough integers.
    #[error(
        "cannot resample {from_hz} Hz to {to_hz} Hz: no ratio up/down with both at most {MAX_FACTOR}"
    )]
    Ratio {
        /// Input rate.
        from_hz: f64,
        /// Output rate.
        to_hz: f64,
    },
}

/// A designed resampler from one rate to another.
#[derive(Debug, Clone)]
pub struct Resampler {
    from_hz: f64,
    to_hz: f64,
    up: usize,
    down: usize,
    /// Prototype low-pass at `up * from_hz`, odd length, centred; each branch sums to 1.
    taps: Vec<f64>,
    /// Polyphase branches: `branches[r]` holds taps `r, r + up, r + 2 up, ...`.
    branches: Vec<Vec<f64>>,
}

impl Resampler {
    /// Designs a resampler from `from_hz` to `to_hz`.
    pub fn new(from_hz: f64, to_hz: f64) -> Result<Self, ResampleError> {
        for rate in [from_hz, to_hz] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ResampleError::Rate(rate));
            }
        }
        let (up, down) =
            rational_ratio(to_hz / from_hz).ok_or(ResampleError::Ratio { from_hz, to_hz })?;
        let (up, down) = (up as usize, down as usize);
        let factor = up.max(down);
        let half = HALF_TAPS_PER_PHASE * factor;
        let cutoff = 1.0 / factor as f64; // fraction of the upsampled Nyquist frequency
        let mut taps: Vec<f64> = (0..=2 * half)
            .map(|i| {
                let n = i as f64 - half as f64;
                cutoff * sinc(cutoff * n) * kaiser(n / half as f64, KAISER_BETA)
            })
            .collect();
        // Each polyphase branch sums to exactly 1, so a constant passes unchanged (gain `up`
        // of the zero-stuffed signal, distributed over the branches).
        for phase in 0..up {
            let sum: f64 = taps.iter().skip(phase).step_by(up).sum();
            if sum.abs() > f64::EPSILON {
                taps.iter_mut()
                    .skip(phase)
                    .step_by(up)
                    .for_each(|t| *t /= sum);
            }
        }
        let branches = (0..up)
            .map(|r| taps.iter().skip(r).step_by(up).copied().collect())
            .collect();
        Ok(Resampler {
            from_hz,
            to_hz,
            up,
            down,
            taps,
            branches,
        })
    }

    /// The input rate.
    pub fn from_hz(&self) -> f64 {
        self.from_hz
    }

    /// The output rate.
    pub fn to_hz(&self) -> f64 {
        self.to_hz
    }

    /// `(up, down)`: the output rate is `from_hz * up / down`.
    pub fn ratio(&self) -> (usize, usize) {
        (self.up, self.down)
    }

    /// Output length for `n` input samples: `ceil(n * up / down)`.
    pub fn output_len(&self, n: usize) -> usize {
        (n * self.up).div_ceil(self.down)
    }

    /// Resamples one lead.
    pub fn process(&self, input: &[f32]) -> Vec<f32> {
        let n_out = self.output_len(input.len());
        let (Some(&first), Some(&last)) = (input.first(), input.last()) else {
            return Vec::new();
        };
        // Output m is the upsampled signal at m * down, filtered by `taps` centred on it. Only
        // every `up`-th tap meets a real (not zero-stuffed) sample: branch `phase` of the
        // polyphase filter, read backwards from input sample `base`. The input is extended
        // with its edge values so every branch reads whole samples.
        let half = self.taps.len() / 2;
        let pad = half / self.up + 2;
        let extended: Vec<f64> = std::iter::repeat_n(f64::from(first), pad)
            .chain(input.iter().map(|&x| f64::from(x)))
            .chain(std::iter::repeat_n(f64::from(last), pad))
            .collect();
        (0..n_out)
            .map(|m| {
                let centre = m * self.down + half;
                let phase = centre % self.up;
                let branch = &self.branches[phase];
                let base = (centre - phase) / self.up + pad;
                let window = (base + 1)
                    .checked_sub(branch.len())
                    .and_then(|lo| extended.get(lo..=base));
                window.map_or(0.0, |w| {
                    branch
                        .iter()
                        .zip(w.iter().rev())
                        .map(|(h, x)| h * x)
                        .sum::<f64>()
                }) as f32
            })
            .collect()
    }

    /// Resamples every lead of a recording.
    pub fn process_recording(&self, recording: &Recording) -> Recording {
        if self.up == self.down {
            return recording.clone();
        }
        let n_out = self.output_len(recording.len());
        let mut out = Array2::<f32>::zeros((recording.leads.len(), n_out));
        for (row_in, mut row_out) in recording.samples_uv.rows().into_iter().zip(out.rows_mut()) {
            let resampled = self.process(&row_in.to_vec());
            row_out.assign(&ndarray::ArrayView1::from(&resampled));
        }
        Recording {
            sample_rate_hz: self.to_hz,
            leads: recording.leads.clone(),
            samples_uv: out,
        }
    }
}

/// Resamples a recording to `to_hz` (a copy when the rate already matches).
pub fn resample_recording(recording: &Recording, to_hz: f64) -> Result<Recording, ResampleError> {
    Ok(Resampler::new(recording.sample_rate_hz, to_hz)?.process_recording(recording))
}

/// The best `p / q` for `ratio` with `p, q <= MAX_FACTOR`, if it matches to 1e-9 (continued
/// fractions).
fn rational_ratio(ratio: f64) -> Option<(u64, u64)> {
    let (mut h0, mut h1, mut k0, mut k1) = (0u64, 1u64, 1u64, 0u64);
    let mut x = ratio;
    for _ in 0..32 {
        let a = x.floor();
        if a > MAX_FACTOR as f64 {
            return None;
        }
        let a = a as u64;
        let (h2, k2) = (a * h1 + h0, a * k1 + k0);
        if h2 > MAX_FACTOR || k2 > MAX_FACTOR {
            return None;
        }
        (h0, h1, k0, k1) = (h1, h2, k1, k2);
        if ((h1 as f64 / k1 as f64) - ratio).abs() <= 1e-9 * ratio {
            return Some((h1, k1));
        }
        let frac = x - a as f64;
        if frac <= 0.0 {
            return None;
        }
        x = 1.0 / frac;
    }
    None
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Kaiser window at `t` in [-1, 1].
fn kaiser(t: f64, beta: f64) -> f64 {
    bessel_i0(beta * (1.0 - t * t).max(0.0).sqrt()) / bessel_i0(beta)
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(fs: f64, hz: f64, seconds: f64, amplitude: f64) -> Vec<f32> {
        (0..(fs * seconds) as usize)
            .map(|i| (amplitude * (2.0 * PI * hz * i as f64 / fs).sin()) as f32)
            .collect()
    }

    /// Amplitude of the `hz` component in the middle half of `y` (lock-in detection).
    fn amplitude_at(y: &[f32], fs: f64, hz: f64) -> f64 {
        let (start, end) = (y.len() / 4, 3 * y.len() / 4);
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &v) in y.iter().enumerate().take(end).skip(start) {
            let phase = 2.0 * PI * hz * i as f64 / fs;
            s += f64::from(v) * phase.sin();
            c += f64::from(v) * phase.cos();
        }
        2.0 * (s * s + c * c).sqrt() / (end - start) as f64
    }

    #[test]
    fn ratios_are_exact_for_device_rates() {
        assert_eq!(rational_ratio(500.0 / 130.0), Some((50, 13)));
        assert_eq!(rational_ratio(500.0 / 256.0), Some((125, 64)));
        assert_eq!(rational_ratio(500.0 / 360.0), Some((25, 18)));
        assert_eq!(rational_ratio(500.0 / 1000.0), Some((1, 2)));
        assert!(Resampler::new(499.987_654_3, 500.0).is_err());
        assert!(Resampler::new(0.0, 500.0).is_err());
    }

    #[test]
    fn sine_amplitude_is_preserved_in_band_for_every_device_rate() {
        for from in [130.0, 250.0, 256.0, 360.0, 500.0, 1000.0] {
            let r = Resampler::new(from, 500.0).unwrap();
            for hz in [1.0, 10.0, 25.0, 0.75 * from.min(500.0) / 2.0] {
                let y = r.process(&sine(from, hz, 8.0, 1000.0));
                let gain_db = 20.0 * (amplitude_at(&y, 500.0, hz) / 1000.0).log10();
                assert!(
                    gain_db.abs() < 0.1,
                    "{from} Hz -> 500 Hz, {hz} Hz: {gain_db:.3} dB"
                );
            }
        }
    }

    #[test]
    fn output_has_the_expected_length_and_no_delay() {
        let r = Resampler::new(360.0, 500.0).unwrap();
        assert_eq!(r.output_len(3600), 5000);
        let x = sine(360.0, 5.0, 10.0, 1000.0);
        let y = r.process(&x);
        assert_eq!(y.len(), 5000);
        let expected = sine(500.0, 5.0, 10.0, 1000.0);
        let worst = y[500..4500]
            .iter()
            .zip(&expected[500..4500])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1.0, "worst deviation {worst} uV of 1000");
    }

    #[test]
    fn aliases_are_suppressed_when_downsampling() {
        // 400 Hz at 1000 Hz would fold to 100 Hz at 500 Hz; 200 Hz at 500 Hz folds to 56 Hz at 256 Hz.
        for (from, to, hz, alias) in [(1000.0, 500.0, 400.0, 100.0), (500.0, 256.0, 200.0, 56.0)] {
            let r = Resampler::new(from, to).unwrap();
            let y = r.process(&sine(from, hz, 8.0, 1000.0));
            let alias_db = 20.0 * (amplitude_at(&y, to, alias) / 1000.0).log10();
            assert!(
                alias_db < -60.0,
                "{from}->{to}: alias at {alias} Hz is {alias_db:.1} dB"
            );
        }
    }

    #[test]
    fn dc_offset_passes_without_edge_transients() {
        let r = Resampler::new(250.0, 500.0).unwrap();
        let y = r.process(&vec![300_000.0; 2500]);
        assert!(y.iter().all(|v| (v - 300_000.0).abs() < 1.0));
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert!(
            Resampler::new(130.0, 500.0)
                .unwrap()
                .process(&[])
                .is_empty()
        );
    }
}
