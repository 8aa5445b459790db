//! The engine's decoder alone, text only (no ECG slot), as the peer of other LLM runtimes in
//! `bench/compare_llm.py`: greedy from the given prompt ids, exactly `--new-tokens` tokens
//! (stop ids ignored, as the peers are told to).
//!
//! ```text
//! cargo run --release --example llm_text_bench -- --bundle DIR [--threads 2] [--new-tokens 128] [--prompt-ids 1,2,3] [--spinning true|false] [--draft-tokens N]
//! ```
//!
//! A line protocol, so the script can interleave rounds with the other runtimes while every
//! one keeps its model loaded: after loading it prints `{"ready": ...}`; each `run` line on
//! stdin gets one JSON line (prefill ms, decode ms, token ids, peak RSS); `quit` or end of input
//! ends it.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use meit::infer::bench::peak_rss_bytes;
use meit::infer::bundle::Bundle;
use meit::infer::engine::Engine;
use meit::infer::runtime::OnnxRuntime;

fn main() -> anyhow::Result<()> {
    let mut bundle_dir: Option<PathBuf> = None;
    let (mut threads, mut new_tokens) = (2usize, 128usize);
    let mut prompt: Option<Vec<u32>> = None;
    let mut spinning: Option<bool> = None;
    let mut draft_tokens = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bundle" => bundle_dir = Some(value()?.into()),
            "--threads" => threads = value()?.parse()?,
            "--new-tokens" => new_tokens = value()?.parse()?,
            "--spinning" => spinning = Some(value()?.parse()?),
            "--draft-tokens" => draft_tokens = value()?.parse()?,
            "--prompt-ids" => {
                prompt = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().parse::<u32>())
                        .collect::<Result<_, _>>()?,
                )
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let bundle_dir = bundle_dir.context("--bundle DIR is required")?;
    let runtime = OnnxRuntime::load(None)?;
    let bundle = Bundle::open(&bundle_dir, &runtime)?;
    let prompt = prompt.unwrap_or_else(|| bundle.manifest.prompt.ids.clone());
    let load = Instant::now();
    let mut options = Engine::session_options(threads);
    if spinning.is_some() {
        options.spinning = spinning;
    }
    let mut engine = Engine::with_options(bundle, &runtime, &options)?;
    engine.set_draft_tokens(draft_tokens);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "ready": true,
            "load_ms": load.elapsed().as_secs_f64() * 1e3,
            "prompt_tokens": prompt.len(),
            "threads": threads,
            "onnxruntime": runtime.version,
        })
    )?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "run" => {
                // Drafts come from this run's own context only, never from an earlier run's
                // identical output.
                engine.forget_drafts();
                let t = Instant::now();
                let (ids, timings) = engine.generate_text(&prompt, new_tokens, false)?;
                let wall_ms = t.elapsed().as_secs_f64() * 1e3;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "prefill_ms": timings.prefill_ms,
                        "decode_ms": timings.decode_ms,
                        "decode_steps": timings.decode_steps,
                        "drafted": timings.drafted_tokens,
                        "accepted": timings.accepted_tokens,
                        "wall_ms": wall_ms,
                        "ids": ids,
                        "peak_rss_mib": peak_rss_bytes().map(|b| b as f64 / 1048576.0),
                    })
                )?;
                out.flush()?;
            }
            "quit" | "" => break,
            other => anyhow::bail!("unknown command {other:?} (run, quit)"),
        }
    }
    Ok(())
}
