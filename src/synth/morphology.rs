//! Beat morphology: the Gaussian waves of the cardiac dipole that make up P, QRS, ST and T
//! (a 3-D extension of McSharry's ECGSYN), and how each condition reshapes them.
//!
//! A [`BeatModel`] is drawn once per record (or per condition change in a stream) from a
//! [`ConditionSet`]: every parameter gets a physiologically plausible random value, then the
//! QRS is rotated so its frontal axis lands on the drawn target and scaled so its voltage meets
//! the condition's criteria. The labelled axes are computed from the final waves, so the
//! labels describe the signal, not the intent.

use rand::Rng;

use super::condition::{Condition, ConditionSet};
use super::geometry::{LEADS, Vec3, electrode_fields, project_dipole};

/// Where a wave is placed within its beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Offset from the QRS onset.
    QrsOnset,
    /// Offset from the end of the T wave (QRS onset + QT), so repolarisation follows the rate.
    TEnd,
}

/// One Gaussian wave of the dipole, placed relative to its beat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaveTemplate {
    /// The reference point `offset_s` is measured from.
    pub anchor: Anchor,
    /// Time of the wave's peak from the anchor, in seconds.
    pub offset_s: f32,
    /// Gaussian width (standard deviation) in seconds.
    pub sigma_s: f32,
    /// Dipole at the peak, in microvolts.
    pub vector: Vec3,
}

impl WaveTemplate {
    pub(super) fn at_onset(offset_s: f32, sigma_s: f32, vector: Vec3) -> Self {
        WaveTemplate {
            anchor: Anchor::QrsOnset,
            offset_s,
            sigma_s,
            vector,
        }
    }

    fn before_t_end(offset_s: f32, sigma_s: f32, vector: Vec3) -> Self {
        WaveTemplate {
            anchor: Anchor::TEnd,
            offset_s,
            sigma_s,
            vector,
        }
    }

    /// Places the wave in absolute time for a beat with QRS onset `onset_s` and QT `qt_s`.
    pub fn place(&self, onset_s: f64, qt_s: f32) -> Wave {
        let anchor = match self.anchor {
            Anchor::QrsOnset => onset_s,
            Anchor::TEnd => onset_s + f64::from(qt_s),
        };
        Wave::new(anchor + f64::from(self.offset_s), self.sigma_s, self.vector)
    }

    /// Time integral of the wave's dipole (for axis computation).
    fn area(&self) -> Vec3 {
        self.vector
            .scale(self.sigma_s * (2.0 * std::f32::consts::PI).sqrt())
    }
}

/// A wave placed in absolute time, ready for per-sample evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wave {
    /// Time of the peak in seconds since the stream started.
    pub center_s: f64,
    /// Beyond this distance from the centre the wave is treated as zero (5 sigma).
    pub reach_s: f32,
    /// `-1 / (2 sigma^2)`.
    neg_half_inv_var: f32,
    /// Dipole at the peak, in microvolts.
    pub vector: Vec3,
}

impl Wave {
    /// A Gaussian wave centred at `center_s` with width `sigma_s`.
    pub fn new(center_s: f64, sigma_s: f32, vector: Vec3) -> Self {
        let sigma = sigma_s.max(1e-5);
        Wave {
            center_s,
            reach_s: 5.0 * sigma,
            neg_half_inv_var: -0.5 / (sigma * sigma),
            vector,
        }
    }

    /// Adds this wave's dipole at time `t` to `acc`.
    #[inline]
    pub fn accumulate(&self, t: f64, acc: &mut Vec3) {
        let dt = (t - self.center_s) as f32;
        if dt.abs() < self.reach_s {
            let g = (dt * dt * self.neg_half_inv_var).exp();
            acc.x += g * self.vector.x;
            acc.y += g * self.vector.y;
            acc.z += g * self.vector.z;
        }
    }

    /// Time after which the wave no longer contributes.
    pub fn end_s(&self) -> f64 {
        self.center_s + f64::from(self.reach_s)
    }
}

/// The kind of a generated beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BeatKind {
    /// A sinus P wave conducted to a normal (or bundle-branch-blocked) QRS.
    Sinus,
    /// A supraventricular QRS without a P wave (atrial fibrillation or flutter).
    Supraventricular,
    /// A premature atrial complex: ectopic P wave, early, normal QRS.
    PrematureAtrial,
    /// A premature ventricular complex: early, wide, no P wave.
    PrematureVentricular,
    /// A ventricular paced beat: spike and wide QRS.
    Paced,
}

