//! The synthesizer judged by measuring its signal: the beat detector recovers labelled rates,
//! QRS widths and axes; atrial fibrillation is irregular; lead identities hold; QRS detection
//! reaches 99% sensitivity and positive predictivity across rhythms.

use meit::dsp::beats::{BeatAnalysis, analyze};
use meit::synth::{Acquisition, ConditionSet, RecordSpec, SynthRecord, generate};

fn record(list: &str, seed: u64, noise: f32) -> SynthRecord {
    let spec = RecordSpec {
        acquisition: if noise > 0.0 {
            Acquisition {
                lead_off: 0.0,
                ..Acquisition::uniform(noise)
            }
        } else {
            Acquisition::clean()
        },
        ..RecordSpec::ten_seconds(ConditionSet::parse_list(list).unwrap())
    };
    generate(&spec, seed).unwrap()
}

fn analysed(list: &str, seed: u64, noise: f32) -> (SynthRecord, BeatAnalysis) {
    let rec = record(list, seed, noise);
    let a = analyze(&rec.recording).unwrap();
    (rec, a)
}

#[test]
fn detected_rate_matches_the_label_within_3_bpm_for_sinus_rhythms() {
    for list in [
        "normal",
        "brady",
        "tachy",
        "sinus-arrhythmia",
        "avb1",
        "lbbb",
        "rbbb",
        "lvh",
        "low-voltage",
    ] {
        for seed in 0..4 {
            let (rec, a) = analysed(list, seed, if seed % 2 == 0 { 0.0 } else { 0.3 });
            let label = rec.truth.measurements.ventricular_rate_bpm;
            let measured = a.heart_rate_bpm.unwrap();
            assert!(
                (measured - label).abs() <= 3.0,
                "{list} seed {seed}: measured {measured:.1} bpm, labelled {label:.1}"
            );
        }
    }
}

#[test]
fn atrial_fibrillation_is_far_more_irregular_than_sinus_rhythm() {
    let irregularity = |list: &str, seed: u64| analysed(list, seed, 0.2).1.rr_irregularity.unwrap();
    let sinus_max = ["normal", "brady", "tachy", "avb1"]
        .iter()
        .flat_map(|l| (0..4).map(move |s| (l, s)))
        .map(|(l, s)| irregularity(l, s))
        .fold(0.0f32, f32::max);
    let arrhythmia_max = (0..4)
        .map(|s| irregularity("sinus-arrhythmia", s))
        .fold(0.0f32, f32::max);
    let af_min = (0..8)
        .map(|s| irregularity("af", s))
        .fold(f32::MAX, f32::min);
    assert!(
        af_min > 3.0 * sinus_max,
        "AF min {af_min:.3} vs sinus max {sinus_max:.3}"
    );
    assert!(
        af_min > arrhythmia_max,
        "AF min {af_min:.3} vs sinus arrhythmia max {arrhythmia_max:.3}"
    );
}

#[test]
fn bundle_branch_blocks_measure_at_least_120_ms_and_normal_records_under_110_ms() {
    for seed in 0..5 {
        for list in ["lbbb", "rbbb", "lbbb,af", "rbbb,lafb"] {
            let qrs = analysed(list, seed, 0.2).1.qrs_ms.unwrap();
            assert!(qrs >= 120.0, "{list} seed {seed}: QRS {qrs:.0} ms");
        }
        for list in ["normal", "brady", "tachy", "af", "lad"] {
            let qrs = analysed(list, seed, 0.2).1.qrs_ms.unwrap();
            assert!(qrs < 110.0, "{list} seed {seed}: QRS {qrs:.0} ms");
        }
    }
}

#[test]
fn measured_axis_falls_in_the_labelled_range() {
    let cases: [(&str, f32, f32); 4] = [
        ("normal", -30.0, 90.0),
        ("lad", -90.0, -30.0),
        ("lafb", -90.0, -45.0),
        ("rad", 90.0, 180.0),
    ];
    for (list, lo, hi) in cases {
        for seed in 0..5 {
            let (rec, a) = analysed(list, seed, 0.2);
            let label = rec.truth.measurements.qrs_axis_deg;
            let measured = a.axis_deg.unwrap();
            assert!(
                (lo..=hi).contains(&label),
                "{list}: label {label:.0} outside range"
            );
            assert!(
                (lo..=hi).contains(&measured) && (measured - label).abs() < 12.0,
                "{list} seed {seed}: measured {measured:.0}, labelled {label:.0}"
            );
        }
    }
}

