//! Finite records (10 s for training, any length for fixtures) with their ground truth: the
//! conditions, statement codes, measurements and both report phrasings.

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::SynthError;
use super::acquisition::{Acquisition, LeadOff, Perturbation, meit_perturbation};
use super::condition::{Condition, ConditionSet};
use super::geometry::LEADS;
use super::morphology::{BeatKind, Overrides};
use super::report::{self, RhythmDetail, Statement};
use super::stream::{BeatEvent, EcgStream, StreamConfig};
use super::variability::Variability;
use crate::ecg::{LeadSet, Recording};

/// The longest record generated in one piece (frames); longer signals should stream.
pub const MAX_RECORD_FRAMES: usize = 50_000_000;

/// What record to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSpec {
    /// Conditions of the record.
    pub conditions: ConditionSet,
    /// Sample rate, Hz (100-1000).
    pub sample_rate_hz: f64,
    /// Duration, seconds.
    pub seconds: f64,
    /// Acquisition artefacts.
    pub acquisition: Acquisition,
    /// MEIT perturbation: maximum window fraction (0.05, 0.1, 0.15, 0.2), if applied.
    pub meit_max_fraction: Option<f32>,
    /// Parameters fixed instead of drawn.
    pub overrides: Overrides,
}

impl RecordSpec {
    /// A clean 10 s, 500 Hz record of `conditions`.
    pub fn ten_seconds(conditions: ConditionSet) -> Self {
        RecordSpec {
            conditions,
            sample_rate_hz: 500.0,
            seconds: 10.0,
            acquisition: Acquisition::clean(),
            meit_max_fraction: None,
            overrides: Overrides::default(),
        }
    }
}

/// Interval and axis measurements of a record, as a cart's measurement program reports them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Measurements {
    /// Ventricular rate, beats per minute (60 / mean RR).
    pub ventricular_rate_bpm: f32,
    /// Mean RR interval, ms.
    pub rr_ms: f32,
    /// PR interval, ms (none without conducted sinus P waves).
    pub pr_ms: Option<f32>,
    /// QRS duration of the dominant beat, ms.
    pub qrs_ms: f32,
    /// QT at the mean RR, ms.
    pub qt_ms: f32,
    /// Bazett-corrected QT, ms.
    pub qtc_ms: f32,
    /// P axis, degrees (none without sinus P waves).
    pub p_axis_deg: Option<f32>,
    /// QRS axis, degrees.
    pub qrs_axis_deg: f32,
    /// T axis, degrees.
    pub t_axis_deg: f32,
    /// Onset of the first P wave in the record, ms (MIMIC `p_onset`).
    pub p_onset_ms: Option<f32>,
    /// End of that P wave, ms.
    pub p_end_ms: Option<f32>,
    /// Onset of the first complete QRS in the record, ms.
    pub qrs_onset_ms: f32,
    /// End of that QRS, ms.
    pub qrs_end_ms: f32,
    /// End of its T wave, ms.
    pub t_end_ms: f32,
}

/// Everything known about a generated record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroundTruth {
    /// The seed the record was generated from.
    pub seed: u64,
    /// Condition slugs.
    pub conditions: Vec<String>,
    /// Statement codes, in report order.
    pub codes: Vec<&'static str>,
    /// Statements with both phrasings.
    pub statements: Vec<Statement>,
    /// Measurements.
    pub measurements: Measurements,
    /// MIMIC-IV-ECG-style report.
    pub report_mimic: String,
    /// PTB-XL-style report.
    pub report_ptbxl: String,
    /// Beats whose fiducial point falls inside the record (times from the record start).
    pub beats: Vec<BeatEvent>,
    /// Lead-off episode, if one was drawn.
    pub lead_off: Option<LeadOff>,
    /// MEIT perturbation window, if applied.
    pub perturbation: Option<Perturbation>,
}

impl GroundTruth {
    /// Fiducial sample index of every beat.
    pub fn r_peak_samples(&self, sample_rate_hz: f64) -> Vec<usize> {
        self.beats
            .iter()
            .map(|b| (b.fiducial_s * sample_rate_hz).round().max(0.0) as usize)
            .collect()
    }
}

/// A generated record and its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRecord {
    /// The 12-lead signal in microvolts.
    pub recording: Recording,
    /// Labels.
    pub truth: GroundTruth,
}

/// Generates one record; the same spec and seed always give the same record.
pub fn generate(spec: &RecordSpec, seed: u64) -> Result<SynthRecord, SynthError> {
    generate_with(spec, Variability::Fixed, seed)
}