/// Rhythm parameters of a model (the beat scheduler reads these).
#[derive(Debug, Clone, PartialEq)]
pub struct RhythmParams {
    /// The rhythm condition.
    pub rhythm: Condition,
    /// Mean heart rate (ventricular for AF/flutter/paced), beats per minute.
    pub heart_rate_bpm: f32,
    /// Respiratory sinus arrhythmia: relative RR modulation amplitude.
    pub rsa_fraction: f32,
    /// Respiration frequency in Hz.
    pub resp_hz: f32,
    /// Respiratory modulation of the beat amplitude: relative amplitude of the change (0 for
    /// none; the randomised synthesizer draws it).
    pub resp_amplitude_fraction: f32,
    /// Low-frequency (Mayer wave, ~0.1 Hz) relative RR modulation amplitude.
    pub lf_fraction: f32,
    /// Beat-to-beat random relative RR jitter (sd).
    pub jitter_fraction: f32,
    /// Atrial fibrillation: coefficient of variation of RR.
    pub af_rr_cv: f32,
    /// Atrial fibrillation: fibrillatory wave amplitude (uV) and dominant frequency (Hz).
    pub fwave_uv: f32,
    /// Dominant fibrillatory frequency in Hz.
    pub fwave_hz: f32,
    /// Atrial flutter: flutter-wave rate in Hz and amplitude in uV.
    pub flutter_hz: f32,
    /// Flutter-wave amplitude in uV.
    pub flutter_uv: f32,
    /// Flutter conduction ratios: the first is used when the block is fixed, one is drawn per
    /// beat when it is variable (`[2]`, `[4]` or `[2, 3, 4]`).
    pub flutter_block: Vec<u8>,
    /// Whether the flutter block is variable (ratios drawn at random).
    pub flutter_variable: bool,
    /// Probability that a beat is replaced by a PVC.
    pub pvc_probability: f32,
    /// Probability that a beat is replaced by a PAC.
    pub pac_probability: f32,
    /// PVC coupling interval as a fraction of the RR.
    pub pvc_coupling: f32,
    /// PAC coupling interval as a fraction of the RR.
    pub pac_coupling: f32,
}

/// Frontal-plane axes of the model's waves, degrees.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Axes {
    /// P axis (none without sinus P waves).
    pub p_deg: Option<f32>,
    /// QRS axis.
    pub qrs_deg: f32,
    /// T axis.
    pub t_deg: f32,
}

/// Everything needed to synthesize beats for one set of conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatModel {
    /// The conditions the model was drawn for.
    pub conditions: ConditionSet,
    /// Rhythm parameters.
    pub rhythm: RhythmParams,
    /// PR interval (P onset to QRS onset), seconds.
    pub pr_s: f32,
    /// P-wave duration, seconds.
    pub p_duration_s: f32,
    /// QRS duration of the dominant beat, seconds.
    pub qrs_s: f32,
    /// Rate-corrected QT (Bazett), seconds.
    pub qtc_s: f32,
    /// Sinus P wave (anchored before the QRS onset).
    pub p_wave: Vec<WaveTemplate>,
    /// Ectopic P wave of premature atrial complexes.
    pub ectopic_p: Vec<WaveTemplate>,
    /// Dominant QRS complex.
    pub qrs: Vec<WaveTemplate>,
    /// Dominant ST segment and T wave.
    pub st_t: Vec<WaveTemplate>,
    /// Premature ventricular complex: QRS, ST and T.
    pub pvc: Vec<WaveTemplate>,
    /// QRS duration of the PVCs, seconds.
    pub pvc_qrs_s: f32,
    /// Paced complex: spike, QRS, ST and T.
    pub paced: Vec<WaveTemplate>,
    /// Direction and scale of atrial fibrillatory or flutter activity (uV per unit signal).
    pub atrial_vector: Vec3,
    /// Whether LVH comes with repolarisation abnormality (strain).
    pub lvh_strain: bool,
    /// Frontal axes of the dominant beat.
    pub axes: Axes,
}

/// Uniform draw in `[lo, hi)`.
pub(super) fn u(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Heart rates an override may set, bpm (others are clamped into this range).
pub const HEART_RATE_RANGE_BPM: std::ops::RangeInclusive<f32> = 20.0..=250.0;

/// Explicit values that replace the random draws; the conditions still choose the shapes and
/// the statements, so an override that contradicts a condition makes a contradictory record.
/// Every draw still happens, so an override changes nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Overrides {
    /// Mean heart rate (ventricular rate in atrial fibrillation; flutter sets its own), bpm.
    pub heart_rate_bpm: Option<f32>,
    /// PR interval, ms.
    pub pr_ms: Option<f32>,
    /// QRS duration of the dominant beat, ms.
    pub qrs_ms: Option<f32>,
    /// Bazett-corrected QT, ms.
    pub qtc_ms: Option<f32>,
    /// Frontal QRS axis, degrees.
    pub qrs_axis_deg: Option<f32>,
    /// Factor on the QRS amplitude after the voltage criteria are met.
    pub qrs_gain: Option<f32>,
}

