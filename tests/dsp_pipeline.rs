//! End-to-end preprocessing: the daemon's streaming path and the training crate's batch path
//! give the encoder the same input, and bad signal never becomes reportable.

use meit::dsp::leads::LeadStatus;
use meit::dsp::normalize::Normalization;
use meit::dsp::quality::LeadIssue;
use meit::dsp::{ModelInput, PreprocessSpec, Preprocessor};
use meit::ecg::{Lead, LeadSet, Recording, SampleBlock};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::f64::consts::PI;

/// A synthetic ECG-like lead: a square-ish QRS train at 72 bpm, a T wave, respiration, an
/// electrode offset and 50 Hz mains hum.
fn ecg_like(fs: f64, seconds: f64, gain: f64, offset: f64) -> Vec<f32> {
    (0..(fs * seconds) as usize)
        .map(|i| {
            let t = i as f64 / fs;
            let phase = (t * 1.2).fract();
            let qrs = if phase < 0.04 { 1200.0 } else { 0.0 };
            let tw = 250.0 * (-((phase - 0.3) / 0.05).powi(2)).exp();
            let hum = 100.0 * (2.0 * PI * 50.0 * t).sin();
            (offset + gain * (qrs + tw) + 80.0 * (2.0 * PI * 0.25 * t).sin() + hum) as f32
        })
        .collect()
}

fn recording(fs: f64, leads: &[Lead], rows: Vec<Vec<f32>>) -> Recording {
    let n = rows.first().map_or(0, Vec::len);
    Recording {
        sample_rate_hz: fs,
        leads: LeadSet(leads.to_vec()),
        samples_uv: Array2::from_shape_vec((leads.len(), n), rows.concat()).unwrap(),
    }
}

/// An 8-channel cart (I, II, V1..V6) at `fs`, 10 s.
fn cart(fs: f64) -> Recording {
    let leads = [
        Lead::I,
        Lead::II,
        Lead::V1,
        Lead::V2,
        Lead::V3,
        Lead::V4,
        Lead::V5,
        Lead::V6,
    ];
    let rows = (0..leads.len())
        .map(|i| ecg_like(fs, 10.0, 0.5 + 0.1 * i as f64, 1000.0 * i as f64 - 3000.0))
        .collect();
    recording(fs, &leads, rows)
}

/// Cuts a recording into device blocks of varying size, as a source would deliver them.
fn blocks(rec: &Recording, lead_off: &[bool]) -> Vec<SampleBlock> {
    let mut out = Vec::new();
    let (n, len) = (rec.leads.len(), rec.len());
    let mut t = 0;
    let mut k = 0u64;
    while t < len {
        let frames = [1, 13, 64, 200][(k % 4) as usize].min(len - t);
        let samples_uv = (t..t + frames)
            .flat_map(|i| (0..n).map(move |l| (l, i)))
            .map(|(l, i)| rec.samples_uv[[l, i]])
            .collect();
        out.push(SampleBlock {
            sequence: k,
            device_time_ns: 1_000_000_000 + (t as f64 * 1e9 / rec.sample_rate_hz).round() as u64,
            sample_rate_hz: rec.sample_rate_hz,
            leads: rec.leads.clone(),
            samples_uv,
            lead_off: lead_off.to_vec(),
        });
        t += frames;
        k += 1;
    }
    out
}

fn daemon_path(pre: &Preprocessor, rec: &Recording, lead_off: &[bool]) -> Vec<ModelInput> {
    let mut windower = pre.windower(&rec.leads, rec.sample_rate_hz).unwrap();
    blocks(rec, lead_off)
        .iter()
        .flat_map(|b| windower.push(b).unwrap())
        .map(|w| pre.process_window(&w).unwrap())
        .collect()
}

#[test]
fn daemon_and_training_paths_give_identical_model_input() {
    for fs in [250.0, 360.0, 500.0, 1000.0] {
        for zero_phase in [false, true] {
            let mut spec = PreprocessSpec::default();
            spec.filter.zero_phase = zero_phase;
            let pre = Preprocessor::new(spec).unwrap();
            let rec = cart(fs);
            let streamed = daemon_path(&pre, &rec, &[false; 8]);
            assert_eq!(streamed.len(), 1, "{fs} Hz");
            let batch = pre.process_recording(&rec).unwrap();
            // The daemon also analyses beats for its published measurements; training (without
            // rhythm statistics) does not need them. Everything the model reads is identical.
            let mut daemon = streamed[0].clone();
            assert!(daemon.beats.take().is_some(), "{fs} Hz: measured");
            assert_eq!(batch.beats, None);
            assert_eq!(daemon, batch, "{fs} Hz, zero_phase {zero_phase}");
            assert_eq!(batch.samples.dim(), (12, 5000));
            assert!(batch.quality.is_reportable(), "{:?}", batch.quality.reasons);
        }
    }
}

