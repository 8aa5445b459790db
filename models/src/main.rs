//! `meit-models`: training, evaluation and export of meit's models. Training-only
//! dependencies live in this crate so the daemon never links them.

use std::process::ExitCode;

use clap::Parser;

/// Trains, evaluates and exports meit's models (the MEIT method).
#[derive(Debug, Parser)]
#[command(name = "meit-models", version, about)]
enum Command {
    /// Train a model from a config file.
    Train,
    /// Evaluate a model bundle.
    Eval,
    /// Generate reports for a WFDB record.
    Generate,
}

fn main() -> ExitCode {
    let command = Command::parse();
    eprintln!(
        "meit-models {command:?}: not implemented yet: the training crate lands with the train issue"
    );
    ExitCode::from(2)
}
