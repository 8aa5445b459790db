//! The randomised synthesizer: between-person and between-device variability drawn from
//! published adult ranges (cited in `docs/synth/README.md`, "Randomised synthesizer"), opt-in
//! through [`Variability::Literature`].
//!
//! It owns what the default ([`Variability::Fixed`]) leaves narrow: P, QRS and T amplitudes and
//! durations (tall T with T/R > 1 and small P included), QRS shape variants (qR, rS, RSR'),
//! heart orientation (frontal axis, rotation about the long axis), precordial electrode
//! placement, respiratory modulation of amplitude and RR, heart-rate variability, noise drawn
//! as the MIT-BIH Noise Stress Test types, and the device's acquisition chain (band and ADC).
//!
//! Its draws come from their own generator (seeded from the record seed and
//! [`VARIABILITY_SEED_TAG`]) and happen after the default draws, so the default mode draws
//! exactly what it always drew and a literature record keeps the conditions, rhythm class and
//! beat sequence seed of its default twin. Labels stay honest: only morphologically plain
//! models (no axis, block, hypertrophy, voltage, ST-T or infarct finding) are reoriented or
//! reshaped, their axis stays inside the normal -30..90 degrees with a margin, QRS stays narrow,
//! PR and QTc stay inside the normal ranges, and the voltage criteria of every condition are
//! re-checked with the electrodes as they were placed.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::SynthError;
use super::acquisition::{Acquisition, Adc};
use super::condition::{Condition, ConditionSet};
use super::geometry::{ELECTRODES, LEADS, Vec3, electrode_fields};
use super::morphology::{
    Anchor, BeatModel, Overrides, RhythmParams, WaveTemplate, area, lead_extremes, p_template,
    qrs_voltages_with, rotate_to_axis, u,
};
use crate::dsp::filter::{FilterSpec, filter_recording};
use crate::ecg::Recording;

/// Seed tag of the variability generator (ASCII "variable"), xor-ed into the record seed.
pub const VARIABILITY_SEED_TAG: u64 = 0x7661_7269_6162_6c65;

/// How widely a record's physiology and electrodes vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variability {
    /// The synthesizer's original ranges: every seed draws what it always drew.
    #[default]
    Fixed,
    /// Adult ranges from the literature (this module's constants).
    Literature,
    /// [`Variability::Literature`] and, in [`SMALL_II_QRS_FRACTION`] of the plain records, a
    /// QRS axis nearly perpendicular to lead II with the T axis where it usually is: a small
    /// lead-II QRS beside a T wave two to six times taller (what another simulator's lead II
    /// looks like, and some adults'). Its extra draws come after every literature draw: a
    /// record it does not reshape keeps its literature morphology.
    Wide,
}

/// PR interval of conducted sinus beats without AV block, s (normal 120-200 ms).
pub const PR_S: (f32, f32) = (0.12, 0.198);
/// P-wave duration, s (normal < 120 ms).
pub const P_DURATION_S: (f32, f32) = (0.08, 0.115);
/// P-wave peak in lead II, uV (normal < 0.25 mV; small P waves included).
pub const P_LEAD_II_UV: (f32, f32) = (40.0, 250.0);
/// QRS duration of narrow complexes, s (normal 80-110 ms; kept below 110).
pub const NARROW_QRS_S: (f32, f32) = (0.08, 0.108);
/// QTc without QT prolongation, s (normal 350-450 ms in men, 360-460 ms in women: the
/// overlap, so no drawn QTc is prolonged for either sex).
pub const QTC_S: (f32, f32) = (0.36, 0.45);
/// Frontal QRS axis of plain records, degrees (normal -30..90, 5 degrees of margin).
pub const QRS_AXIS_DEG: (f32, f32) = (-25.0, 85.0);
/// Extra rotation about the long axis (moves the precordial transition), degrees.
pub const LONG_AXIS_TURN_DEG: (f32, f32) = (-20.0, 20.0);
/// Factor on the QRS amplitude of plain records before the voltage criteria are re-applied.
pub const QRS_GAIN: (f32, f32) = (0.75, 1.35);
/// Largest T-wave peak in a limb / precordial lead of an ordinary T wave, uV.
pub const T_MAX_UV: (f32, f32) = (500.0, 1000.0);
/// Fraction of plain records with a tall T wave (T/R > 1 in lead II).
pub const TALL_T_FRACTION: f64 = 0.15;
/// T/R ratio in lead II of a tall-T record.
pub const TALL_T_RATIO: (f32, f32) = (1.05, 1.6);
/// Largest T-wave peak in a limb / precordial lead of a tall T wave, uV.
pub const TALL_T_MAX_UV: (f32, f32) = (900.0, 1500.0);
/// [`Variability::Wide`]: fraction of plain records with a small lead-II QRS and a tall T.
pub const SMALL_II_QRS_FRACTION: f64 = 0.1;
/// Frontal QRS axis of such a record, degrees: within 35 degrees of perpendicular to lead II
/// (+60), inside the normal axis (above -30) with a margin.
pub const SMALL_II_QRS_AXIS_DEG: (f32, f32) = (-25.0, -5.0);
/// Its frontal T axis, degrees: the usual adult T axis. The frontal QRS-T angle is then 35-75
/// degrees, inside the range of adults without heart disease (controls of the Oregon SUDS
/// study: mean 51, 95 % range 5-97 degrees; over 90 is the risk marker).
pub const SMALL_II_T_AXIS_DEG: (f32, f32) = (30.0, 50.0);
/// Its lead II T/R ratio (the T wave stays within [`TALL_T_MAX_UV`]).
pub const SMALL_II_T_RATIO: (f32, f32) = (2.0, 6.0);
/// Respiration rate, Hz (the high-frequency HRV band, 0.15-0.4 Hz).
pub const RESP_HZ: (f32, f32) = (0.15, 0.4);
/// Respiratory sinus arrhythmia outside the sinus-arrhythmia condition: relative RR amplitude.
pub const RSA_FRACTION: (f32, f32) = (0.01, 0.04);
/// Mayer-wave (0.1 Hz, low-frequency band) relative RR amplitude.
pub const LF_FRACTION: (f32, f32) = (0.0, 0.015);
/// Beat-to-beat relative RR jitter (sd).
pub const JITTER_FRACTION: (f32, f32) = (0.002, 0.01);
/// Respiratory modulation of the beat amplitude: relative amplitude (a few % to ~15 %).
pub const RESP_AMPLITUDE_FRACTION: (f32, f32) = (0.02, 0.15);
/// Precordial electrode displacement: horizontal angle, degrees.
pub const PRECORDIAL_ANGLE_DEG: f32 = 8.0;
/// Precordial electrode displacement: vertical tilt of the lead field (about one intercostal
/// space up or down).
pub const PRECORDIAL_TILT: f32 = 0.08;
/// Precordial electrode distance to the heart: relative gain.
pub const PRECORDIAL_GAIN: (f32, f32) = (0.85, 1.15);

