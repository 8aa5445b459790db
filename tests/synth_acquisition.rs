//! Acquisition artefacts measured on the signal: with one seed the heart signal is the same
//! with and without artefacts, and each artefact's power grows with its severity.

use meit::synth::{Acquisition, ConditionSet, RecordSpec, generate};
use ndarray::Array2;

/// 40 s of normal rhythm (long enough for a few electrode-motion events at low severity).
fn signal(acquisition: Acquisition) -> Array2<f32> {
    let spec = RecordSpec {
        acquisition,
        seconds: 40.0,
        ..RecordSpec::ten_seconds(ConditionSet::parse_list("normal").unwrap())
    };
    generate(&spec, 77).unwrap().recording.samples_uv
}

/// Builds an acquisition with one artefact at a severity.
type MakeAcquisition = fn(f32) -> Acquisition;

fn rms(a: &Array2<f32>) -> f32 {
    (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt()
}

#[test]
fn each_artefact_adds_power_that_grows_with_its_severity() {
    let clean = signal(Acquisition::clean());
    let artefacts: [(&str, MakeAcquisition); 4] = [
        ("baseline wander", |s| Acquisition {
            baseline_wander: s,
            ..Acquisition::clean()
        }),
        ("mains", |s| Acquisition {
            mains: s,
            ..Acquisition::clean()
        }),
        ("emg", |s| Acquisition {
            emg: s,
            ..Acquisition::clean()
        }),
        ("motion", |s| Acquisition {
            motion: s,
            ..Acquisition::clean()
        }),
    ];
    for (name, make) in artefacts {
        let same = signal(make(0.0));
        assert_eq!(same, clean, "{name} at severity 0 changes the signal");
        let low = rms(&(&signal(make(0.3)) - &clean));
        let high = rms(&(&signal(make(1.0)) - &clean));
        assert!(low > 0.5, "{name}: severity 0.3 adds only {low} uV rms");
        assert!(
            high > 2.0 * low,
            "{name}: {high} uV at 1.0 vs {low} uV at 0.3"
        );
    }
}

#[test]
fn quantisation_error_stays_within_half_a_count() {
    let clean = signal(Acquisition::clean());
    let adc = signal(Acquisition {
        adc: Some(meit::synth::Adc {
            uv_per_count: 5.0,
            bits: 16,
        }),
        ..Acquisition::clean()
    });
    let worst = (&adc - &clean).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        worst <= 2.5 + 1e-3 && worst > 1.0,
        "worst quantisation error {worst}"
    );
    assert!(
        adc.iter()
            .all(|v| (v / 5.0 - (v / 5.0).round()).abs() < 1e-4)
    );
}

#[test]
fn meit_perturbation_is_bounded_by_its_window_fraction() {
    for (fraction, seed) in [(0.05f32, 1u64), (0.1, 2), (0.15, 3), (0.2, 4)] {
        let spec = RecordSpec {
            meit_max_fraction: Some(fraction),
            ..RecordSpec::ten_seconds(ConditionSet::normal())
        };
        let rec = generate(&spec, seed).unwrap();
        let p = rec.truth.perturbation.expect("perturbation recorded");
        assert!(
            p.len as f32 <= fraction * 5000.0,
            "{} samples for {fraction}",
            p.len
        );
        let clean = generate(&RecordSpec::ten_seconds(ConditionSet::normal()), seed).unwrap();
        let diff = &rec.recording.samples_uv - &clean.recording.samples_uv;
        let touched: Vec<usize> = (0..5000)
            .filter(|&t| diff.column(t).iter().any(|&d| d != 0.0))
            .collect();
        assert!(touched.iter().all(|&t| t >= p.start && t < p.start + p.len));
    }
}