/// `value` replaced by the override (converted by `scale`, clamped to `lo..=hi`), if any.
fn pick(value: f32, over: Option<f32>, scale: f32, lo: f32, hi: f32) -> f32 {
    over.map_or(value, |v| (v * scale).clamp(lo, hi))
}

impl BeatModel {
    /// Draws a model for `conditions`. `sample_rate_hz` sizes the pacing spike so it is seen at
    /// every rate.
    pub fn sample(conditions: &ConditionSet, sample_rate_hz: f64, rng: &mut impl Rng) -> Self {
        Self::sample_with(conditions, &Overrides::default(), sample_rate_hz, rng)
    }

    /// Draws a model for `conditions` with some parameters fixed by `overrides`.
    pub fn sample_with(
        conditions: &ConditionSet,
        overrides: &Overrides,
        sample_rate_hz: f64,
        rng: &mut impl Rng,
    ) -> Self {
        use Condition::*;
        let has = |c| conditions.has(c);
        let mut rhythm = sample_rhythm(conditions, rng);
        rhythm.heart_rate_bpm = pick(
            rhythm.heart_rate_bpm,
            overrides.heart_rate_bpm,
            1.0,
            *HEART_RATE_RANGE_BPM.start(),
            *HEART_RATE_RANGE_BPM.end(),
        );

        // Intervals.
        let pr_s = if has(FirstDegreeAvBlock) {
            u(rng, 0.22, 0.32)
        } else {
            u(rng, 0.13, 0.19)
        };
        let pr_s = pick(pr_s, overrides.pr_ms, 1e-3, 0.08, 0.5);
        let p_duration_s = u(rng, 0.085, 0.11);
        let qrs_s = if has(LeftBundleBranchBlock) {
            u(rng, 0.135, 0.17)
        } else if has(RightBundleBranchBlock) {
            u(rng, 0.128, 0.155)
        } else if has(LeftVentricularHypertrophy) {
            u(rng, 0.092, 0.104)
        } else {
            u(rng, 0.078, 0.1)
        };
        let qrs_s = pick(qrs_s, overrides.qrs_ms, 1e-3, 0.05, 0.25);
        let qtc_s = if has(ProlongedQt) {
            u(rng, 0.485, 0.56)
        } else {
            u(rng, 0.385, 0.44)
        };
        let qtc_s = pick(qtc_s, overrides.qtc_ms, 1e-3, 0.3, 0.7);

        // QRS.
        let r_amp = u(rng, 1200.0, 1800.0);
        let mut qrs = if has(LeftBundleBranchBlock) {
            lbbb_qrs(qrs_s, r_amp)
        } else if has(RightBundleBranchBlock) {
            rbbb_qrs(qrs_s, r_amp, rng)
        } else {
            normal_qrs(qrs_s, r_amp, rng)
        };
        if has(OldInferiorInfarct) {
            qrs.push(WaveTemplate::at_onset(
                0.13 * qrs_s,
                0.08 * qrs_s,
                Vec3::new(0.1, -1.0, 0.05)
                    .unit()
                    .scale(u(rng, 0.35, 0.5) * r_amp),
            ));
        }
        if has(OldAnteriorInfarct) {
            // Loss of anterior forces: the septal r becomes a posterior Q (QS in V1-V3).
            if let Some(septal) = qrs.first_mut() {
                septal.vector = Vec3::new(0.2, 0.05, -1.0)
                    .unit()
                    .scale(u(rng, 0.3, 0.45) * r_amp);
                septal.sigma_s *= 1.3;
            }
        }
        let target_axis = if has(LeftAnteriorFascicularBlock) {
            u(rng, -80.0, -52.0)
        } else if has(LeftAxisDeviation) {
            u(rng, -44.0, -36.0)
        } else if has(RightAxisDeviation) {
            u(rng, 105.0, 150.0)
        } else if has(LeftBundleBranchBlock) {
            u(rng, -15.0, 45.0)
        } else {
            u(rng, -5.0, 75.0)
        };
        // Rotation of the heart about its long axis moves the precordial transition zone; a
        // hypertrophied left ventricle turns the forces posteriorly (deep S in V1-V2).
        let turn = u(rng, -15.0, 15.0)
            - if has(LeftVentricularHypertrophy) {
                35.0
            } else {
                0.0
            };
        qrs.iter_mut()
            .for_each(|w| w.vector = w.vector.rotate_horizontal(turn));
        rotate_to_axis(
            &mut qrs,
            pick(target_axis, overrides.qrs_axis_deg, 1.0, -180.0, 180.0),
        );
        let voltage = voltage_target(conditions, rng);
        let k = scale_to_voltage(&mut qrs, voltage);
        if let Some(gain) = overrides.qrs_gain {
            let gain = gain.clamp(0.05, 5.0);
            qrs.iter_mut().for_each(|w| w.vector = w.vector.scale(gain));
        }
        // Low voltage (effusion, obesity, emphysema) attenuates every wave, not just the QRS.
        let attenuation = if has(LowQrsVoltage) { k.max(0.4) } else { 1.0 };
        let qrs_dir = area(&qrs).unit();
        let qrs_axis = area(&qrs).frontal_deg();

        // ST segment and T wave.
        let t_amp = u(rng, 220.0, 380.0) * attenuation;
        let t_sigma = u(rng, 0.04, 0.052);
        let mut t_dir = Vec3::from_frontal(qrs_axis.clamp(-10.0, 80.0) + u(rng, -10.0, 20.0), 0.4)
            .rotate_horizontal(turn);
        let mut st_vec = Vec3::ZERO;
        let mut lvh_strain = false;
        if has(LeftBundleBranchBlock) || has(RightBundleBranchBlock) {
            // Secondary repolarisation: discordant to the terminal/main QRS forces.
            let discordant = if has(RightBundleBranchBlock) {
                Vec3::from_frontal(qrs_axis + 10.0, -0.35)
            } else {
                qrs_dir.scale(-1.0)
            };
            t_dir = discordant;
            if has(LeftBundleBranchBlock) {
                st_vec = discordant.scale(u(rng, 80.0, 150.0));
            }
        }
        if has(LeftVentricularHypertrophy) && rng.random_bool(0.6) {
            lvh_strain = true;
            t_dir = Vec3::new(-0.75, -0.1, -0.55).unit();
            st_vec = Vec3::new(-0.7, -0.3, -0.4)
                .unit()
                .scale(u(rng, 60.0, 120.0));
        }
        if has(TWaveInversion) {
            t_dir = Vec3::new(-0.55, 0.25, -0.8).unit();
        }
        if has(StDepression) {
            st_vec = Vec3::new(-0.7, -0.5, -0.3)
                .unit()
                .scale(u(rng, 110.0, 200.0));
        }
        let ste_dir = if has(StElevationInferior) {
            Some(Vec3::new(0.05, 1.0, -0.1).unit())
        } else if has(StElevationAnterior) {
            Some(Vec3::new(-0.1, 0.05, 1.0).unit())
        } else if has(StElevationLateral) {
            Some(Vec3::new(0.75, -0.4, 0.35).unit())
        } else {
            None
        };
        let mut t_vec = t_dir.scale(t_amp);
        if let Some(dir) = ste_dir {
            st_vec = dir.scale(u(rng, 180.0, 350.0));
            // Hyperacute T waves lean towards the injury current.
            t_vec = t_vec + dir.scale(0.6 * t_amp);
        }
        let mut st_t = vec![
            WaveTemplate::before_t_end(-2.6 * t_sigma, t_sigma, t_vec),
            WaveTemplate::before_t_end(-4.2 * t_sigma, 1.4 * t_sigma, t_vec.scale(0.3)),
        ];
        if st_vec.norm() > 0.0 {
            // A rounded plateau from the J point towards the T wave.
            st_t.push(WaveTemplate::at_onset(
                qrs_s + 0.035,
                0.035,
                st_vec.scale(0.8),
            ));
            st_t.push(WaveTemplate::at_onset(
                qrs_s + 0.095,
                0.04,
                st_vec.scale(0.8),
            ));
        }
        let t_axis = area(&st_t).frontal_deg();

        // P waves.
        let p_amp = u(rng, 90.0, 170.0) * attenuation;
        let mut p_wave = p_template(pr_s, p_duration_s, p_amp);
        rotate_to_axis(&mut p_wave, u(rng, 35.0, 70.0));
        let mut ectopic_p = p_template(pr_s, p_duration_s, p_amp);
        rotate_to_axis(&mut ectopic_p, u(rng, -85.0, -45.0));
        let p_deg = rhythm
            .rhythm
            .is_sinus()
            .then(|| area(&p_wave).frontal_deg());

        let pvc_qrs_s = u(rng, 0.14, 0.18);
        let pvc = ectopic_ventricular(pvc_qrs_s, rng);
        let paced = paced_complex(sample_rate_hz, rng);
        let atrial_vector = match rhythm.rhythm {
            AtrialFibrillation => Vec3::new(-0.3, 0.6, 0.75).unit().scale(rhythm.fwave_uv),
            AtrialFlutter => Vec3::new(0.1, 1.0, 0.25).unit().scale(rhythm.flutter_uv),
            _ => Vec3::ZERO,
        };

        let (dominant_qrs, dominant_axis) = if rhythm.rhythm == VentricularPaced {
            let waves: Vec<WaveTemplate> = paced
                .iter()
                .copied()
                .filter(|w| w.anchor == Anchor::QrsOnset && w.offset_s >= 0.0)
                .collect();
            (PACED_QRS_S, area(&waves).frontal_deg())
        } else {
            (qrs_s, qrs_axis)
        };
        let dominant_t_axis = if rhythm.rhythm == VentricularPaced {
            let waves: Vec<WaveTemplate> = paced
                .iter()
                .copied()
                .filter(|w| w.anchor == Anchor::TEnd)
                .collect();
            area(&waves).frontal_deg()
        } else {
            t_axis
        };

        BeatModel {
            conditions: conditions.clone(),
            rhythm,
            pr_s,
            p_duration_s,
            qrs_s: dominant_qrs,
            qtc_s,
            p_wave,
            ectopic_p,
            qrs,
            st_t,
            pvc,
            pvc_qrs_s,
            paced,
            atrial_vector,
            lvh_strain,
            axes: Axes {
                p_deg,
                qrs_deg: dominant_axis,
                t_deg: dominant_t_axis,
            },
        }
    }

