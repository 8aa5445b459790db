//! ONNX Runtime through `ort` on the CPU execution provider, on a committed fixture model
//! (tests/fixtures/tiny_affine.onnx, written by tests/fixtures/make_tiny_affine.py).
//!
//! Needs the project-local ONNX Runtime (`scripts/fetch-onnxruntime.sh`, run by `make test`).

use std::path::{Path, PathBuf};

use meit::infer::runtime::{OnnxRuntime, RuntimeError};
use ndarray::Array3;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn runtime() -> OnnxRuntime {
    OnnxRuntime::load(None).unwrap_or_else(|e| panic!("{e}"))
}

/// The fixture's graph, computed here from the formula in make_tiny_affine.py.
fn expected(x: &Array3<f32>) -> Vec<[f64; 3]> {
    x.outer_iter()
        .map(|record| {
            let means: Vec<f64> = record
                .outer_iter()
                .map(|lead| lead.iter().map(|&v| v as f64).sum::<f64>() / lead.len() as f64)
                .collect();
            let mut y = [0.0; 3];
            for (j, out) in y.iter_mut().enumerate() {
                let pre: f64 = means
                    .iter()
                    .enumerate()
                    .map(|(i, m)| m * (i as f64 - 2.0 * j as f64) / 10.0)
                    .sum::<f64>()
                    + (j as f64 - 1.0);
                *out = pre.max(0.0);
            }
            y
        })
        .collect()
}

#[test]
fn fixture_model_computes_its_graph_on_the_cpu_provider() {
    let rt = runtime();
    assert!(rt.version.starts_with("1."), "version {}", rt.version);
    let mut session = rt
        .cpu_session(&fixture("tiny_affine.onnx"), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let x = Array3::from_shape_fn((2, 12, 50), |(b, l, s)| {
        ((l as f32 * 0.7 + s as f32 * 0.3).sin() + 0.3 * (l as f32 - 5.5)) * (2.0 * b as f32 - 1.0)
    });
    let want = expected(&x);
    // The formula must exercise both sides of the ReLU for this check to mean anything.
    let flat: Vec<f64> = want.iter().flatten().copied().collect();
    assert!(
        flat.contains(&0.0) && flat.iter().any(|&v| v > 0.1),
        "{flat:?}"
    );

    let input = ort::value::TensorRef::from_array_view(&x).unwrap();
    let outputs = session.run(ort::inputs!["x" => input]).unwrap();
    let y = outputs["y"].try_extract_array::<f32>().unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    for (b, row) in want.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let got = y[[b, j]] as f64;
            assert!((got - v).abs() < 1e-5, "y[{b},{j}] = {got}, expected {v}");
        }
    }
}

#[test]
fn a_corrupt_model_is_a_typed_error_not_a_panic() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07this is not a protobuf model").unwrap();
    match rt.cpu_session(&bad, 1) {
        Err(RuntimeError::Session { path, reason }) => {
            assert_eq!(path, bad);
            assert!(!reason.is_empty());
        }
        other => panic!(
            "expected a session error, got {other:?}",
            other = other.map(|_| "a session")
        ),
    }
}