/// Conditions whose QRS orientation, shape or repolarisation carries the finding: models with
/// any of them keep the default morphology (only their intervals and rhythm vary).
const SHAPE_FINDINGS: [Condition; 15] = [
    Condition::LeftBundleBranchBlock,
    Condition::RightBundleBranchBlock,
    Condition::LeftAnteriorFascicularBlock,
    Condition::LeftAxisDeviation,
    Condition::RightAxisDeviation,
    Condition::LeftVentricularHypertrophy,
    Condition::LowQrsVoltage,
    Condition::StElevationInferior,
    Condition::StElevationAnterior,
    Condition::StElevationLateral,
    Condition::StDepression,
    Condition::TWaveInversion,
    Condition::OldInferiorInfarct,
    Condition::OldAnteriorInfarct,
    Condition::VentricularPaced,
];

/// Index of lead II in the standard order.
const LEAD_II: usize = 1;

impl Variability {
    /// The electrodes' lead fields: nominal, or with the precordial electrodes displaced.
    pub fn electrode_fields(self, rng: &mut impl Rng) -> [Vec3; ELECTRODES] {
        let mut fields = electrode_fields();
        if self.is_literature() {
            for f in fields.iter_mut().skip(3) {
                let gain = f.norm();
                let turned = f
                    .rotate_horizontal(u(rng, -PRECORDIAL_ANGLE_DEG, PRECORDIAL_ANGLE_DEG))
                    .scale(1.0 / gain.max(1e-6));
                *f = Vec3::new(
                    turned.x,
                    turned.y + u(rng, -PRECORDIAL_TILT, PRECORDIAL_TILT),
                    turned.z,
                )
                .scale(gain * u(rng, PRECORDIAL_GAIN.0, PRECORDIAL_GAIN.1));
            }
        }
        fields
    }

    /// Varies a freshly drawn model in place (nothing in the default mode). `fields` are the
    /// electrodes the record is acquired with.
    pub fn vary(
        self,
        model: &mut BeatModel,
        overrides: &Overrides,
        fields: &[Vec3; ELECTRODES],
        rng: &mut impl Rng,
    ) {
        if self.is_literature() {
            vary_model(model, overrides, fields, self == Variability::Wide, rng);
        }
    }

    /// Whether the literature ranges apply ([`Variability::Literature`] or wider).
    pub fn is_literature(self) -> bool {
        self != Variability::Fixed
    }
}