    /// QT of a beat that follows an RR interval of `rr_s` (Bazett), never shorter than the QRS
    /// plus a minimal ST-T.
    pub fn qt_for_rr(&self, rr_s: f32) -> f32 {
        (self.qtc_s * rr_s.clamp(0.25, 2.5).sqrt()).max(self.qrs_s + 0.16)
    }

    /// The wave templates of a beat of `kind`.
    pub fn beat_waves(&self, kind: BeatKind) -> impl Iterator<Item = &WaveTemplate> {
        let (p, body): (&[WaveTemplate], [&[WaveTemplate]; 2]) = match kind {
            BeatKind::Sinus => (&self.p_wave, [&self.qrs, &self.st_t]),
            BeatKind::PrematureAtrial => (&self.ectopic_p, [&self.qrs, &self.st_t]),
            BeatKind::Supraventricular => (&[], [&self.qrs, &self.st_t]),
            BeatKind::PrematureVentricular => (&[], [&self.pvc, &[]]),
            BeatKind::Paced => (&[], [&self.paced, &[]]),
        };
        p.iter().chain(body[0]).chain(body[1])
    }

    /// Offset from QRS onset to the beat's fiducial point (the dominant QRS wave's peak).
    pub fn fiducial_offset_s(&self, kind: BeatKind) -> f32 {
        let waves: &[WaveTemplate] = match kind {
            BeatKind::PrematureVentricular => &self.pvc,
            BeatKind::Paced => &self.paced,
            _ => &self.qrs,
        };
        waves
            .iter()
            // The dominant depolarisation wave (not a pacing spike).
            .filter(|w| w.anchor == Anchor::QrsOnset && w.offset_s >= 0.0 && w.sigma_s > 0.003)
            .max_by(|a, b| a.vector.norm().total_cmp(&b.vector.norm()))
            .map_or(0.0, |w| w.offset_s)
    }
}

