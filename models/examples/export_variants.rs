//! Export choices measured side by side on one model: LoRA merged into the weights before
//! quantisation or kept as a float branch beside `MatMulNBits`; packed 4-bit or float zero
//! points; an int4 or fp32 output head; attention as plain operators or com.microsoft
//! `GroupQueryAttention`. For each: decoder size, decode step latency, and logits error against
//! the fp32 export (itself checked against candle by the parity tests).
//!
//! ```text
//! cargo run --release -p meit-models --example export_variants -- --model DIR [--lora-std 0.02] [--only 1,2]
//! ```
//!
//! DIR is a model directory with LoRA adapters (a SmolLM2 run, e.g. from `make smollm2-bundle`).
//! With `--lora-std S` the adapters' B matrices are redrawn N(0, S) (seeded) first, so the update
//! is as large as a trained one even when DIR comes from a smoke run whose B is still ~0.

use std::path::{Path, PathBuf};
use std::time::Instant;

use meit::infer::bundle::{Bundle, Precision};
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;
use meit_models::export::decoder::{AttentionExport, LoraExport};
use meit_models::export::int4::ZeroPoints;
use meit_models::export::{ExportOptions, export};
use ndarray::{Array2, Array3, Axis};
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model = PathBuf::from(arg("--model").ok_or_else(|| anyhow::anyhow!("--model DIR"))?);
    let lora_std: Option<f32> = arg("--lora-std").map(|s| s.parse()).transpose()?;
    let work = tempfile::tempdir()?;
    let source = match lora_std {
        Some(std) => redraw_lora_b(&model, work.path(), std)?,
        None => model.clone(),
    };
    let base = ExportOptions::default();
    let int4 = |lora, zero_points, float_head| ExportOptions {
        precision: Precision::Int4,
        lora,
        zero_points,
        float_head,
        ..base.clone()
    };
    let gqa = |options: ExportOptions| ExportOptions {
        attention: AttentionExport::Gqa,
        ..options
    };
    let mut variants = vec![
        (
            "fp32 (reference, merged)",
            ExportOptions {
                precision: Precision::Fp32,
                ..base.clone()
            },
        ),
        (
            "int4, LoRA merged",
            int4(LoraExport::Merge, ZeroPoints::Packed, false),
        ),
        (
            "int4, LoRA merged, float zero points",
            int4(LoraExport::Merge, ZeroPoints::Float, false),
        ),
        (
            "int4, LoRA merged, float zero points, fp32 head",
            int4(LoraExport::Merge, ZeroPoints::Float, true),
        ),
        (
            "int4, LoRA float branch",
            int4(LoraExport::Branch, ZeroPoints::Packed, false),
        ),
        (
            "int4, LoRA merged, GroupQueryAttention",
            gqa(int4(LoraExport::Merge, ZeroPoints::Packed, false)),
        ),
        (
            "int4, LoRA merged, fp32 head",
            int4(LoraExport::Merge, ZeroPoints::Packed, true),
        ),
        (
            "fp32, GroupQueryAttention",
            gqa(ExportOptions {
                precision: Precision::Fp32,
                ..base.clone()
            }),
        ),
    ];
    if let Some(only) = arg("--only") {
        let keep: Vec<usize> = only.split(',').filter_map(|i| i.parse().ok()).collect();
        variants = variants
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || keep.contains(i))
            .map(|(_, v)| v)
            .collect();
    }
    let runtime = OnnxRuntime::load(None)?;
    let mut reference: Option<Array3<f32>> = None;
    let mut table = String::new();
    let mut line = |text: String| {
        println!("{text}");
        table.push_str(&text);
        table.push('\n');
    };
    line(
        "| variant | decoder MB | decode ms/token (median, batch 1, 2 threads, interleaved rounds) | max abs logit error / max abs logit | top-1 agreement |"
            .to_string(),
    );
    line("|---|---:|---:|---:|---:|".to_string());
    let rounds: usize = arg("--rounds").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let mut rows = Vec::new();
    for (name, options) in variants {
        let out = work.path().join(name.replace([' ', ',', '(', ')'], "_"));
        export(&source, &out, &options)?;
        let size = std::fs::metadata(out.join("decoder.onnx"))?.len() as f64 / 1e6;
        let bundle = Bundle::open(&out, &runtime)?;
        let engine = Engine::new(bundle, &runtime, 2)?;
        rows.push((name, size, engine, Vec::new(), None));
    }
    // Interleaved rounds, so a busy moment of this shared machine hits every variant alike.
    for _ in 0..rounds {
        for (_, _, engine, times, logits) in rows.iter_mut() {
            let (l, step_times) = measure(engine)?;
            times.extend(step_times);
            *logits = Some(l);
        }
    }
    for (name, size, _, mut times, logits) in rows {
        let logits = logits.expect("measured at least once");
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let (error, agreement) = match &reference {
            None => (0.0, 1.0),
            Some(r) => compare(&logits, r),
        };
        line(format!(
            "| {name} | {size:.1} | {median:.2} | {error:.2e} | {agreement:.3} |"
        ));
        if reference.is_none() {
            reference = Some(logits);
        }
    }
    if let Some(path) = arg("--markdown") {
        let command: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        let header = format!(
            "Written by `cargo run --release -p meit-models --example export_variants -- {}` \
             on {} ({} cores). Logits: a fixed prompt + 16 tokens after a fixed ECG, against the \
             fp32 export (which the parity tests hold to candle).\n\n",
            command.join(" "),
            std::env::var("MEIT_BENCH_MACHINE").unwrap_or_else(|_| "this machine".into()),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        std::fs::write(path, header + &table)?;
    }
    Ok(())
}

