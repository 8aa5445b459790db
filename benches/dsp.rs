//! Criterion benchmarks of the dsp stage on 12 leads at 500 Hz (10 s of signal per iteration).
//! Throughput is in samples (one sample of one lead), so criterion's "elem/s" converts directly
//! to ns per sample per lead; `docs/bench/dsp.md` records the figures.
//!
//! ```text
//! cargo bench --bench dsp
//! ```

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;

use meit::dsp::filter::{FilterChain, FilterSpec, filter_recording};
use meit::dsp::resample::Resampler;
use meit::dsp::{PreprocessSpec, Preprocessor};
use meit::ecg::{LeadSet, Recording};

#[path = "support/signal.rs"]
mod signal;

fn recording() -> Recording {
    let data = signal::interleaved();
    Recording {
        sample_rate_hz: signal::RATE_HZ,
        leads: LeadSet::standard_12(),
        samples_uv: Array2::from_shape_vec((signal::FRAMES, signal::LEADS), data)
            .expect("frames x leads")
            .reversed_axes()
            .as_standard_layout()
            .to_owned(),
    }
}

fn filters(c: &mut Criterion) {
    let input = signal::interleaved();
    let rec = recording();
    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(input.len() as u64));
    let diagnostic = FilterSpec {
        highpass_hz: 0.05,
        notch_harmonics: true,
        lowpass_hz: 150.0,
        order: 4,
        ..FilterSpec::default()
    };
    for (name, spec) in [
        ("monitoring", FilterSpec::default()),
        ("diagnostic", diagnostic),
    ] {
        let mut chain = FilterChain::new(&spec, signal::RATE_HZ, signal::LEADS).expect("design");
        group.bench_function(format!("streaming_{name}"), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |block| chain.process_block(block).expect("whole frames"),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("batch_{name}"), |b| {
            b.iter(|| filter_recording(&spec, &rec).expect("design"))
        });
        let zero_phase = FilterSpec {
            zero_phase: true,
            ..spec.clone()
        };
        group.bench_function(format!("zero_phase_{name}"), |b| {
            b.iter(|| filter_recording(&zero_phase, &rec).expect("design"))
        });
    }
    group.finish();
}

fn resampling(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample_to_500hz");
    for from in [130.0, 250.0, 360.0, 1000.0] {
        let n = (from * 10.0) as usize;
        let rec = Recording {
            sample_rate_hz: from,
            leads: LeadSet::standard_12(),
            samples_uv: Array2::from_shape_fn((12, n), |(l, t)| ((t * 7 + l * 13) % 101) as f32),
        };
        let resampler = Resampler::new(from, 500.0).expect("ratio");
        group.throughput(Throughput::Elements((12 * n) as u64));
        group.bench_function(format!("{from}hz"), |b| {
            b.iter(|| resampler.process_recording(&rec))
        });
    }
    group.finish();
}

fn preprocessing(c: &mut Criterion) {
    let rec = recording();
    let pre = Preprocessor::new(PreprocessSpec::default()).expect("spec");
    let mut group = c.benchmark_group("preprocess");
    group.throughput(Throughput::Elements((rec.leads.len() * rec.len()) as u64));
    group.bench_function("recording_12x10s_500hz", |b| {
        b.iter(|| pre.process_recording(&rec).expect("preprocess"))
    });
    // The same with the R-R interval statistics the opt-in rhythm encoder input reads.
    let with_rhythm = Preprocessor::new(PreprocessSpec {
        rhythm_features: true,
        ..PreprocessSpec::default()
    })
    .expect("spec");
    group.bench_function("recording_12x10s_500hz_rhythm", |b| {
        b.iter(|| with_rhythm.process_recording(&rec).expect("preprocess"))
    });
    group.finish();
}

/// The beat analysis (what the daemon's measurements run on every window) beside the rhythm
/// features, which need only its R peaks.
fn beat_analysis(c: &mut Criterion) {
    let rec = recording();
    let mut group = c.benchmark_group("beats");
    group.throughput(Throughput::Elements((rec.leads.len() * rec.len()) as u64));
    group.bench_function("analyze_12x10s_500hz", |b| {
        b.iter(|| meit::dsp::beats::analyze(&rec).expect("beats"))
    });
    group.bench_function("rhythm_features_12x10s_500hz", |b| {
        b.iter(|| meit::dsp::rhythm::RhythmFeatures::measure(&rec))
    });
    group.finish();
}

/// Short runs: the machine is shared, and the figures are compared, not tracked to 1%.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = filters, resampling, preprocessing, beat_analysis
}
criterion_main!(benches);