fn sample_rhythm(conditions: &ConditionSet, rng: &mut impl Rng) -> RhythmParams {
    use Condition::*;
    let rhythm = conditions.rhythm();
    let heart_rate_bpm = match rhythm {
        SinusBradycardia => u(rng, 42.0, 55.0),
        SinusTachycardia => u(rng, 106.0, 150.0),
        SinusArrhythmia => u(rng, 62.0, 85.0),
        AtrialFibrillation => u(rng, 60.0, 150.0),
        VentricularPaced => u(rng, 60.0, 80.0),
        _ => u(rng, 62.0, 95.0),
    };
    let flutter_variable = rng.random_bool(0.3);
    let flutter_block = if flutter_variable {
        vec![2, 3, 4]
    } else {
        vec![if rng.random_bool(0.6) { 2 } else { 4 }]
    };
    RhythmParams {
        rhythm,
        heart_rate_bpm,
        rsa_fraction: if rhythm == SinusArrhythmia {
            u(rng, 0.09, 0.15)
        } else {
            u(rng, 0.005, 0.025)
        },
        resp_hz: u(rng, 0.15, 0.3),
        resp_amplitude_fraction: 0.0,
        lf_fraction: u(rng, 0.0, 0.015),
        jitter_fraction: u(rng, 0.002, 0.008),
        af_rr_cv: u(rng, 0.16, 0.3),
        fwave_uv: u(rng, 30.0, 110.0),
        fwave_hz: u(rng, 5.0, 8.0),
        flutter_hz: u(rng, 4.4, 5.3),
        flutter_uv: u(rng, 110.0, 220.0),
        flutter_block,
        flutter_variable,
        pvc_probability: if conditions.has(PrematureVentricular) {
            u(rng, 0.1, 0.25)
        } else {
            0.0
        },
        pac_probability: if conditions.has(PrematureAtrial) {
            u(rng, 0.1, 0.25)
        } else {
            0.0
        },
        pvc_coupling: u(rng, 0.5, 0.68),
        pac_coupling: u(rng, 0.6, 0.78),
    }
}