/// Generates one record whose physiology and electrodes vary as `variability` says; with
/// [`Variability::Fixed`] this is [`generate`].
pub fn generate_with(
    spec: &RecordSpec,
    variability: Variability,
    seed: u64,
) -> Result<SynthRecord, SynthError> {
    let frames = (spec.seconds * spec.sample_rate_hz).round();
    if !(frames >= 1.0 && frames <= MAX_RECORD_FRAMES as f64) {
        return Err(SynthError::Duration(spec.seconds));
    }
    let frames = frames as usize;
    let mut stream = EcgStream::with_variability(
        &StreamConfig {
            sample_rate_hz: spec.sample_rate_hz,
            conditions: spec.conditions.clone(),
            acquisition: spec.acquisition,
            seed,
            expected_frames: frames as u64,
            overrides: spec.overrides,
        },
        variability,
    )?;
    stream.record_beats();
    let mut samples = Array2::<f32>::zeros((LEADS, frames));
    for t in 0..frames {
        let frame = stream.next_frame();
        for (row, v) in frame.iter().enumerate() {
            samples[[row, t]] = *v;
        }
    }
    let mut recording = Recording {
        sample_rate_hz: spec.sample_rate_hz,
        leads: LeadSet::standard_12(),
        samples_uv: samples,
    };
    let perturbation = spec.meit_max_fraction.map(|p| {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6d65_6974);
        meit_perturbation(&mut recording, p, &mut rng)
    });
    let beats = stream.take_beats();
    let truth = ground_truth(&stream, beats, spec, seed, perturbation);
    Ok(SynthRecord { recording, truth })
}

fn ground_truth(
    stream: &EcgStream,
    all: Vec<BeatEvent>,
    spec: &RecordSpec,
    seed: u64,
    perturbation: Option<Perturbation>,
) -> GroundTruth {
    let model = stream.model();
    let beats: Vec<BeatEvent> = all
        .into_iter()
        .filter(|b| b.fiducial_s >= 0.0 && b.fiducial_s < spec.seconds)
        .collect();
    let rr: Vec<f64> = beats
        .windows(2)
        .map(|w| w[1].onset_s - w[0].onset_s)
        .collect();
    let mean_rr_s = if rr.is_empty() {
        60.0 / f64::from(model.rhythm.heart_rate_bpm)
    } else {
        rr.iter().sum::<f64>() / rr.len() as f64
    } as f32;
    let qt_s = model.qt_for_rr(mean_rr_s);
    let sinus = model.rhythm.rhythm.is_sinus();
    let first = beats
        .iter()
        .find(|b| b.onset_s - f64::from(model.pr_s) >= 0.0 && b.kind == BeatKind::Sinus)
        .or_else(|| beats.iter().find(|b| b.onset_s >= 0.0))
        .or(beats.first());
    let onset_ms = first.map_or(0.0, |b| (b.onset_s * 1000.0) as f32);
    let measurements = Measurements {
        ventricular_rate_bpm: 60.0 / mean_rr_s,
        rr_ms: mean_rr_s * 1000.0,
        pr_ms: sinus.then_some(model.pr_s * 1000.0),
        qrs_ms: model.qrs_s * 1000.0,
        qt_ms: qt_s * 1000.0,
        qtc_ms: qt_s / mean_rr_s.sqrt() * 1000.0,
        p_axis_deg: model.axes.p_deg,
        qrs_axis_deg: model.axes.qrs_deg,
        t_axis_deg: model.axes.t_deg,
        p_onset_ms: sinus.then_some(onset_ms - model.pr_s * 1000.0),
        p_end_ms: sinus.then_some(onset_ms - (model.pr_s - model.p_duration_s) * 1000.0),
        qrs_onset_ms: onset_ms,
        qrs_end_ms: onset_ms + model.qrs_s * 1000.0,
        t_end_ms: onset_ms + first.map_or(qt_s, |b| b.qt_s) * 1000.0,
    };
    let detail = RhythmDetail {
        ventricular_rate_bpm: measurements.ventricular_rate_bpm,
        flutter_ratio: (!model.rhythm.flutter_variable)
            .then(|| model.rhythm.flutter_block.first().copied())
            .flatten(),
        lvh_strain: model.lvh_strain,
    };
    let present = present_conditions(&spec.conditions, &beats);
    let statements = report::statements(&present, detail);
    GroundTruth {
        seed,
        conditions: present
            .iter()
            .map(|c: Condition| c.slug().to_string())
            .collect(),
        codes: statements.iter().map(|s| s.code).collect(),
        report_mimic: report::mimic_report(&statements),
        report_ptbxl: report::ptbxl_report(&statements),
        statements,
        measurements,
        beats,
        lead_off: stream.lead_off(),
        perturbation,
    }
}