/// Draws the literature ranges into `model` (and, when `wide`, [`Variability::Wide`]'s).
fn vary_model(
    model: &mut BeatModel,
    overrides: &Overrides,
    fields: &[Vec3; ELECTRODES],
    wide: bool,
    rng: &mut impl Rng,
) {
    use Condition::*;
    let conditions = model.conditions.clone();
    let has = |c: Condition| conditions.has(c);
    vary_rhythm(&mut model.rhythm, has(SinusArrhythmia), rng);
    let plain = !SHAPE_FINDINGS.iter().any(|&c| has(c)) && model.qrs.len() == 3;

    // Every value is drawn whether or not it is used, so the draws line up across conditions.
    let pr_s = u(rng, PR_S.0, PR_S.1);
    let p_duration_s = u(rng, P_DURATION_S.0, P_DURATION_S.1);
    let p_lead_ii = u(rng, P_LEAD_II_UV.0, P_LEAD_II_UV.1);
    let qrs_s = u(rng, NARROW_QRS_S.0, NARROW_QRS_S.1);
    let qtc_s = u(rng, QTC_S.0, QTC_S.1);
    let shape = rng.random_range(0..100u32);
    let shape_size = u(rng, 0.0, 1.0);
    let axis = u(rng, QRS_AXIS_DEG.0, QRS_AXIS_DEG.1);
    let turn = u(rng, LONG_AXIS_TURN_DEG.0, LONG_AXIS_TURN_DEG.1);
    let gain = u(rng, QRS_GAIN.0, QRS_GAIN.1);
    let tall_t = rng.random_bool(TALL_T_FRACTION);
    let t_ratio = u(rng, TALL_T_RATIO.0, TALL_T_RATIO.1);
    let t_gain = u(rng, 0.6, 1.6);
    let tall_limb_qrs = u(rng, 680.0, 800.0);
    // Wide only, after every literature draw.
    let small_ii = wide && rng.random_bool(SMALL_II_QRS_FRACTION);
    let (small_ii_axis, small_ii_t_axis, small_ii_ratio) = if wide {
        (
            u(rng, SMALL_II_QRS_AXIS_DEG.0, SMALL_II_QRS_AXIS_DEG.1),
            u(rng, SMALL_II_T_AXIS_DEG.0, SMALL_II_T_AXIS_DEG.1),
            u(rng, SMALL_II_T_RATIO.0, SMALL_II_T_RATIO.1),
        )
    } else {
        (axis, 0.0, t_ratio)
    };
    let small_ii = small_ii && overrides.qrs_axis_deg.is_none();

    // Intervals and the P wave.
    if !has(FirstDegreeAvBlock) && overrides.pr_ms.is_none() {
        model.pr_s = pr_s;
    }
    model.p_duration_s = p_duration_s;
    let p_axis = area(&model.p_wave).frontal_deg();
    let ectopic_axis = area(&model.ectopic_p).frontal_deg();
    let mut p_wave = p_template(model.pr_s, p_duration_s, 100.0);
    rotate_to_axis(&mut p_wave, p_axis);
    let mut ectopic_p = p_template(model.pr_s, p_duration_s, 100.0);
    rotate_to_axis(&mut ectopic_p, ectopic_axis);
    let (_, p_hi) = lead_extremes(&p_wave, fields, 0.0);
    let p_scale = if has(LowQrsVoltage) {
        // Low voltage attenuates every wave: keep the P wave as small as it was drawn.
        let (_, old_hi) = lead_extremes(&model.p_wave, fields, 0.0);
        old_hi[LEAD_II] / p_hi[LEAD_II].max(1.0)
    } else {
        p_lead_ii / p_hi[LEAD_II].max(1.0)
    };
    scale_waves(&mut p_wave, p_scale);
    scale_waves(&mut ectopic_p, p_scale);
    model.p_wave = p_wave;
    model.ectopic_p = ectopic_p;
    if !has(ProlongedQt) && overrides.qtc_ms.is_none() {
        model.qtc_s = qtc_s;
    }

    if plain {
        // QRS duration: stretch the complex, move the ST plateau with its end.
        if overrides.qrs_ms.is_none() {
            let k = qrs_s / model.qrs_s;
            for w in &mut model.qrs {
                w.offset_s *= k;
                w.sigma_s *= k;
            }
            for w in model
                .st_t
                .iter_mut()
                .filter(|w| w.anchor == Anchor::QrsOnset)
            {
                w.offset_s += qrs_s - model.qrs_s;
            }
            model.qrs_s = qrs_s;
        }
        reshape_qrs(&mut model.qrs, model.qrs_s, shape, shape_size);
        // Orientation: about the long axis, then the frontal axis; the T wave follows.
        for w in model.qrs.iter_mut().chain(model.st_t.iter_mut()) {
            w.vector = w.vector.rotate_horizontal(turn);
        }
        let target = overrides
            .qrs_axis_deg
            .unwrap_or(if small_ii { small_ii_axis } else { axis });
        let before = area(&model.qrs).frontal_deg();
        rotate_to_axis(&mut model.qrs, target);
        for w in &mut model.st_t {
            w.vector = w.vector.rotate_frontal(target - before);
        }
        if small_ii {
            // The T wave keeps the usual T axis instead of following the QRS.
            let t_axis = area(&model.st_t).frontal_deg();
            for w in &mut model.st_t {
                w.vector = w.vector.rotate_frontal(small_ii_t_axis - t_axis);
            }
        }
        if overrides.qrs_gain.is_none() {
            scale_waves(&mut model.qrs, gain);
        }
    }
    let breathing = model.rhythm.resp_amplitude_fraction;
    enforce_voltage(&conditions, &mut model.qrs, fields, breathing);
    if plain {
        let (tall, ratio) = if small_ii {
            (true, small_ii_ratio)
        } else {
            (tall_t, t_ratio)
        };
        shape_t(model, fields, tall, ratio, t_gain, tall_limb_qrs);
    }
    let p_deg = area(&model.p_wave).frontal_deg();
    model.axes.p_deg = model.axes.p_deg.map(|_| p_deg);
    if model.rhythm.rhythm != VentricularPaced {
        model.axes.qrs_deg = area(&model.qrs).frontal_deg();
        model.axes.t_deg = area(&model.st_t).frontal_deg();
    }
}

