//! Signal quality per lead and per window: a numeric index in [0, 1] and the reasons behind it.
//!
//! Quality is judged on the unfiltered signal at the device rate (a railed or wandering lead
//! looks harmless after the high-pass), per device channel, and then carried to the model's
//! lead order: a derived lead is only as good as the worst lead it is computed from.
//!
//! High-frequency noise is measured after the mains notch of the deployment's filter: hum that
//! the notch removes does not spoil a lead.
//!
//! A lead is *usable* when it shows none of the issues below; a window is reportable only when
//! every required lead is usable, too little of it was interpolated, and its index reaches the
//! threshold. Anything else must produce a "signal quality too poor" result, never a report.

use serde::{Deserialize, Serialize};

use crate::dsp::filter::{FilterChain, FilterSpec};
use crate::dsp::leads::{LeadMapper, LeadStatus};
use crate::ecg::{Lead, Recording};

/// Limits that decide the issues; embedded in the preprocessing spec of a model bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityThresholds {
    /// Robust peak-to-peak amplitude (microvolts) below which a lead is flat.
    pub flat_uv: f64,
    /// Fraction of samples stuck at the lead's extreme value above which it is railed.
    pub railed_fraction: f64,
    /// Shortest run of identical samples, in seconds, that counts as stuck.
    pub railed_run_seconds: f64,
    /// High-frequency noise (RMS estimate, microvolts) at which a lead is unusable; the index
    /// falls linearly from a third of this value.
    pub noise_uv: f64,
    /// Baseline excursion (microvolts, below about 1 Hz) at which a lead is unusable; the index
    /// falls linearly from half of this value.
    pub wander_uv: f64,
    /// Robust peak-to-peak amplitude (microvolts) above which a lead is implausible.
    pub max_amplitude_uv: f64,
    /// Fraction of lead-off-flagged frames above which a lead counts as off.
    pub lead_off_fraction: f64,
    /// Largest fraction of a window that may be interpolated across gaps.
    pub max_interpolated_fraction: f64,
    /// Smallest window index that may be reported.
    pub min_index: f64,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            // A low-voltage limb lead (a finding, not a fault) can measure 30-50 uV end to end;
            // a disconnected or digitally zeroed lead measures its noise floor, a few uV.
            flat_uv: 20.0,
            railed_fraction: 0.02,
            railed_run_seconds: 0.02,
            noise_uv: 60.0,
            wander_uv: 2000.0,
            max_amplitude_uv: 10_000.0,
            lead_off_fraction: 0.0,
            max_interpolated_fraction: 0.05,
            min_index: 0.5,
        }
    }
}

/// Something wrong with one lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadIssue {
    /// Neither measured nor derivable from the device's leads.
    Missing,
    /// The device flagged the electrode as off.
    LeadOff,
    /// No signal: robust amplitude below `flat_uv`.
    Flat,
    /// Samples stuck at the extreme of the range (amplifier saturation).
    Railed,
    /// High-frequency noise (muscle, poor contact) at or above `noise_uv`.
    HighFrequencyNoise,
    /// Baseline wander at or above `wander_uv`.
    BaselineWander,
    /// Amplitude no heart produces.
    ImplausibleAmplitude,
    /// Samples that are not numbers or infinite (a WFDB "no sample" value, a device scale that
    /// overflows): the model must never see them.
    NonFinite,
}

/// Why a window is (or would be) rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum QualityReason {
    /// A lead has an issue; `required` says whether the model needs that lead.
    Lead {
        /// The lead, in the model's order.
        lead: Lead,
        /// What is wrong.
        issue: LeadIssue,
        /// Whether this lead is required (then the window is not reportable).
        required: bool,
    },
    /// Too much of the window was interpolated across gaps.
    InterpolatedGaps {
        /// Interpolated fraction of the window.
        fraction: f64,
    },
    /// The window index is below `min_index`.
    LowIndex {
        /// The window's index.
        index: f64,
    },
}

impl QualityReason {
    /// True when this reason alone makes a window unreportable.
    pub fn blocks_report(&self) -> bool {
        match self {
            QualityReason::Lead { required, .. } => *required,
            QualityReason::InterpolatedGaps { .. } | QualityReason::LowIndex { .. } => true,
        }
    }
}