#[test]
fn an_axis_is_measured_only_from_leads_that_move() {
    use meit::ecg::Lead;
    let rec = record("normal", 1, 0.0);
    let row = |lead: Lead| {
        rec.recording
            .leads
            .0
            .iter()
            .position(|&l| l == lead)
            .unwrap()
    };
    let label = rec.truth.measurements.qrs_axis_deg;
    // Lead I stuck at one value: no axis (atan2 of a zero area would say +-90 degrees).
    let mut flat_i = rec.recording.clone();
    flat_i.samples_uv.row_mut(row(Lead::I)).fill(150.0);
    let a = analyze(&flat_i).unwrap();
    assert!(!a.r_peaks.is_empty(), "the other leads still give beats");
    assert_eq!(a.axis_deg, None, "an axis from a flat lead I");
    // aVF flat: the axis comes from lead II instead, and stays right.
    let mut flat_avf = rec.recording.clone();
    flat_avf.samples_uv.row_mut(row(Lead::AVF)).fill(0.0);
    let measured = analyze(&flat_avf).unwrap().axis_deg.unwrap();
    assert!(
        (measured - label).abs() < 12.0,
        "measured {measured:.0}, labelled {label:.0}"
    );
}

#[test]
fn lead_identities_hold_to_float_precision_with_electrode_artefacts() {
    let spec = RecordSpec {
        acquisition: Acquisition {
            lead_off: 0.0,
            adc: None,
            ..Acquisition::uniform(1.0)
        },
        ..RecordSpec::ten_seconds(ConditionSet::parse_list("af,pvc").unwrap())
    };
    let rec = generate(&spec, 11).unwrap();
    let s = &rec.recording.samples_uv;
    for t in 0..s.ncols() {
        let (i, ii, iii) = (s[[0, t]], s[[1, t]], s[[2, t]]);
        let (avr, avl, avf) = (s[[3, t]], s[[4, t]], s[[5, t]]);
        // Rounding of f32 electrode potentials of a few mV: well under 0.01 uV.
        let tol = 0.01;
        assert!(
            (ii - (i + iii)).abs() <= tol,
            "Einthoven at {t}: {ii} vs {}",
            i + iii
        );
        assert!((avr + avl + avf).abs() <= tol, "Goldberger at {t}");
    }
}

/// Sensitivity and positive predictivity of QRS detection over a set of records, matching
/// detections to labelled beats within 100 ms and ignoring 0.3 s at each edge.
fn detection_scores(lists: &[&str], seeds: u64, noise: f32) -> (usize, usize, usize) {
    let (mut tp, mut fn_, mut fp) = (0, 0, 0);
    for list in lists {
        for seed in 0..seeds {
            let (rec, a) = analysed(list, seed, noise);
            let fs = rec.recording.sample_rate_hz;
            let n = rec.recording.samples_uv.ncols();
            let tol = (0.1 * fs) as i64;
            let edge = (0.3 * fs) as usize;
            let inside = |p: &usize| *p >= edge && *p + edge < n;
            let truth: Vec<usize> = rec
                .truth
                .r_peak_samples(fs)
                .into_iter()
                .filter(inside)
                .collect();
            let found: Vec<usize> = a.r_peaks.iter().copied().filter(inside).collect();
            let hit =
                |p: usize, set: &[usize]| set.iter().any(|&q| (q as i64 - p as i64).abs() <= tol);
            let (t, f) = (
                truth.iter().filter(|&&p| hit(p, &a.r_peaks)).count(),
                found
                    .iter()
                    .filter(|&&p| !hit(p, &rec.truth.r_peak_samples(fs)))
                    .count(),
            );
            if t < truth.len() || f > 0 {
                eprintln!("{list} seed {seed}: missed {}, false {f}", truth.len() - t);
            }
            tp += t;
            fn_ += truth.len() - t;
            fp += f;
        }
    }
    (tp, fn_, fp)
}

#[test]
fn qrs_detection_has_99_percent_sensitivity_and_positive_predictivity_across_rhythms() {
    let lists = [
        "normal",
        "brady",
        "tachy",
        "sinus-arrhythmia",
        "af",
        "af,pvc",
        "flutter",
        "pvc",
        "pac",
        "paced",
        "lbbb",
        "rbbb",
        "lvh",
        "low-voltage",
        "ste-anterior",
        "old-mi-inferior",
        "long-qt",
        "t-inversion",
    ];
    for noise in [0.0, 0.4] {
        let (tp, fn_, fp) = detection_scores(&lists, 3, noise);
        let sensitivity = tp as f64 / (tp + fn_) as f64;
        let ppv = tp as f64 / (tp + fp) as f64;
        eprintln!(
            "noise {noise}: sensitivity {sensitivity:.4}, +P {ppv:.4} ({tp} TP, {fn_} FN, {fp} FP)"
        );
        assert!(
            sensitivity >= 0.99 && ppv >= 0.99,
            "noise {noise}: sensitivity {sensitivity:.4}, +P {ppv:.4} ({tp} TP, {fn_} FN, {fp} FP)"
        );
    }
}