/// Heart-rate variability and respiration.
fn vary_rhythm(rhythm: &mut RhythmParams, sinus_arrhythmia: bool, rng: &mut impl Rng) {
    rhythm.resp_hz = u(rng, RESP_HZ.0, RESP_HZ.1);
    let rsa = u(rng, RSA_FRACTION.0, RSA_FRACTION.1);
    if !sinus_arrhythmia {
        rhythm.rsa_fraction = rsa;
    }
    rhythm.lf_fraction = u(rng, LF_FRACTION.0, LF_FRACTION.1);
    rhythm.jitter_fraction = u(rng, JITTER_FRACTION.0, JITTER_FRACTION.1);
    rhythm.resp_amplitude_fraction = u(rng, RESP_AMPLITUDE_FRACTION.0, RESP_AMPLITUDE_FRACTION.1);
}

/// The QRS shape variants of a normal (septal, main, terminal) complex of duration `d`:
/// `shape` < 50 keeps it (qRs), < 70 deepens the septal q (qR in I, aVL, V5-V6), < 85 deepens
/// the terminal S (rS in the right precordial and RS in the inferior leads), otherwise adds a
/// small late right-anterior force inside the narrow QRS (rSr' in V1, the normal variant).
fn reshape_qrs(qrs: &mut Vec<WaveTemplate>, d: f32, shape: u32, size: f32) {
    let main = qrs.get(1).map_or(0.0, |w| w.vector.norm());
    match shape {
        0..50 => {}
        50..70 => {
            if let Some(septal) = qrs.first_mut() {
                septal.vector = septal.vector.scale(1.6 + 0.8 * size);
            }
        }
        70..85 => {
            if let Some(terminal) = qrs.get_mut(2) {
                terminal.vector = terminal.vector.scale(1.5 + 0.5 * size);
            }
        }
        _ => qrs.push(WaveTemplate::at_onset(
            0.86 * d,
            0.06 * d,
            Vec3::new(-0.6, 0.05, 0.8)
                .unit()
                .scale((0.12 + 0.13 * size) * main),
        )),
    }
}

/// Re-applies the voltage criteria of `conditions` with the electrodes as placed: low voltage
/// stays low (at the top of a breath too: `breathing` is the respiratory amplitude change),
/// hypertrophy meets a criterion, everything else keeps ordinary voltage.
fn enforce_voltage(
    conditions: &ConditionSet,
    qrs: &mut [WaveTemplate],
    fields: &[Vec3; ELECTRODES],
    breathing: f32,
) {
    let v = qrs_voltages_with(qrs, fields);
    if v.limb <= 0.0 || v.chest <= 0.0 || v.sokolow <= 0.0 {
        return;
    }
    let k = if conditions.has(Condition::LowQrsVoltage) {
        (440.0 / (1.0 + breathing) / v.limb)
            .min(900.0 / (1.0 + breathing) / v.chest)
            .min(1.0)
    } else if conditions.has(Condition::LeftVentricularHypertrophy) {
        if v.meets_lvh() {
            1.0
        } else {
            3900.0 / v.sokolow
        }
    } else if v.sokolow > 3300.0 {
        (3200.0 / v.sokolow).max(700.0 / v.limb)
    } else if v.limb < 650.0 {
        700.0 / v.limb
    } else {
        1.0
    };
    scale_waves(qrs, k);
}

/// Sizes the T wave of a plain model: an ordinary T within the usual limb and precordial
/// maxima, or a tall T (lead II T/R of `t_ratio`, the QRS brought down towards the ordinary
/// voltage floor first) within the tall-T maxima.
fn shape_t(
    model: &mut BeatModel,
    fields: &[Vec3; ELECTRODES],
    tall: bool,
    t_ratio: f32,
    t_gain: f32,
    tall_limb_qrs: f32,
) {
    let qt = model.qt_for_rr(1.0);
    let t_waves = |m: &BeatModel| -> Vec<WaveTemplate> {
        m.st_t
            .iter()
            .copied()
            .filter(|w| w.anchor == Anchor::TEnd)
            .collect()
    };
    let (limb_cap, chest_cap) = if tall {
        let v = qrs_voltages_with(&model.qrs, fields);
        if v.limb > tall_limb_qrs {
            scale_waves(&mut model.qrs, tall_limb_qrs / v.limb);
        }
        let (_, r_hi) = lead_extremes(&model.qrs, fields, 0.0);
        let (_, t_hi) = lead_extremes(&t_waves(&*model), fields, qt);
        if t_hi[LEAD_II] > 20.0 {
            let k = t_ratio * r_hi[LEAD_II].max(0.0) / t_hi[LEAD_II];
            scale_waves(&mut model.st_t, k);
        }
        TALL_T_MAX_UV
    } else {
        scale_waves(&mut model.st_t, t_gain);
        T_MAX_UV
    };
    let (t_lo, t_hi) = lead_extremes(&t_waves(&*model), fields, qt);
    let peak =
        |range: std::ops::Range<usize>| range.map(|i| t_hi[i].max(-t_lo[i])).fold(0.0f32, f32::max);
    let k = (limb_cap / peak(0..6).max(1.0))
        .min(chest_cap / peak(6..LEADS).max(1.0))
        .min(1.0);
    scale_waves(&mut model.st_t, k);
}

