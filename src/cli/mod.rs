//! Subcommands of the `meit` binary. Each command's body lives in its own file; this one only
//! declares the command line and dispatches.

mod bench;
mod check_config;
mod doctor;
mod replay;
mod run;
mod simulate;
mod subscribe;
mod synth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meit::telemetry::LogFormat;

/// ECG reports generated at the bedside (not a certified medical device).
#[derive(Debug, Parser)]
#[command(name = "meit", version, about)]
pub struct Cli {
    /// Log line format on stderr (filter with MEIT_LOG or RUST_LOG, e.g. `meit=debug`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: acquire, filter, infer and publish for every configured bed.
    Run(run::RunArgs),
    /// Act as an ECG device on a serial port (a pty pair by default), streaming synthetic ECG.
    Simulate(simulate::SimulateArgs),
    /// Replay a recorded WFDB or CSV file through the pipeline as if it were live.
    Replay(replay::ReplayArgs),
    /// Synthesize ECG records and data sets.
    Synth(synth::SynthArgs),
    /// Print reports from the MQTT broker as a nursing station sees them, one line each.
    Subscribe(subscribe::SubscribeArgs),
    /// Measure throughput and latency of the pipeline stages (all of them, or `infer`).
    Bench(bench::BenchArgs),
    /// Check a configuration file and report the first problem with its line and field.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Show what this machine offers: ONNX Runtime, providers, ports, bundles, broker.
    Doctor {
        /// Configuration file (defaults are used when omitted).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Runs one subcommand.
pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => check_config::run(&file),
        Command::Doctor { config } => doctor::run(config.as_deref()),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Subscribe(args) => subscribe::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
