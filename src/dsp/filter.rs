//! The filter chain: Butterworth high-pass, mains notch (optionally its harmonics) and
//! Butterworth low-pass, built as a cascade of `biquad` second-order sections run in `f64`.
//!
//! `biquad` designs the sections; one kernel runs them. [`FilterChain`] keeps per-lead state
//! across blocks for the daemon (causal, no allocation per sample); [`filter_recording`] runs a
//! fresh chain over whole recordings for training. Both go through the same kernel, so they
//! agree bit for bit, and the kernel performs `biquad`'s Direct Form II Transposed arithmetic
//! term for term (a test holds it to `biquad::DirectForm2Transposed::run`).
//!
//! A chain settles on its first sample: its state starts as if that value had been present
//! forever, so a DC electrode offset does not ring through the high-pass (scipy's `sosfilt_zi`
//! scaled by the first sample does the same).
//!
//! A non-finite sample (NaN from a WFDB "no sample" value, an infinity from an absurd device
//! scale) is passed through unchanged and forgets that lead's state: the lead settles again on
//! its next finite sample, so one bad value spoils its own window (where signal quality refuses
//! it) but not the rest of the stream. The other leads are not touched.
//!
//! Zero-phase filtering ([`FilterSpec::zero_phase`]) runs the cascade forward and then backward
//! over a complete window. It doubles the attenuation in dB (corners become -6 dB points) and
//! removes phase distortion for ST analysis, at the cost of a whole window of latency: nothing
//! can be emitted until the window is complete, and the daemon filters each window on its own.

use biquad::{Coefficients, ToHertz, Type};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::dsp::config::DspConfig;
use crate::ecg::Recording;

/// Stages whose corner lies above this fraction of the sample rate are left out: the device's
/// own anti-aliasing already band-limits its signal there.
const MAX_CORNER_FRACTION_OF_RATE: f64 = 0.45;
/// Mains frequencies a notch may be centred on (harmonics go higher).
const MIN_MAINS_HZ: f64 = 10.0;
const MAX_MAINS_HZ: f64 = 100.0;
/// Notches are designed up to just below the Nyquist frequency (60 Hz mains at 130 Hz is real).
const MAX_NOTCH_FRACTION_OF_RATE: f64 = 0.49;

/// The filters a deployment (and a model bundle) asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// High-pass corner (-3 dB) in Hz; 0 for none.
    pub highpass_hz: f64,
    /// Mains frequency to notch in Hz (50 or 60); 0 for none.
    pub notch_hz: f64,
    /// Also notch the mains harmonics below the low-pass corner (below Nyquist without one).
    pub notch_harmonics: bool,
    /// Quality factor of each notch (centre frequency / -3 dB bandwidth).
    pub notch_q: f64,
    /// Low-pass corner (-3 dB) in Hz; 0 for none.
    pub lowpass_hz: f64,
    /// Butterworth order of the high-pass and low-pass (even: each 2 is one section).
    pub order: usize,
    /// Filter forward and backward over complete windows instead of causally.
    pub zero_phase: bool,
}

impl FilterSpec {
    /// The notch quality factor used unless a bundle says otherwise (1.7 Hz wide at 50 Hz).
    pub const DEFAULT_NOTCH_Q: f64 = 30.0;

    /// The filter settings of a daemon configuration.
    pub fn from_config(config: &DspConfig) -> Self {
        FilterSpec {
            highpass_hz: config.highpass_hz,
            notch_hz: config.notch_hz,
            notch_harmonics: config.notch_harmonics,
            notch_q: Self::DEFAULT_NOTCH_Q,
            lowpass_hz: config.lowpass_hz,
            order: config.filter_order,
            zero_phase: config.zero_phase,
        }
    }

    /// Only the notches of this spec (with every harmonic below Nyquist when harmonics are
    /// on): what signal quality removes before it measures noise.
    pub fn notch_only(&self) -> FilterSpec {
        FilterSpec {
            highpass_hz: 0.0,
            lowpass_hz: 0.0,
            zero_phase: false,
            ..self.clone()
        }
    }

