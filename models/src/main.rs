//! `meit-models`: training, evaluation and export of meit's models. Training-only
//! dependencies live in this crate so the daemon never links them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meit_models::metrics::{self, Tokenization};
use meit_models::model::train::RunConfig;
use meit_models::tokenizer::ReportTokenizer;

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
    /// Train a model from a config file.
    Train,
    /// Evaluate a model bundle.
    Eval,
    /// Generate reports for a WFDB record.
    Generate,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("meit-models: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Train => not_yet("train", "training (the train issue)"),
        Command::Eval => not_yet(
            "eval",
            "model evaluation (needs the model code; `meit-models score` scores text files)",
        ),
        Command::Generate => not_yet("generate", "report generation (needs the model code)"),
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
        Command::CheckConfig { file } => {
            let config = RunConfig::from_toml(&read(&file)?)
                .with_context(|| format!("checking {}", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokenize { file, tokenize } => {
            for line in read(&file)?.lines() {
                println!("{}", tokenize.tokens(line).join(" "));
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
        None => println!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A command whose capability has not landed: says so and fails, never pretends.
fn not_yet(command: &str, what: &str) -> anyhow::Result<ExitCode> {
    eprintln!("meit-models {command}: not implemented yet: {what} has not landed in this build");
    Ok(ExitCode::from(2))
}
