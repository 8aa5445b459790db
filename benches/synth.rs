//! Synthesizer throughput: one clean 10 s, 12-lead, 500 Hz record, one with artefacts, and
//! the per-frame streaming path. `meit synth bench` times 10,000 records end to end.

use criterion::{Criterion, criterion_group, criterion_main};
use meit::synth::{Acquisition, ConditionSet, EcgStream, RecordSpec, StreamConfig, generate};
use std::hint::black_box;

fn records(c: &mut Criterion) {
    let clean = RecordSpec::ten_seconds(ConditionSet::parse_list("af,pvc").unwrap());
    c.bench_function("record_10s_500hz_clean", |b| {
        let mut seed = 0;
        b.iter(|| {
            seed += 1;
            black_box(generate(&clean, seed).unwrap())
        })
    });
    let noisy = RecordSpec {
        acquisition: Acquisition::uniform(0.5),
        ..clean.clone()
    };
    c.bench_function("record_10s_500hz_artefacts", |b| {
        let mut seed = 0;
        b.iter(|| {
            seed += 1;
            black_box(generate(&noisy, seed).unwrap())
        })
    });
}

fn stream(c: &mut Criterion) {
    let mut s = EcgStream::new(&StreamConfig {
        sample_rate_hz: 500.0,
        conditions: ConditionSet::normal(),
        acquisition: Acquisition::uniform(0.3),
        seed: 1,
        expected_frames: u64::MAX,
        overrides: Default::default(),
    })
    .unwrap();
    c.bench_function("stream_frame", |b| b.iter(|| black_box(s.next_frame())));
}

criterion_group!(benches, records, stream);
criterion_main!(benches);