/// Normal ventricular activation: septal (left-to-right, anterior), main (left, inferior,
/// slightly posterior) and terminal basal (posterior, superior) forces.
fn normal_qrs(d: f32, r: f32, rng: &mut impl Rng) -> Vec<WaveTemplate> {
    vec![
        WaveTemplate::at_onset(
            0.18 * d,
            0.07 * d,
            Vec3::new(-0.55, 0.25, 0.8)
                .unit()
                .scale(u(rng, 0.12, 0.2) * r),
        ),
        WaveTemplate::at_onset(0.45 * d, 0.1 * d, Vec3::from_frontal(45.0, -0.12).scale(r)),
        WaveTemplate::at_onset(
            0.74 * d,
            0.085 * d,
            Vec3::new(-0.35, -0.35, -0.87)
                .unit()
                .scale(u(rng, 0.25, 0.4) * r),
        ),
    ]
}

/// Left bundle branch block: no septal q, slow leftward-posterior activation with a notched
/// broad R in I, aVL, V5-V6 and QS in V1-V3.
fn lbbb_qrs(d: f32, r: f32) -> Vec<WaveTemplate> {
    vec![
        WaveTemplate::at_onset(
            0.3 * d,
            0.12 * d,
            Vec3::new(0.55, 0.1, -0.83).unit().scale(0.75 * r),
        ),
        WaveTemplate::at_onset(
            0.67 * d,
            0.12 * d,
            Vec3::new(0.85, 0.2, -0.5).unit().scale(0.9 * r),
        ),
    ]
}

/// Right bundle branch block: normal early forces, then slow right-anterior terminal
/// activation (rSR' in V1, wide S in I and V6).
fn rbbb_qrs(d: f32, r: f32, rng: &mut impl Rng) -> Vec<WaveTemplate> {
    vec![
        WaveTemplate::at_onset(
            0.12 * d,
            0.05 * d,
            Vec3::new(-0.55, 0.25, 0.8)
                .unit()
                .scale(u(rng, 0.12, 0.2) * r),
        ),
        WaveTemplate::at_onset(
            0.33 * d,
            0.075 * d,
            Vec3::from_frontal(45.0, -0.15).scale(r),
        ),
        WaveTemplate::at_onset(
            0.72 * d,
            0.11 * d,
            Vec3::new(-0.6, 0.05, 0.8)
                .unit()
                .scale(u(rng, 0.4, 0.55) * r),
        ),
    ]
}

/// The sinus P wave: right-atrial (inferior, anterior) then left-atrial (leftward,
/// posterior) activation, starting `pr_s` before the QRS onset.
pub(super) fn p_template(pr_s: f32, duration_s: f32, amp: f32) -> Vec<WaveTemplate> {
    let onset = -pr_s;
    vec![
        WaveTemplate::at_onset(
            onset + 0.38 * duration_s,
            duration_s / 6.5,
            Vec3::from_frontal(75.0, 0.45).scale(0.65 * amp),
        ),
        WaveTemplate::at_onset(
            onset + 0.62 * duration_s,
            duration_s / 6.5,
            Vec3::from_frontal(40.0, -0.35).scale(0.65 * amp),
        ),
    ]
}

/// A premature ventricular complex from a random focus: wide, bizarre, with discordant ST-T.
fn ectopic_ventricular(d: f32, rng: &mut impl Rng) -> Vec<WaveTemplate> {
    let dir = Vec3::from_frontal(u(rng, -180.0, 180.0), u(rng, -0.7, 0.7));
    let amp = u(rng, 1500.0, 2400.0);
    let dir2 = dir.rotate_frontal(u(rng, -30.0, 30.0));
    let t_sigma = u(rng, 0.05, 0.065);
    vec![
        WaveTemplate::at_onset(0.32 * d, 0.13 * d, dir.scale(0.8 * amp)),
        WaveTemplate::at_onset(0.66 * d, 0.12 * d, dir2.scale(0.6 * amp)),
        WaveTemplate::at_onset(d + 0.05, 0.04, dir.scale(-u(rng, 80.0, 150.0))),
        WaveTemplate::before_t_end(-2.6 * t_sigma, t_sigma, dir.scale(-u(rng, 350.0, 550.0))),
    ]
}

/// QRS duration of a paced complex (spike to end of QRS), seconds.
const PACED_QRS_S: f32 = 0.16;

/// Right-ventricular apical pacing: a narrow spike, then a wide complex with a superior axis
/// and discordant ST-T.
fn paced_complex(sample_rate_hz: f64, rng: &mut impl Rng) -> Vec<WaveTemplate> {
    let d = PACED_QRS_S;
    let spike_sigma = (0.55 / sample_rate_hz as f32).max(0.00035);
    let spike =
        Vec3::from_frontal(u(rng, -120.0, -60.0), u(rng, -0.5, 0.3)).scale(u(rng, 900.0, 1800.0));
    let dir = Vec3::from_frontal(-65.0, -0.5);
    let amp = u(rng, 1300.0, 1900.0);
    vec![
        WaveTemplate::at_onset(0.0, spike_sigma, spike),
        WaveTemplate::at_onset(0.33 * d, 0.13 * d, dir.scale(0.75 * amp)),
        WaveTemplate::at_onset(
            0.68 * d,
            0.12 * d,
            Vec3::from_frontal(-45.0, -0.35).scale(0.8 * amp),
        ),
        WaveTemplate::at_onset(d + 0.05, 0.04, dir.scale(-u(rng, 60.0, 120.0))),
        WaveTemplate::before_t_end(-0.13, 0.05, dir.scale(-u(rng, 250.0, 400.0))),
    ]
}

