//! Beat detection on a real annotated record: MIT-BIH Arrhythmia Database record 100
//! (`tests/fixtures/physionet`, ODC-By 1.0), judged as EC57 judges QRS detectors
//! (`meit::dsp::beat_bench`). A regression test on the figures `meit bench beats` reports,
//! not a timing.

use std::path::{Path, PathBuf};

use meit::dsp::beat_bench::{self, Stress};

fn record_100() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/physionet/100.hea")
}

/// Se and +P must both reach this on the record, as recorded and under each stress.
const TARGET: f64 = 0.995;

/// `meit bench beats` also reports T waves taller than the QRS (`Stress::TallT`), which the
/// detector does not yet meet the target on; this test holds the conditions it meets.
#[test]
fn record_100_meets_the_ec57_target_as_recorded_at_low_voltage_with_noise_bursts_and_wander() {
    for stress in [
        Stress::None,
        Stress::LowAmplitude(0.2),
        Stress::NoiseBursts(100.0),
        Stress::BaselineWander(1000.0),
    ] {
        let r =
            beat_bench::bench_record(&record_100(), stress, beat_bench::DAEMON_WINDOW_S).unwrap();
        let m = r.matching;
        // 2273 reference beats in all; the first 5 minutes are not scored.
        assert_eq!(r.scored_from_s, 300.0);
        assert_eq!(m.true_positives + m.false_negatives, 1902, "{m:?}");
        let (se, pp) = (m.sensitivity().unwrap(), m.positive_predictivity().unwrap());
        assert!(
            se >= TARGET && pp >= TARGET,
            "{}: Se {:.4}, +P {:.4} ({m:?})",
            r.stress,
            se,
            pp
        );
        assert_eq!(r.failed_windows, 0, "{}", r.stress);
    }
}

#[test]
fn record_100_reads_its_leads_under_their_mit_bih_names() {
    let (recording, names, reference) = beat_bench::load_annotated(&record_100()).unwrap();
    assert_eq!(names, vec!["MLII", "V5"]);
    assert_eq!(
        recording.leads,
        meit::ecg::LeadSet(vec![meit::ecg::Lead::II, meit::ecg::Lead::V5])
    );
    assert_eq!(recording.sample_rate_hz, 360.0);
    assert_eq!(reference.len(), 2273);
}
