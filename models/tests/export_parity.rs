//! The exported bundle computes what the trained model computes: the committed default model
//! (`models/trained/tiny`) exported here, run through ONNX Runtime's CPU provider via `ort`
//! (the daemon's engine, `meit::infer::engine`), against the candle forward pass.
//!
//! Needs the project-local ONNX Runtime (`scripts/fetch-onnxruntime.sh`, run by `make test`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use meit::dsp::ModelInput;
use meit::infer::bundle::{Bundle, Precision};
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;
use meit_models::codec::RecordCodec;
use meit_models::data::Split;
use meit_models::export::{ExportOptions, export};
use meit_models::generate::{device_preprocessor, report_for_input};
use meit_models::model::meit::{Meit, prompt_ids};
use meit_models::train::load_model;
use ndarray::{Array2, Array3, Axis};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trained/tiny")
}

/// The tiny model exported once per test binary: (tempdir, fp32 bundle dir, int4 bundle dir).
fn bundles() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static BUNDLES: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let fp32 = dir.path().join("fp32");
        let int4 = dir.path().join("int4");
        let options = |precision| ExportOptions {
            precision,
            ..Default::default()
        };
        export(&model_dir(), &fp32, &options(Precision::Fp32)).expect("fp32 export");
        export(&model_dir(), &int4, &options(Precision::Int4)).expect("int4 export");
        (dir, fp32, int4)
    })
}

fn runtime() -> &'static OnnxRuntime {
    static RT: OnceLock<OnnxRuntime> = OnceLock::new();
    RT.get_or_init(|| OnnxRuntime::load(None).unwrap_or_else(|e| panic!("{e}")))
}

/// The fp32 model exported with com.microsoft GroupQueryAttention.
fn gqa_fp32() -> &'static (tempfile::TempDir, PathBuf) {
    static GQA: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    GQA.get_or_init(|| {
        use meit_models::export::decoder::AttentionExport;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("gqa");
        let options = ExportOptions {
            precision: Precision::Fp32,
            attention: AttentionExport::Gqa,
            ..Default::default()
        };
        export(&model_dir(), &out, &options).expect("GroupQueryAttention export");
        (dir, out)
    })
}

fn engine(dir: &Path) -> Engine {
    let bundle = Bundle::open(dir, runtime()).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(bundle, runtime(), 1).unwrap_or_else(|e| panic!("{e}"))
}

fn model() -> &'static (Meit, RecordCodec) {
    static MODEL: OnceLock<(Meit, RecordCodec)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (_, model, encoder) = load_model(&model_dir()).expect("the committed model loads");
        (model, encoder)
    })
}

/// Held-out test records of the model's own synthetic test split, preprocessed as `generate`
/// does; only the reportable ones when `reportable`.
fn held_out(n: usize, reportable: bool) -> Vec<ModelInput> {
    let (config, _, _) = load_model(&model_dir()).expect("model");
    let data = config.data.synth.expect("synthetic data config");
    let (_, encoder) = model();
    let mut inputs = Vec::new();
    let mut index = 0;
    while inputs.len() < n {
        let record = data.record(Split::Test, index).expect("record");
        index += 1;
        let input = device_preprocessor(encoder, &record.recording.leads)
            .expect("preprocessor")
            .process_recording(&record.recording)
            .expect("preprocess");
        if !reportable || input.quality.is_reportable() {
            inputs.push(input);
        }
        assert!(index < 10 * n as u64 + 100, "too few reportable records");
    }
    inputs
}

fn batch(inputs: &[ModelInput]) -> Array3<f32> {
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    ndarray::stack(Axis(0), &views).expect("same shapes")
}

fn to_tensor(a: &Array3<f32>) -> Tensor {
    let (b, l, s) = a.dim();
    Tensor::from_vec(
        a.iter().copied().collect::<Vec<f32>>(),
        (b, l, s),
        &Device::Cpu,
    )
    .expect("tensor")
}

/// max |a - b| / max |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn dyn_to_vec(v: &ort::value::DynValue) -> Vec<f32> {
    v.try_extract_array::<f32>()
        .expect("f32 tensor")
        .iter()
        .copied()
        .collect()
}

/// Every layer's slot key and value from `bundle`'s encoder (ONNX Runtime) equal `model`'s
/// (candle) on `ecg` within 1e-4 relative error.
fn assert_slots_match_candle(model: &Meit, bundle: &Path, ecg: &Array3<f32>) -> TestResult {
    assert_slots_match_candle_with(model, bundle, ecg, None)
}