/// Sum of the waves' time integrals.
pub(super) fn area(waves: &[WaveTemplate]) -> Vec3 {
    waves.iter().fold(Vec3::ZERO, |acc, w| acc + w.area())
}

/// Rotates the waves in the frontal plane so their integrated vector points at `target_deg`.
pub(super) fn rotate_to_axis(waves: &mut [WaveTemplate], target_deg: f32) {
    let current = area(waves).frontal_deg();
    for w in waves.iter_mut() {
        w.vector = w.vector.rotate_frontal(target_deg - current);
    }
}

/// Largest limb-lead QRS peak-to-peak in hypertrophy, uV.
const LVH_MAX_LIMB_UV: f32 = 2500.0;

/// What the QRS voltage must satisfy.
enum VoltageTarget {
    /// Limb leads peak-to-peak below `limb`, precordial below `chest` (uV).
    Low { limb: f32, chest: f32 },
    /// Sokolow-Lyon index S(V1/V2) + R(V5/V6) equal to this (uV).
    Hypertrophy(f32),
    /// Ordinary voltage: limb leads reach at least 0.65 mV, Sokolow-Lyon below 3.3 mV.
    Ordinary,
}

fn voltage_target(conditions: &ConditionSet, rng: &mut impl Rng) -> VoltageTarget {
    if conditions.has(Condition::LowQrsVoltage) {
        VoltageTarget::Low {
            limb: u(rng, 280.0, 440.0),
            chest: u(rng, 600.0, 900.0),
        }
    } else if conditions.has(Condition::LeftVentricularHypertrophy) {
        VoltageTarget::Hypertrophy(u(rng, 3900.0, 5200.0))
    } else {
        VoltageTarget::Ordinary
    }
}

/// QRS voltages of a template, uV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Voltages {
    /// Largest peak-to-peak over the limb leads.
    pub(super) limb: f32,
    /// Largest peak-to-peak over the chest leads.
    pub(super) chest: f32,
    /// Sokolow-Lyon: S in V1 or V2 + R in V5 or V6.
    pub(super) sokolow: f32,
    /// Cornell: R in aVL + S in V3.
    cornell: f32,
    /// R in aVL.
    r_avl: f32,
    /// R in I + S in III.
    limb_index: f32,
}

impl Voltages {
    /// Whether any common LVH voltage criterion is met (Sokolow-Lyon >= 3.5 mV, Cornell
    /// > 2.8 mV, R aVL > 1.1 mV, R I + S III > 2.5 mV).
    pub(super) fn meets_lvh(&self) -> bool {
        self.sokolow >= 3500.0
            || self.cornell > 2800.0
            || self.r_avl > 1100.0
            || self.limb_index > 2500.0
    }

    fn scaled(&self, k: f32) -> Voltages {
        Voltages {
            limb: self.limb * k,
            chest: self.chest * k,
            sokolow: self.sokolow * k,
            cornell: self.cornell * k,
            r_avl: self.r_avl * k,
            limb_index: self.limb_index * k,
        }
    }
}

fn qrs_voltages(waves: &[WaveTemplate]) -> Voltages {
    qrs_voltages_with(waves, &electrode_fields())
}

/// Lowest and highest value of every lead over the waves of one beat (QRS onset at 0, QT
/// `qt_s`), on a 1 ms grid, as electrodes with lead fields `fields` see them.
pub(super) fn lead_extremes(
    waves: &[WaveTemplate],
    fields: &[Vec3; super::geometry::ELECTRODES],
    qt_s: f32,
) -> ([f32; LEADS], [f32; LEADS]) {
    let mut lo = [f32::MAX; LEADS];
    let mut hi = [f32::MIN; LEADS];
    let placed: Vec<Wave> = waves.iter().map(|w| w.place(0.0, qt_s)).collect();
    let start = placed
        .iter()
        .map(|w| w.center_s)
        .fold(0.0f64, f64::min)
        .min(0.0)
        - 0.06;
    let end = placed.iter().map(|w| w.center_s).fold(0.0f64, f64::max) + 0.06;
    let mut t = start as f32;
    while f64::from(t) < end {
        let mut d = Vec3::ZERO;
        for w in &placed {
            w.accumulate(f64::from(t), &mut d);
        }
        let leads = project_dipole(fields, d);
        for (i, v) in leads.iter().enumerate() {
            lo[i] = lo[i].min(*v);
            hi[i] = hi[i].max(*v);
        }
        t += 0.001;
    }
    (lo, hi)
}

