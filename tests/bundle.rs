//! The committed default bundle (`models/bundles/tiny`) opens and verifies; damaged copies of it
//! are refused with a message that names the file and what is wrong; a copy with a shorter
//! token limit cuts its reports and says so.
//!
//! Needs the project-local ONNX Runtime (`scripts/fetch-onnxruntime.sh`, run by `make test`).

use std::path::{Path, PathBuf};

use meit::infer::bench::bench_windows;
use meit::infer::bundle::{Bundle, BundleError, FORMAT_VERSION, Precision, sha256_file};
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;
use serde_json::Value;

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny")
}

/// ONNX Runtime allows one environment per process: the tests share it.
fn runtime() -> &'static OnnxRuntime {
    static RT: std::sync::OnceLock<OnnxRuntime> = std::sync::OnceLock::new();
    RT.get_or_init(|| OnnxRuntime::load(None).unwrap_or_else(|e| panic!("{e}")))
}

/// A writable copy of the committed bundle.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(committed()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn refusal(dir: &Path) -> String {
    let err = Bundle::open(dir, runtime()).expect_err("the bundle must be refused");
    err.to_string()
}

#[test]
fn the_committed_bundle_opens_and_describes_itself() {
    let bundle = Bundle::open(&committed(), runtime()).unwrap_or_else(|e| panic!("{e}"));
    let m = &bundle.manifest;
    assert_eq!(m.format_version, FORMAT_VERSION);
    assert_eq!(m.decoder_graph.precision, Precision::Int4);
    assert_eq!(m.decoder_graph.block_size, Some(32));
    assert_eq!(m.preprocess.model_rate_hz, 100.0);
    assert_eq!(m.encoder.samples, 1000);
    assert_eq!(m.prompt.ids.first().copied(), m.tokens.begin_id);
    assert!(m.tokens.stop_ids.contains(&m.tokens.end_id));
    // The headline rows were written by `meit-models eval --bundle` on this bundle.
    assert!(m.evaluation["test.macro_f1"] > 0.9, "{:?}", m.evaluation);
    assert!(
        m.evaluation["shuffled-ecg.macro_f1"] < 0.3,
        "{:?}",
        m.evaluation
    );
}

#[test]
fn a_truncated_graph_is_refused_by_checksum_and_by_onnx_runtime() {
    let dir = copy();
    let graph = dir.path().join("decoder.onnx");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("decoder.onnx") && e.contains("does not match"),
        "{e}"
    );
    // With the checksum made to agree, ONNX Runtime itself refuses the half graph.
    let sum = sha256_file(&graph).unwrap();
    edit_manifest(dir.path(), |m| {
        m["files"]["decoder.onnx"] = Value::String(sum)
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("decoder.onnx") && e.contains("cannot open the graph"),
        "{e}"
    );
}

#[test]
fn a_changed_tokenizer_fails_its_checksum() {
    let dir = copy();
    let path = dir.path().join("tokenizer.json");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    match Bundle::open(dir.path(), runtime()) {
        Err(BundleError::Checksum { path, .. }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn a_manifest_of_a_newer_format_is_refused_before_its_fields_are_read() {
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["format_version"] = Value::from(FORMAT_VERSION + 1);
        m["a_field_from_the_future"] = Value::from(1);
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("manifest.json")
            && e.contains(&format!("format version {}", FORMAT_VERSION + 1)),
        "{e}"
    );
}

#[test]
fn graph_inputs_that_disagree_with_the_manifest_are_named() {
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["decoder_graph"]["inputs"][0]["dtype"] = Value::from("float32");
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("decoder.onnx") && e.contains("input `input_ids` is int64 in the graph"),
        "{e}"
    );

    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["encoder_graph"]["inputs"][0]["shape"][1] = Value::from(8);
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("encoder.onnx") && e.contains("axis 1 is 12 in the graph, 8"),
        "{e}"
    );

    let dir = copy();
    edit_manifest(dir.path(), |m| {
        // One output more than the graph has (not a cache name: the manifest's own check of
        // the layer count's names passes, the graph's comparison refuses it).
        m["decoder_graph"]["outputs"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "extra", "dtype": "float32", "shape": ["batch"]}));
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("decoder.onnx") && e.contains("outputs in the graph"),
        "{e}"
    );
}

