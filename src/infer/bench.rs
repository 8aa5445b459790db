//! The inference benchmark behind `meit bench infer`: encoder latency, prefill and decode
//! tokens/s, whole-report latency at batch 1 and at the best batch, beds served in real time,
//! and peak resident memory.
//!
//! Inputs are real model inputs: synthesized 10 s 12-lead records ([`crate::synth`]) run
//! through the bundle manifest's own preprocessing ([`crate::dsp::Preprocessor`]), keeping the
//! windows the quality check would report on. Timing is wall clock around
//! [`Engine::generate`], which is what the daemon calls.

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::dsp::{DspError, ModelInput, Preprocessor};
use crate::infer::bundle::Manifest;
use crate::infer::engine::{EncoderInput, Engine, EngineError, Timings};
use crate::synth::{ConditionSet, RecordSpec, SynthError, generate};

/// Seconds of signal one window covers when counting beds served in real time: a bed yields
/// one window every 10 s, so beds = windows/s x 10.
pub const BED_WINDOW_SECONDS: f64 = 10.0;

/// Why the benchmark cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Synthesizing an input record failed.
    #[error("synthesizing an input record: {0}")]
    Synth(#[from] SynthError),
    /// The manifest's preprocessing refused a record.
    #[error("preprocessing an input record: {0}")]
    Dsp(#[from] DspError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Options that cannot give a measurement.
    #[error("benchmark options: {0}")]
    Options(String),
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Distinct input windows (synthesized and preprocessed once, then reused).
    pub windows: usize,
    /// Largest batch of the sweep (1, 2, 4, ... up to this).
    pub max_batch: usize,
    /// Passes over the windows at batch 1 (each window is one report per pass).
    pub rounds: usize,
    /// Batched calls per batch size of the sweep.
    pub batch_calls: usize,
    /// Seed of the synthesized records.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            windows: 32,
            max_batch: 64,
            rounds: 3,
            batch_calls: 6,
            seed: 1,
        }
    }
}

/// Latency and throughput at one batch size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatchFigures {
    /// Windows per call.
    pub batch: usize,
    /// Calls measured.
    pub calls: usize,
    /// Median wall time of one call (every window of the batch waits for the whole call), ms.
    pub report_ms_p50: f64,
    /// 99th percentile of the same, ms.
    pub report_ms_p99: f64,
    /// Smallest call time, ms.
    pub report_ms_min: f64,
    /// Largest call time, ms.
    pub report_ms_max: f64,
    /// Windows per second at the median call time.
    pub windows_per_s: f64,
    /// Beds with one 10 s window each served in real time (= windows/s x 10).
    pub beds_realtime: f64,
    /// Median encoder time of a call, ms.
    pub encode_ms: f64,
    /// Median prefill time of a call, ms.
    pub prefill_ms: f64,
    /// Median time of all decode steps of a call, ms.
    pub decode_ms: f64,
    /// Median decode steps of a call.
    pub decode_steps: f64,
}

/// A spread of per-call figures: median and extremes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zeros when empty).
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Spread {
            p50: percentile(&sorted, 50.0),
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Everything `meit bench infer` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferBench {
    /// The bundle directory.
    pub bundle: String,
    /// The model id and version from the manifest.
    pub model: String,
    /// The decoder's precision (`int4`, `fp32`).
    pub precision: String,
    /// The execution provider the decoder runs on first.
    pub provider: String,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// The decoder's cache between steps: `in place` (GroupQueryAttention buffers written where
    /// they are) or `grown` (a new present tensor per step).
    pub cache: String,
    /// Distinct input windows.
    pub windows: usize,
    /// Prompt tokens per report.
    pub prompt_tokens: usize,
    /// Mean tokens generated per report (batch 1).
    pub new_tokens_mean: f64,
    /// Encoder run per window at batch 1, ms.
    pub encoder_ms: Spread,
    /// Prompt prefill at batch 1, tokens/s (prompt tokens / prefill time).
    pub prefill_tokens_per_s: Spread,
    /// Decode at batch 1, tokens/s (tokens after the first / decode time).
    pub decode_tokens_per_s: Spread,
    /// Lookup drafts a decoder call at batch 1 ([`Engine::set_draft_tokens`]; 0: none).
    pub draft_tokens: usize,
    /// Share of the drafts fed at batch 1 that greedy decoding confirmed.
    pub drafts_accepted: f64,
    /// Whole report (encode + prefill + decode + detokenize) at batch 1.
    pub batch1: BatchFigures,
    /// The batch size with the most windows per second.
    pub best: BatchFigures,
    /// Every batch size measured.
    pub sweep: Vec<BatchFigures>,
    /// Peak resident memory of this process (VmHWM), MiB, if the OS reports it: includes the
    /// transient peak of ONNX Runtime reading the graphs at session start.
    pub peak_rss_mib: Option<f64>,
    /// Resident memory after the runs (VmRSS), MiB: what a long-running daemon holds.
    pub resident_mib: Option<f64>,
}

/// Synthesized, preprocessed windows for `manifest`'s model: `n` records with random
/// conditions (seeded), kept only when the quality check would report on them.
pub fn bench_windows(
    manifest: &Manifest,
    n: usize,
    seed: u64,
) -> Result<Vec<ModelInput>, BenchError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut windows = Vec::with_capacity(n);
    let mut preprocessor: Option<Preprocessor> = None;
    let mut index = 0u64;
    while windows.len() < n {
        if index > 20 * n as u64 + 100 {
            return Err(BenchError::Options(format!(
                "only {} of {index} synthesized records pass the bundle's quality check",
                windows.len()
            )));
        }
        let spec = RecordSpec {
            seconds: manifest.preprocess.window_seconds,
            ..RecordSpec::ten_seconds(ConditionSet::random(&mut rng))
        };
        let record = generate(&spec, seed.wrapping_mul(1_000_003).wrapping_add(index))?;
        index += 1;
        let pre = match &preprocessor {
            Some(p) => p,
            None => preprocessor.insert(Preprocessor::new(
                manifest.preprocess.for_device(&record.recording.leads),
            )?),
        };
        let input = pre.process_recording(&record.recording)?;
        if input.quality.is_reportable() {
            windows.push(input);
        }
    }
    Ok(windows)
}

