//! Beat analysis from the signal: QRS detection, heart rate, RR intervals and their
//! irregularity, QRS duration and the frontal-plane QRS axis.
//!
//! Detection is Pan-Tompkins-style on all usable leads at once: zero-phase band-passes (1-30 Hz
//! and 8-30 Hz), a derivative, squaring summed over leads, a 150 ms moving-window integration,
//! the geometric mean of the two bands' square-root envelopes, then peaks that stand above a
//! local adaptive threshold (a fraction of the typical beat height within +-4 s), respect a
//! 200 ms refractory period, are nearly as sharp as the typical beat (a slow P or T wave has
//! little slope above 8 Hz), are not T waves (Pan-Tompkins' rule) and spread over several leads
//! (a transient on one electrode does not).
//! Width and axis are measured on the median beat of the dominant morphology, so ectopic beats
//! and noise do not move them. Both bands are specs run by the shared filter chain
//! ([`crate::dsp::filter`]), zero-phase.

use crate::dsp::filter::{FilterError, FilterSpec, filter_recording};
use crate::ecg::{Lead, LeadSet, Recording};

/// Sample rates the analysis accepts, Hz.
pub const SAMPLE_RATE_RANGE_HZ: std::ops::RangeInclusive<f64> = 100.0..=2000.0;
/// Shortest recording analysed, seconds.
pub const MIN_SECONDS: f64 = 2.0;

/// Band of the detection signal. Wider than Pan-Tompkins' 5-15 Hz: the summed squared slope
/// of a 1-30 Hz signal separates QRS complexes (steep) from P and T waves (slow) by a factor of
/// about 20 in slope, and keeps wide ventricular beats, which have little energy above 15 Hz.
/// (Tried: a 5 Hz high-pass with Pan-Tompkins' half-height T-wave rule rejected T waves
/// taller than the QRS on MIT-BIH record 100 but missed the synthesizer's short-coupled
/// premature ventricular beats; not adopted.)
const DETECTION_BAND_HZ: (f64, f64) = (1.0, 30.0);
/// Band of the sharpness signal. A QRS complex keeps most of its slope above 8 Hz; P and T
/// waves (1-5 Hz) keep a few percent of theirs, so a T wave taller than a small QRS (a lead
/// near perpendicular to the QRS axis, hyperkalaemia, a young adult's lead II) still falls far
/// below it. Alone this band would drop wide ventricular beats (slope mostly at 3-8 Hz): the
/// detection envelope is the geometric mean of both bands' envelopes, where a wide beat keeps
/// about a third of a narrow beat's height and a T wave a tenth.
const SHARPNESS_BAND_HZ: (f64, f64) = (8.0, 30.0);
/// No beat follows another closer than this (the ventricles are refractory), seconds.
pub const REFRACTORY_S: f64 = 0.2;
/// Moving-window integration length, seconds.
const INTEGRATION_S: f64 = 0.15;
/// A peak is a beat when its envelope exceeds this fraction of the local typical beat.
const THRESHOLD_FRACTION: f32 = 0.25;
/// A peak this soon after a beat is a T wave when it is under `T_WAVE_FRACTION` of that
/// beat's height, seconds. (T waves reach about 0.1-0.2 of a QRS on this envelope, premature
/// ventricular complexes 0.35 and more.)
const T_WAVE_WINDOW_S: f64 = 0.36;
/// See [`T_WAVE_WINDOW_S`].
const T_WAVE_FRACTION: f32 = 0.3;
/// A peak is a slow wave (P or T), not a beat, when the share of its slope in the sharpness
/// band is under this fraction of the typical beat's share. (Measured over 50 ms at the
/// sharpest point near each envelope peak, relative to the record's narrow beats: the
/// synthesizer's premature ventricular beats 0.77-1.2; neurokit2's tall T waves 0.05-0.1, its
/// P waves 0.25, a P wave merged with the T wave before it at 110-130 bpm 0.42-0.47; tuned on
/// `scripts/beat_tuning.py`'s windows, none of them in the external evaluation set.)
const SHARPNESS_FRACTION: f64 = 0.6;
/// Integration length of the sharpness measure, seconds: short, so that a QRS close to a tall
/// T wave is not diluted by it.
const SHARPNESS_INTEGRATION_S: f64 = 0.05;
/// A peak whose energy comes this much from one lead is an electrode artefact...
const SINGLE_LEAD_SHARE: f64 = 0.5;
/// ...when at least this many leads are analysed.
const MIN_LEADS_FOR_SPREAD: usize = 4;
/// Half-width of the window defining the local typical beat, seconds.
const LOCAL_WINDOW_S: f64 = 4.0;
/// Spatial-velocity fraction that delimits the QRS on the median beat.
const QRS_EDGE_FRACTION: f32 = 0.1;
/// The velocity must stay below the edge level this long to end (or start) the QRS, seconds.
const QRS_QUIET_S: f64 = 0.01;