impl std::fmt::Display for LeadIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeadIssue::Missing => "missing",
            LeadIssue::LeadOff => "lead off",
            LeadIssue::Flat => "flat",
            LeadIssue::Railed => "railed",
            LeadIssue::HighFrequencyNoise => "noisy",
            LeadIssue::BaselineWander => "baseline wander",
            LeadIssue::ImplausibleAmplitude => "implausible amplitude",
            LeadIssue::NonFinite => "non-finite samples",
        })
    }
}

impl std::fmt::Display for QualityReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QualityReason::Lead {
                lead,
                issue,
                required,
            } => {
                write!(
                    f,
                    "{lead} {issue}{}",
                    if *required { " (required)" } else { "" }
                )
            }
            QualityReason::InterpolatedGaps { fraction } => {
                write!(f, "{:.0}% interpolated across gaps", fraction * 100.0)
            }
            QualityReason::LowIndex { index } => write!(f, "quality index {index:.2} too low"),
        }
    }
}

/// Measurements behind one lead's verdict (all in microvolts unless named otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadMetrics {
    /// Robust peak-to-peak amplitude (1st to 99th percentile) after removing the baseline.
    pub amplitude_uv: f64,
    /// Robust RMS estimate of high-frequency noise (from second differences).
    pub noise_uv: f64,
    /// Robust excursion of the baseline (1 s moving average).
    pub wander_uv: f64,
    /// Fraction of samples stuck at the lead's extreme value.
    pub railed_fraction: f64,
    /// Fraction of frames the device flagged lead-off.
    pub lead_off_fraction: f64,
}

/// The verdict on one lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadQuality {
    /// The lead.
    pub lead: Lead,
    /// 1 = clean, 0 = unusable.
    pub index: f64,
    /// What is wrong (empty when usable).
    pub issues: Vec<LeadIssue>,
    /// The measurements (of the worst source lead, for a derived lead).
    pub metrics: LeadMetrics,
}

impl LeadQuality {
    /// True when the lead shows no issue.
    pub fn is_usable(&self) -> bool {
        self.issues.is_empty()
    }
}

/// The verdict on one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Mean index of the required leads, in [0, 1].
    pub index: f64,
    /// Per lead, in the model's lead order.
    pub per_lead: Vec<LeadQuality>,
    /// Every reason found; those that block a report are marked by [`QualityReason::blocks_report`].
    pub reasons: Vec<QualityReason>,
}

impl QualityReport {
    /// True when the window may be given to the model and reported.
    pub fn is_reportable(&self) -> bool {
        !self.reasons.iter().any(QualityReason::blocks_report)
    }

    /// The reasons that block a report, one phrase each: what a "no report" result lists.
    pub fn blocking_reasons(&self) -> Vec<String> {
        self.reasons
            .iter()
            .filter(|r| r.blocks_report())
            .map(ToString::to_string)
            .collect()
    }

    /// Records that `lead`'s model input holds non-finite values (found after filtering,
    /// resampling or scaling, where the raw signal looked finite): the lead becomes unusable
    /// and, when `required` names it (or is empty: every lead), the window unreportable.
    pub fn flag_non_finite(&mut self, lead: Lead, required: &[Lead]) {
        let is_required = |l: Lead| required.is_empty() || required.contains(&l);
        let Some(quality) = self.per_lead.iter_mut().find(|q| q.lead == lead) else {
            return;
        };
        if quality.issues.contains(&LeadIssue::NonFinite) {
            return;
        }
        quality.issues.push(LeadIssue::NonFinite);
        quality.index = 0.0;
        self.reasons.push(QualityReason::Lead {
            lead,
            issue: LeadIssue::NonFinite,
            required: is_required(lead),
        });
        let indices: Vec<f64> = self
            .per_lead
            .iter()
            .filter(|q| is_required(q.lead))
            .map(|q| q.index)
            .collect();
        if !indices.is_empty() {
            self.index = indices.iter().sum::<f64>() / indices.len() as f64;
        }
    }
}