fn scale_waves(waves: &mut [WaveTemplate], k: f32) {
    for w in waves {
        w.vector = w.vector.scale(k);
    }
}

/// The frequency band of a device's signal path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// Diagnostic 12-lead carts: 0.05-150 Hz (AHA 2007 recommendations).
    Diagnostic,
    /// Bedside and ambulatory monitors: 0.5-40 Hz.
    Monitoring,
}

impl Band {
    /// High-pass and low-pass corners, Hz.
    pub fn corners_hz(self) -> (f64, f64) {
        match self {
            Band::Diagnostic => (0.05, 150.0),
            Band::Monitoring => (0.5, 40.0),
        }
    }
}

/// ADCs of real recordings: (uV per count, bits).
pub const ADCS: [(f32, u8); 4] = [
    // MIT-BIH Arrhythmia Database: 11 bits over 10 mV, 200 adu/mV.
    (5.0, 11),
    // PTB-XL: 16 bits, 1000 adu/mV.
    (1.0, 16),
    // PTB Diagnostic ECG Database: 16 bits over +-16.384 mV, 2000 adu/mV.
    (0.5, 16),
    // A 12-bit monitor front end at 2.44 uV (+-5 mV).
    (2.44, 12),
];

/// The signal path of a recording device after its electrodes: its band and its ADC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AcquisitionChain {
    /// Pass band.
    pub band: Band,
    /// Converter.
    pub adc: Adc,
}

impl AcquisitionChain {
    /// A chain at random: diagnostic or monitoring band (half each), one of [`ADCS`].
    pub fn draw(rng: &mut impl Rng) -> Self {
        let band = if rng.random_bool(0.5) {
            Band::Diagnostic
        } else {
            Band::Monitoring
        };
        let (uv_per_count, bits) = ADCS[rng.random_range(0..ADCS.len())];
        AcquisitionChain {
            band,
            adc: Adc { uv_per_count, bits },
        }
    }

    /// The filters of the band (second-order Butterworth high-pass and low-pass, causal as in a
    /// device; a corner above 0.45 of the sample rate is left to the anti-aliasing filter).
    pub fn filter(&self) -> FilterSpec {
        let (highpass_hz, lowpass_hz) = self.band.corners_hz();
        FilterSpec {
            highpass_hz,
            notch_hz: 0.0,
            notch_harmonics: false,
            notch_q: FilterSpec::DEFAULT_NOTCH_Q,
            lowpass_hz,
            order: 2,
            zero_phase: false,
        }
    }

    /// `recording` as the device stores it: filtered, quantised to whole counts and clipped to
    /// the converter's range.
    pub fn apply(&self, recording: &Recording) -> Result<Recording, SynthError> {
        let mut out = filter_recording(&self.filter(), recording).map_err(SynthError::Chain)?;
        let step = self.adc.uv_per_count.max(1e-6);
        let limit = step * ((1u64 << (self.adc.bits.clamp(2, 32) - 1)) - 1) as f32;
        out.samples_uv
            .mapv_inplace(|v| ((v / step).round() * step).clamp(-limit, limit));
        Ok(out)
    }
}