/// What the beat analysis found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BeatAnalysis {
    /// Sample index of every detected QRS (point of steepest spatial slope).
    pub r_peaks: Vec<usize>,
    /// Mean heart rate, beats per minute (none with fewer than two beats).
    pub heart_rate_bpm: Option<f32>,
    /// Successive RR intervals, ms.
    pub rr_ms: Vec<f32>,
    /// RMSSD of the RR intervals divided by their mean: ~0.01-0.05 in sinus rhythm, well above
    /// 0.1 in atrial fibrillation (none with fewer than three beats).
    pub rr_irregularity: Option<f32>,
    /// QRS duration of the dominant beat, ms (none when no stable beat was found).
    pub qrs_ms: Option<f32>,
    /// Frontal-plane QRS axis, degrees in (-180, 180] (none without leads I and aVF or II).
    pub axis_deg: Option<f32>,
}

/// Why a recording could not be analysed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BeatError {
    /// Sample rate outside the supported range.
    #[error("sample rate {0} Hz is outside the supported 100-2000 Hz")]
    SampleRate(f64),
    /// Recording too short to find beats.
    #[error("recording of {0:.2} s is shorter than the {MIN_SECONDS} s beat analysis needs")]
    TooShort(f64),
    /// No lead carries a usable signal (all flat, railed or missing).
    #[error("no lead carries a usable signal")]
    NoUsableLead,
    /// The shared filters refused the detection or measurement band.
    #[error("beat analysis filter")]
    Filter(#[from] FilterError),
}

/// [`analyze`] for a live window or a training record, where a failure is a missing
/// measurement, not an error: none (logged at debug) when a sample is not finite (beats timed
/// around a gap the analysis zero-fills would be numbers, and wrong) or the analysis fails.
pub fn analyze_finite(recording: &Recording) -> Option<BeatAnalysis> {
    if recording.samples_uv.iter().any(|v| !v.is_finite()) {
        tracing::debug!("no beat analysis for a window with non-finite samples");
        return None;
    }
    analyze(recording)
        .inspect_err(|e| tracing::debug!(error = %e, "no beat analysis for this window"))
        .ok()
}