    /// Designs the second-order sections for `sample_rate_hz`, in the order they run:
    /// high-pass, notches, low-pass.
    pub fn design(&self, sample_rate_hz: f64) -> Result<FilterDesign, FilterError> {
        if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
            return Err(FilterError::SampleRate(sample_rate_hz));
        }
        if self.order == 0 || !self.order.is_multiple_of(2) || self.order > 16 {
            return Err(FilterError::Order(self.order));
        }
        for corner in [self.highpass_hz, self.lowpass_hz] {
            if !(corner.is_finite() && corner >= 0.0) {
                return Err(FilterError::Corner(corner));
            }
        }
        let usable = |hz: f64| hz > 0.0 && hz < MAX_CORNER_FRACTION_OF_RATE * sample_rate_hz;
        let mut sections = Vec::new();
        if usable(self.highpass_hz) {
            for q in butterworth_qs(self.order) {
                sections.push(section(
                    Type::HighPass,
                    sample_rate_hz,
                    self.highpass_hz,
                    q,
                )?);
            }
        }
        if self.notch_hz != 0.0 {
            if !(MIN_MAINS_HZ..=MAX_MAINS_HZ).contains(&self.notch_hz) {
                return Err(FilterError::NotchFrequency(self.notch_hz));
            }
            if !(self.notch_q.is_finite() && self.notch_q > 0.0) {
                return Err(FilterError::NotchQ(self.notch_q));
            }
            let top = match (self.notch_harmonics, self.lowpass_hz > 0.0) {
                (false, _) => self.notch_hz,
                (true, true) => self.lowpass_hz,
                (true, false) => f64::INFINITY,
            };
            let mut hz = self.notch_hz;
            while hz <= top && hz < MAX_NOTCH_FRACTION_OF_RATE * sample_rate_hz {
                sections.push(section(Type::Notch, sample_rate_hz, hz, self.notch_q)?);
                hz += self.notch_hz;
            }
        }
        if usable(self.lowpass_hz) {
            for q in butterworth_qs(self.order) {
                sections.push(section(Type::LowPass, sample_rate_hz, self.lowpass_hz, q)?);
            }
        }
        Ok(FilterDesign {
            sample_rate_hz,
            sections,
        })
    }
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec::from_config(&DspConfig::default())
    }
}

/// Q factors of the second-order sections of an even-order Butterworth filter.
fn butterworth_qs(order: usize) -> impl Iterator<Item = f64> {
    let n = order as f64;
    (1..=order / 2).map(move |k| {
        let theta = (2.0 * k as f64 - 1.0) * std::f64::consts::PI / (2.0 * n);
        1.0 / (2.0 * theta.cos())
    })
}

fn section(kind: Type<f64>, fs: f64, f0: f64, q: f64) -> Result<Coefficients<f64>, FilterError> {
    Coefficients::<f64>::from_params(kind, fs.hz(), f0.hz(), q).map_err(|e| FilterError::Design {
        frequency_hz: f0,
        sample_rate_hz: fs,
        reason: format!("{e:?}"),
    })
}

/// Why a filter could not be built or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// The sample rate is not a positive number.
    #[error("sample rate {0} Hz is not a positive number")]
    SampleRate(f64),
    /// The Butterworth order is not even or out of range.
    #[error("filter order {0} is not allowed (even, 2 to 16)")]
    Order(usize),
    /// A high-pass or low-pass corner is negative or not a number.
    #[error("corner frequency {0} Hz is not allowed (0 for none, or a positive frequency)")]
    Corner(f64),
    /// The mains frequency is neither 0 (off) nor a plausible mains frequency.
    #[error("notch at {0} Hz is not allowed (0 for none, or 10 to 100 Hz)")]
    NotchFrequency(f64),
    /// The notch quality factor is not a positive number.
    #[error("notch Q {0} is not a positive number")]
    NotchQ(f64),
    /// `biquad` rejected a section.
    #[error("cannot design a section at {frequency_hz} Hz for {sample_rate_hz} Hz: {reason}")]
    Design {
        /// Corner or centre frequency.
        frequency_hz: f64,
        /// Sample rate.
        sample_rate_hz: f64,
        /// The `biquad` error.
        reason: String,
    },
    /// An interleaved block does not hold whole frames.
    #[error("block of {samples} samples is not a whole number of {leads}-lead frames")]
    PartialFrame {
        /// Samples in the block.
        samples: usize,
        /// Leads the chain was built for.
        leads: usize,
    },
    /// A recording does not match the rate the chain was designed for.
    #[error("recording at {got} Hz given to a filter designed for {expected} Hz")]
    RateMismatch {
        /// The design rate.
        expected: f64,
        /// The recording's rate.
        got: f64,
    },
}