/// QRS voltages of a template as electrodes with lead fields `fields` see them.
pub(super) fn qrs_voltages_with(
    waves: &[WaveTemplate],
    fields: &[Vec3; super::geometry::ELECTRODES],
) -> Voltages {
    let mut lo = [f32::MAX; LEADS];
    let mut hi = [f32::MIN; LEADS];
    let end = waves.iter().map(|w| w.offset_s).fold(0.0f32, f32::max) + 0.06;
    let mut t = -0.06f32;
    while t < end {
        let mut d = Vec3::ZERO;
        for w in waves {
            w.place(0.0, 0.0).accumulate(f64::from(t), &mut d);
        }
        let leads = project_dipole(fields, d);
        for (i, v) in leads.iter().enumerate() {
            lo[i] = lo[i].min(*v);
            hi[i] = hi[i].max(*v);
        }
        t += 0.001;
    }
    let p2p = |i: usize| hi[i] - lo[i];
    let r = |i: usize| hi[i].max(0.0);
    let s = |i: usize| (-lo[i]).max(0.0);
    Voltages {
        limb: (0..6).map(p2p).fold(0.0, f32::max),
        chest: (6..12).map(p2p).fold(0.0, f32::max),
        sokolow: s(6).max(s(7)) + r(10).max(r(11)),
        cornell: r(4) + s(8),
        r_avl: r(4),
        limb_index: r(0) + s(2),
    }
}

/// Scales the QRS to meet `target`; returns the factor applied.
fn scale_to_voltage(waves: &mut [WaveTemplate], target: VoltageTarget) -> f32 {
    let v = qrs_voltages(waves);
    if v.limb <= 0.0 || v.chest <= 0.0 || v.sokolow <= 0.0 {
        return 1.0;
    }
    let k = match target {
        VoltageTarget::Low { limb: l, chest: c } => (l / v.limb).min(c / v.chest),
        VoltageTarget::Hypertrophy(s) => {
            // Precordial voltage without limb leads beyond what hypertrophy produces, unless
            // that would leave no LVH criterion met.
            let wanted = s / v.sokolow;
            let capped = wanted.min(LVH_MAX_LIMB_UV / v.limb);
            if v.scaled(capped).meets_lvh() {
                capped
            } else {
                wanted
            }
        }
        VoltageTarget::Ordinary => {
            let mut k = 1.0f32;
            if v.sokolow * k > 3300.0 {
                k = 3200.0 / v.sokolow;
            }
            if v.limb * k < 650.0 {
                k = 700.0 / v.limb;
            }
            k
        }
    };
    for w in waves.iter_mut() {
        w.vector = w.vector.scale(k);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn model(list: &str, seed: u64) -> BeatModel {
        let set = ConditionSet::parse_list(list).unwrap();
        BeatModel::sample(&set, 500.0, &mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn qrs_axis_lands_in_the_condition_range() {
        for seed in 0..20 {
            let lafb = model("lafb", seed).axes.qrs_deg;
            assert!((-90.0..-45.0).contains(&lafb), "lafb axis {lafb}");
            let rad = model("rad", seed).axes.qrs_deg;
            assert!(rad > 90.0, "rad axis {rad}");
            let normal = model("normal", seed).axes.qrs_deg;
            assert!((-30.0..=90.0).contains(&normal), "normal axis {normal}");
        }
    }

    #[test]
    fn low_voltage_and_hypertrophy_meet_their_voltage_criteria() {
        let mut lvh_within_cap = 0;
        for seed in 0..40 {
            let limb = qrs_voltages(&model("low-voltage", seed).qrs).limb;
            assert!(limb < 500.0, "low-voltage limb p2p {limb}");
            let lvh = qrs_voltages(&model("lvh", seed).qrs);
            assert!(lvh.meets_lvh(), "lvh seed {seed}: {lvh:?}");
            lvh_within_cap += usize::from(lvh.limb <= LVH_MAX_LIMB_UV + 1.0);
            let Voltages { limb, sokolow, .. } = qrs_voltages(&model("normal", seed).qrs);
            assert!(limb >= 500.0 && sokolow < 3500.0, "normal {limb} {sokolow}");
        }
        assert!(
            lvh_within_cap >= 30,
            "only {lvh_within_cap} of 40 LVH limb voltages within the cap"
        );
    }

    #[test]
    fn bundle_branch_blocks_are_wide() {
        assert!(model("lbbb", 1).qrs_s >= 0.13);
        assert!(model("rbbb", 1).qrs_s >= 0.12);
        assert!(model("normal", 1).qrs_s < 0.1);
    }
}
