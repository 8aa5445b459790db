//! Continuous streaming as the device simulator uses it: frames pulled one by one, a condition
//! change between beats, and every supported sample rate.

use meit::dsp::beats::analyze;
use meit::ecg::{LeadSet, Recording};
use meit::synth::{
    Acquisition, ConditionSet, EcgStream, Overrides, RecordSpec, StreamConfig, generate,
};
use ndarray::Array2;

/// Pulls `seconds` of frames from the stream into a recording.
fn pull(stream: &mut EcgStream, seconds: f64) -> Recording {
    let fs = stream.sample_rate_hz();
    let n = (seconds * fs) as usize;
    let mut samples = Array2::<f32>::zeros((12, n));
    for t in 0..n {
        for (row, v) in stream.next_frame().iter().enumerate() {
            samples[[row, t]] = *v;
        }
    }
    Recording {
        sample_rate_hz: fs,
        leads: LeadSet::standard_12(),
        samples_uv: samples,
    }
}

#[test]
fn a_stream_switching_from_sinus_to_af_becomes_irregular_without_a_gap() {
    let mut stream = EcgStream::new(&StreamConfig {
        sample_rate_hz: 500.0,
        conditions: ConditionSet::normal(),
        // Electrode-motion transients can pass for beats (a known detector limit), so this
        // stream carries the other artefacts only.
        acquisition: Acquisition {
            lead_off: 0.0,
            motion: 0.0,
            ..Acquisition::uniform(0.3)
        },
        seed: 8,
        expected_frames: u64::MAX,
        overrides: Overrides::default(),
    })
    .unwrap();
    let sinus = analyze(&pull(&mut stream, 20.0)).unwrap();
    stream.set_conditions(&ConditionSet::parse_list("af").unwrap());
    let _transition = pull(&mut stream, 2.0);
    let af = analyze(&pull(&mut stream, 20.0)).unwrap();
    let (s, a) = (sinus.rr_irregularity.unwrap(), af.rr_irregularity.unwrap());
    assert!(a > 3.0 * s, "irregularity sinus {s:.3}, AF {a:.3}");
    // No pause longer than 2 s anywhere in the AF segment.
    assert!(af.rr_ms.iter().all(|&rr| rr < 2000.0), "{:?}", af.rr_ms);
}

#[test]
fn every_supported_sample_rate_gives_the_labelled_rate() {
    for fs in [100.0, 250.0, 360.0, 500.0, 1000.0] {
        let spec = RecordSpec {
            sample_rate_hz: fs,
            ..RecordSpec::ten_seconds(ConditionSet::normal())
        };
        let rec = generate(&spec, 12).unwrap();
        assert_eq!(rec.recording.samples_uv.ncols(), (10.0 * fs) as usize);
        let measured = analyze(&rec.recording).unwrap().heart_rate_bpm.unwrap();
        let label = rec.truth.measurements.ventricular_rate_bpm;
        assert!(
            (measured - label).abs() <= 3.0,
            "{fs} Hz: {measured} vs {label}"
        );
    }
}

#[test]
fn a_stream_is_the_same_signal_as_a_record_with_the_same_seed() {
    let spec = RecordSpec::ten_seconds(ConditionSet::parse_list("pvc").unwrap());
    let rec = generate(&spec, 4).unwrap();
    let mut stream = EcgStream::new(&StreamConfig {
        sample_rate_hz: 500.0,
        conditions: spec.conditions.clone(),
        acquisition: spec.acquisition,
        seed: 4,
        expected_frames: 5000,
        overrides: Overrides::default(),
    })
    .unwrap();
    assert_eq!(pull(&mut stream, 10.0), rec.recording);
}