/// [`assert_slots_match_candle`] for an encoder that reads the R-R statistics `rhythm`.
fn assert_slots_match_candle_with(
    model: &Meit,
    bundle: &Path,
    ecg: &Array3<f32>,
    rhythm: Option<&Array2<f32>>,
) -> TestResult {
    let records = ecg.dim().0;
    let mut engine = engine(bundle);
    let slots = engine.slots_with_rhythm(ecg.clone(), rhythm.cloned())?;
    let rhythm = rhythm
        .map(|r| Tensor::from_vec(r.iter().copied().collect(), r.dim(), &Device::Cpu))
        .transpose()?;
    let embedding = model
        .encoder()
        .forward_with(&to_tensor(ecg), rhythm.as_ref(), false)?;
    let cache = model
        .decoder()
        .start_cache(records, Some(&embedding), false)?;
    assert_eq!(slots.len(), cache.layers().len());
    for (layer, ((k, v), reference)) in slots.iter().zip(cache.layers()).enumerate() {
        let (rk, rv) = reference.key_value().expect("slot cached");
        assert_eq!(rk.dims(), &[records, 2, 1, 32]);
        let rk = rk.flatten_all()?.to_vec1::<f32>()?;
        let rv = rv.flatten_all()?.to_vec1::<f32>()?;
        let (ek, ev) = (
            relative_error(&dyn_to_vec(k), &rk),
            relative_error(&dyn_to_vec(v), &rv),
        );
        assert!(
            ek <= 1e-4 && ev <= 1e-4,
            "layer {layer}: key {ek}, value {ev}"
        );
    }
    Ok(())
}

/// Four held-out records; record 2 keeps only its limb leads and record 3 only lead II, as a
/// monitor and a strap deliver them (zeros), so the lead-presence flags are exercised.
fn records_with_absent_leads() -> Array3<f32> {
    let mut ecg = batch(&held_out(4, false));
    ecg.slice_mut(ndarray::s![2, 6.., ..]).fill(0.0);
    ecg.slice_mut(ndarray::s![3, ..1, ..]).fill(0.0);
    ecg.slice_mut(ndarray::s![3, 2.., ..]).fill(0.0);
    ecg
}

#[test]
fn encoder_slot_keys_and_values_match_candle_within_1e_4_also_with_absent_leads() -> TestResult {
    let (model, _) = model();
    assert_slots_match_candle(model, &bundles().1, &records_with_absent_leads())
}

/// The committed model with `insertions` (each `(before, new)`: the line `new` inserted before
/// the one line of its run.toml starting with `before`) and the projection's first weight
/// replaced by `widen(weight)`, saved and exported fp32 in a new temporary directory:
/// (that directory, the model directory, the bundle directory).
fn committed_variant(
    insertions: &[(&str, &str)],
    widen: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<(tempfile::TempDir, PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let variant = dir.path().join("model");
    std::fs::create_dir(&variant)?;
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        variant.join("tokenizer.json"),
    )?;
    let mut run = std::fs::read_to_string(model_dir().join("run.toml"))?;
    for (before, new) in insertions {
        let line = format!("\n{before}");
        assert_eq!(run.matches(&line).count(), 1, "{before}");
        run = run.replacen(&line, &format!("\n{new}{line}"), 1);
    }
    std::fs::write(variant.join("run.toml"), run)?;
    let mut weights =
        candle_core::safetensors::load(model_dir().join("model.safetensors"), &Device::Cpu)?;
    let name = "encoder.projection.hidden.weight";
    let widened = widen(&weights[name])?;
    weights.insert(name.to_string(), widened);
    candle_core::safetensors::save(&weights, variant.join("model.safetensors"))?;
    let bundle = dir.path().join("bundle");
    let options = ExportOptions {
        precision: Precision::Fp32,
        ..Default::default()
    };
    export(&variant, &bundle, &options)?;
    Ok((dir, variant, bundle))
}