/// Noise as the MIT-BIH Noise Stress Test adds it: each of its three types (baseline wander,
/// muscle artefact, electrode motion) present in half the noisy records (at least one), each at
/// a severity drawn up to `max_severity`, mains interference in a quarter.
pub fn stress_test_noise(max_severity: f32, mains_hz: f32, rng: &mut impl Rng) -> Acquisition {
    let kinds = rng.random_range(1..8u8);
    let mains = rng.random_bool(0.25);
    let mut severity = |present: bool| {
        let s = u(rng, 0.05 * max_severity, max_severity);
        if present { s } else { 0.0 }
    };
    Acquisition {
        baseline_wander: severity(kinds & 1 != 0),
        emg: severity(kinds & 2 != 0),
        motion: severity(kinds & 4 != 0),
        mains: severity(mains),
        mains_hz,
        ..Acquisition::clean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::filter::FilterSpec;
    use crate::synth::stream::{EcgStream, StreamConfig};
    use crate::synth::{RecordSpec, SynthRecord, generate, generate_with};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn literature(list: &str, seed: u64) -> SynthRecord {
        let spec = RecordSpec::ten_seconds(ConditionSet::parse_list(list).unwrap());
        generate_with(&spec, Variability::Literature, seed).unwrap()
    }

    /// Peak of lead `lead` within `window_s` of each labelled beat's fiducial point, uV.
    fn peaks(rec: &SynthRecord, lead: usize, from_s: f64, to_s: f64) -> Vec<f32> {
        let fs = rec.recording.sample_rate_hz;
        let row = rec.recording.samples_uv.row(lead);
        rec.truth
            .beats
            .iter()
            .filter_map(|b| {
                let a = ((b.fiducial_s + from_s) * fs).round();
                let z = ((b.fiducial_s + to_s) * fs).round();
                (a >= 0.0 && (z as usize) < row.len()).then(|| {
                    ((a as usize)..(z as usize))
                        .map(|i| row[i])
                        .fold(f32::MIN, f32::max)
                })
            })
            .collect()
    }

    /// Median T/R ratio in lead II measured on the signal (R within 40 ms of the fiducial
    /// point, T from 150 ms after it to the end of QT).
    fn t_over_r(rec: &SynthRecord) -> f32 {
        let qt = f64::from(rec.truth.measurements.qt_ms) / 1000.0;
        let r = peaks(rec, LEAD_II, -0.04, 0.04);
        let t = peaks(rec, LEAD_II, 0.15, qt);
        let mut ratios: Vec<f32> = r
            .iter()
            .zip(&t)
            .filter(|(r, _)| **r > 1.0)
            .map(|(r, t)| t / r)
            .collect();
        ratios.sort_by(f32::total_cmp);
        ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
    }

    /// Frontal QRS axis measured on leads I and aVF (net QRS area of the first beat).
    fn measured_axis(rec: &SynthRecord) -> f32 {
        let fs = rec.recording.sample_rate_hz;
        let beat = rec.truth.beats.iter().find(|b| b.onset_s > 0.3).unwrap();
        // The whole QRS (its Gaussian tails reach a little beyond onset and end).
        let a = ((beat.onset_s - 0.005) * fs) as usize;
        let z = ((beat.onset_s + f64::from(rec.truth.measurements.qrs_ms) / 1000.0 + 0.01) * fs)
            as usize;
        let sum =
            |lead: usize| -> f32 { (a..z).map(|i| rec.recording.samples_uv[[lead, i]]).sum() };
        // aVF sees sqrt(3)/2 of the inferior component.
        (sum(5) * 2.0 / 3f32.sqrt()).atan2(sum(0)).to_degrees()
    }

    #[test]
    fn wide_draws_small_lead_ii_qrs_beside_tall_t_and_keeps_the_labels() {
        let spec = RecordSpec::ten_seconds(ConditionSet::normal());
        let (mut small_ii, mut same) = (0, 0);
        for seed in 0..80 {
            let wide = generate_with(&spec, Variability::Wide, seed).unwrap();
            assert_eq!(wide.truth.report_mimic, "Sinus rhythm. Normal ECG");
            let axis = measured_axis(&wide);
            assert!((-30.0..=90.0).contains(&axis), "seed {seed}: axis {axis}");
            let ratio = t_over_r(&wide);
            if ratio > 2.0 {
                small_ii += 1;
                // Near perpendicular to lead II (+60): the measured axis is a few degrees off the drawn one.
                assert!((-35.0..=15.0).contains(&axis), "seed {seed}: axis {axis}");
                let t = peaks(&wide, LEAD_II, 0.15, 0.5);
                let t = t.iter().sum::<f32>() / t.len().max(1) as f32;
                // Within the tall-T limb maximum, 15 % more at the top of a breath.
                assert!(t < TALL_T_MAX_UV.0 * 1.15, "seed {seed}: T {t} uV");
            }
            let literature = generate_with(&spec, Variability::Literature, seed).unwrap();
            same += usize::from(t_over_r(&literature) == ratio);
        }
        assert!(
            (3..=20).contains(&small_ii),
            "{small_ii} of 80 records with lead II T/R > 2 (expected about 10 %)"
        );
        assert!(
            same >= 60,
            "only {same} of 80 records kept their literature T/R"
        );
    }

    #[test]
    fn tall_t_waves_and_small_p_waves_are_drawn_and_normal_records_stay_normal() {
        let (mut tall, mut p_small, mut p_large) = (0, 0, 0);
        let mut max_fixed = 0.0f32;
        for seed in 0..60 {
            let rec = literature("normal", seed);
            let m = rec.truth.measurements;
            assert_eq!(rec.truth.report_mimic, "Sinus rhythm. Normal ECG");
            assert!(m.qrs_ms < 110.0 && m.qtc_ms <= 450.5, "{m:?}");
            assert!(
                m.pr_ms.is_some_and(|pr| (119.9..=200.0).contains(&pr)),
                "{m:?}"
            );
            tall += usize::from(t_over_r(&rec) > 1.0);
            let p = peaks(&rec, LEAD_II, -0.25, -0.05);
            let p = p.iter().sum::<f32>() / p.len().max(1) as f32;
            p_small += usize::from(p < 80.0);
            p_large += usize::from(p > 180.0);
            // At most 0.25 mV, 15 % more at the top of a breath.
            assert!(p < 290.0, "P {p} uV in lead II");
            let fixed = generate(&RecordSpec::ten_seconds(ConditionSet::normal()), seed).unwrap();
            max_fixed = max_fixed.max(t_over_r(&fixed));
        }
        assert!(max_fixed < 1.0, "the default draws no tall T: {max_fixed}");
        assert!(
            tall >= 4,
            "{tall} of 60 literature records with T/R > 1 in lead II"
        );
        assert!(
            p_small >= 5 && p_large >= 5,
            "P waves: {p_small} small, {p_large} large"
        );
    }

    #[test]
    fn the_measured_frontal_axis_spreads_over_the_normal_range_and_stays_inside_it() {
        let axes: Vec<f32> = (0..40)
            .map(|s| measured_axis(&literature("normal", s)))
            .collect();
        let fixed: Vec<f32> = (0..40)
            .map(|s| {
                measured_axis(
                    &generate(&RecordSpec::ten_seconds(ConditionSet::normal()), s).unwrap(),
                )
            })
            .collect();
        let spread = |a: &[f32]| {
            a.iter().copied().fold(f32::MIN, f32::max) - a.iter().copied().fold(f32::MAX, f32::min)
        };
        assert!(axes.iter().all(|a| (-32.0..=92.0).contains(a)), "{axes:?}");
        assert!(spread(&axes) > 85.0, "literature spread {}", spread(&axes));
        assert!(
            spread(&axes) > spread(&fixed) + 5.0,
            "{axes:?} vs {fixed:?}"
        );
        // Axis findings keep their ranges.
        for seed in 0..10 {
            let lad = measured_axis(&literature("lad", seed));
            assert!(lad < -30.0, "lad {lad}");
        }
    }

    /// Frequency (Hz) of the largest spectral peak in 0.1-0.5 Hz of a series sampled at the
    /// times `t` (evenly resampled at 4 Hz, mean removed, DFT on a 0.005 Hz grid).
    fn peak_hz(t: &[f64], v: &[f64]) -> f64 {
        let step = 0.25;
        let (t0, t1) = (t[0], t[t.len() - 1]);
        let mut even = Vec::new();
        let mut x = t0;
        let mut j = 0;
        while x <= t1 {
            while j + 1 < t.len() - 1 && t[j + 1] < x {
                j += 1;
            }
            let w = ((x - t[j]) / (t[j + 1] - t[j])).clamp(0.0, 1.0);
            even.push(v[j] + w * (v[j + 1] - v[j]));
            x += step;
        }
        let mean = even.iter().sum::<f64>() / even.len() as f64;
        (20..=100)
            .map(|k| f64::from(k) * 0.005)
            .map(|f| {
                let (mut re, mut im) = (0.0, 0.0);
                for (n, y) in even.iter().enumerate() {
                    let ph = std::f64::consts::TAU * f * n as f64 * step;
                    re += (y - mean) * ph.cos();
                    im += (y - mean) * ph.sin();
                }
                (f, re * re + im * im)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0.0, |p| p.0)
    }

    #[test]
    fn respiration_modulates_rr_and_amplitude_at_its_drawn_rate() {
        let (mut rr_hits, mut amp_hits) = (0, 0);
        for seed in 0..8 {
            let mut s = EcgStream::with_variability(
                &StreamConfig {
                    sample_rate_hz: 250.0,
                    conditions: ConditionSet::normal(),
                    acquisition: Acquisition::clean(),
                    seed,
                    expected_frames: 15_000,
                    overrides: Overrides::default(),
                },
                Variability::Literature,
            )
            .unwrap();
            let resp = f64::from(s.model().rhythm.resp_hz);
            assert!((0.15..=0.4).contains(&resp), "{resp}");
            // 60 s; QRS complexes found on the signal as peaks of the slope energy over all
            // leads (above a third of the largest, 250 ms apart), each beat's size the largest
            // sum of absolute lead values within 40 ms of it.
            let frames: Vec<[f32; LEADS]> = (0..15_000).map(|_| s.next_frame()).collect();
            let energy: Vec<f32> = std::iter::once(0.0)
                .chain(frames.windows(2).map(|w| {
                    w[1].iter()
                        .zip(&w[0])
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                }))
                .collect();
            let size = |i: usize| {
                (i.saturating_sub(10)..(i + 10).min(frames.len()))
                    .map(|j| frames[j].iter().map(|v| v.abs()).sum::<f32>())
                    .fold(0.0f32, f32::max)
            };
            let top = energy.iter().copied().fold(0.0f32, f32::max);
            let mut r: Vec<(f64, f64)> = Vec::new();
            for i in 1..energy.len() - 1 {
                if energy[i] > top / 3.0 && energy[i] >= energy[i - 1] && energy[i] > energy[i + 1]
                {
                    let t = i as f64 / 250.0;
                    if r.last().is_none_or(|&(last, _)| t - last > 0.25) {
                        r.push((t, f64::from(size(i))));
                    }
                }
            }
            let times: Vec<f64> = r.iter().skip(1).map(|p| p.0).collect();
            let rr: Vec<f64> = r.windows(2).map(|w| w[1].0 - w[0].0).collect();
            let amp: Vec<f64> = r.iter().skip(1).map(|p| p.1).collect();
            let rr_peak = peak_hz(&times, &rr);
            let amp_peak = peak_hz(&times, &amp);
            assert!(
                (0.12..=0.45).contains(&amp_peak),
                "amplitude peak {amp_peak} Hz"
            );
            rr_hits += usize::from((rr_peak - resp).abs() < 0.03);
            amp_hits += usize::from((amp_peak - resp).abs() < 0.03);
        }
        // The 0.1 Hz Mayer wave can out-weigh a small RSA now and then.
        assert!(
            rr_hits >= 6,
            "RR modulation at the respiration rate in {rr_hits} of 8"
        );
        assert!(
            amp_hits >= 7,
            "amplitude modulation at the respiration rate in {amp_hits} of 8"
        );
    }

    /// Fraction of a noise signal's power that `band` (zero-phase) keeps.
    fn power_fraction(noise: &Recording, highpass_hz: f64, lowpass_hz: f64) -> f64 {
        let spec = FilterSpec {
            highpass_hz,
            notch_hz: 0.0,
            notch_harmonics: false,
            notch_q: FilterSpec::DEFAULT_NOTCH_Q,
            lowpass_hz,
            order: 4,
            zero_phase: true,
        };
        let kept = filter_recording(&spec, noise).unwrap();
        let power = |r: &Recording| {
            r.samples_uv
                .row(LEAD_II)
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
        };
        power(&kept) / power(noise).max(1e-9)
    }

    #[test]
    fn each_stress_test_noise_type_has_its_power_in_its_band() {
        let noise_of = |acquisition: Acquisition| {
            let base = RecordSpec::ten_seconds(ConditionSet::normal());
            let noisy = RecordSpec {
                acquisition,
                ..base.clone()
            };
            let (clean, noisy) = (
                generate_with(&base, Variability::Literature, 3).unwrap(),
                generate_with(&noisy, Variability::Literature, 3).unwrap(),
            );
            Recording {
                samples_uv: &noisy.recording.samples_uv - &clean.recording.samples_uv,
                ..clean.recording
            }
        };
        let wander = noise_of(Acquisition {
            baseline_wander: 0.5,
            ..Acquisition::clean()
        });
        let muscle = noise_of(Acquisition {
            emg: 0.5,
            ..Acquisition::clean()
        });
        let motion = noise_of(Acquisition {
            motion: 1.0,
            ..Acquisition::clean()
        });
        let below_1 = power_fraction(&wander, 0.0, 1.0);
        let above_20 = power_fraction(&muscle, 20.0, 0.0);
        let motion_band = power_fraction(&motion, 0.5, 40.0);
        let wander_band = power_fraction(&wander, 0.5, 40.0);
        println!(
            "wander <1 Hz {below_1:.3}, muscle >20 Hz {above_20:.3}, motion 0.5-40 Hz {motion_band:.3}"
        );
        assert!(below_1 > 0.9, "baseline wander below 1 Hz: {below_1}");
        assert!(above_20 > 0.9, "muscle artefact above 20 Hz: {above_20}");
        assert!(
            motion_band > 0.2 && motion_band > 3.0 * wander_band,
            "electrode motion in the ECG band: {motion_band} (wander {wander_band})"
        );
        // Every draw of the stress-test mix holds at least one type within the severity cap.
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let a = stress_test_noise(0.4, 60.0, &mut rng);
            let types = [a.baseline_wander, a.emg, a.motion];
            assert!(types.iter().any(|s| *s > 0.0) && types.iter().all(|s| *s <= 0.4));
            assert_eq!(a.mains_hz, 60.0);
        }
    }

    #[test]
    fn an_acquisition_chain_band_limits_and_quantises() {
        let rec = literature("normal", 2).recording;
        let monitor = AcquisitionChain {
            band: Band::Monitoring,
            adc: Adc {
                uv_per_count: 5.0,
                bits: 11,
            },
        };
        let out = monitor.apply(&rec).unwrap();
        assert!(
            out.samples_uv
                .iter()
                .all(|v| (v / 5.0).fract() == 0.0 && v.abs() <= 5.0 * 1023.0)
        );
        // 0.5-40 Hz: a 100 Hz tone is gone, a 10 Hz tone passes.
        let tone = |hz: f64| Recording {
            samples_uv: ndarray::Array2::from_shape_fn((12, 5000), |(_, t)| {
                (1000.0 * (std::f64::consts::TAU * hz * t as f64 / 500.0).sin()) as f32
            }),
            ..rec.clone()
        };
        let rms = |r: &Recording| {
            (r.samples_uv
                .row(0)
                .iter()
                .skip(2500)
                .map(|v| v * v)
                .sum::<f32>()
                / 2500.0)
                .sqrt()
        };
        assert!(rms(&monitor.apply(&tone(200.0)).unwrap()) < 60.0);
        assert!(rms(&monitor.apply(&tone(10.0)).unwrap()) > 600.0);
        let mut rng = StdRng::seed_from_u64(5);
        let bands: Vec<Band> = (0..40)
            .map(|_| AcquisitionChain::draw(&mut rng).band)
            .collect();
        assert!(bands.contains(&Band::Diagnostic) && bands.contains(&Band::Monitoring));
    }

    #[test]
    fn conditions_keep_their_criteria_with_displaced_electrodes() {
        for seed in 0..12 {
            for (list, code) in [
                ("lvh", "LVH"),
                ("low-voltage", "LVOLT"),
                ("lbbb", "CLBBB"),
                ("af,pvc", "AFIB"),
            ] {
                let rec = literature(list, seed);
                assert!(
                    rec.truth.codes.contains(&code),
                    "{list} {seed}: {:?}",
                    rec.truth.codes
                );
            }
            let low = literature("low-voltage", seed).recording;
            let p2p = |lead: usize| {
                let row = low.samples_uv.row(lead);
                row.iter().copied().fold(f32::MIN, f32::max)
                    - row.iter().copied().fold(f32::MAX, f32::min)
            };
            assert!(
                (0..6).all(|l| p2p(l) < 500.0),
                "low voltage limb leads, seed {seed}"
            );
        }
    }
}