/// A copy of model directory `model` in `work` whose `lora_b` weights are N(0, std), seeded.
fn redraw_lora_b(model: &Path, work: &Path, std: f32) -> anyhow::Result<PathBuf> {
    let dir = work.join("model");
    std::fs::create_dir_all(&dir)?;
    for file in ["run.toml", "tokenizer.json"] {
        if model.join(file).exists() {
            std::fs::copy(model.join(file), dir.join(file))?;
        }
    }
    let device = candle_core::Device::Cpu;
    let mut tensors = candle_core::safetensors::load(model.join("model.safetensors"), &device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut redrawn = 0;
    for (name, tensor) in tensors.iter_mut() {
        if name.contains("lora_b") {
            let values: Vec<f32> = (0..tensor.elem_count())
                .map(|_| {
                    // Box-Muller.
                    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.random();
                    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * std
                })
                .collect();
            *tensor = candle_core::Tensor::from_vec(values, tensor.dims(), &device)?;
            redrawn += 1;
        }
    }
    anyhow::ensure!(redrawn > 0, "{} has no LoRA adapters", model.display());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    eprintln!("redrew {redrawn} LoRA B matrices with std {std}");
    Ok(dir)
}

/// Logits of a fixed sequence (prompt + 16 tokens) after a fixed ECG, and each decode step's
/// time in ms.
fn measure(engine: &mut Engine) -> anyhow::Result<(Array3<f32>, Vec<f64>)> {
    let manifest = engine.bundle().manifest.clone();
    let (leads, samples) = (manifest.encoder.leads, manifest.encoder.samples);
    let ecg = Array3::from_shape_fn((1, leads, samples), |(_, l, s)| {
        (s as f32 * 0.07 + l as f32).sin() * 0.5
    });
    let vocab = manifest.decoder.vocab_size as i64;
    let mut ids: Vec<i64> = manifest.prompt.ids.iter().map(|&i| i64::from(i)).collect();
    ids.extend((0..16).map(|i| (i * 7919 + 13) % vocab));
    let t = ids.len();
    // A rhythm bundle reads the R-R statistics too: this sine has no beats, so "unmeasured".
    let rhythm = engine
        .reads_rhythm()
        .then(|| Array2::zeros((1, meit::dsp::rhythm::RHYTHM_FEATURES)));
    let slots = engine.slots_with_rhythm(ecg.clone(), rhythm.clone())?;
    let (logits, _) = engine.decode(
        Array2::from_shape_vec((1, t), ids.clone())?,
        Array2::from_shape_fn((1, t), |(_, j)| j as i64 + 1),
        Array2::ones((1, t + 1)),
        slots,
    )?;
    // Decode speed: one token at a time after the prompt, 32 steps.
    let mut past = engine.slots_with_rhythm(ecg, rhythm)?;
    let mut times = Vec::new();
    for (j, &id) in ids.iter().enumerate() {
        let start = Instant::now();
        let (_, present) = engine.decode(
            Array2::from_elem((1, 1), id),
            Array2::from_elem((1, 1), j as i64 + 1),
            Array2::ones((1, j + 2)),
            past,
        )?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        past = present;
    }
    Ok((logits, times))
}

/// max |a - b| / max |b|, and the share of positions whose argmax agrees.
fn compare(a: &Array3<f32>, b: &Array3<f32>) -> (f32, f64) {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale;
    let argmax = |row: ndarray::ArrayView1<f32>| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    let positions = a.len_of(Axis(1));
    let same = (0..positions)
        .filter(|&j| {
            argmax(a.index_axis(Axis(0), 0).row(j)) == argmax(b.index_axis(Axis(0), 0).row(j))
        })
        .count();
    (err, same as f64 / positions as f64)
}