/// The designed sections for one sample rate.
#[derive(Debug, Clone)]
pub struct FilterDesign {
    /// The rate the sections were designed for.
    pub sample_rate_hz: f64,
    sections: Vec<Coefficients<f64>>,
}

impl FilterDesign {
    /// Number of second-order sections.
    pub fn len(&self) -> usize {
        self.sections.len()
    }

    /// True when no stage applies (every corner off or above the usable band).
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// The sections in scipy's `sos` layout: `[b0, b1, b2, 1, a1, a2]` per row.
    pub fn sos(&self) -> Vec<[f64; 6]> {
        self.sections
            .iter()
            .map(|c| [c.b0, c.b1, c.b2, 1.0, c.a1, c.a2])
            .collect()
    }
}

/// The streaming (causal) filter for one device: per-lead state that survives across blocks.
///
/// The state is laid out section-major and lead-minor, so each section updates every lead of a
/// frame in one loop the compiler vectorises. Per lead it performs exactly the arithmetic of
/// `biquad`'s `DirectForm2Transposed::run`, in the same order, so its output equals the batch
/// path's bit for bit. No allocation happens after construction.
#[derive(Debug, Clone)]
pub struct FilterChain {
    design: FilterDesign,
    leads: usize,
    /// `[section * leads + lead]` first and second state of each section.
    s1: Vec<f64>,
    s2: Vec<f64>,
    /// One frame in f64 (scratch).
    frame: Vec<f64>,
    /// Per lead: waiting for a finite sample to settle on (at the start, after [`reset`] and
    /// after a non-finite sample).
    ///
    /// [`reset`]: FilterChain::reset
    unsettled: Vec<bool>,
    /// Number of `true` entries in `unsettled`.
    pending: usize,
}

impl FilterChain {
    /// A chain for `leads` channels at `sample_rate_hz`.
    pub fn new(spec: &FilterSpec, sample_rate_hz: f64, leads: usize) -> Result<Self, FilterError> {
        Ok(FilterChain::from_design(
            spec.design(sample_rate_hz)?,
            leads,
        ))
    }

    /// A chain for `leads` channels running an existing design.
    pub fn from_design(design: FilterDesign, leads: usize) -> Self {
        let states = design.len() * leads;
        FilterChain {
            design,
            leads,
            s1: vec![0.0; states],
            s2: vec![0.0; states],
            frame: vec![0.0; leads],
            unsettled: vec![true; leads],
            pending: leads,
        }
    }

    /// The designed sections.
    pub fn design(&self) -> &FilterDesign {
        &self.design
    }

    /// Filters an interleaved block in place (frame `t` holds one sample per lead).
    ///
    /// Non-finite samples come out unchanged and reset their lead (see the module
    /// documentation); every other sample goes through the same arithmetic whatever the block
    /// boundaries, so streaming and batch agree bit for bit.
    pub fn process_block(&mut self, interleaved: &mut [f32]) -> Result<(), FilterError> {
        let n = self.leads;
        if n == 0 || !interleaved.len().is_multiple_of(n) {
            return Err(FilterError::PartialFrame {
                samples: interleaved.len(),
                leads: n,
            });
        }
        let frames = interleaved.len() / n;
        let all_finite = |frame: &[f32]| frame.iter().all(|v| v.is_finite());
        let mut t = 0;
        while t < frames {
            let frame = &mut interleaved[t * n..(t + 1) * n];
            if self.pending > 0 || !all_finite(frame) {
                self.step_frame(frame);
                t += 1;
                continue;
            }
            // Every lead settled and this frame finite: run the vectorised kernel up to the
            // next frame holding a non-finite sample.
            let end = (t + 1..frames)
                .find(|&u| !all_finite(&interleaved[u * n..(u + 1) * n]))
                .unwrap_or(frames);
            run_frames(
                &self.design.sections,
                &mut self.s1,
                &mut self.s2,
                &mut self.frame,
                &mut interleaved[t * n..end * n],
            );
            t = end;
        }
        Ok(())
    }