/// Detects beats and measures rate, rhythm regularity, QRS width and axis.
pub fn analyze(recording: &Recording) -> Result<BeatAnalysis, BeatError> {
    let fs = recording.sample_rate_hz;
    let leads = usable_leads(recording)?;
    let r_peaks = detect(&leads, fs)?;
    let rr_ms: Vec<f32> = r_peaks
        .windows(2)
        .map(|w| ((w[1] - w[0]) as f64 * 1000.0 / fs) as f32)
        .collect();
    let mean_rr = (!rr_ms.is_empty()).then(|| rr_ms.iter().sum::<f32>() / rr_ms.len() as f32);
    let rr_irregularity = (rr_ms.len() >= 2).then(|| {
        let sq: f32 = rr_ms.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
        (sq / (rr_ms.len() - 1) as f32).sqrt() / mean_rr.unwrap_or(1.0)
    });
    let template = MedianBeat::build(recording, &leads, &r_peaks, fs)?;
    let qrs = template.as_ref().and_then(|t| t.qrs_bounds(fs));
    let qrs_ms = qrs.map(|(on, off)| ((off - on) as f64 * 1000.0 / fs) as f32);
    let axis_deg = template
        .as_ref()
        .zip(qrs)
        .and_then(|(t, (on, off))| t.axis(on, off, fs));
    Ok(BeatAnalysis {
        r_peaks,
        heart_rate_bpm: mean_rr.map(|rr| 60_000.0 / rr),
        rr_ms,
        rr_irregularity,
        qrs_ms,
        axis_deg,
    })
}

/// One lead prepared for analysis.
struct LeadSignal {
    /// Lead identity (row in the recording).
    row: usize,
    lead: Lead,
    /// Samples with NaN replaced by the lead's median, mean removed, in uV.
    samples: Vec<f64>,
}

/// The leads that carry signal: finite, not flat, not railed. Independent leads are preferred
/// (I, II, V1-V6) so the augmented leads do not count twice.
fn usable_leads(recording: &Recording) -> Result<Vec<LeadSignal>, BeatError> {
    let fs = recording.sample_rate_hz;
    if !SAMPLE_RATE_RANGE_HZ.contains(&fs) {
        return Err(BeatError::SampleRate(fs));
    }
    let n = recording.samples_uv.ncols();
    if (n as f64) < MIN_SECONDS * fs {
        return Err(BeatError::TooShort(n as f64 / fs));
    }
    let independent = |l: Lead| !matches!(l, Lead::III | Lead::AVR | Lead::AVL | Lead::AVF);
    let all: Vec<LeadSignal> = (0..recording.leads.len())
        .filter_map(|row| usable_lead(recording, row))
        .collect();
    let has_independent = all.iter().any(|l| independent(l.lead));
    let chosen: Vec<LeadSignal> = all
        .into_iter()
        .filter(|l| !has_independent || independent(l.lead))
        .collect();
    if chosen.is_empty() {
        Err(BeatError::NoUsableLead)
    } else {
        Ok(chosen)
    }
}

/// Row `row` of `recording` with its mean removed (non-finite samples as 0), when at least
/// half its samples are finite and it moves (flat or railed leads have almost no
/// sample-to-sample change); none otherwise.
fn usable_lead(recording: &Recording, row: usize) -> Option<LeadSignal> {
    let n = recording.samples_uv.ncols();
    let lead = *recording.leads.0.get(row)?;
    let data = recording.samples_uv.row(row);
    let finite: Vec<f64> = data
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    if finite.len() < n / 2 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let samples: Vec<f64> = data
        .iter()
        .map(|&v| {
            if v.is_finite() {
                f64::from(v) - mean
            } else {
                0.0
            }
        })
        .collect();
    let moving = samples
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() > 0.5)
        .count();
    (moving > n / 20).then_some(LeadSignal { row, lead, samples })
}

/// The detection band, a spec for the shared filters ([`crate::dsp::filter`]): zero-phase
/// 1-30 Hz (see [`DETECTION_BAND_HZ`]).
pub const DETECTION_BAND: FilterSpec = FilterSpec {
    highpass_hz: DETECTION_BAND_HZ.0,
    notch_hz: 0.0,
    notch_harmonics: false,
    notch_q: FilterSpec::DEFAULT_NOTCH_Q,
    lowpass_hz: DETECTION_BAND_HZ.1,
    order: 2,
    zero_phase: true,
};