/// The `q`th percentile (nearest rank) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident memory of this process (`VmHWM` of `/proc/self/status`), bytes; `None` where
/// the OS does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident memory of this process now (`VmRSS`), bytes; `None` where the OS does not report it.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Batch sizes of the sweep: powers of two up to `max`, and `max` itself.
pub fn batch_sizes(max: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut b = 1;
    while b < max {
        sizes.push(b);
        b *= 2;
    }
    sizes.push(max.max(1));
    sizes
}

/// One timed [`Engine::generate`] call: wall ms, the engine's own timings, tokens generated.
pub fn timed_generate<W: EncoderInput>(
    engine: &mut Engine,
    windows: &[W],
) -> Result<(f64, Timings, usize), BenchError> {
    let start = Instant::now();
    let (reports, timings) = engine.generate(windows)?;
    let wall = start.elapsed().as_secs_f64() * 1e3;
    Ok((wall, timings, reports.iter().map(|r| r.ids.len()).sum()))
}

/// Runs the benchmark on `engine` with `windows` (from [`bench_windows`]).
pub fn run(
    engine: &mut Engine,
    windows: &[ModelInput],
    options: &BenchOptions,
) -> Result<InferBench, BenchError> {
    if windows.is_empty() || options.rounds == 0 || options.batch_calls == 0 {
        return Err(BenchError::Options(
            "need at least one window, one round and one batched call".into(),
        ));
    }
    let views: Vec<&ModelInput> = windows.iter().collect();
    let prompt_tokens = engine.bundle().manifest.prompt.ids.len();
    // Warm-up: first runs allocate ONNX Runtime's arenas and pick kernels.
    for view in views.iter().take(2) {
        engine.generate(std::slice::from_ref(view))?;
    }

    let (mut wall, mut encode, mut prefill, mut decode) = (vec![], vec![], vec![], vec![]);
    let mut batch1_timings = Vec::new();
    let mut tokens = 0usize;
    for _ in 0..options.rounds {
        // Each round drafts from the other windows' reports, never from a window's own report
        // of the round before.
        engine.forget_drafts();
        for view in &views {
            let (ms, t, n) = timed_generate(engine, std::slice::from_ref(view))?;
            wall.push(ms);
            batch1_timings.push(t);
            encode.push(t.encode_ms);
            if t.prefill_ms > 0.0 {
                prefill.push(prompt_tokens as f64 / (t.prefill_ms / 1e3));
            }
            if t.decode_ms > 0.0 && n > 1 {
                decode.push((n - 1) as f64 / (t.decode_ms / 1e3));
            }
            tokens += n;
        }
    }
    let batch1 = figures(1, &wall, &batch1_timings);
    let drafted: usize = batch1_timings.iter().map(|t| t.drafted_tokens).sum();
    let accepted: usize = batch1_timings.iter().map(|t| t.accepted_tokens).sum();

    let mut sweep = vec![batch1];
    for batch in batch_sizes(options.max_batch).into_iter().skip(1) {
        let mut calls = Vec::with_capacity(options.batch_calls);
        let mut timings = Vec::with_capacity(options.batch_calls);
        let mut offset = 0;
        // One untimed call to size the arenas for this batch.
        let mut group = || {
            let g: Vec<&ModelInput> = (0..batch)
                .map(|i| views[(offset + i) % views.len()])
                .collect();
            offset += batch;
            g
        };
        engine.generate(&group())?;
        for _ in 0..options.batch_calls {
            let (ms, t, _) = timed_generate(engine, &group())?;
            calls.push(ms);
            timings.push(t);
        }
        sweep.push(figures(batch, &calls, &timings));
    }
    let best = sweep
        .iter()
        .copied()
        .max_by(|a, b| a.windows_per_s.total_cmp(&b.windows_per_s))
        .unwrap_or(batch1);
    let manifest = &engine.bundle().manifest;
    Ok(InferBench {
        bundle: engine.bundle().dir.display().to_string(),
        model: format!("{} {}", manifest.model.id, manifest.model.version),
        precision: format!("{:?}", manifest.decoder_graph.precision).to_lowercase(),
        provider: engine.primary_provider().to_string(),
        threads: engine.threads(),
        cache: if engine.decodes_in_place() {
            "in place"
        } else {
            "grown"
        }
        .to_string(),
        windows: windows.len(),
        prompt_tokens,
        new_tokens_mean: tokens as f64 / wall.len() as f64,
        encoder_ms: Spread::of(&encode),
        prefill_tokens_per_s: Spread::of(&prefill),
        decode_tokens_per_s: Spread::of(&decode),
        draft_tokens: engine.draft_tokens(),
        drafts_accepted: if drafted > 0 {
            accepted as f64 / drafted as f64
        } else {
            0.0
        },
        batch1,
        best,
        sweep,
        peak_rss_mib: peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
        resident_mib: rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

fn figures(batch: usize, call_ms: &[f64], timings: &[Timings]) -> BatchFigures {
    let median =
        |f: fn(&Timings) -> f64| Spread::of(&timings.iter().map(f).collect::<Vec<_>>()).p50;
    let mut sorted = call_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p50 = percentile(&sorted, 50.0);
    let windows_per_s = if p50 > 0.0 {
        batch as f64 / (p50 / 1e3)
    } else {
        0.0
    };
    BatchFigures {
        batch,
        calls: sorted.len(),
        report_ms_p50: p50,
        report_ms_p99: percentile(&sorted, 99.0),
        report_ms_min: sorted.first().copied().unwrap_or(0.0),
        report_ms_max: sorted.last().copied().unwrap_or(0.0),
        windows_per_s,
        beds_realtime: windows_per_s * BED_WINDOW_SECONDS,
        encode_ms: median(|t| t.encode_ms),
        prefill_ms: median(|t| t.prefill_ms),
        decode_ms: median(|t| t.decode_ms),
        decode_steps: median(|t| t.decode_steps as f64),
    }
}

impl InferBench {
    /// The human-readable table `meit bench infer` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, k: &str, v: String| {
            out.push_str(&format!("{k:<34} {v}\n"));
        };
        line(
            &mut out,
            "bundle",
            format!("{} ({})", self.bundle, self.model),
        );
        line(
            &mut out,
            "precision / threads / provider / cache",
            format!(
                "{} / {} / {} / {}",
                self.precision, self.threads, self.provider, self.cache
            ),
        );
        line(
            &mut out,
            "windows / prompt tokens",
            format!(
                "{} / {} (mean {:.1} new tokens a report)",
                self.windows, self.prompt_tokens, self.new_tokens_mean
            ),
        );
        let spread = |s: &Spread, unit: &str| {
            format!("{:.2} {unit} (min {:.2}, max {:.2})", s.p50, s.min, s.max)
        };
        line(&mut out, "encoder, batch 1", spread(&self.encoder_ms, "ms"));
        line(
            &mut out,
            "prefill, batch 1",
            spread(&self.prefill_tokens_per_s, "tokens/s"),
        );
        line(
            &mut out,
            "decode, batch 1",
            spread(&self.decode_tokens_per_s, "tokens/s"),
        );
        if self.draft_tokens > 0 {
            line(
                &mut out,
                "lookup drafts, batch 1",
                format!(
                    "up to {} a call, {:.0} % confirmed",
                    self.draft_tokens,
                    100.0 * self.drafts_accepted
                ),
            );
        }
        out.push_str("\nbatch  calls  report p50 ms  p99 ms  windows/s  beds (10 s)  encode / prefill / decode ms (steps)\n");
        for f in &self.sweep {
            let mark = if f.batch == self.best.batch { " *" } else { "" };
            out.push_str(&format!(
                "{:>5}  {:>5}  {:>13.2}  {:>6.2}  {:>9.1}  {:>10.0}{mark}\n",
                f.batch,
                f.calls,
                f.report_ms_p50,
                f.report_ms_p99,
                f.windows_per_s,
                f.beds_realtime
            ));
        }
        out.push_str(&format!(
            "\nbest batch {}: {:.0} beds in real time; batch 1: report p50 {:.2} ms, p99 {:.2} ms\n",
            self.best.batch, self.best.beds_realtime, self.batch1.report_ms_p50, self.batch1.report_ms_p99
        ));
        if let Some(rss) = self.peak_rss_mib {
            line(&mut out, "peak RSS (VmHWM)", format!("{rss:.1} MiB"));
        }
        if let Some(rss) = self.resident_mib {
            line(
                &mut out,
                "resident after the runs (VmRSS)",
                format!("{rss:.1} MiB"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..3], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn batch_sizes_are_powers_of_two_then_the_maximum() {
        assert_eq!(batch_sizes(1), vec![1]);
        assert_eq!(batch_sizes(12), vec![1, 2, 4, 8, 12]);
        assert_eq!(batch_sizes(16), vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
