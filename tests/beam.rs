//! Beam search on the committed default bundle and the real ONNX Runtime: one beam is greedy
//! decoding, and the score a wider search reports is the log-probability the decoder gives
//! its text when the whole sequence is fed at once (which fails if cache rows do not follow
//! their hypotheses).
//!
//! Needs the project-local ONNX Runtime (`scripts/fetch-onnxruntime.sh`, run by `make test`).

use std::path::{Path, PathBuf};

use meit::infer::bench::bench_windows;
use meit::infer::bundle::Bundle;
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;
use ndarray::{Array2, Axis};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny")
}

/// ONNX Runtime allows one environment per process: the tests share it.
fn runtime() -> &'static OnnxRuntime {
    static RT: std::sync::OnceLock<OnnxRuntime> = std::sync::OnceLock::new();
    RT.get_or_init(|| OnnxRuntime::load(None).unwrap_or_else(|e| panic!("{e}")))
}

fn engine() -> Engine {
    let bundle = Bundle::open(&committed(), runtime()).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(bundle, runtime(), 1).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn one_beam_is_greedy_decoding() {
    let mut engine = engine();
    let windows = bench_windows(&engine.bundle().manifest, 4, 11).unwrap();
    for window in &windows {
        let (greedy, _) = engine.generate(&[window]).unwrap();
        let (beam, _) = engine.generate_beam(window, 1).unwrap();
        assert_eq!(beam.report, greedy[0]);
    }
}

/// Summed log-softmax of `ids` after the ECG slot and the prompt, all in one decoder call.
fn teacher_forced_log_prob(engine: &mut Engine, window: &Array2<f32>, ids: &[u32]) -> f64 {
    let prompt = engine.bundle().manifest.prompt.ids.clone();
    let (leads, samples) = window.dim();
    let ecg = window
        .clone()
        .into_shape_with_order((1, leads, samples))
        .unwrap();
    let past = engine.slots(ecg).unwrap();
    let input: Vec<i64> = prompt
        .iter()
        .chain(&ids[..ids.len() - 1])
        .map(|&t| i64::from(t))
        .collect();
    let n = input.len();
    let positions = Array2::from_shape_fn((1, n), |(_, t)| 1 + t as i64);
    let mask = Array2::<i64>::ones((1, 1 + n));
    let ids_in = Array2::from_shape_vec((1, n), input).unwrap();
    let (logits, _) = engine.decode(ids_in, positions, mask, past).unwrap();
    let logits = logits.index_axis(Axis(0), 0);
    ids.iter()
        .enumerate()
        .map(|(j, &token)| {
            let row = logits.row(prompt.len() - 1 + j);
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let log_sum = f64::from(max)
                + row
                    .iter()
                    .map(|&v| f64::from(v - max).exp())
                    .sum::<f64>()
                    .ln();
            f64::from(row[token as usize]) - log_sum
        })
        .sum()
}

#[test]
fn a_wider_beam_reports_the_log_probability_of_its_own_text() {
    let mut engine = engine();
    let stop_ids = engine.bundle().manifest.tokens.stop_ids.clone();
    let windows = bench_windows(&engine.bundle().manifest, 3, 12).unwrap();
    for window in &windows {
        let (beam, timings) = engine.generate_beam(window, 4).unwrap();
        let ids = &beam.report.ids;
        assert!(!beam.report.text.is_empty());
        assert!(
            ids.last().is_some_and(|t| stop_ids.contains(t)),
            "the best hypothesis finished: {ids:?}"
        );
        assert!(timings.decode_steps > 0);
        let forced = teacher_forced_log_prob(&mut engine, &window.samples, ids);
        assert!(
            (beam.log_prob - forced).abs() < 0.02,
            "beam score {} vs teacher-forced {forced}",
            beam.log_prob
        );
    }
}
