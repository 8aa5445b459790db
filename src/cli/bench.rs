//! `meit bench`: every stage benchmark in-process (synth, dsp, infer) as one table,
//! `meit bench infer` for the inference engine alone (`meit::infer::bench`), or
//! `meit bench beats` for beat detection against reference annotations
//! (`meit::dsp::beat_bench`), which writes `docs/bench/beats.md`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use meit::dsp::Preprocessor;
use meit::dsp::beat_bench::{self, RecordResult, Stress};
use meit::infer::bench::{self, BED_WINDOW_SECONDS, BenchOptions, InferBench, Spread};
use meit::infer::bundle::Bundle;
use meit::infer::config::{ExecutionProviderKind, ProviderConfig, ProviderPolicy, RuntimeConfig};
use meit::infer::engine::Engine;
use meit::infer::runtime::{OnnxRuntime, OptimizationLevel};
use meit::synth::{ConditionSet, RecordSpec, generate};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `meit bench [infer ...]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// One stage only.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Bundle of the infer stage (and the preprocessing of the dsp stage).
    #[arg(long, default_value = "models/bundles/tiny")]
    pub bundle: PathBuf,
    /// Intra-op threads of each ONNX Runtime session.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Stage benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The inference engine on a bundle: encoder latency, prefill and decode tokens/s, report
    /// latency p50/p99 at batch 1 and at the best batch, beds served in real time, peak RSS.
    Infer(InferArgs),
    /// Beat detection (`dsp::beats`) against the reference beat annotations of real records
    /// (EC57: 150 ms matching window, Se and +P per record and gross), as recorded and under
    /// added artefacts; writes a Markdown report.
    Beats(BeatsArgs),
}

/// `meit bench beats`.
#[derive(Debug, Args)]
pub struct BeatsArgs {
    /// A WFDB record (`.hea`) with reference annotations (`.atr`) beside it; repeatable.
    /// Default: every annotated record in tests/fixtures/physionet.
    #[arg(long)]
    pub record: Vec<PathBuf>,
    /// Seconds of signal analysed at a time (the daemon's window).
    #[arg(long, default_value_t = beat_bench::DAEMON_WINDOW_S)]
    pub window_s: f64,
    /// The Markdown report to write ("-" for standard output only).
    #[arg(long, default_value = "docs/bench/beats.md")]
    pub out: PathBuf,
    /// Only the records as recorded (no added artefacts).
    #[arg(long)]
    pub no_stress: bool,
}

/// `meit bench infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Largest batch of the sweep (1, 2, 4, ... up to N).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Print the figures as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Intra-op threads of each ONNX Runtime session.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Distinct synthesized input windows.
    #[arg(long, default_value_t = 32)]
    pub windows: usize,
    /// Passes over the windows at batch 1.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Timed calls per batch size of the sweep.
    #[arg(long, default_value_t = 6)]
    pub calls: usize,
    /// Profiling: ONNX Runtime graph optimization level (default: the engine's).
    #[arg(long, value_enum)]
    pub optimization: Option<Optimization>,
    /// Profiling: let intra-op threads spin before sleeping (default: the engine's).
    #[arg(long)]
    pub spinning: Option<bool>,
    /// Profiling: ONNX Runtime memory pattern planning (default: the engine's).
    #[arg(long)]
    pub memory_pattern: Option<bool>,
    /// Lookup drafts a decoder call at batch 1 (`[runtime] draft_tokens`; 0: none).
    #[arg(long, default_value_t = RuntimeConfig::default().draft_tokens)]
    pub draft_tokens: usize,
    /// Execution providers in priority order, each required (`cuda`, `tensorrt`; the CPU
    /// provider always takes what they do not), e.g. `--provider cuda` on a GPU machine.
    #[arg(long = "provider", value_enum)]
    pub providers: Vec<Provider>,
}

/// Execution providers `meit bench infer` can be asked for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Provider {
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    Tensorrt,
    /// The CPU provider.
    Cpu,
}

impl From<Provider> for ProviderConfig {
    fn from(p: Provider) -> Self {
        let kind = match p {
            Provider::Cuda => ExecutionProviderKind::Cuda,
            Provider::Tensorrt => ExecutionProviderKind::Tensorrt,
            Provider::Cpu => ExecutionProviderKind::Cpu,
        };
        ProviderConfig::new(kind, ProviderPolicy::Required)
    }
}

