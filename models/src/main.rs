//! `meit-models`: training, evaluation and export of meit's models. Training-only
//! dependencies live in this crate so the daemon never links them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meit::report::Outcome;
use meit_models::eval::{self, suite::Suite};
use meit_models::generate;
use meit_models::metrics::{self, Tokenization};
use meit_models::tokenizer::ReportTokenizer;
use meit_models::train::config::RunConfig;
use meit_models::train::run::{self, RunOptions};
use meit_models::train::{self, LOSS_PLOT, METRICS};

/// Trains, evaluates and exports meit's models (the MEIT method).
#[derive(Debug, Parser)]
#[command(name = "meit-models", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from a run config (models/configs/*.toml) into a model directory.
    Train {
        /// The run config.
        #[arg(long)]
        config: PathBuf,
        /// The model directory (default: models/trained/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the directory's checkpoint instead of starting over.
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimiser steps (smoke runs; the schedule spans the whole run).
        #[arg(long)]
        max_steps: Option<usize>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a trained model on the held-out synthetic test set: text metrics, clinical
    /// correctness, shuffled-ECG control, robustness, lead sets, transfer; with --external, on
    /// ECGs the project did not make. Writes JSON and Markdown.
    Eval {
        /// The model directory (from `train`).
        #[arg(long)]
        model: PathBuf,
        /// Test records per row (default: the run config's test_records).
        #[arg(long)]
        records: Option<usize>,
        /// Which rows.
        #[arg(long, value_enum, default_value = "full")]
        suite: Suite,
        /// Evaluate this exported bundle (ONNX Runtime, the daemon's engine) instead of the
        /// candle model; the model directory still names the test data. Default output:
        /// BUNDLE/eval.json and BUNDLE/eval.md.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Also score the test windows of this external set (models/external: ECGs the project
        /// did not make, with a manifest.json of expected rhythm and rate classes): an
        /// "external" section in eval.md / eval.json.
        #[arg(long)]
        external: Option<PathBuf>,
        /// Where to write the JSON (default: DIR/eval.json).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where to write the Markdown table (default: DIR/eval.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Compare two evaluations (`eval`'s JSON) of the same test records: the `test` row's
    /// macro F1 of each and the paired bootstrap interval of candidate - baseline.
    Compare {
        /// The evaluation compared against.
        #[arg(long)]
        baseline: PathBuf,
        /// The evaluation compared.
        #[arg(long)]
        candidate: PathBuf,
        /// Bootstrap resamples.
        #[arg(long, default_value_t = eval::suite::BOOTSTRAP_RESAMPLES)]
        resamples: usize,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the comparison as JSON instead of a line of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Print the report for each 10 s window of a WFDB record (any rate, any lead set the
    /// lead mapping accepts; other signals are ignored, missing leads masked).
    Generate {
        /// The model directory (from `train`).
        #[arg(long)]
        model: PathBuf,
        /// The record's header file (.hea).
        #[arg(long)]
        record: PathBuf,
        /// One JSON object per window instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Export a trained model directory as an ONNX bundle for the daemon: encoder.onnx,
    /// decoder.onnx (int4 MatMulNBits or fp32), tokenizer.json, manifest.json.
    Export {
        /// The model directory (from `train`).
        #[arg(long)]
        model: PathBuf,
        /// The bundle directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Precision of the decoder's linear layers.
        #[arg(long, value_enum, default_value = "int4")]
        precision: PrecisionArg,
        /// int4: MatMulNBits accuracy level (4 = int8 compute, fastest on CPU; 0 = float).
        #[arg(long, default_value_t = meit_models::export::DEFAULT_ACCURACY_LEVEL)]
        accuracy_level: i64,
        /// Model id in the manifest (default: meit-<model directory name>).
        #[arg(long)]
        id: Option<String>,
        /// Attention: plain ONNX operators (default: batched prefill after the ECG slot) or
        /// com.microsoft GroupQueryAttention (faster decode steps, batch-1 prefill only).
        #[arg(long, value_enum, default_value = "ops")]
        attention: AttentionArg,
        /// Keep LoRA adapters as a float branch beside the base weights instead of merging them
        /// (larger and slower; for comparison, models/README.md).
        #[arg(long)]
        lora_branch: bool,
        /// Store the token-embedding table in float16 (half its bytes; for large vocabularies).
        #[arg(long)]
        half_embedding: bool,
    },
    /// Score line-aligned hypothesis and reference reports: BLEU-1..4, METEOR, ROUGE-L,
    /// CIDEr-D as JSON. Several references on one line are separated by `|||`.
    Score {
        /// Generated reports, one per line.
        #[arg(long)]
        hyp: PathBuf,
        /// Reference reports, line-aligned with --hyp (`a ||| b` for two references).
        #[arg(long = "ref")]
        references: PathBuf,
        /// Also score per batch of this many lines and average over batches (the paper: 32).
        #[arg(long)]
        batch: Option<usize>,
        /// How text becomes tokens: ptb (pycocoevalcap's PTBTokenizer), paper ("." -> " ."),
        /// whitespace (already tokenised).
        #[arg(long, default_value_t = Tokenization::default())]
        tokenize: Tokenization,
        /// Write the JSON here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Train a byte-level BPE tokenizer on reports (one per line) and write tokenizer.json.
    TrainTokenizer {
        /// Report text, one report per line (empty lines are skipped).
        #[arg(long)]
        reports: PathBuf,
        /// Vocabulary size, special tokens and the 256 byte symbols included.
        #[arg(long, default_value_t = 2048)]
        vocab_size: usize,
        /// Merge only pairs seen at least this often.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Where to write tokenizer.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Redraw a model directory's loss.png from its metrics.jsonl (a run stopped early, or a
    /// plot from an older version).
    PlotLoss {
        /// The model directory (from `train`).
        #[arg(long)]
        model: PathBuf,
    },
    /// Parse and validate a run config (models/configs/*.toml) and print it as JSON.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the tokens of each line of a file, space-separated (to compare tokenisers).
    Tokenize {
        /// The text file.
        file: PathBuf,
        /// ptb, paper or whitespace.
        #[arg(long, default_value_t = Tokenization::Ptb)]
        tokenize: Tokenization,
    },
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    /// 4-bit linear layers (MatMulNBits, block 32): the default bundle.
    Int4,
    /// 32-bit floats: the reference.
    Fp32,
}

/// `--attention` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AttentionArg {
    /// com.microsoft GroupQueryAttention.
    Gqa,
    /// Plain ONNX operators.
    Ops,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's CPU thread pool busy-waits at every operation's barrier: on a small, shared
        // machine a spinning worker starves the data thread and other processes (measured on the
        // 2-core build box: 47 records/s with one thread against 8 with two). One compute thread
        // plus the data thread keep both cores busy; set RAYON_NUM_THREADS to override.
        // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    match run(cli.command) {
        Ok(code) => code,
        // The reader of standard output went away (`| head`): nothing is wrong here.
        Err(error) if meit::is_broken_pipe(error.as_ref()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meit-models: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Train {
            config,
            out,
            resume,
            max_steps,
            quiet,
        } => {
            let text = read(&config)?;
            let run_config = RunConfig::from_toml(&text)
                .with_context(|| format!("checking {}", config.display()))?;
            let out = out.unwrap_or_else(|| {
                let name = config.file_stem().unwrap_or_default();
                Path::new("models/trained").join(name)
            });
            let options = RunOptions {
                out: out.clone(),
                resume,
                max_steps,
                quiet,
            };
            let summary = run::train(&run_config, &text, &options)
                .with_context(|| format!("training into {}", out.display()))?;
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&summary)?
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            model,
            out,
            precision,
            accuracy_level,
            id,
            attention,
            lora_branch,
            half_embedding,
        } => {
            let options = meit_models::export::ExportOptions {
                precision: match precision {
                    PrecisionArg::Int4 => meit::infer::bundle::Precision::Int4,
                    PrecisionArg::Fp32 => meit::infer::bundle::Precision::Fp32,
                },
                accuracy_level,
                model_id: id,
                attention: match attention {
                    AttentionArg::Gqa => meit_models::export::decoder::AttentionExport::Gqa,
                    AttentionArg::Ops => meit_models::export::decoder::AttentionExport::Ops,
                },
                lora: if lora_branch {
                    meit_models::export::decoder::LoraExport::Branch
                } else {
                    meit_models::export::decoder::LoraExport::Merge
                },
                half_embedding,
                ..Default::default()
            };
            let manifest = meit_models::export::export(&model, &out, &options)
                .with_context(|| format!("exporting {} to {}", model.display(), out.display()))?;
            writeln!(
                std::io::stdout(),
                "wrote {} ({} {:?}, {} files)",
                out.display(),
                manifest.model.id,
                manifest.decoder_graph.precision,
                manifest.files.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            model,
            records,
            suite,
            bundle,
            external,
            json,
            markdown,
        } => {
            let (config, meit, codec) = train::load_model(&model)
                .with_context(|| format!("loading the model in {}", model.display()))?;
            let records = records.unwrap_or(config.data.test_records);
            let data = config.data.synth.as_ref().context(
                "the evaluation suite varies synthesised records: the run config needs \
                     [data.synth] (a model trained on a PTB-XL or MIMIC tree is not evaluated \
                     by this suite yet)",
            )?;
            let rows = eval::suite::variants(suite, data);
            let progress = |name: &str| eprintln!("meit-models eval: {name} ({records} records)");
            let out_dir = bundle.clone().unwrap_or_else(|| model.clone());
            let mut reporter: Box<dyn generate::Reporter + '_> = match &bundle {
                Some(dir) => {
                    let runtime = meit::infer::runtime::OnnxRuntime::load(None)?;
                    let opened = meit::infer::bundle::Bundle::open(dir, &runtime)?;
                    let engine = meit::infer::engine::Engine::new(opened, &runtime, 1)?;
                    Box::new(generate::BundleReporter { engine, batch: 32 })
                }
                None => Box::new(generate::CandleReporter {
                    model: &meit,
                    codec: &codec,
                    max_new_tokens: config.train.max_tokens,
                }),
            };
            let mut report = eval::suite::evaluate(
                &config,
                reporter.as_mut(),
                &codec,
                records,
                &rows,
                progress,
            )?;
            if let Some(dir) = &external {
                eprintln!("meit-models eval: external set {}", dir.display());
                report.external = Some(
                    eval::external::evaluate_external(dir, reporter.as_mut(), &codec)
                        .with_context(|| {
                            format!("evaluating the external set {}", dir.display())
                        })?,
                );
            }
            if let Some(dir) = &bundle {
                // The manifest records the figures measured on its own graphs (the checksums
                // cover the graphs and the tokenizer, not the manifest).
                let mut manifest = meit::infer::bundle::read_manifest(dir)?;
                manifest.evaluation = report.headline();
                meit_models::export::write_manifest(dir, &manifest)?;
            }
            let json_path = json.unwrap_or_else(|| out_dir.join("eval.json"));
            let md_path = markdown.unwrap_or_else(|| out_dir.join("eval.md"));
            std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", json_path.display()))?;
            let table = report.to_markdown();
            std::fs::write(&md_path, &table)
                .with_context(|| format!("writing {}", md_path.display()))?;
            writeln!(std::io::stdout(), "{table}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            baseline,
            candidate,
            resamples,
            seed,
            json,
        } => {
            let comparison = eval::compare::compare(&baseline, &candidate, resamples, seed)?;
            let line = if json {
                serde_json::to_string_pretty(&comparison)?
            } else {
                comparison.to_markdown()
            };
            writeln!(std::io::stdout(), "{line}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            model,
            record,
            json,
        } => generate(&model, &record, json),
        Command::Score {
            hyp,
            references,
            batch,
            tokenize,
            out,
        } => score(&hyp, &references, batch, tokenize, out.as_deref()),
        Command::TrainTokenizer {
            reports,
            vocab_size,
            min_frequency,
            out,
        } => {
            let text = read(&reports)?;
            let lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
            let tokenizer = ReportTokenizer::train(lines, vocab_size, min_frequency)?;
            tokenizer.save(&out)?;
            eprintln!(
                "meit-models: wrote {} ({} tokens)",
                out.display(),
                tokenizer.vocab_size()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::PlotLoss { model } => {
            let png = model.join(LOSS_PLOT);
            run::plot_loss(&model.join(METRICS), &png)
                .with_context(|| format!("plotting {}", png.display()))?;
            eprintln!("meit-models: wrote {}", png.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let config = RunConfig::from_toml(&read(&file)?)
                .with_context(|| format!("checking {}", file.display()))?;
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&config)?
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokenize { file, tokenize } => {
            for line in read(&file)?.lines() {
                writeln!(std::io::stdout(), "{}", tokenize.tokens(line).join(" "))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn score(
    hyp: &Path,
    references: &Path,
    batch: Option<usize>,
    tokenization: Tokenization,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let samples = metrics::samples_from_text(&read(hyp)?, &read(references)?, tokenization)
        .with_context(|| format!("pairing {} with {}", hyp.display(), references.display()))?;
    let evaluation = metrics::evaluate(&samples, tokenization, batch)?;
    let json = serde_json::to_string_pretty(&evaluation)?;
    match out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => writeln!(std::io::stdout(), "{json}")?,
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(model_dir: &Path, hea: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (config, model, codec) = train::load_model(model_dir)
        .with_context(|| format!("loading the model in {}", model_dir.display()))?;
    let (recording, ignored) = generate::read_wfdb(hea)?;
    if !ignored.is_empty() {
        eprintln!(
            "meit-models: {}: not ECG leads, ignored: {}",
            hea.display(),
            ignored.join(", ")
        );
    }
    let windows = generate::report_windows(&model, &codec, &recording, config.train.max_tokens)?;
    let window_s = codec.preprocessor().spec().window_seconds;
    let covered = windows.last().map_or(0.0, |w| w.end_s);
    let tail = recording.duration_s() - covered;
    if tail > 0.05 {
        eprintln!(
            "meit-models: {}: the last {tail:.1} s are shorter than one {window_s} s window: no report for them",
            hea.display()
        );
    }
    for w in &windows {
        if json {
            writeln!(std::io::stdout(), "{}", serde_json::to_string(w)?)?;
            continue;
        }
        let masked = if w.masked_leads.is_empty() {
            String::new()
        } else {
            format!(" [masked: {}]", w.masked_leads.join(" "))
        };
        let (start, end) = (w.start_s, w.end_s);
        match &w.outcome {
            Outcome::Report {
                text,
                contradictions,
                withheld,
                ..
            } => {
                let mut line = format!("{start:6.1}-{end:6.1} s{masked}: {text}");
                if !contradictions.is_empty() {
                    line.push_str(&format!(" [CHECK: {}]", contradictions.join("; ")));
                }
                if !withheld.is_empty() {
                    line.push_str(&format!(" [withheld: {}]", withheld.join("; ")));
                }
                writeln!(std::io::stdout(), "{line}")?;
            }
            Outcome::NoReport { reasons } => writeln!(
                std::io::stdout(),
                "{start:6.1}-{end:6.1} s{masked}: NO REPORT ({})",
                reasons.join("; ")
            )?,
            Outcome::NoModel { reason } => writeln!(
                std::io::stdout(),
                "{start:6.1}-{end:6.1} s{masked}: signal reportable, {reason}"
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