/// The committed model given statistics pooling (`pooling = "mean_std"`): its projection's
/// first weight widened with standard-deviation columns of half the mean columns (not zero,
/// so the exported Sub/Mul/ReduceMean/Sqrt path is what the comparison sees), exported fp32.
#[test]
fn a_mean_std_pooling_encoder_exports_to_the_same_slots() -> TestResult {
    let (_dir, std_model, bundle) = committed_variant(
        &[("lead_presence = ", "pooling = \"mean_std\"")],
        |weight| {
            let channels = weight.dims2()?.0; // the hidden layer is as wide as the channels
            Tensor::cat(
                &[
                    weight.narrow(1, 0, channels)?,
                    (weight.narrow(1, 0, channels)? * 0.5)?,
                    weight.narrow(1, channels, weight.dims2()?.1 - channels)?,
                ],
                1,
            )
        },
    )?;
    let (config, with_std, _) = load_model(&std_model)?;
    assert_eq!(
        config.model.encoder.pooling,
        meit_models::model::ecg_encoder::Pooling::MeanStd
    );
    let ecg = records_with_absent_leads();
    assert_slots_match_candle(&with_std, &bundle, &ecg)?;
    // The standard deviations reach the embedding: the committed model's differs.
    let (plain, _) = model();
    let a = plain.encoder().forward(&to_tensor(&ecg), false)?;
    let b = with_std.encoder().forward(&to_tensor(&ecg), false)?;
    let moved = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(moved > 1e-3, "the std columns changed nothing: {moved}");
    Ok(())
}

/// The committed model given the R-R statistics (`rhythm_features` in its preprocessing and
/// encoder), the four new projection columns set to a tenth of its first four (not zero, so
/// the graph's `rhythm` input is what the comparison sees), exported fp32: the slots match
/// candle's; the engine's reports from windows preprocessed by the bundle's own spec equal the
/// candle model's; a bare array without the statistics is refused, naming what is missing.
#[test]
fn a_rhythm_features_encoder_exports_a_second_input_and_reports_as_candle_does() -> TestResult {
    let (_dir, rhythm_model, bundle) = committed_variant(
        &[
            ("lead_presence = ", "rhythm_features = true"),
            ("max_gap_seconds = ", "rhythm_features = true"),
        ],
        |weight| Tensor::cat(&[weight.clone(), (weight.narrow(1, 0, 4)? * 0.1)?], 1),
    )?;
    let (_, with_rhythm, codec) = load_model(&rhythm_model)?;
    assert!(with_rhythm.config().encoder.rhythm_features);

    // Held-out records through the rhythm model's own preprocessing: each carries statistics.
    let (config, _, _) = load_model(&model_dir())?;
    let data = config.data.synth.expect("synthetic data config");
    let inputs: Vec<ModelInput> = (0..4)
        .map(|i| {
            let record = data.record(Split::Test, i).expect("record");
            device_preprocessor(&codec, &record.recording.leads)
                .expect("preprocessor")
                .process_recording(&record.recording)
                .expect("preprocess")
        })
        .collect();
    let rows: Vec<[f32; 4]> = inputs
        .iter()
        .map(|i| {
            i.rhythm
                .expect("the spec asks for the statistics")
                .to_array()
        })
        .collect();
    assert!(
        rows.iter().any(|r| r[0] == 1.0),
        "no record measured: {rows:?}"
    );
    let rhythm = Array2::from_shape_fn((4, 4), |(r, c)| rows[r][c]);
    let ecg = batch(&inputs);
    assert_slots_match_candle_with(&with_rhythm, &bundle, &ecg, Some(&rhythm))?;
    // The statistics reach the embedding: other statistics, another embedding.
    let to_rhythm =
        |a: &Array2<f32>| Tensor::from_vec(a.iter().copied().collect(), (4, 4), &Device::Cpu);
    let mut other = rhythm.clone();
    other.column_mut(1).mapv_inplace(|v| v + 3.0);
    let a =
        with_rhythm
            .encoder()
            .forward_with(&to_tensor(&ecg), Some(&to_rhythm(&rhythm)?), false)?;
    let b =
        with_rhythm
            .encoder()
            .forward_with(&to_tensor(&ecg), Some(&to_rhythm(&other)?), false)?;
    let moved = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(moved > 1e-3, "the rhythm columns changed nothing: {moved}");

    let mut engine = engine(&bundle);
    assert!(engine.reads_rhythm());
    let (reports, _) = engine.generate(&inputs)?;
    for (input, got) in inputs.iter().zip(&reports) {
        let want = report_for_input(&with_rhythm, &codec, input, 0, encoder_max_tokens())?;
        assert_eq!(got.text, want);
    }
    let bare: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let refused = engine
        .generate(&bare)
        .expect_err("no statistics for a rhythm encoder");
    assert!(
        refused
            .to_string()
            .contains("carries no R-R interval statistics"),
        "{refused}"
    );
    Ok(())
}