/// What [`assess`] needs besides the raw signal.
#[derive(Debug, Clone, Copy)]
pub struct QualityContext<'a> {
    /// Fraction of frames flagged lead-off, per device channel.
    pub lead_off_fraction: &'a [f64],
    /// Fraction of the window interpolated across gaps.
    pub interpolated_fraction: f64,
    /// Maps device channels to the model's lead order.
    pub mapper: &'a LeadMapper,
    /// Leads the model needs; empty means every lead of the model's order.
    pub required: &'a [Lead],
    /// The deployment's filter: its notches are applied before noise is measured.
    pub filter: &'a FilterSpec,
    /// The limits.
    pub thresholds: &'a QualityThresholds,
}

/// Judges a window of raw device samples (`raw` in device channel order, microvolts).
pub fn assess(raw: &Recording, context: QualityContext<'_>) -> QualityReport {
    let th = context.thresholds;
    let notch = context.filter.notch_only().design(raw.sample_rate_hz).ok();
    let device: Vec<LeadQuality> = raw
        .samples_uv
        .rows()
        .into_iter()
        .zip(&raw.leads.0)
        .enumerate()
        .map(|(channel, (row, &lead))| {
            let samples: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
            let mut dehummed = row.to_vec();
            if let Some(design) = &notch {
                // One lead, contiguous: a valid block; a design error would have been caught.
                let _ = FilterChain::from_design(design.clone(), 1).process_block(&mut dehummed);
            }
            let dehummed: Vec<f64> = dehummed.into_iter().map(f64::from).collect();
            let signal = LeadSignal {
                raw: &samples,
                dehummed: &dehummed,
                sample_rate_hz: raw.sample_rate_hz,
                lead_off_fraction: context
                    .lead_off_fraction
                    .get(channel)
                    .copied()
                    .unwrap_or(0.0),
            };
            judge_lead(lead, &signal, th)
        })
        .collect();

    let mask = context.mapper.mask();
    let mut per_lead = Vec::with_capacity(mask.leads.len());
    for (i, (&lead, status)) in mask.leads.0.iter().zip(&mask.status).enumerate() {
        let sources: Vec<&LeadQuality> = context
            .mapper
            .sources(i)
            .filter_map(|c| device.get(c))
            .collect();
        let worst = sources
            .iter()
            .min_by(|a, b| a.index.total_cmp(&b.index))
            .copied();
        let quality = match (status, worst) {
            (LeadStatus::Missing, _) | (_, None) => LeadQuality {
                lead,
                index: 0.0,
                issues: vec![LeadIssue::Missing],
                metrics: LeadMetrics::default(),
            },
            (_, Some(worst)) => {
                let mut issues: Vec<LeadIssue> = Vec::new();
                for issue in sources.iter().flat_map(|q| &q.issues) {
                    if !issues.contains(issue) {
                        issues.push(*issue);
                    }
                }
                LeadQuality {
                    lead,
                    index: worst.index,
                    issues,
                    metrics: worst.metrics.clone(),
                }
            }
        };
        per_lead.push(quality);
    }

    let is_required = |lead: Lead| context.required.is_empty() || context.required.contains(&lead);
    let mut reasons: Vec<QualityReason> = per_lead
        .iter()
        .flat_map(|q| {
            q.issues.iter().map(|&issue| QualityReason::Lead {
                lead: q.lead,
                issue,
                required: is_required(q.lead),
            })
        })
        .collect();
    // Required leads the model's order does not even contain count as missing.
    for &lead in context.required {
        if !mask.leads.0.contains(&lead) {
            reasons.push(QualityReason::Lead {
                lead,
                issue: LeadIssue::Missing,
                required: true,
            });
        }
    }
    let required: Vec<&LeadQuality> = per_lead.iter().filter(|q| is_required(q.lead)).collect();
    let index = if required.is_empty() {
        0.0
    } else {
        required.iter().map(|q| q.index).sum::<f64>() / required.len() as f64
    };
    if context.interpolated_fraction > th.max_interpolated_fraction {
        reasons.push(QualityReason::InterpolatedGaps {
            fraction: context.interpolated_fraction,
        });
    }
    if index < th.min_index {
        reasons.push(QualityReason::LowIndex { index });
    }
    QualityReport {
        index,
        per_lead,
        reasons,
    }
}