    /// One frame lead by lead: settles leads waiting for a finite sample, passes non-finite
    /// samples through and marks their lead unsettled, filters the rest exactly as
    /// [`run_frames`] does.
    fn step_frame(&mut self, frame: &mut [f32]) {
        let n = self.leads;
        for (lead, v) in frame.iter_mut().enumerate() {
            if !v.is_finite() {
                if !self.unsettled[lead] {
                    self.unsettled[lead] = true;
                    self.pending += 1;
                }
                continue;
            }
            let mut x = f64::from(*v);
            if self.unsettled[lead] {
                self.settle_lead(lead, x);
                self.unsettled[lead] = false;
                self.pending -= 1;
            }
            for (k, c) in self.design.sections.iter().enumerate() {
                let i = k * n + lead;
                df2t(c, &mut x, &mut self.s1[i], &mut self.s2[i]);
            }
            *v = x as f32;
        }
    }

    /// Forgets every lead's state (after a gap too long to bridge): each lead settles again on
    /// its next finite sample.
    pub fn reset(&mut self) {
        self.unsettled.fill(true);
        self.pending = self.leads;
    }

    /// True while some lead waits for a finite sample to settle on.
    pub fn is_settling(&self) -> bool {
        self.pending > 0
    }

    /// Sets `lead`'s state to the steady state of the constant input `x`.
    fn settle_lead(&mut self, lead: usize, x: f64) {
        let n = self.leads;
        let mut x = x;
        for (k, c) in self.design.sections.iter().enumerate() {
            let (s1, s2, y) = steady_state(c, x);
            self.s1[k * n + lead] = s1;
            self.s2[k * n + lead] = s2;
            x = y;
        }
    }
}

/// The streaming kernel: every frame of `interleaved` through every section, all leads of a
/// section at once. Compiled for several instruction sets and chosen at run time; the
/// arithmetic (no fused multiply-add) is the same on each, so results do not depend on the CPU.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
fn run_frames(
    sections: &[Coefficients<f64>],
    s1: &mut [f64],
    s2: &mut [f64],
    frame: &mut [f64],
    interleaved: &mut [f32],
) {
    let n = frame.len();
    for samples in interleaved.chunks_exact_mut(n) {
        for (x, &v) in frame.iter_mut().zip(samples.iter()) {
            *x = f64::from(v);
        }
        let (x4, x_rest) = frame.as_chunks_mut::<LANES>();
        let states = s1.chunks_exact_mut(n).zip(s2.chunks_exact_mut(n));
        for (c, (s1, s2)) in sections.iter().zip(states) {
            let (a4, a_rest) = s1.as_chunks_mut::<LANES>();
            let (b4, b_rest) = s2.as_chunks_mut::<LANES>();
            for ((x, a), b) in x4.iter_mut().zip(a4).zip(b4) {
                for l in 0..LANES {
                    df2t(c, &mut x[l], &mut a[l], &mut b[l]);
                }
            }
            for ((x, a), b) in x_rest.iter_mut().zip(a_rest).zip(b_rest) {
                df2t(c, x, a, b);
            }
        }
        for (v, &x) in samples.iter_mut().zip(frame.iter()) {
            *v = x as f32;
        }
    }
}

/// Leads processed side by side in the kernel's inner loop.
const LANES: usize = 4;

/// One sample through one section: `biquad`'s `DirectForm2Transposed::run`, term for term.
#[inline(always)]
fn df2t(c: &Coefficients<f64>, x: &mut f64, s1: &mut f64, s2: &mut f64) {
    let y = *s1 + c.b0 * *x;
    *s1 = *s2 + c.b1 * *x - c.a1 * y;
    *s2 = c.b2 * *x - c.a2 * y;
    *x = y;
}