/// ONNX Runtime graph optimization levels, for profiling.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Optimization {
    /// No graph rewrites.
    Disable,
    /// Constant folding and simple fusions.
    Basic,
    /// Basic plus complex fusions.
    Extended,
    /// Everything.
    All,
}

impl From<Optimization> for OptimizationLevel {
    fn from(o: Optimization) -> Self {
        match o {
            Optimization::Disable => OptimizationLevel::Disable,
            Optimization::Basic => OptimizationLevel::Basic,
            Optimization::Extended => OptimizationLevel::Extended,
            Optimization::All => OptimizationLevel::All,
        }
    }
}

/// Runs `meit bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(BenchCommand::Infer(infer)) => run_infer(infer),
        Some(BenchCommand::Beats(beats)) => run_beats(beats),
        None => run_all(&args.bundle, args.threads),
    }
}

fn open_engine(bundle: &Path, threads: usize) -> anyhow::Result<Engine> {
    let runtime = OnnxRuntime::load(None)?;
    let opened =
        Bundle::open(bundle, &runtime).with_context(|| format!("bundle {}", bundle.display()))?;
    let mut engine = Engine::new(opened, &runtime, threads)?;
    engine.set_draft_tokens(RuntimeConfig::default().draft_tokens);
    Ok(engine)
}