/// One device channel as quality sees it.
struct LeadSignal<'a> {
    /// Unfiltered samples.
    raw: &'a [f64],
    /// The same after the mains notch (noise is measured here).
    dehummed: &'a [f64],
    sample_rate_hz: f64,
    lead_off_fraction: f64,
}

/// Measures one device channel and names its issues.
fn judge_lead(lead: Lead, signal: &LeadSignal<'_>, th: &QualityThresholds) -> LeadQuality {
    let x = signal.raw;
    let lead_off_fraction = signal.lead_off_fraction;
    let finite = x.iter().all(|v| v.is_finite());
    // Measure what is left of a lead with non-finite samples, so its other issues still read
    // as measured (NaN would make every comparison below false).
    let (kept_raw, kept_dehummed): (Vec<f64>, Vec<f64>);
    let metrics = if finite {
        measure(signal, th)
    } else {
        kept_raw = x.iter().copied().filter(|v| v.is_finite()).collect();
        kept_dehummed = signal
            .dehummed
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        measure(
            &LeadSignal {
                raw: &kept_raw,
                dehummed: &kept_dehummed,
                ..*signal
            },
            th,
        )
    };
    let mut issues = Vec::new();
    if x.is_empty() {
        issues.push(LeadIssue::Missing);
    }
    if lead_off_fraction > th.lead_off_fraction {
        issues.push(LeadIssue::LeadOff);
    }
    if !finite {
        issues.push(LeadIssue::NonFinite);
    }
    if metrics.amplitude_uv > th.max_amplitude_uv {
        issues.push(LeadIssue::ImplausibleAmplitude);
    }
    if metrics.railed_fraction > th.railed_fraction {
        issues.push(LeadIssue::Railed);
    } else if metrics.amplitude_uv < th.flat_uv {
        issues.push(LeadIssue::Flat);
    }
    if metrics.noise_uv >= th.noise_uv {
        issues.push(LeadIssue::HighFrequencyNoise);
    }
    if metrics.wander_uv >= th.wander_uv {
        issues.push(LeadIssue::BaselineWander);
    }
    let index = if issues.is_empty() {
        falling(metrics.noise_uv, th.noise_uv / 3.0, th.noise_uv)
            * falling(metrics.wander_uv, th.wander_uv / 2.0, th.wander_uv)
    } else {
        0.0
    };
    LeadQuality {
        lead,
        index,
        issues,
        metrics,
    }
}

/// 1 up to `good`, 0 from `bad`, linear between.
fn falling(value: f64, good: f64, bad: f64) -> f64 {
    if value <= good {
        1.0
    } else if value >= bad {
        0.0
    } else {
        (bad - value) / (bad - good)
    }
}

fn measure(signal: &LeadSignal<'_>, th: &QualityThresholds) -> LeadMetrics {
    let (x, fs, lead_off_fraction) = (signal.raw, signal.sample_rate_hz, signal.lead_off_fraction);
    if x.len() < 3 {
        return LeadMetrics {
            lead_off_fraction,
            ..LeadMetrics::default()
        };
    }
    let baseline = moving_average(x, (fs.max(1.0)) as usize);
    let detrended: Vec<f64> = x.iter().zip(&baseline).map(|(a, b)| a - b).collect();
    let second_diff: Vec<f64> = signal
        .dehummed
        .windows(3)
        .map(|w| (w[2] - 2.0 * w[1] + w[0]).abs())
        .collect();
    // Median |second difference| of white noise with deviation s is 0.6745 * sqrt(6) * s.
    let noise_uv = percentile(&second_diff, 0.5) / (0.6745 * 6f64.sqrt());
    let run = ((th.railed_run_seconds * fs).round() as usize).max(3);
    LeadMetrics {
        amplitude_uv: percentile(&detrended, 0.99) - percentile(&detrended, 0.01),
        noise_uv,
        wander_uv: percentile(&baseline, 0.99) - percentile(&baseline, 0.01),
        railed_fraction: railed_fraction(x, run, th.flat_uv),
        lead_off_fraction,
    }
}