#[test]
fn a_preprocessing_spec_the_daemon_cannot_run_is_refused() {
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["preprocess"]["model_rate_hz"] = Value::from(-100.0);
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("manifest.json") && e.contains("preprocessing") && e.contains("model_rate_hz"),
        "{e}"
    );

    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["preprocess"]["lead_order"] = serde_json::json!(["I", "II"]);
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("lead_order has 2 leads, the encoder takes 12"),
        "{e}"
    );
}

#[test]
fn a_manifest_whose_preprocessing_and_encoder_disagree_on_rhythm_features_is_refused() {
    // The preprocessing computes the R-R statistics, but the committed encoder has no input
    // for them: the daemon would compute numbers no graph reads, or feed a graph without them.
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["preprocess"]["rhythm_features"] = Value::from(true);
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("manifest.json") && e.contains("has no such input `rhythm`"),
        "{e}"
    );

    // The other way round: the manifest says the graph reads them (it would then fail to
    // open against the graph too), the preprocessing does not compute them.
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        let inputs = m["encoder_graph"]["inputs"].as_array_mut().unwrap();
        inputs
            .push(serde_json::json!({"name": "rhythm", "dtype": "float32", "shape": ["batch", 4]}));
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("reads `rhythm`") && e.contains("does not compute them"),
        "{e}"
    );

    // Both sides agree, but the input is not what the engine feeds: refused before any run.
    for (dtype, width) in [("float32", 5), ("float16", 4)] {
        let dir = copy();
        edit_manifest(dir.path(), |m| {
            m["preprocess"]["rhythm_features"] = Value::from(true);
            let inputs = m["encoder_graph"]["inputs"].as_array_mut().unwrap();
            inputs.push(
                serde_json::json!({"name": "rhythm", "dtype": dtype, "shape": ["batch", width]}),
            );
        });
        let e = refusal(dir.path());
        assert!(
            e.contains("manifest.json") && e.contains("the engine feeds float32 [batch, 4]"),
            "{dtype} {width}: {e}"
        );
    }
}