fn run_infer(args: InferArgs) -> anyhow::Result<ExitCode> {
    let runtime = OnnxRuntime::load(None)?;
    let opened = Bundle::open(&args.bundle, &runtime)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let mut session = Engine::session_options(args.threads);
    if let Some(o) = args.optimization {
        session.optimization = Some(o.into());
    }
    if args.spinning.is_some() {
        session.spinning = args.spinning;
    }
    if args.memory_pattern.is_some() {
        session.memory_pattern = args.memory_pattern;
    }
    let providers: Vec<ProviderConfig> = args.providers.iter().map(|&p| p.into()).collect();
    let mut engine = Engine::with_providers(opened, &runtime, &session, &providers)?;
    engine.set_draft_tokens(args.draft_tokens);
    let options = BenchOptions {
        windows: args.windows.max(1),
        max_batch: args.batch.max(1),
        rounds: args.rounds.max(1),
        batch_calls: args.calls.max(1),
        ..BenchOptions::default()
    };
    let windows = bench::bench_windows(&engine.bundle().manifest, options.windows, options.seed)?;
    let figures = bench::run(&mut engine, &windows, &options)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&figures)?)?;
    } else {
        write!(out, "{}", figures.table())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of the stage table.
struct StageRow {
    stage: &'static str,
    what: String,
    per_window_ms: Spread,
    windows_per_s: f64,
}

fn run_all(bundle: &Path, threads: usize) -> anyhow::Result<ExitCode> {
    let records = 24usize;
    let mut rng = StdRng::seed_from_u64(7);
    let specs: Vec<RecordSpec> = (0..records)
        .map(|_| RecordSpec::ten_seconds(ConditionSet::random(&mut rng)))
        .collect();

    // synth: 10 s 12-lead records at 500 Hz.
    let mut synth_ms = Vec::with_capacity(records);
    let mut recordings = Vec::with_capacity(records);
    for (i, spec) in specs.iter().enumerate() {
        let t = Instant::now();
        let rec = generate(spec, i as u64)?;
        synth_ms.push(t.elapsed().as_secs_f64() * 1e3);
        recordings.push(rec.recording);
    }

    // dsp: the bundle's preprocessing (filter, resample, quality, normalise) per record.
    let mut engine = open_engine(bundle, threads)?;
    let spec = engine.bundle().manifest.preprocess.clone();
    let mut dsp_ms = Vec::with_capacity(records);
    let mut windows = Vec::new();
    for rec in &recordings {
        let pre = Preprocessor::new(spec.for_device(&rec.leads))?;
        let t = Instant::now();
        let input = pre.process_recording(rec)?;
        dsp_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if input.quality.is_reportable() {
            windows.push(input);
        }
    }
    anyhow::ensure!(!windows.is_empty(), "no synthesized record is reportable");

    // infer: the engine's own benchmark on the reportable windows.
    let options = BenchOptions {
        windows: windows.len(),
        max_batch: 64,
        rounds: 2,
        batch_calls: 4,
        ..BenchOptions::default()
    };
    let infer: InferBench = bench::run(&mut engine, &windows, &options)?;

    let row = |stage, what: String, ms: &[f64]| {
        let spread = Spread::of(ms);
        StageRow {
            stage,
            what,
            windows_per_s: if spread.p50 > 0.0 {
                1e3 / spread.p50
            } else {
                0.0
            },
            per_window_ms: spread,
        }
    };
    let one_thread = |s: &str| format!("{s}, 1 thread");
    let rows = [
        row("synth", one_thread("12 x 5000 samples"), &synth_ms),
        row("dsp", one_thread("bundle preprocessing"), &dsp_ms),
        StageRow {
            stage: "infer b=1",
            what: format!("{}, {threads} threads", infer.model),
            per_window_ms: Spread {
                p50: infer.batch1.report_ms_p50,
                min: infer.batch1.report_ms_min,
                max: infer.batch1.report_ms_max,
            },
            windows_per_s: infer.batch1.windows_per_s,
        },
        StageRow {
            stage: "infer best",
            what: format!("batch {}, {threads} threads", infer.best.batch),
            per_window_ms: Spread {
                p50: infer.best.report_ms_p50 / infer.best.batch as f64,
                min: infer.best.report_ms_min / infer.best.batch as f64,
                max: infer.best.report_ms_max / infer.best.batch as f64,
            },
            windows_per_s: infer.best.windows_per_s,
        },
    ];
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<11} {:<34} {:>22} {:>11} {:>12}",
        "stage", "what", "ms/window p50 (min-max)", "windows/s", "beds (10 s)"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<11} {:<34} {:>8.3} ({:.3}-{:.3}) {:>11.1} {:>12.0}",
            r.stage,
            r.what,
            r.per_window_ms.p50,
            r.per_window_ms.min,
            r.per_window_ms.max,
            r.windows_per_s,
            r.windows_per_s * BED_WINDOW_SECONDS
        )?;
    }
    writeln!(
        out,
        "infer: encoder {:.2} ms, prefill {:.0} tokens/s, decode {:.0} tokens/s (batch 1 medians); report p99 {:.2} ms at batch 1",
        infer.encoder_ms.p50,
        infer.prefill_tokens_per_s.p50,
        infer.decode_tokens_per_s.p50,
        infer.batch1.report_ms_p99
    )?;
    if let Some(rss) = bench::peak_rss_bytes() {
        writeln!(
            out,
            "peak RSS (VmHWM): {:.1} MiB",
            rss as f64 / (1024.0 * 1024.0)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Annotated records under `dir`: every `.hea` with an `.atr` beside it, by name.
fn annotated_records(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hea") && p.with_extension("atr").is_file())
        .collect();
    found.sort();
    Ok(found)
}

fn run_beats(args: BeatsArgs) -> anyhow::Result<ExitCode> {
    let records = if args.record.is_empty() {
        annotated_records(Path::new("tests/fixtures/physionet"))?
    } else {
        args.record.clone()
    };
    anyhow::ensure!(!records.is_empty(), "no annotated record to benchmark");
    let stresses: &[Stress] = if args.no_stress {
        &[Stress::None]
    } else {
        &[
            Stress::None,
            Stress::LowAmplitude(0.2),
            Stress::NoiseBursts(100.0),
            Stress::BaselineWander(1000.0),
            Stress::TallT(1.5),
        ]
    };
    let started = Instant::now();
    let mut results: Vec<RecordResult> = Vec::new();
    for stress in stresses {
        for hea in &records {
            results.push(beat_bench::bench_record(hea, *stress, args.window_s)?);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let table = beat_bench::markdown_table(&results);
    let mut command = String::from("meit bench beats");
    for r in &args.record {
        command.push_str(&format!(" --record {}", r.display()));
    }
    if args.window_s != beat_bench::DAEMON_WINDOW_S {
        command.push_str(&format!(" --window-s {}", args.window_s));
    }
    if args.no_stress {
        command.push_str(" --no-stress");
    }
    let report = beat_bench::markdown_report(&table, &command, args.window_s, elapsed);
    write!(std::io::stdout(), "{table}")?;
    if args.out != Path::new("-") {
        std::fs::write(&args.out, report)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
