//! The training crate's own generation path (candle, `meit_models::generate::report_for_input`,
//! what `meit-models generate` runs per window) against the daemon's engine
//! (`meit::infer::engine::Engine`, ONNX Runtime) on the same preprocessed windows, one window at
//! a time, interleaved in the same run: for every round and window, the engine then candle.
//!
//! ```text
//! cargo run --release -p meit-models --example candle_vs_engine -- \
//!     [--model models/trained/tiny] [--bundle models/bundles/tiny] [--windows 32] [--rounds 3] [--threads 2]
//! ```
//!
//! Prints one JSON object: per-window wall ms of each (median, min, max), the candle/engine
//! ratio of the medians, the preprocessing time of a window (the same for both), and how many
//! reports are equal text for text (an int4 bundle may differ from the fp32 candle model).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use meit::infer::bench::{Spread, bench_windows};
use meit::infer::bundle::Bundle;
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;
use meit_models::generate::report_for_input;
use meit_models::train::load_model;

fn main() -> anyhow::Result<()> {
    let mut model_dir = PathBuf::from("models/trained/tiny");
    let mut bundle_dir = PathBuf::from("models/bundles/tiny");
    let (mut windows, mut rounds, mut threads) = (32usize, 3usize, 2usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model_dir = value()?.into(),
            "--bundle" => bundle_dir = value()?.into(),
            "--windows" => windows = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--threads" => threads = value()?.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let runtime = OnnxRuntime::load(None)?;
    let bundle = Bundle::open(&bundle_dir, &runtime)?;
    let max_new = bundle.manifest.tokens.max_new_tokens;
    let mut engine = Engine::new(bundle, &runtime, threads)?;
    // The daemon's generation: lookup drafts as `[runtime] draft_tokens` defaults to.
    engine.set_draft_tokens(meit::infer::config::RuntimeConfig::default().draft_tokens);
    let (_, model, encoder) = load_model(&model_dir)?;
    let inputs = bench_windows(&engine.bundle().manifest, windows, 1)?;

    // Preprocessing of one window (shared by both paths; timed once per window).
    let spec = engine.bundle().manifest.preprocess.clone();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let records: Vec<_> = (0..windows.min(8))
        .map(|i| {
            let conditions = meit::synth::ConditionSet::random(&mut rng);
            meit::synth::generate(&meit::synth::RecordSpec::ten_seconds(conditions), i as u64)
        })
        .collect::<Result<_, _>>()?;
    let mut preprocess_ms = Vec::new();
    for rec in &records {
        let pre = meit::dsp::Preprocessor::new(spec.for_device(&rec.recording.leads))?;
        let t = Instant::now();
        pre.process_recording(&rec.recording)?;
        preprocess_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Warm-up of both.
    for input in inputs.iter().take(2) {
        engine.generate(std::slice::from_ref(input))?;
        report_for_input(&model, &encoder, input, 0, max_new)?;
    }
    let (mut engine_ms, mut candle_ms) = (Vec::new(), Vec::new());
    let mut equal = 0usize;
    let mut compared = 0usize;
    for _ in 0..rounds {
        // Drafts come from the other windows' reports, never a window's own earlier copy.
        engine.forget_drafts();
        for input in &inputs {
            let t = Instant::now();
            let (generated, _) = engine.generate(std::slice::from_ref(input))?;
            engine_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let text = report_for_input(&model, &encoder, input, 0, max_new)?;
            candle_ms.push(t.elapsed().as_secs_f64() * 1e3);
            compared += 1;
            if generated.first().is_some_and(|g| g.text == text) {
                equal += 1;
            }
        }
    }
    let (e, c) = (Spread::of(&engine_ms), Spread::of(&candle_ms));
    let out = serde_json::json!({
        "bundle": bundle_dir.display().to_string(),
        "model": model_dir.display().to_string(),
        "windows": inputs.len(),
        "rounds": rounds,
        "engine_threads": threads,
        "engine_ms": e,
        "candle_ms": c,
        "candle_over_engine": if e.p50 > 0.0 { c.p50 / e.p50 } else { 0.0 },
        "preprocess_ms": Spread::of(&preprocess_ms),
        "equal_reports": equal,
        "compared_reports": compared,
    });
    println!("{out}");
    Ok(())
}