#[test]
fn a_missing_or_garbled_manifest_is_named() {
    let dir = copy();
    std::fs::write(dir.path().join("manifest.json"), "{ not json").unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("manifest.json") && e.contains("not a valid bundle manifest"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("manifest.json")).unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("manifest.json") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn a_window_the_encoder_does_not_take_or_a_hop_outside_it_is_refused() {
    // The committed encoder takes 1,000 samples: 10 s at 100 Hz.
    for (field, value, expected) in [
        (
            "window_seconds",
            5.0,
            "window_seconds 5 at 100 Hz is 500 samples, the encoder takes 1000",
        ),
        (
            "model_rate_hz",
            250.0,
            "window_seconds 10 at 250 Hz is 2500 samples",
        ),
        ("hop_seconds", 0.0, "hop_seconds is 0; allowed"),
        ("hop_seconds", 11.0, "hop_seconds is 11; allowed"),
    ] {
        let dir = copy();
        edit_manifest(dir.path(), |m| m["preprocess"][field] = Value::from(value));
        let e = refusal(dir.path());
        assert!(
            e.contains("manifest.json") && e.contains(expected),
            "{field} {value}: {e}"
        );
    }
}

#[test]
fn a_layer_count_other_than_the_graphs_cache_inputs_is_refused() {
    // The engine sizes its cache and binds `past_key_values.{i}` by `decoder.num_layers`: a
    // count the graph does not have (or an absurd one) is refused before any session opens.
    for layers in [3u64, 5, 1 << 40] {
        let dir = copy();
        edit_manifest(dir.path(), |m| {
            m["decoder"]["num_layers"] = Value::from(layers);
        });
        let err = Bundle::open_unchecked_graphs(dir.path()).expect_err("must be refused");
        let e = err.to_string();
        assert!(
            e.contains("manifest.json")
                && e.contains(&format!("decoder.num_layers is {layers}"))
                && e.contains("past_key_values inputs are 8"),
            "{layers}: {e}"
        );
    }
}

#[test]
fn a_checksum_in_upper_case_hex_is_the_same_checksum() {
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        for (_, sum) in m["files"].as_object_mut().unwrap() {
            *sum = Value::from(sum.as_str().unwrap().to_ascii_uppercase());
        }
    });
    Bundle::open(dir.path(), runtime()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_daemon_does_not_adopt_a_refused_manifests_preprocessing() {
    use meit::dsp::DspConfig;
    use meit::infer::config::{ModelConfig, RuntimeConfig};
    use meit::pipeline::model::{fallback_spec, load};
    // `[model] required = false`: the daemon runs without reports, but every bed's quality and
    // measurements must go on with the deployment's own preprocessing, not a refused one.
    for (rate, why) in [(0.0, "model_rate_hz"), (250.0, "the encoder takes 1000")] {
        let dir = copy();
        edit_manifest(dir.path(), |m| {
            m["preprocess"]["model_rate_hz"] = Value::from(rate);
        });
        let model = ModelConfig {
            bundle: dir.path().to_path_buf(),
            ..ModelConfig::default()
        };
        let loaded = load(&model, &RuntimeConfig::default(), &DspConfig::default());
        let Err(reason) = loaded.engine else {
            panic!("{rate} Hz: the bundle must be refused");
        };
        assert!(reason.contains(why), "{rate} Hz: {reason}");
        assert_eq!(
            loaded.spec,
            fallback_spec(&DspConfig::default()),
            "{rate} Hz"
        );
        assert_eq!(loaded.encoder_window_seconds, None, "{rate} Hz");
    }
}

/// A report the model ends itself is `finished`; one cut at the manifest's `max_new_tokens`
/// (here 2, shorter than any report) is not, greedy and beam alike, so the daemon publishes
/// no half statement.
#[test]
fn a_report_cut_at_max_new_tokens_is_not_finished() {
    let bundle = Bundle::open(&committed(), runtime()).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::new(bundle, runtime(), 1).unwrap_or_else(|e| panic!("{e}"));
    let windows = bench_windows(&engine.bundle().manifest, 2, 5).unwrap();
    let (reports, _) = engine.generate(&windows).unwrap();
    let (beam, _) = engine.generate_beam(&windows[0], 2).unwrap();
    assert!(beam.report.finished, "{:?}", beam.report);
    for r in &reports {
        assert!(r.finished && r.ids.len() > 2, "{r:?}");
    }
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["tokens"]["max_new_tokens"] = Value::from(2)
    });
    let bundle = Bundle::open(dir.path(), runtime()).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::new(bundle, runtime(), 1).unwrap_or_else(|e| panic!("{e}"));
    let (cut, _) = engine.generate(&windows).unwrap();
    for (c, r) in cut.iter().zip(&reports) {
        assert!(!c.finished, "{c:?}");
        assert_eq!(c.ids, r.ids[..2]);
    }
    let (beam, _) = engine.generate_beam(&windows[0], 2).unwrap();
    assert!(
        !beam.report.finished && beam.report.ids.len() == 2,
        "{:?}",
        beam.report
    );
}

/// Every file the manifest names must be a plain file of the bundle directory: a path out of
/// it (`/dev/zero` would be hashed without end), a subdirectory path, the manifest itself, or a
/// name that is a directory is refused before anything is read.
#[test]
fn file_names_outside_the_bundle_or_not_plain_files_are_refused_before_reading() {
    for name in [
        "/dev/zero",
        "../tokenizer.json",
        "sub/x.onnx",
        "manifest.json",
        "",
    ] {
        let dir = copy();
        edit_manifest(dir.path(), |m| {
            m["files"][name] = Value::from("00");
        });
        let e = Bundle::open_unchecked_graphs(dir.path())
            .expect_err("must be refused")
            .to_string();
        assert!(
            e.contains("manifest.json")
                && e.contains(&format!("the file name `{name}` is not a plain file name")),
            "{name}: {e}"
        );
    }
    let dir = copy();
    edit_manifest(dir.path(), |m| {
        m["encoder_graph"]["file"] = Value::from("../encoder.onnx");
    });
    let e = refusal(dir.path());
    assert!(
        e.contains("`../encoder.onnx` is not a plain file name"),
        "{e}"
    );

    let dir = copy();
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    edit_manifest(dir.path(), |m| m["files"]["weights"] = Value::from("00"));
    let e = refusal(dir.path());
    assert!(
        e.contains("weights") && e.contains("not a regular file"),
        "{e}"
    );
}