/// Prompt ids then the tokens of a report: a fixed sequence through the decoder.
fn fixed_tokens() -> Vec<u32> {
    let (_, encoder) = model();
    let tok = encoder.tokenizer();
    let mut ids = prompt_ids(tok, &encoder.instruction().prompt(0)).expect("prompt");
    ids.extend(
        tok.encode("sinus tachycardia. left axis deviation. abnormal ecg")
            .expect("report"),
    );
    ids
}

#[test]
fn fp32_decoder_logits_match_candle_full_sequence_and_step_by_step() -> TestResult {
    let (model, _) = model();
    let inputs = held_out(1, false);
    let ecg = batch(&inputs);
    let ids = fixed_tokens();
    let t = ids.len();
    let embedding = model.encoder().forward(&to_tensor(&ecg), false)?;
    let tokens = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let reference = model
        .decoder()
        .forward_sequence(&tokens, Some(&embedding), false)?
        .squeeze(0)?
        .to_vec2::<f32>()?;

    let mut engine = engine(&bundles().1);
    // The whole sequence in one call, after the slot.
    let slots = engine.slots(ecg.clone())?;
    let id_row = Array2::from_shape_fn((1, t), |(_, j)| i64::from(ids[j]));
    let positions = Array2::from_shape_fn((1, t), |(_, j)| j as i64 + 1);
    let (logits, _) = engine.decode(id_row, positions, Array2::ones((1, t + 1)), slots)?;
    for (j, want) in reference.iter().enumerate() {
        let got: Vec<f32> = logits.index_axis(Axis(1), j).iter().copied().collect();
        let e = relative_error(&got, want);
        assert!(e <= 1e-4, "full sequence, position {j}: {e}");
    }
    // One token at a time, carrying the cache.
    let mut past = engine.slots(ecg)?;
    for (j, want) in reference.iter().enumerate() {
        let id = Array2::from_elem((1, 1), i64::from(ids[j]));
        let pos = Array2::from_elem((1, 1), j as i64 + 1);
        let (logits, present) = engine.decode(id, pos, Array2::ones((1, j + 2)), past)?;
        past = present;
        let got: Vec<f32> = logits.iter().copied().collect();
        let e = relative_error(&got, want);
        assert!(e <= 1e-4, "step {j}: {e}");
    }
    Ok(())
}