/// The sharpness band's high-pass, a spec for the shared filters, run on the detection band's
/// output (so the band is 8-30 Hz with the mains notches, for one filter more per lead):
/// zero-phase 8 Hz (see [`SHARPNESS_BAND_HZ`]).
pub const SHARPNESS_HIGHPASS: FilterSpec = FilterSpec {
    highpass_hz: SHARPNESS_BAND_HZ.0,
    lowpass_hz: 0.0,
    ..DETECTION_BAND
};

/// The measurement band for QRS width and axis: zero-phase 0.5-40 Hz.
pub const MEASUREMENT_BAND: FilterSpec = FilterSpec {
    highpass_hz: 0.5,
    lowpass_hz: 40.0,
    ..DETECTION_BAND
};

/// Mains frequencies notched before detection and measurement (mains slope would otherwise
/// rival the QRS of a low-voltage record and widen the measured QRS); a notch at or above the
/// usable band of the sample rate is left out by the shared filter design.
const MAINS_HZ: [f64; 2] = [50.0, 60.0];

/// `signals` (rows of one rate) through `band` and the [`MAINS_HZ`] notches of the shared
/// filter chain, zero-phase.
fn band_pass(signals: &[&[f64]], fs: f64, band: &FilterSpec) -> Result<Vec<Vec<f64>>, BeatError> {
    let mut recording = filtered(signals, fs, band)?;
    for mains in MAINS_HZ {
        let notch = FilterSpec {
            highpass_hz: 0.0,
            lowpass_hz: 0.0,
            notch_hz: mains,
            ..band.clone()
        };
        recording = filter_recording(&notch, &recording)?;
    }
    Ok(rows_of(&recording))
}

/// `signals` (rows of one rate) through `spec` alone, as a recording.
fn filtered(signals: &[&[f64]], fs: f64, spec: &FilterSpec) -> Result<Recording, BeatError> {
    let n = signals.first().map_or(0, |s| s.len());
    let samples_uv = ndarray::Array2::from_shape_fn((signals.len(), n), |(r, t)| {
        signals[r].get(t).copied().unwrap_or(0.0) as f32
    });
    let recording = Recording {
        sample_rate_hz: fs,
        // The lead names do not matter to the filters.
        leads: LeadSet(vec![Lead::II; signals.len()]),
        samples_uv,
    };
    Ok(filter_recording(spec, &recording)?)
}