/// State `(s1, s2)` and output of a DF2T section fed the constant `x` forever.
fn steady_state(c: &Coefficients<f64>, x: f64) -> (f64, f64, f64) {
    let denominator = 1.0 + c.a1 + c.a2;
    let y = if denominator.abs() > f64::EPSILON {
        (c.b0 + c.b1 + c.b2) / denominator * x
    } else {
        0.0
    };
    let s2 = c.b2 * x - c.a2 * y;
    let s1 = c.b1 * x - c.a1 * y + s2;
    (s1, s2, y)
}

/// Filters a whole recording (the batch path): causal like [`FilterChain`], or forward and
/// backward when `spec.zero_phase` is set.
pub fn filter_recording(
    spec: &FilterSpec,
    recording: &Recording,
) -> Result<Recording, FilterError> {
    let design = spec.design(recording.sample_rate_hz)?;
    let (leads, frames) = recording.samples_uv.dim();
    if leads == 0 || frames == 0 {
        return Ok(recording.clone());
    }
    // Frames x leads, interleaved like a device block.
    let mut interleaved: Vec<f32> = recording.samples_uv.t().iter().copied().collect();
    FilterChain::from_design(design.clone(), leads).process_block(&mut interleaved)?;
    if spec.zero_phase {
        reverse_frames(&mut interleaved, leads);
        FilterChain::from_design(design, leads).process_block(&mut interleaved)?;
        reverse_frames(&mut interleaved, leads);
    }
    let samples_uv = Array2::from_shape_vec((frames, leads), interleaved)
        .map_err(|_| FilterError::PartialFrame {
            samples: frames * leads,
            leads,
        })?
        .reversed_axes()
        .as_standard_layout()
        .into_owned();
    Ok(Recording {
        sample_rate_hz: recording.sample_rate_hz,
        leads: recording.leads.clone(),
        samples_uv,
    })
}