/// Centred moving average over `width` samples (shorter at the edges).
fn moving_average(x: &[f64], width: usize) -> Vec<f64> {
    let half = width.max(1) / 2;
    let mut prefix = Vec::with_capacity(x.len() + 1);
    prefix.push(0.0);
    let mut sum = 0.0;
    for v in x {
        sum += v;
        prefix.push(sum);
    }
    (0..x.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(x.len());
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// The `q` quantile (0..=1) by nearest rank; NaN-safe, 0 for no samples.
fn percentile(x: &[f64], q: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let mut v = x.to_vec();
    let k = ((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
    let (_, nth, _) = v.select_nth_unstable_by(k, f64::total_cmp);
    *nth
}

/// Fraction of samples in runs of at least `run` identical values at the lead's maximum or
/// minimum, at least `min_offset` away from the lead's median (0 when the lead never changes:
/// that is flat, not railed). A rail is away from the baseline: a noise-free signal resting on
/// an exactly constant baseline that happens to be its minimum is not railed.
fn railed_fraction(x: &[f64], run: usize, min_offset: f64) -> f64 {
    let (lo, hi) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    // NaN-safe: a lead without two distinct finite extremes cannot be railed.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return 0.0;
    }
    let median = percentile(x, 0.5);
    let mut stuck = 0usize;
    let mut start = 0usize;
    for i in 1..=x.len() {
        if i == x.len() || x[i] != x[start] {
            let len = i - start;
            if len >= run
                && (x[start] == lo || x[start] == hi)
                && (x[start] - median).abs() >= min_offset
            {
                stuck += len;
            }
            start = i;
        }
    }
    stuck as f64 / x.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::LeadSet;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::f64::consts::PI;

    const FS: f64 = 500.0;

    /// A square-ish QRS train at 72 bpm with a T wave and slow respiration: 10 s.
    fn ecg_like(offset: f64) -> Vec<f64> {
        (0..5000)
            .map(|i| {
                let t = i as f64 / FS;
                let phase = (t * 1.2).fract();
                let qrs = if phase < 0.04 { 1200.0 } else { 0.0 };
                let tw = 250.0 * (-((phase - 0.3) / 0.05).powi(2)).exp();
                offset + qrs + tw + 80.0 * (2.0 * PI * 0.25 * t).sin()
            })
            .collect()
    }

    fn recording(rows: Vec<Vec<f64>>, leads: &[Lead]) -> Recording {
        let n = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.into_iter().flatten().map(|v| v as f32).collect();
        Recording {
            sample_rate_hz: FS,
            leads: LeadSet(leads.to_vec()),
            samples_uv: ndarray::Array2::from_shape_vec((leads.len(), n), flat).unwrap(),
        }
    }

    fn judge(raw: &Recording, lead_off: &[f64], target: &LeadSet) -> QualityReport {
        let mapper = LeadMapper::new(&raw.leads, target);
        assess(
            raw,
            QualityContext {
                lead_off_fraction: lead_off,
                interpolated_fraction: 0.0,
                mapper: &mapper,
                required: &[],
                filter: &FilterSpec::default(),
                thresholds: &QualityThresholds::default(),
            },
        )
    }

    fn two_leads(second: Vec<f64>) -> Recording {
        recording(vec![ecg_like(-150_000.0), second], &[Lead::I, Lead::II])
    }

    fn target() -> LeadSet {
        LeadSet(vec![Lead::I, Lead::II])
    }

    #[test]
    fn clean_record_is_reportable_with_a_high_index() {
        let report = judge(&two_leads(ecg_like(20_000.0)), &[0.0, 0.0], &target());
        assert!(report.is_reportable(), "{:?}", report.reasons);
        assert!(report.index > 0.9, "index {}", report.index);
        assert!(report.reasons.is_empty());
    }

    #[test]
    fn noisy_lead_is_flagged_and_blocks_the_report() {
        let mut rng = StdRng::seed_from_u64(7);
        let noisy: Vec<f64> = ecg_like(0.0)
            .into_iter()
            .map(|v| v + 150.0 * (rng.random::<f64>() * 2.0 - 1.0) * 3f64.sqrt())
            .collect();
        let report = judge(&two_leads(noisy), &[0.0, 0.0], &target());
        assert!(!report.is_reportable());
        assert_eq!(
            report.per_lead[1].issues,
            vec![LeadIssue::HighFrequencyNoise]
        );
        assert!(report.per_lead[0].is_usable());
        assert!(report.index < 0.6, "index {}", report.index);
    }

    #[test]
    fn mild_noise_lowers_the_index_without_blocking() {
        let mut rng = StdRng::seed_from_u64(8);
        let mild: Vec<f64> = ecg_like(0.0)
            .into_iter()
            .map(|v| v + 35.0 * (rng.random::<f64>() * 2.0 - 1.0) * 3f64.sqrt())
            .collect();
        let report = judge(&two_leads(mild), &[0.0, 0.0], &target());
        let clean = judge(&two_leads(ecg_like(0.0)), &[0.0, 0.0], &target());
        assert!(report.is_reportable(), "{:?}", report.reasons);
        assert!(
            report.index < clean.index,
            "{} vs {}",
            report.index,
            clean.index
        );
    }

    #[test]
    fn lead_off_flag_blocks_the_report() {
        let report = judge(&two_leads(ecg_like(0.0)), &[0.0, 0.3], &target());
        assert!(!report.is_reportable());
        assert_eq!(report.per_lead[1].issues, vec![LeadIssue::LeadOff]);
        assert_eq!(report.per_lead[1].index, 0.0);
    }

    #[test]
    fn flat_lead_is_flagged() {
        let report = judge(&two_leads(vec![12_345.0; 5000]), &[0.0, 0.0], &target());
        assert!(!report.is_reportable());
        assert_eq!(report.per_lead[1].issues, vec![LeadIssue::Flat]);
    }

    #[test]
    fn a_low_voltage_lead_is_not_flat_but_a_noise_floor_is() {
        let mut rng = StdRng::seed_from_u64(3);
        let low_voltage: Vec<f64> = ecg_like(0.0)
            .into_iter()
            .map(|v| v * 0.03 + rng.random_range(-3.0..3.0))
            .collect();
        let report = judge(&two_leads(low_voltage), &[0.0, 0.0], &target());
        assert!(
            !report.per_lead[1].issues.contains(&LeadIssue::Flat),
            "{:?}",
            report.per_lead[1]
        );
        let noise_floor: Vec<f64> = (0..5000).map(|_| rng.random_range(-3.0..3.0)).collect();
        let report = judge(&two_leads(noise_floor), &[0.0, 0.0], &target());
        assert!(report.per_lead[1].issues.contains(&LeadIssue::Flat));
    }

    #[test]
    fn a_constant_baseline_at_the_minimum_is_not_a_rail() {
        // Noise-free, every wave upright: the baseline (0) is the lead's minimum for most of
        // the record; clipping the same lead at 400 uV is a rail.
        let upright: Vec<f64> = (0..5000)
            .map(|i| {
                let phase = (i as f64 / FS * 1.2).fract();
                if phase < 0.04 {
                    1200.0 * (phase / 0.04 * PI).sin()
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(railed_fraction(&upright, 10, 50.0), 0.0);
        let clipped: Vec<f64> = upright.iter().map(|v| v.min(400.0)).collect();
        assert!(railed_fraction(&clipped, 10, 50.0) > 0.02);
    }

    #[test]
    fn railed_lead_is_flagged() {
        let railed: Vec<f64> = ecg_like(0.0).into_iter().map(|v| v.min(400.0)).collect();
        let report = judge(&two_leads(railed), &[0.0, 0.0], &target());
        assert!(report.per_lead[1].issues.contains(&LeadIssue::Railed));
    }

    #[test]
    fn baseline_wander_and_implausible_amplitude_are_flagged() {
        let wander: Vec<f64> = ecg_like(0.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v + 3000.0 * (2.0 * PI * 0.15 * i as f64 / FS).sin())
            .collect();
        let huge: Vec<f64> = ecg_like(0.0).into_iter().map(|v| v * 20.0).collect();
        let report = judge(
            &recording(vec![wander, huge], &[Lead::I, Lead::II]),
            &[0.0, 0.0],
            &target(),
        );
        assert!(
            report.per_lead[0]
                .issues
                .contains(&LeadIssue::BaselineWander)
        );
        assert!(
            report.per_lead[1]
                .issues
                .contains(&LeadIssue::ImplausibleAmplitude)
        );
    }

    #[test]
    fn derived_lead_inherits_the_worst_source_and_missing_leads_block() {
        let report = judge(
            &two_leads(vec![0.0; 5000]),
            &[0.0, 0.0],
            &LeadSet(vec![Lead::I, Lead::III, Lead::V1]),
        );
        assert_eq!(report.per_lead[1].issues, vec![LeadIssue::Flat]);
        assert_eq!(report.per_lead[2].issues, vec![LeadIssue::Missing]);
        assert!(!report.is_reportable());
    }

    #[test]
    fn only_required_leads_block_the_report() {
        let raw = recording(vec![ecg_like(0.0)], &[Lead::I]);
        let mapper = LeadMapper::new(&raw.leads, &LeadSet::standard_12());
        let assess_with = |required: &[Lead]| {
            assess(
                &raw,
                QualityContext {
                    lead_off_fraction: &[0.0],
                    interpolated_fraction: 0.0,
                    mapper: &mapper,
                    required,
                    filter: &FilterSpec::default(),
                    thresholds: &QualityThresholds::default(),
                },
            )
        };
        let lead_i_only = assess_with(&[Lead::I]);
        assert!(lead_i_only.is_reportable());
        assert!(lead_i_only.blocking_reasons().is_empty());
        let twelve = assess_with(&[]);
        assert!(!twelve.is_reportable(), "a 12-lead model needs 12 leads");
        let blocking = twelve.blocking_reasons();
        assert_eq!(
            blocking.len(),
            twelve.reasons.iter().filter(|r| r.blocks_report()).count()
        );
        assert!(
            blocking.iter().any(|r| r.starts_with("II missing")),
            "{blocking:?}"
        );
    }

    #[test]
    fn a_non_finite_sample_is_named_and_blocks_the_report() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut lead_ii = ecg_like(0.0);
            lead_ii[100] = bad;
            let report = judge(&two_leads(lead_ii), &[0.0, 0.0], &target());
            assert!(!report.is_reportable());
            // Named for what it is; the rest of the lead is measured as the clean signal it is.
            assert_eq!(
                report.per_lead[1].issues,
                vec![LeadIssue::NonFinite],
                "{bad}"
            );
            assert!(report.per_lead[1].metrics.amplitude_uv > 1000.0);
            assert!(report.per_lead[0].is_usable());
            let reason = QualityReason::Lead {
                lead: Lead::II,
                issue: LeadIssue::NonFinite,
                required: true,
            };
            assert!(report.reasons.contains(&reason));
            assert_eq!(reason.to_string(), "II non-finite samples (required)");
        }
    }

    #[test]
    fn non_finite_model_input_found_later_is_flagged_once() {
        let mut report = judge(&two_leads(ecg_like(20_000.0)), &[0.0, 0.0], &target());
        assert!(report.is_reportable());
        report.flag_non_finite(Lead::II, &[Lead::I]);
        // Not required: noted, the report stands, the index of the required lead is kept.
        assert!(report.is_reportable());
        assert_eq!(report.per_lead[1].issues, vec![LeadIssue::NonFinite]);
        assert!(report.index > 0.9, "{}", report.index);
        report.flag_non_finite(Lead::I, &[]);
        report.flag_non_finite(Lead::I, &[]);
        assert!(!report.is_reportable());
        assert_eq!(report.reasons.len(), 2, "{:?}", report.reasons);
        assert_eq!(report.index, 0.0);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let report = judge(
            &recording(vec![vec![f64::NAN; 4]], &[Lead::I]),
            &[],
            &LeadSet(vec![Lead::I]),
        );
        assert!(!report.is_reportable());
        let empty = judge(
            &recording(vec![vec![]], &[Lead::I]),
            &[],
            &LeadSet(vec![Lead::I]),
        );
        assert!(!empty.is_reportable());
    }
}