/// The conditions the record actually shows: ectopic beats are only labelled when at least
/// one fell inside the record.
fn present_conditions(conditions: &ConditionSet, beats: &[BeatEvent]) -> ConditionSet {
    let shows = |kind: BeatKind| beats.iter().any(|b| b.kind == kind);
    let kept = conditions.iter().filter(|&c| match c {
        Condition::PrematureVentricular => shows(BeatKind::PrematureVentricular),
        Condition::PrematureAtrial => shows(BeatKind::PrematureAtrial),
        _ => true,
    });
    // Removing findings never makes a valid set invalid.
    ConditionSet::new(kept).unwrap_or_else(|_| conditions.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ten_second_record_has_5000_frames_and_labelled_beats() {
        let rec = generate(&RecordSpec::ten_seconds(ConditionSet::normal()), 1).unwrap();
        assert_eq!(rec.recording.samples_uv.dim(), (12, 5000));
        let n = rec.truth.beats.len() as f32;
        let expected = rec.truth.measurements.ventricular_rate_bpm / 6.0;
        assert!((n - expected).abs() <= 1.5, "{n} beats for {expected}");
        assert_eq!(rec.truth.report_mimic, "Sinus rhythm. Normal ECG");
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let spec = RecordSpec {
            acquisition: Acquisition::uniform(0.5),
            meit_max_fraction: Some(0.2),
            ..RecordSpec::ten_seconds(ConditionSet::parse_list("af,pvc").unwrap())
        };
        assert_eq!(generate(&spec, 4).unwrap(), generate(&spec, 4).unwrap());
    }

    #[test]
    fn overrides_set_the_labelled_values_and_nothing_else() {
        let base = RecordSpec::ten_seconds(ConditionSet::normal());
        let spec = RecordSpec {
            overrides: Overrides {
                heart_rate_bpm: Some(72.0),
                pr_ms: Some(180.0),
                qrs_ms: Some(96.0),
                qtc_ms: Some(420.0),
                qrs_axis_deg: Some(-10.0),
                qrs_gain: None,
            },
            ..base.clone()
        };
        let m = generate(&spec, 3).unwrap().truth.measurements;
        assert!((m.ventricular_rate_bpm - 72.0).abs() < 3.0);
        assert_eq!(m.pr_ms.map(f32::round), Some(180.0));
        assert_eq!(m.qrs_ms.round(), 96.0);
        assert!((m.qrs_axis_deg + 10.0).abs() < 1e-3);
        let plain = generate(&base, 3).unwrap().truth.measurements;
        assert_eq!(plain.p_axis_deg, m.p_axis_deg, "other draws unchanged");
    }

    #[test]
    fn ectopy_is_labelled_only_when_an_ectopic_beat_is_in_the_record() {
        for seed in 0..30 {
            let spec = RecordSpec::ten_seconds(ConditionSet::parse_list("pvc").unwrap());
            let truth = generate(&spec, seed).unwrap().truth;
            let has_pvc = truth
                .beats
                .iter()
                .any(|b| b.kind == BeatKind::PrematureVentricular);
            assert_eq!(truth.codes.contains(&"PVC"), has_pvc, "seed {seed}");
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        let mut spec = RecordSpec::ten_seconds(ConditionSet::normal());
        spec.seconds = 0.0;
        assert!(matches!(generate(&spec, 1), Err(SynthError::Duration(_))));
        spec.seconds = f64::NAN;
        assert!(generate(&spec, 1).is_err());
    }

    /// FNV-1a over the samples' bits and the report: a digest of everything a record draws.
    pub(crate) fn digest(rec: &SynthRecord) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for v in &rec.recording.samples_uv {
            eat(&v.to_bits().to_le_bytes());
        }
        eat(rec.truth.report_mimic.as_bytes());
        eat(format!("{:?}", rec.truth.measurements).as_bytes());
        h
    }

    #[test]
    fn old_seeds_draw_the_records_they_drew() -> Result<(), SynthError> {
        // Digests taken before the randomised synthesizer existed: the default draws must never
        // change (trained models and published figures depend on them).
        let noisy = RecordSpec {
            acquisition: Acquisition::uniform(0.5),
            meit_max_fraction: Some(0.2),
            ..RecordSpec::ten_seconds(ConditionSet::parse_list("af,pvc").unwrap())
        };
        let slow = RecordSpec {
            sample_rate_hz: 250.0,
            ..RecordSpec::ten_seconds(ConditionSet::parse_list("lbbb,long-qt").unwrap())
        };
        let got = [
            digest(&generate(
                &RecordSpec::ten_seconds(ConditionSet::normal()),
                1,
            )?),
            digest(&generate(&noisy, 4)?),
            digest(&generate(&slow, 7)?),
        ];
        assert_eq!(
            got,
            [
                7786155725421858846,
                10326342180272383419,
                6752752481056823442
            ]
        );
        Ok(())
    }
}