#[test]
fn padded_cache_entries_are_not_attended() -> TestResult {
    // The same tokens with an extra, masked cache entry between the slot and the text give the
    // same logits: the (plain-operator) graph honours any attention mask.
    let inputs = held_out(1, false);
    let ecg = batch(&inputs);
    let ids = fixed_tokens();
    let t = ids.len();
    let mut engine = engine(&bundles().1);
    let id_row = || Array2::from_shape_fn((1, t), |(_, j)| i64::from(ids[j]));
    let positions = || Array2::from_shape_fn((1, t), |(_, j)| j as i64 + 1);
    let slots = engine_slots(&mut engine, &ecg)?;
    let (plain, _) = engine.decode(id_row(), positions(), Array2::ones((1, t + 1)), slots)?;
    // Cache: slot, then one junk entry (a copy of the slot), masked out.
    let slots = engine_slots(&mut engine, &ecg)?;
    let doubled = slots
        .iter()
        .map(|(k, v)| Ok((concat_self(k)?, concat_self(v)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let mut mask = Array2::ones((1, t + 2));
    mask[[0, 1]] = 0;
    let (masked, _) = engine.decode(id_row(), positions(), mask.clone(), doubled)?;
    let e = relative_error(
        &masked.iter().copied().collect::<Vec<_>>(),
        &plain.iter().copied().collect::<Vec<_>>(),
    );
    assert!(e <= 1e-5, "masked entry changed the logits by {e}");
    // Unmasked, the junk entry does change them (the check can fail).
    let slots = engine_slots(&mut engine, &ecg)?;
    let doubled = slots
        .iter()
        .map(|(k, v)| Ok((concat_self(k)?, concat_self(v)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let (seen, _) = engine.decode(id_row(), positions(), Array2::ones((1, t + 2)), doubled)?;
    let e = relative_error(
        &seen.iter().copied().collect::<Vec<_>>(),
        &plain.iter().copied().collect::<Vec<_>>(),
    );
    assert!(
        e > 1e-4,
        "an attended extra entry should change the logits ({e})"
    );
    Ok(())
}

fn engine_slots(
    engine: &mut Engine,
    ecg: &Array3<f32>,
) -> Result<Vec<(ort::value::DynValue, ort::value::DynValue)>, Box<dyn std::error::Error>> {
    Ok(engine.slots(ecg.clone())?)
}

/// `[b, h, 1, d]` -> `[b, h, 2, d]` (the entry twice), as a new ort value.
fn concat_self(
    v: &ort::value::DynValue,
) -> Result<ort::value::DynValue, Box<dyn std::error::Error>> {
    let a = v.try_extract_array::<f32>()?.to_owned();
    let doubled = ndarray::concatenate(Axis(2), &[a.view(), a.view()])?;
    Ok(ort::value::Tensor::from_array(doubled)?.into_dyn())
}

#[test]
fn greedy_reports_of_the_fp32_bundle_equal_candle_on_64_held_out_records() -> TestResult {
    let (model, encoder) = model();
    let inputs = held_out(64, true);
    let max_new = encoder_max_tokens();
    let mut engine = engine(&bundles().1);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let mut from_bundle = Vec::new();
    for chunk in views.chunks(16) {
        from_bundle.extend(engine.generate(chunk)?.0);
    }
    let mut differing = Vec::new();
    for (i, (input, got)) in inputs.iter().zip(&from_bundle).enumerate() {
        let want = report_for_input(model, encoder, input, 0, max_new)?;
        assert!(!want.is_empty(), "record {i}: empty reference");
        if got.text != want {
            differing.push(format!("{i}: bundle {:?} vs candle {want:?}", got.text));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of 64 differ:\n{}",
        differing.len(),
        differing.join("\n")
    );
    Ok(())
}

fn encoder_max_tokens() -> usize {
    let (config, _, _) = load_model(&model_dir()).expect("model");
    config.train.max_tokens
}

#[test]
fn batched_generation_equals_one_window_at_a_time() -> TestResult {
    let inputs = held_out(6, true);
    let mut engine = engine(&bundles().2);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let (together, _) = engine.generate(&views)?;
    for (i, view) in views.iter().enumerate() {
        let (alone, _) = engine.generate(std::slice::from_ref(view))?;
        assert_eq!(alone[0], together[i], "window {i}");
    }
    // Different windows got different reports somewhere (the batch did not repeat row 0).
    assert!(together.iter().any(|g| g.text != together[0].text));
    Ok(())
}

#[test]
fn rows_that_finish_leave_the_batch_and_the_rest_are_unchanged() -> TestResult {
    // 16 windows whose reports end at different lengths: the engine drops finished rows from
    // the cache (a compaction) and every report still equals its single run.
    let inputs = held_out(16, true);
    let mut engine = engine(&bundles().2);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let (together, timings) = engine.generate(&views)?;
    let lengths: std::collections::BTreeSet<usize> = together.iter().map(|g| g.ids.len()).collect();
    assert!(
        lengths.len() > 1,
        "all reports have the same length: {lengths:?}"
    );
    assert!(timings.compactions > 0, "no finished row left the batch");
    assert_eq!(
        timings.generated_tokens,
        together.iter().map(|g| g.ids.len()).sum::<usize>()
    );
    for (i, view) in views.iter().enumerate() {
        let (alone, _) = engine.generate(std::slice::from_ref(view))?;
        assert_eq!(alone[0], together[i], "window {i}");
    }
    Ok(())
}

#[test]
fn text_only_generation_is_greedy_decoding_from_an_empty_cache() -> TestResult {
    let mut engine = engine(&bundles().2);
    let manifest = engine.bundle().manifest.clone();
    let prompt = manifest.prompt.ids.clone();
    let (ids, timings) = engine.generate_text(&prompt, 6, false)?;
    assert_eq!(ids.len(), 6);
    assert_eq!(timings.prompt_tokens, prompt.len());
    // The same by hand: empty past, positions from 0, argmax of the last logits each step.
    let d = &manifest.decoder;
    let empty = || -> Result<ort::value::DynValue, Box<dyn std::error::Error>> {
        let a = ndarray::Array4::<f32>::zeros((1, d.num_kv_heads, 0, d.head_dim));
        Ok(ort::value::Tensor::from_array(a)?.into_dyn())
    };
    let mut past = (0..d.num_layers)
        .map(|_| Ok((empty()?, empty()?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let mut tokens: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let mut position = 0i64;
    let mut by_hand = Vec::new();
    for _ in 0..6 {
        let t = tokens.len();
        let ids_row = Array2::from_shape_vec((1, t), tokens.clone())?;
        let positions = Array2::from_shape_fn((1, t), |(_, j)| position + j as i64);
        let total = position as usize + t;
        let (logits, present) =
            engine.decode(ids_row, positions, Array2::ones((1, total)), past)?;
        past = present;
        position = total as i64;
        let last = logits.index_axis(Axis(1), t - 1);
        let row = last.row(0);
        let mut best = 0usize;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        by_hand.push(best as u32);
        tokens = vec![best as i64];
    }
    assert_eq!(ids, by_hand);
    Ok(())
}

#[test]
fn the_bundle_detokenizer_agrees_with_the_training_tokenizer_on_every_id() -> TestResult {
    let (_, encoder) = model();
    let engine = engine(&bundles().1);
    let tok = encoder.tokenizer();
    for id in 0..tok.vocab_size() as u32 {
        for skip in [true, false] {
            assert_eq!(
                engine.detokenizer().decode(&[id], skip),
                tok.decode(&[id], skip)?,
                "id {id}, skip_special {skip}"
            );
        }
    }
    // And on whole reports (byte-level pieces joined).
    let ids = fixed_tokens();
    assert_eq!(
        engine.detokenizer().decode(&ids, true),
        tok.decode(&ids, true)?
    );
    Ok(())
}

#[test]
fn every_exported_graph_passes_the_onnx_checker() -> TestResult {
    use std::io::Write;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tools/bin/python");
    if !python.is_file() {
        // Past the harness's capture, counted by .ci/run as skipped.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: every_exported_graph_passes_the_onnx_checker: no .venv-tools (run scripts/install-python-tools.sh)"
        );
        return Ok(());
    }
    let (_, fp32, int4) = bundles();
    let mut files = Vec::new();
    for dir in [fp32, int4] {
        for name in ["encoder.onnx", "decoder.onnx"] {
            files.push(dir.join(name));
        }
    }
    let script = "import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)\n    print('ok', f)\n";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnx.checker refused a graph:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{stdout}"
    );
    // The checker is not a rubber stamp: a graph with a dangling input is refused.
    let broken = fp32.parent().expect("tempdir").join("broken.onnx");
    let bytes = std::fs::read(fp32.join("encoder.onnx"))?;
    let mut model = <candle_onnx::onnx::ModelProto as prost::Message>::decode(bytes.as_slice())?;
    let graph = model.graph.as_mut().expect("graph");
    graph.node[0].input[0] = "no_such_value".into();
    std::fs::write(&broken, prost::Message::encode_to_vec(&model))?;
    let refused = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&broken)
        .output()?;
    assert!(
        !refused.status.success(),
        "the checker accepted a dangling input"
    );
    Ok(())
}

#[test]
fn the_committed_bundles_are_the_export_of_the_committed_model() -> TestResult {
    // Export is deterministic, so the committed bundles' checksums are those of a fresh export:
    // a retrained model or a changed exporter without a re-export fails here.
    let (_, fp32, int4) = bundles();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles");
    for (fresh, committed) in [(int4, root.join("tiny")), (fp32, root.join("tiny-fp32"))] {
        let fresh = meit::infer::bundle::read_manifest(fresh)?;
        let committed = meit::infer::bundle::read_manifest(&committed)?;
        assert_eq!(
            fresh.files, committed.files,
            "re-export: meit-models export --model models/trained/tiny --out models/bundles/..."
        );
        assert_eq!(fresh.preprocess, committed.preprocess);
        assert_eq!(fresh.prompt, committed.prompt);
    }
    Ok(())
}

#[test]
fn int4_scores_within_one_point_of_fp32_on_128_held_out_records() -> TestResult {
    use meit_models::eval::suite::{Suite, evaluate, variants};
    use meit_models::generate::BundleReporter;
    let (config, _, encoder) = load_model(&model_dir())?;
    let data = config.data.synth.clone().expect("synthetic data");
    let rows: Vec<_> = variants(Suite::Quick, &data)
        .into_iter()
        .filter(|v| v.name == "test")
        .collect();
    let mut scores = Vec::new();
    for dir in [&bundles().1, &bundles().2] {
        let mut reporter = BundleReporter {
            engine: engine(dir),
            batch: 32,
        };
        let report = evaluate(&config, &mut reporter, &encoder, 128, &rows, |_| {})?;
        let row = &report.results[0];
        scores.push((
            row.clinical.macro_f1.expect("macro F1"),
            row.text.corpus.bleu_4,
        ));
    }
    let ((f1_fp32, bleu_fp32), (f1_int4, bleu_int4)) = (scores[0], scores[1]);
    // A model that reads the ECG at all: far above the shuffled-ECG control (~0.08).
    assert!(
        f1_fp32 > 0.9 && bleu_fp32 > 0.9,
        "fp32 {f1_fp32} {bleu_fp32}"
    );
    assert!(
        (f1_int4 - f1_fp32).abs() <= 0.01 && (bleu_int4 - bleu_fp32).abs() <= 0.01,
        "int4 F1 {f1_int4} BLEU-4 {bleu_int4} vs fp32 {f1_fp32} {bleu_fp32}"
    );
    Ok(())
}

#[test]
fn group_query_attention_export_gives_the_plain_graphs_logits() -> TestResult {
    let inputs = held_out(1, false);
    let ecg = batch(&inputs);
    let ids = fixed_tokens();
    let t = ids.len();
    let mut plain = engine(&bundles().1);
    let mut gqa = engine(&gqa_fp32().1);
    let id_row = || Array2::from_shape_fn((1, t), |(_, j)| i64::from(ids[j]));
    let positions = || Array2::from_shape_fn((1, t), |(_, j)| j as i64 + 1);
    let slots = plain.slots(ecg.clone())?;
    let (want, _) = plain.decode(id_row(), positions(), Array2::ones((1, t + 1)), slots)?;
    let slots = gqa.slots(ecg.clone())?;
    let (got, _) = gqa.decode(id_row(), positions(), Array2::ones((1, t + 1)), slots)?;
    let e = relative_error(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    assert!(e <= 1e-4, "prefill after the slot: {e}");
    // The kernel's constraint: no batched prefill after a past (the engine prefills such a batch
    // row by row; when this starts to pass, that workaround can go).
    let two = ndarray::concatenate(Axis(0), &[ecg.view(), ecg.view()])?;
    let slots = gqa.slots(two)?;
    let refused = gqa.decode(
        Array2::from_shape_fn((2, t), |(_, j)| i64::from(ids[j])),
        Array2::from_shape_fn((2, t), |(_, j)| j as i64 + 1),
        Array2::ones((2, t + 1)),
        slots,
    );
    assert!(
        refused.is_err(),
        "ONNX Runtime now batches GQA prefill: the engine's row-by-row prefill can go"
    );
    // Step by step with the cache.
    let mut past = gqa.slots(ecg)?;
    for (j, &id) in ids.iter().enumerate() {
        let (logits, present) = gqa.decode(
            Array2::from_elem((1, 1), i64::from(id)),
            Array2::from_elem((1, 1), j as i64 + 1),
            Array2::ones((1, j + 2)),
            past,
        )?;
        past = present;
        let row: Vec<f32> = want.index_axis(Axis(1), j).iter().copied().collect();
        let e = relative_error(&logits.iter().copied().collect::<Vec<_>>(), &row);
        assert!(e <= 1e-4, "step {j}: {e}");
    }
    Ok(())
}

#[test]
fn a_group_query_attention_bundle_decodes_in_place_to_the_plain_bundles_reports() -> TestResult {
    // int4 with GroupQueryAttention: the engine prefills a batch row by row (the kernel's
    // constraint pinned above), then decodes in place in preallocated buffers; finished rows
    // leave the buffers (a compaction) and beams follow their parents.
    use meit_models::export::decoder::AttentionExport;
    let dir = tempfile::tempdir()?;
    let gqa_dir = dir.path().join("gqa-int4");
    let options = ExportOptions {
        attention: AttentionExport::Gqa,
        ..Default::default()
    };
    export(&model_dir(), &gqa_dir, &options)?;
    let mut gqa = engine(&gqa_dir);
    let mut plain = engine(&bundles().2);
    assert!(
        gqa.decodes_in_place(),
        "a GQA bundle on the CPU decodes in place"
    );
    assert!(!plain.decodes_in_place(), "a plain bundle grows its cache");
    let inputs = held_out(16, true);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let (want, _) = plain.generate(&views)?;
    let (together, timings) = gqa.generate(&views)?;
    assert!(
        timings.compactions > 0,
        "no finished row left the in-place batch"
    );
    let texts = |r: &[meit::infer::engine::Generated]| -> Vec<String> {
        r.iter().map(|g| g.text.clone()).collect()
    };
    assert_eq!(texts(&together), texts(&want));
    for (i, view) in views.iter().enumerate().take(4) {
        let (alone, _) = gqa.generate(std::slice::from_ref(view))?;
        assert_eq!(alone[0], together[i], "window {i}");
    }
    for view in views.iter().take(2) {
        let (beam_plain, _) = plain.generate_beam(*view, 3)?;
        let (beam_gqa, _) = gqa.generate_beam(*view, 3)?;
        assert_eq!(beam_gqa.report, beam_plain.report);
        assert!((beam_gqa.log_prob - beam_plain.log_prob).abs() < 1e-3);
    }
    // Text-only generation (the LLM comparison's path) from an empty cache.
    let prompt: Vec<u32> = fixed_tokens();
    let (text_plain, _) = plain.generate_text(&prompt, 24, false)?;
    let (text_gqa, _) = gqa.generate_text(&prompt, 24, false)?;
    assert_eq!(text_gqa, text_plain);
    assert_eq!(text_gqa.len(), 24);
    Ok(())
}

#[test]
fn lookup_drafts_give_the_greedy_reports_in_fewer_decoder_calls() -> TestResult {
    // Several drafts are checked in one call: after a rejected one the plain graph's grown
    // cache is cut, the GroupQueryAttention graph's in-place buffers are overwritten. The
    // reports must be greedy decoding's, one token a call, on every graph.
    let inputs = held_out(32, true);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    for dir in [&bundles().1, &bundles().2, &gqa_fp32().1] {
        let name = dir.display();
        let mut plain = engine(dir);
        let mut drafted = engine(dir);
        drafted.set_draft_tokens(4);
        let (mut calls, mut drafted_calls, mut kept, mut fed) = (0, 0, 0, 0);
        for (i, view) in views.iter().enumerate() {
            let (want, one) = plain.generate(std::slice::from_ref(view))?;
            let (got, several) = drafted.generate(std::slice::from_ref(view))?;
            assert_eq!(got[0], want[0], "{name}: window {i}");
            assert_eq!(one.drafted_tokens, 0);
            calls += one.decode_steps;
            drafted_calls += several.decode_steps;
            kept += several.accepted_tokens;
            fed += several.drafted_tokens;
        }
        assert!(
            kept > 0 && fed > kept,
            "{name}: drafts both kept and dropped ({kept} of {fed})"
        );
        assert_eq!(
            calls - drafted_calls,
            kept,
            "{name}: each kept draft saves one decoder call"
        );
        if drafted.decodes_in_place() {
            // Every drafted call kept the buffers in place (no fallback to copying the cache).
            assert_eq!(drafted.in_place_steps() as usize, drafted_calls, "{name}");
        }
        // A batch of several windows decodes one token a call, drafts set or not.
        let (together, t) = drafted.generate(&views[..6])?;
        assert_eq!(t.drafted_tokens, 0);
        assert_eq!(together, plain.generate(&views[..6])?.0);
    }
    // Text only, from an empty cache, exactly as many tokens as asked.
    let mut plain = engine(&bundles().1);
    let mut drafted = engine(&bundles().1);
    drafted.set_draft_tokens(6);
    let prompt = fixed_tokens();
    let (want, _) = plain.generate_text(&prompt, 40, false)?;
    let (got, timings) = drafted.generate_text(&prompt, 40, false)?;
    assert_eq!(got, want);
    assert_eq!(timings.generated_tokens, 40);
    Ok(())
}

#[test]
fn a_half_precision_embedding_table_gives_the_same_reports_in_fewer_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let half = dir.path().join("half");
    let options = ExportOptions {
        half_embedding: true,
        ..Default::default()
    };
    export(&model_dir(), &half, &options)?;
    let (_, _, int4) = bundles();
    let size = |dir: &Path| std::fs::metadata(dir.join("decoder.onnx")).map(|m| m.len());
    let shape = Bundle::open(int4, runtime())?.manifest.decoder.clone();
    let table_half_bytes = (shape.vocab_size * shape.hidden_size * 2) as u64;
    let saved = size(int4)? - size(&half)?;
    assert!(
        saved.abs_diff(table_half_bytes) < 1024,
        "saved {saved} bytes, the table's half is {table_half_bytes}"
    );
    let inputs = held_out(24, true);
    let views: Vec<_> = inputs.iter().map(|i| i.samples.view()).collect();
    let (full_reports, _) = engine(int4).generate(&views)?;
    let (half_reports, _) = engine(&half).generate(&views)?;
    let texts = |r: &[meit::infer::engine::Generated]| -> Vec<String> {
        r.iter().map(|g| g.text.clone()).collect()
    };
    assert_eq!(texts(&half_reports), texts(&full_reports));
    Ok(())
}