/// Reverses the order of the frames of an interleaved buffer.
fn reverse_frames(interleaved: &mut [f32], leads: usize) {
    interleaved.reverse();
    for frame in interleaved.chunks_exact_mut(leads) {
        frame.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::{Lead, LeadSet};
    use std::f64::consts::PI;

    /// Seconds left unmeasured at the end (where a backward pass starts).
    const TAIL_S: f64 = 10.0;

    /// Amplitude of the `hz` component of `y` over `seconds` ending [`TAIL_S`] before its end
    /// (lock-in detection).
    fn amplitude_at(y: &[f32], fs: f64, hz: f64, seconds: f64) -> f64 {
        let end = y.len() - (TAIL_S * fs) as usize;
        let n = ((seconds * fs) as usize).min(end);
        let start = end - n;
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &v) in y[start..end].iter().enumerate() {
            let phase = 2.0 * PI * hz * (start + i) as f64 / fs;
            s += f64::from(v) * phase.sin();
            c += f64::from(v) * phase.cos();
        }
        2.0 * (s * s + c * c).sqrt() / n as f64
    }

    /// Gain in dB the batch filter applies to a unit sine at `hz`, measured after it settles.
    fn gain_db(spec: &FilterSpec, fs: f64, hz: f64) -> f64 {
        let periods_to_settle = 40.0_f64.max(hz * 60.0);
        let seconds = (periods_to_settle / hz).min(200.0) + 20.0 + TAIL_S;
        let n = (seconds * fs) as usize;
        let x: Vec<f32> = (0..n)
            .map(|i| (1000.0 * (2.0 * PI * hz * i as f64 / fs).sin()) as f32)
            .collect();
        let rec = Recording {
            sample_rate_hz: fs,
            leads: LeadSet(vec![Lead::II]),
            samples_uv: ndarray::Array2::from_shape_vec((1, n), x).unwrap(),
        };
        let y = filter_recording(spec, &rec).unwrap();
        let y = y.samples_uv.row(0).to_vec();
        let measure_s = (20.0_f64).min((20.0 / hz).max(1.0));
        20.0 * (amplitude_at(&y, fs, hz, measure_s) / 1000.0).log10()
    }

    fn spec(highpass: f64, notch: f64, lowpass: f64, order: usize) -> FilterSpec {
        FilterSpec {
            highpass_hz: highpass,
            notch_hz: notch,
            notch_harmonics: false,
            notch_q: FilterSpec::DEFAULT_NOTCH_Q,
            lowpass_hz: lowpass,
            order,
            zero_phase: false,
        }
    }

    #[test]
    fn mains_notch_attenuates_at_least_40_db() {
        for (mains, fs) in [(50.0, 500.0), (60.0, 500.0), (50.0, 250.0), (60.0, 1000.0)] {
            let g = gain_db(&spec(0.5, mains, 150.0, 2), fs, mains);
            assert!(g <= -40.0, "{mains} Hz at {fs} Hz: {g:.1} dB");
        }
    }

    #[test]
    fn notch_harmonics_attenuate_each_harmonic_below_lowpass() {
        let mut s = spec(0.5, 50.0, 150.0, 2);
        s.notch_harmonics = true;
        for h in [50.0, 100.0, 150.0] {
            let g = gain_db(&s, 500.0, h);
            assert!(g <= -40.0, "{h} Hz: {g:.1} dB");
        }
        s.notch_harmonics = false;
        assert!(gain_db(&s, 500.0, 100.0) > -6.0);
    }

    #[test]
    fn corners_are_minus_3_db_for_each_order() {
        for order in [2, 4, 6] {
            let s = spec(0.5, 0.0, 40.0, order);
            for corner in [0.5, 40.0] {
                let g = gain_db(&s, 500.0, corner);
                assert!(
                    (g + 3.01).abs() < 0.25,
                    "order {order} at {corner} Hz: {g:.2} dB"
                );
            }
        }
        let diagnostic = spec(0.05, 0.0, 150.0, 2);
        for corner in [0.05, 150.0] {
            let g = gain_db(&diagnostic, 500.0, corner);
            assert!(
                (g + 3.01).abs() < 0.25,
                "diagnostic at {corner} Hz: {g:.2} dB"
            );
        }
    }

    #[test]
    fn passband_ripple_stays_within_half_a_db() {
        for order in [2, 4] {
            let s = spec(0.5, 50.0, 150.0, order);
            // Passband: 4x the high-pass corner to half the low-pass corner.
            for hz in [2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 75.0] {
                let g = gain_db(&s, 500.0, hz);
                assert!(g.abs() < 0.5, "order {order} at {hz} Hz: {g:.2} dB");
            }
        }
    }

    #[test]
    fn higher_order_attenuates_stopband_more() {
        let g2 = gain_db(&spec(0.0, 0.0, 40.0, 2), 500.0, 120.0);
        let g4 = gain_db(&spec(0.0, 0.0, 40.0, 4), 500.0, 120.0);
        assert!(
            g2 < -15.0 && g4 < g2 - 15.0,
            "order 2 {g2:.1} dB, order 4 {g4:.1} dB"
        );
    }

    #[test]
    fn zero_phase_squares_the_response_and_keeps_peaks_in_place() {
        let mut s = spec(0.5, 0.0, 40.0, 2);
        s.zero_phase = true;
        let g = gain_db(&s, 500.0, 40.0);
        assert!((g + 6.02).abs() < 0.4, "{g:.2} dB at the corner");
        // A symmetric pulse stays centred: no group delay.
        let n = 2000;
        let mut x = vec![0.0f32; n];
        for (i, v) in x.iter_mut().enumerate() {
            let t = (i as f64 - 1000.0) / 10.0;
            *v = (1000.0 * (-t * t).exp()) as f32;
        }
        let rec = Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet(vec![Lead::I]),
            samples_uv: ndarray::Array2::from_shape_vec((1, n), x).unwrap(),
        };
        let y = filter_recording(&s, &rec).unwrap();
        let peak = y
            .samples_uv
            .row(0)
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        assert_eq!(peak, 1000);
    }

    #[test]
    fn streaming_equals_batch_bit_for_bit_across_block_sizes() {
        let leads = 3;
        let n = 3001;
        let s = spec(0.05, 50.0, 100.0, 4);
        let mut data = ndarray::Array2::<f32>::zeros((leads, n));
        for ((l, i), v) in data.indexed_iter_mut() {
            let t = i as f64 / 500.0;
            *v = (300_000.0 * (l as f64 + 1.0)
                + 800.0 * (2.0 * PI * 1.3 * t).sin()
                + 200.0 * (2.0 * PI * 50.0 * t).sin()
                + 50.0 * ((i * 7919 + l * 104_729) % 97) as f64 / 97.0) as f32;
        }
        let rec = Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet(vec![Lead::I, Lead::II, Lead::V1]),
            samples_uv: data.clone(),
        };
        let batch = filter_recording(&s, &rec).unwrap();
        for block_frames in [1, 7, 250, 1000] {
            let mut chain = FilterChain::new(&s, 500.0, leads).unwrap();
            let mut interleaved: Vec<f32> = data.t().iter().copied().collect();
            for block in interleaved.chunks_mut(block_frames * leads) {
                chain.process_block(block).unwrap();
            }
            let streamed = ndarray::Array2::from_shape_vec((n, leads), interleaved)
                .unwrap()
                .reversed_axes();
            assert_eq!(streamed, batch.samples_uv, "block of {block_frames} frames");
        }
    }

    #[test]
    fn kernel_matches_biquad_direct_form_2_transposed_bit_for_bit() {
        use biquad::{Biquad, DirectForm2Transposed};
        let design = spec(0.05, 60.0, 150.0, 4).design(1000.0).unwrap();
        let x: Vec<f32> = (0..4000)
            .map(|i| (5000.0 + 900.0 * (i as f64 * 0.37).sin() + ((i * 7919) % 113) as f64) as f32)
            .collect();
        let mut ours = x.clone();
        FilterChain::from_design(design.clone(), 1)
            .process_block(&mut ours)
            .unwrap();
        let mut sections: Vec<DirectForm2Transposed<f64>> = Vec::new();
        let mut settle_input = f64::from(x[0]);
        for c in &design.sections {
            let mut df = DirectForm2Transposed::<f64>::new(*c);
            let (s1, s2, y) = steady_state(c, settle_input);
            (df.s1, df.s2) = (s1, s2);
            settle_input = y;
            sections.push(df);
        }
        let reference: Vec<f32> = x
            .iter()
            .map(|&v| sections.iter_mut().fold(f64::from(v), |y, df| df.run(y)) as f32)
            .collect();
        assert_eq!(ours, reference);
    }

    #[test]
    fn dc_offset_settles_instead_of_ringing() {
        let s = spec(0.05, 50.0, 40.0, 2);
        let mut chain = FilterChain::new(&s, 500.0, 1).unwrap();
        let mut block = vec![250_000.0f32; 1000];
        chain.process_block(&mut block).unwrap();
        assert!(
            block.iter().all(|v| v.abs() < 0.5),
            "max {:?}",
            block.iter().copied().map(f32::abs).reduce(f32::max)
        );
    }

    #[test]
    fn corners_above_the_usable_band_are_left_out() {
        let design = spec(0.5, 60.0, 150.0, 2).design(130.0).unwrap();
        // High-pass + 60 Hz notch survive at 130 Hz; the 150 Hz low-pass cannot exist there.
        assert_eq!(design.len(), 2);
        assert!(spec(0.5, 50.0, 40.0, 3).design(500.0).is_err());
        assert!(spec(0.5, 50.0, 40.0, 2).design(0.0).is_err());
        assert!(spec(0.5, 1e-300, 0.0, 2).design(500.0).is_err());
        assert!(spec(0.5, f64::NAN, 40.0, 2).design(500.0).is_err());
        assert!(spec(-1.0, 50.0, 40.0, 2).design(500.0).is_err());
    }

    /// Three leads of a wandering, humming signal with a DC offset, `frames` long.
    fn three_leads(frames: usize) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_fn((3, frames), |(l, i)| {
            let t = i as f64 / 500.0;
            (20_000.0 * l as f64
                + 900.0 * (2.0 * PI * 1.1 * t).sin()
                + 150.0 * (2.0 * PI * 50.0 * t).sin()
                + 40.0 * ((i * 7919 + l * 104_729) % 89) as f64 / 89.0) as f32
        })
    }

    #[test]
    fn a_non_finite_sample_resets_only_its_lead_which_then_recovers() {
        let s = spec(0.5, 50.0, 40.0, 4);
        let clean = three_leads(3000);
        let batch = |data: &ndarray::Array2<f32>| {
            let rec = Recording {
                sample_rate_hz: 500.0,
                leads: LeadSet(vec![Lead::I, Lead::II, Lead::V1]),
                samples_uv: data.clone(),
            };
            filter_recording(&s, &rec).unwrap().samples_uv
        };
        let reference = batch(&clean);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut data = clean.clone();
            data[[0, 100]] = bad;
            let out = batch(&data);
            // The bad sample passes through as it came; nothing else is non-finite.
            assert_eq!(out[[0, 100]].to_bits(), bad.to_bits());
            let non_finite = out.iter().filter(|v| !v.is_finite()).count();
            assert_eq!(non_finite, 1, "{bad}");
            // The other leads never notice.
            assert_eq!(out.row(1), reference.row(1));
            assert_eq!(out.row(2), reference.row(2));
            // Before it, lead I is untouched; after it, lead I is a fresh chain settled on
            // sample 101, bit for bit.
            let before = ndarray::s![0, ..100];
            assert_eq!(out.slice(before), reference.slice(before));
            let tail = batch(&clean.slice(ndarray::s![.., 101..]).to_owned());
            assert_eq!(out.slice(ndarray::s![0, 101..]), tail.row(0));
            // ...which converges to the undisturbed output: the last second's error is a small
            // fraction of the first second's.
            let max_error = |range: std::ops::Range<usize>| {
                range
                    .map(|t| (out[[0, t]] - reference[[0, t]]).abs())
                    .fold(0.0f32, f32::max)
            };
            let (early, late) = (max_error(101..600), max_error(2500..3000));
            assert!(
                early > 10.0 && late < early * 1e-2,
                "{bad}: lead I off by {early} uV after the reset, {late} uV 5 s later"
            );
        }
    }

    #[test]
    fn streaming_with_non_finite_samples_equals_batch_across_block_sizes() {
        let s = spec(0.05, 50.0, 100.0, 2);
        let mut data = three_leads(1201);
        data[[0, 0]] = f32::NAN;
        data[[1, 250]] = f32::INFINITY;
        data[[1, 251]] = f32::NAN;
        data[[2, 600]] = f32::NAN;
        data[[0, 600]] = f32::NAN;
        let rec = Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet(vec![Lead::I, Lead::II, Lead::V1]),
            samples_uv: data.clone(),
        };
        let batch = filter_recording(&s, &rec).unwrap();
        assert_eq!(
            batch.samples_uv.iter().filter(|v| !v.is_finite()).count(),
            5
        );
        for block_frames in [1, 3, 250, 2000] {
            let mut chain = FilterChain::new(&s, 500.0, 3).unwrap();
            let mut interleaved: Vec<f32> = data.t().iter().copied().collect();
            for block in interleaved.chunks_mut(block_frames * 3) {
                chain.process_block(block).unwrap();
            }
            assert!(!chain.is_settling());
            let streamed = ndarray::Array2::from_shape_vec((1201, 3), interleaved)
                .unwrap()
                .reversed_axes();
            let same = streamed
                .iter()
                .zip(batch.samples_uv.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "block of {block_frames} frames");
        }
    }

    #[test]
    fn partial_frames_are_rejected() {
        let mut chain = FilterChain::new(&FilterSpec::default(), 500.0, 3).unwrap();
        assert!(matches!(
            chain.process_block(&mut [0.0; 4]),
            Err(FilterError::PartialFrame {
                samples: 4,
                leads: 3
            })
        ));
    }
}