/// The rows of a recording as `f64` vectors.
fn rows_of(recording: &Recording) -> Vec<Vec<f64>> {
    recording
        .samples_uv
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

/// QRS detection on the prepared leads; returns sorted sample indices.
fn detect(leads: &[LeadSignal], fs: f64) -> Result<Vec<usize>, BeatError> {
    let n = leads.first().map_or(0, |l| l.samples.len());
    let rows: Vec<&[f64]> = leads.iter().map(|l| l.samples.as_slice()).collect();
    let banded = band_pass(&rows, fs, &DETECTION_BAND)?;
    // Band-pass, derivative, squaring, summed over leads.
    let mut energy = vec![0.0f64; n];
    // Per-lead running sums of the same energy, to see how a peak spreads over the leads.
    let mut lead_prefix: Vec<Vec<f64>> = Vec::with_capacity(leads.len());
    for bp in &banded {
        let mut prefix = vec![0.0f64; n + 1];
        for t in 0..n {
            let d = if t >= 1 && t + 1 < n {
                (bp[t + 1] - bp[t - 1]) * 0.5
            } else {
                0.0
            };
            energy[t] += d * d;
            prefix[t + 1] = prefix[t] + d * d;
        }
        lead_prefix.push(prefix);
    }
    // Share of a window's energy carried by its strongest lead: a QRS shows on many leads, an
    // electrode-motion transient on a precordial electrode on one.
    let strongest_share = |a: usize, b: usize| -> f64 {
        let per_lead = lead_prefix.iter().map(|p| p[b] - p[a]);
        let (max, sum) = per_lead.fold((0.0f64, 0.0f64), |(m, s), e| (m.max(e), s + e));
        if sum > 0.0 { max / sum } else { 1.0 }
    };
    // The same slope energy in the sharpness band.
    let banded_rows: Vec<&[f64]> = banded.iter().map(Vec::as_slice).collect();
    let mut sharp_energy = vec![0.0f64; n];
    for bp in rows_of(&filtered(&banded_rows, fs, &SHARPNESS_HIGHPASS)?) {
        for t in 1..n.saturating_sub(1) {
            let d = (bp[t + 1] - bp[t - 1]) * 0.5;
            sharp_energy[t] += d * d;
        }
    }
    // Moving-window integration, centred; the envelope is the geometric mean of both bands'.
    let half = ((INTEGRATION_S * fs) as usize / 2).max(1);
    let (broad, sharp) = (integrate(&energy, half), integrate(&sharp_energy, half));
    let envelope: Vec<f32> = broad
        .iter()
        .zip(&sharp)
        .map(|(b, s)| ((b * s).sqrt().sqrt()) as f32)
        .collect();

    // Candidate peaks: local maxima that are the largest within the refractory period.
    let refractory = (REFRACTORY_S * fs) as usize;
    // The integration is unreliable within half a window of either end.
    let mut candidates: Vec<usize> = (half.max(1)..n.saturating_sub(half.max(1)))
        .filter(|&t| envelope[t] > envelope[t - 1] && envelope[t] >= envelope[t + 1])
        .collect();
    candidates.sort_by(|&a, &b| envelope[b].total_cmp(&envelope[a]));
    let mut kept: Vec<usize> = Vec::new();
    let mut taken = vec![false; n];
    for c in candidates {
        let (a, b) = (c.saturating_sub(refractory), (c + refractory).min(n - 1));
        if !taken[a..=b].iter().any(|&x| x) {
            kept.push(c);
            taken[c] = true;
        }
    }
    kept.sort_unstable();

    // Local adaptive threshold: a fraction of the typical beat height within +-4 s. With at
    // least one beat every 2 s, the k-th largest peak in a window of 2k seconds is a beat.
    let window = (LOCAL_WINDOW_S * fs) as usize;
    let heights: Vec<f32> = kept.iter().map(|&c| envelope[c]).collect();
    // Sharpness: the share of a peak's slope in the sharpness band; the typical beat's is the
    // median over the tallest peaks, one per 2 s (beats, by the same argument as above).
    let short = ((SHARPNESS_INTEGRATION_S * fs) as usize / 2).max(1);
    let (broad_short, sharp_short) = (integrate(&energy, short), integrate(&sharp_energy, short));
    let sharpness = |c: usize| {
        let (a, b) = (c.saturating_sub(half), (c + half).min(n - 1));
        let t = (a..=b)
            .max_by(|&x, &y| sharp_short[x].total_cmp(&sharp_short[y]))
            .unwrap_or(c);
        (sharp_short[t] / broad_short[t].max(f64::MIN_POSITIVE)).sqrt()
    };
    let typical_sharpness = {
        let mut tallest: Vec<usize> = (0..kept.len()).collect();
        tallest.sort_by(|&a, &b| heights[b].total_cmp(&heights[a]));
        tallest.truncate(((n as f64 / fs / 2.0) as usize).max(1));
        let mut shares: Vec<f64> = tallest.iter().map(|&i| sharpness(kept[i])).collect();
        shares.sort_by(f64::total_cmp);
        shares.get(shares.len() / 2).copied().unwrap_or(0.0)
    };
    let mut beats: Vec<(usize, f32)> = Vec::new();
    for (i, &c) in kept.iter().enumerate() {
        let mut local: Vec<f32> = kept
            .iter()
            .zip(&heights)
            .filter(|&(&o, _)| o + window >= c && o <= c + window)
            .map(|(_, &h)| h)
            .collect();
        local.sort_by(|a, b| b.total_cmp(a));
        // The window is shorter at the ends of the recording.
        let span_s = ((c + window).min(n) - c.saturating_sub(window)) as f64 / fs;
        let k = ((span_s / 2.0) as usize).min(local.len()).max(1) - 1;
        let typical = local.get(k).copied().unwrap_or(0.0);
        if heights[i] < THRESHOLD_FRACTION * typical || heights[i] <= 0.0 {
            continue;
        }
        if sharpness(c) < SHARPNESS_FRACTION * typical_sharpness {
            continue;
        }
        if leads.len() >= MIN_LEADS_FOR_SPREAD
            && strongest_share(c.saturating_sub(half), (c + half + 1).min(n)) > SINGLE_LEAD_SHARE
        {
            continue;
        }
        // Pan-Tompkins T-wave discrimination.
        if let Some(&(prev, prev_height)) = beats.last()
            && ((c - prev) as f64) < T_WAVE_WINDOW_S * fs
            && heights[i] < T_WAVE_FRACTION * prev_height
        {
            continue;
        }
        beats.push((c, heights[i]));
    }

    // Fiducial: the steepest point (largest summed energy) near each envelope peak.
    let search = half;
    let fiducials = beats.into_iter().map(|(c, _)| {
        let (a, b) = (c.saturating_sub(search), (c + search).min(n - 1));
        (a..=b)
            .max_by(|&x, &y| energy[x].total_cmp(&energy[y]))
            .unwrap_or(c)
    });
    // The refractory period holds between fiducials too: a broad QRS envelope has several
    // local maxima, and one far enough from a sharp P wave's lets the P wave through. Of two
    // fiducials closer than the refractory period, the sharper one is the beat.
    let mut r_peaks: Vec<usize> = Vec::new();
    for f in fiducials {
        match r_peaks.last_mut() {
            Some(last) if f - *last < refractory => {
                if sharp_short[f] > sharp_short[*last] {
                    *last = f;
                }
            }
            _ => r_peaks.push(f),
        }
    }
    Ok(r_peaks)
}

/// Centred moving mean of `energy` over `2 * half + 1` samples (shorter at the ends).
fn integrate(energy: &[f64], half: usize) -> Vec<f64> {
    let n = energy.len();
    let mut prefix = vec![0.0f64; n + 1];
    for t in 0..n {
        prefix[t + 1] = prefix[t] + energy[t];
    }
    (0..n)
        .map(|t| {
            let (a, b) = (t.saturating_sub(half), (t + half + 1).min(n));
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect()
}

/// The median beat of the dominant morphology, per lead, around the fiducial points.
struct MedianBeat {
    /// Samples before the fiducial in the window.
    before: usize,
    /// Per analysed lead: (lead, median beat in uV after 0.5-40 Hz filtering).
    leads: Vec<(Lead, Vec<f64>)>,
}

impl MedianBeat {
    fn build(
        recording: &Recording,
        leads: &[LeadSignal],
        r_peaks: &[usize],
        fs: f64,
    ) -> Result<Option<MedianBeat>, BeatError> {
        let before = (0.25 * fs) as usize;
        let after = (0.35 * fs) as usize;
        let n = recording.samples_uv.ncols();
        let peaks: Vec<usize> = r_peaks
            .iter()
            .copied()
            .filter(|&p| p >= before && p + after < n)
            .collect();
        if peaks.is_empty() {
            return Ok(None);
        }
        // The analysed leads, plus leads I, II and aVF for the axis where they were not
        // analysed (aVF is not independent), when they pass the same usability test: an axis
        // from a flat lead I would be a confident +-90 degrees.
        let mut names: Vec<Lead> = leads.iter().map(|l| l.lead).collect();
        let mut extra: Vec<Vec<f64>> = Vec::new();
        for (row, &lead) in recording.leads.0.iter().enumerate() {
            if matches!(lead, Lead::AVF | Lead::II | Lead::I)
                && !names.contains(&lead)
                && leads.iter().all(|l| l.row != row)
                && let Some(usable) = usable_lead(recording, row)
            {
                names.push(lead);
                extra.push(usable.samples);
            }
        }
        let rows: Vec<&[f64]> = leads
            .iter()
            .map(|l| l.samples.as_slice())
            .chain(extra.iter().map(Vec::as_slice))
            .collect();
        let filtered: Vec<(Lead, Vec<f64>)> = names
            .into_iter()
            .zip(band_pass(&rows, fs, &MEASUREMENT_BAND)?)
            .collect();
        let median_of = |signal: &[f64], peaks: &[usize]| -> Vec<f64> {
            (0..before + after)
                .map(|k| {
                    let mut v: Vec<f64> = peaks.iter().map(|&p| signal[p - before + k]).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                })
                .collect()
        };
        // First pass over every beat, then keep the beats that resemble it (drops PVCs).
        let first: Vec<Vec<f64>> = filtered.iter().map(|(_, s)| median_of(s, &peaks)).collect();
        let similar: Vec<usize> = peaks
            .iter()
            .copied()
            .filter(|&p| {
                let (mut dot, mut a2, mut b2) = (0.0, 0.0, 0.0);
                for ((_, s), m) in filtered.iter().zip(&first) {
                    for (k, &mv) in m.iter().enumerate() {
                        let v = s[p - before + k];
                        dot += v * mv;
                        a2 += v * v;
                        b2 += mv * mv;
                    }
                }
                dot / (a2.sqrt() * b2.sqrt()).max(1e-9) > 0.8
            })
            .collect();
        let chosen = if similar.len() >= (peaks.len() + 1) / 3 {
            similar
        } else {
            peaks
        };
        Ok(Some(MedianBeat {
            before,
            leads: filtered
                .into_iter()
                .map(|(l, s)| {
                    let m = median_of(&s, &chosen);
                    (l, m)
                })
                .collect(),
        }))
    }

    /// QRS onset and offset (indices into the beat window) from the spatial velocity of the
    /// independent leads.
    fn qrs_bounds(&self, fs: f64) -> Option<(usize, usize)> {
        let len = self.leads.first()?.1.len();
        let independent: Vec<&Vec<f64>> = self
            .leads
            .iter()
            .filter(|(l, _)| !matches!(l, Lead::III | Lead::AVR | Lead::AVL | Lead::AVF))
            .map(|(_, s)| s)
            .collect();
        let velocity: Vec<f32> = (0..len)
            .map(|k| {
                if k == 0 || k + 1 >= len {
                    return 0.0;
                }
                independent
                    .iter()
                    .map(|s| ((s[k + 1] - s[k - 1]) * 0.5).powi(2))
                    .sum::<f64>()
                    .sqrt() as f32
            })
            .collect();
        let near = (0.06 * fs) as usize;
        let (a, b) = (
            self.before.saturating_sub(near),
            (self.before + near).min(len - 1),
        );
        let peak = (a..=b).max_by(|&x, &y| velocity[x].total_cmp(&velocity[y]))?;
        let level = velocity[peak] * QRS_EDGE_FRACTION;
        if level <= 0.0 {
            return None;
        }
        let quiet = ((QRS_QUIET_S * fs) as usize).max(1);
        let is_quiet_run = |from: usize, to: usize| velocity[from..to].iter().all(|&v| v < level);
        let mut onset = peak;
        while onset > quiet && !is_quiet_run(onset - quiet, onset) {
            onset -= 1;
        }
        let mut offset = peak;
        while offset + quiet < len && !is_quiet_run(offset, offset + quiet) {
            offset += 1;
        }
        (offset > onset).then_some((onset, offset))
    }

    /// Frontal QRS axis from the net QRS areas of leads I and aVF (aVF from II when needed).
    /// The area spans 10 ms beyond each QRS edge so low-amplitude initial and terminal forces
    /// count.
    fn axis(&self, onset: usize, offset: usize, fs: f64) -> Option<f32> {
        let margin = (0.01 * fs) as usize;
        let (from, to) = (onset.saturating_sub(margin), offset + margin);
        let area = |lead: Lead| -> Option<f64> {
            let (_, s) = self.leads.iter().find(|(l, _)| *l == lead)?;
            let base = s.get(from)?;
            Some(s.get(from..to)?.iter().map(|v| v - base).sum())
        };
        let i = area(Lead::I)?;
        let avf = area(Lead::AVF).or_else(|| Some(area(Lead::II)? - 0.5 * i))?;
        // aVF sees sqrt(3)/2 of the inferior component on Einthoven's triangle.
        let y = avf * 2.0 / 3f64.sqrt();
        Some(y.atan2(i).to_degrees() as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::LeadSet;

    fn flat(seconds: f64, fs: f64) -> Recording {
        Recording {
            sample_rate_hz: fs,
            leads: LeadSet::standard_12(),
            samples_uv: ndarray::Array2::zeros((12, (seconds * fs) as usize)),
        }
    }

    #[test]
    fn short_or_badly_sampled_recordings_are_refused() {
        assert!(matches!(
            analyze(&flat(1.0, 500.0)),
            Err(BeatError::TooShort(_))
        ));
        assert!(matches!(
            analyze(&flat(10.0, 50.0)),
            Err(BeatError::SampleRate(_))
        ));
    }

    /// The `dev` windows of neurokit2's "multileads" simulator in the external evaluation set
    /// (`models/external`: the split kept for tuning; its `test` windows are only ever
    /// scored): lead II with a small QRS beside P waves of about the same size and T waves
    /// five to ten times taller, as a 12-lead cart, a 3-lead monitor, a Holter and lead II alone.
    #[test]
    fn another_simulators_tall_t_waves_and_p_waves_are_not_counted_as_beats() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/external");
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("manifest.json")).expect("external manifest"),
        )
        .expect("manifest JSON");
        let windows: Vec<&serde_json::Value> = manifest["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .filter(|w| w["split"] == "dev" && w["source"] == "nk2-multileads")
            .collect();
        assert_eq!(windows.len(), 4, "the dev windows of nk2-multileads");
        let mut wrong = Vec::new();
        for w in windows {
            let name = w["record"].as_str().expect("record");
            let hea = dir.join("records").join(format!("{name}.hea"));
            let (_, selection) = crate::wfdb::read_standard_leads(&hea).expect("record");
            let expected = w["rate_bpm"].as_f64().expect("rate") as f32;
            let a = analyze(&selection.recording).expect("analysed");
            let hr = a.heart_rate_bpm.unwrap_or(0.0);
            let irregularity = a.rr_irregularity.unwrap_or(1.0);
            // Regular: well under the 0.2 at which a sinus claim is flagged as irregular.
            if (hr - expected).abs() >= 3.0 || irregularity >= 0.1 {
                wrong.push(format!(
                    "{name}: expected {expected} bpm, measured {hr:.1} bpm, RR irregularity \
                     {irregularity:.2}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn flat_leads_are_not_analysed() {
        assert_eq!(analyze(&flat(10.0, 500.0)), Err(BeatError::NoUsableLead));
    }

    #[test]
    fn the_detection_band_removes_dc_and_keeps_the_band() {
        let fs = 500.0;
        let x: Vec<f64> = (0..5000)
            .map(|t| 100.0 + (std::f64::consts::TAU * 10.0 * t as f64 / fs).sin())
            .collect();
        let y = band_pass(&[x.as_slice()], fs, &DETECTION_BAND)
            .unwrap()
            .remove(0);
        let mid = &y[1000..4000];
        let peak = mid.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!((0.9..1.1).contains(&peak), "10 Hz amplitude {peak}");
        assert!(y[..50].iter().all(|v| v.abs() < 1.5), "edge transient");
    }
}