/// Decoding limits and token ids the engine could not use are refused when the bundle opens,
/// not met at the first window.
#[test]
fn unusable_decoding_limits_and_token_ids_are_refused() {
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: [Case; 9] = [
        (
            "no new token",
            |m| m["tokens"]["max_new_tokens"] = Value::from(0),
            "tokens.max_new_tokens is 0",
        ),
        (
            "no stop id",
            |m| m["tokens"]["stop_ids"] = serde_json::json!([]),
            "tokens.stop_ids is empty",
        ),
        (
            "end id not a stop id",
            |m| m["tokens"]["stop_ids"] = serde_json::json!([3]),
            "tokens.stop_ids [3] lacks end_id 2",
        ),
        (
            "stop id outside the vocabulary",
            |m| m["tokens"]["stop_ids"] = serde_json::json!([2, 1024]),
            "tokens.stop_ids holds id 1024, outside decoder.vocab_size 1024",
        ),
        (
            "prompt id outside the vocabulary",
            |m| m["prompt"]["ids"][3] = Value::from(4_000_000_000u64),
            "prompt.ids holds id 4000000000, outside decoder.vocab_size 1024",
        ),
        (
            "empty prompt",
            |m| m["prompt"]["ids"] = serde_json::json!([]),
            "prompt.ids is empty",
        ),
        (
            "prompt fills the positions",
            |m| m["decoder"]["max_positions"] = Value::from(36),
            "the ECG slot and the prompt's 35 ids fill decoder.max_positions 36",
        ),
        (
            "absurd positions",
            |m| m["decoder"]["max_positions"] = Value::from(1u64 << 40),
            "decoder.max_positions is 1099511627776; at most 131072",
        ),
        (
            "pad id outside the vocabulary",
            |m| m["tokens"]["pad_id"] = Value::from(5000),
            "tokens.pad_id holds id 5000",
        ),
    ];
    for (what, edit, expected) in cases {
        let dir = copy();
        edit_manifest(dir.path(), edit);
        let e = Bundle::open_unchecked_graphs(dir.path())
            .expect_err(what)
            .to_string();
        assert!(
            e.contains("manifest.json") && e.contains(expected),
            "{what}: {e}"
        );
    }
}

/// A graph that does not declare a name the engine binds (`ecg`, `input_ids`, `logits`, the
/// encoder's `slot.{i}.*`) is refused when the bundle opens, naming the graph and the name.
#[test]
fn graphs_without_the_names_the_engine_binds_are_refused() {
    for (graph, side, index, expected) in [
        (
            "encoder_graph",
            "inputs",
            0,
            "the encoder graph has no input `ecg`",
        ),
        (
            "decoder_graph",
            "inputs",
            0,
            "the decoder graph has no input `input_ids`",
        ),
        (
            "decoder_graph",
            "inputs",
            2,
            "the decoder graph has no input `position_ids`",
        ),
        (
            "decoder_graph",
            "outputs",
            0,
            "the decoder graph has no output `logits`",
        ),
        (
            "encoder_graph",
            "outputs",
            0,
            "the encoder graph's slot outputs are 7",
        ),
    ] {
        let dir = copy();
        edit_manifest(dir.path(), |m| {
            m[graph][side][index]["name"] = Value::from("renamed");
        });
        let e = Bundle::open_unchecked_graphs(dir.path())
            .expect_err(expected)
            .to_string();
        assert!(
            e.contains("manifest.json") && e.contains(expected),
            "{graph} {side}[{index}]: {e}"
        );
    }
}

/// A graph or tokenizer replaced after the bundle was opened and checked (a new bundle copied
/// over a running one) is refused when the engine reads it, naming the file: the engine runs
/// the bytes it checksummed, not whatever the path holds by then.
#[test]
fn a_file_replaced_after_the_bundle_was_checked_is_refused_by_the_engine() {
    let fp32 = committed().with_file_name("tiny-fp32");
    for file in ["decoder.onnx", "encoder.onnx", "tokenizer.json"] {
        let dir = copy();
        let bundle = Bundle::open(dir.path(), runtime()).unwrap_or_else(|e| panic!("{e}"));
        // A valid graph ONNX Runtime opens (the fp32 export's decoder: for decoder.onnx one with
        // the same inputs and outputs), or the tokenizer with a space more.
        let replacement = if file == "tokenizer.json" {
            let mut text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            text.push(' ');
            text.into_bytes()
        } else {
            std::fs::read(fp32.join("decoder.onnx")).unwrap()
        };
        std::fs::write(dir.path().join(file), replacement).unwrap();
        let e = match Engine::new(bundle, runtime(), 1) {
            Ok(_) => panic!("{file} replaced after the check was run"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(file) && e.contains("does not match"), "{e}");
    }
}