#[test]
fn model_input_is_min_max_scaled_with_derived_limb_leads_and_no_mains() {
    let pre = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let input = pre.process_recording(&cart(500.0)).unwrap();
    let (lo, hi) = input
        .samples
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(
        input.lead_mask.status[Lead::AVF.index()],
        LeadStatus::Derived
    );
    assert_eq!(
        input.lead_mask.status[Lead::V3.index()],
        LeadStatus::Measured
    );
    // 50 Hz hum (100 uV of a ~1300 uV signal) is gone: lock-in amplitude in the second half.
    let row = input.samples.row(Lead::II.index());
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for (i, &v) in row.iter().enumerate().skip(2500) {
        let p = 2.0 * PI * 50.0 * i as f64 / 500.0;
        s += f64::from(v) * p.sin();
        c += f64::from(v) * p.cos();
    }
    let hum = 2.0 * (s * s + c * c).sqrt() / 2500.0;
    let hum_before = 100.0 / 1300.0;
    assert!(hum < hum_before / 100.0, "50 Hz left: {hum} of full scale");
}

#[test]
fn single_lead_strap_is_masked_and_reportable_only_if_the_bundle_accepts_one_lead() {
    let strap = recording(130.0, &[Lead::I], vec![ecg_like(130.0, 10.0, 1.0, 0.0)]);
    let twelve = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let input = twelve.process_recording(&strap).unwrap();
    assert_eq!(input.samples.dim(), (12, 5000));
    assert_eq!(input.lead_mask.missing().len(), 11);
    assert!(
        !input.quality.is_reportable(),
        "a 12-lead model must not report on one lead"
    );
    assert!(
        input
            .samples
            .row(Lead::V1.index())
            .iter()
            .all(|&v| v == 0.0)
    );
    let one_lead = Preprocessor::new(PreprocessSpec {
        required_leads: vec![Lead::I],
        normalization: Normalization::ZScorePerLead,
        ..PreprocessSpec::default()
    })
    .unwrap();
    let input = one_lead.process_recording(&strap).unwrap();
    assert!(input.quality.is_reportable(), "{:?}", input.quality.reasons);
}

#[test]
fn quality_separates_clean_noisy_lead_off_and_flat_records() {
    let pre = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let clean = cart(500.0);
    let mut noisy = clean.clone();
    let mut rng = StdRng::seed_from_u64(42);
    noisy
        .samples_uv
        .row_mut(3)
        .mapv_inplace(|v| v + 300.0 * (rng.random::<f32>() - 0.5) * 12f32.sqrt());
    let mut flat = clean.clone();
    flat.samples_uv.row_mut(5).fill(-2000.0);

    let clean_q = &daemon_path(&pre, &clean, &[false; 8])[0].quality;
    let noisy_q = &daemon_path(&pre, &noisy, &[false; 8])[0].quality;
    let mut off = [false; 8];
    off[0] = true;
    let off_q = &daemon_path(&pre, &clean, &off)[0].quality;
    let flat_q = &daemon_path(&pre, &flat, &[false; 8])[0].quality;

    assert!(
        clean_q.is_reportable() && clean_q.index > 0.9,
        "{clean_q:?}"
    );
    for (name, q, lead, issue) in [
        ("noisy", noisy_q, Lead::V2, LeadIssue::HighFrequencyNoise),
        ("lead-off", off_q, Lead::I, LeadIssue::LeadOff),
        ("flat", flat_q, Lead::V4, LeadIssue::Flat),
    ] {
        assert!(!q.is_reportable(), "{name} record was reportable");
        assert!(
            q.index < clean_q.index,
            "{name}: {} vs clean {}",
            q.index,
            clean_q.index
        );
        assert!(
            q.per_lead[lead.index()].issues.contains(&issue),
            "{name}: {:?}",
            q.per_lead[lead.index()]
        );
    }
    // Lead I off also spoils every limb lead derived from it.
    assert!(
        off_q.per_lead[Lead::AVL.index()]
            .issues
            .contains(&LeadIssue::LeadOff)
    );
}
