//! The `meit` binary: command-line parsing and the error edge (anyhow) of the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    meit::telemetry::init(args.log_format);
    match cli::dispatch(args.command) {
        Ok(code) => code,
        // The reader of standard output went away (`| head`): nothing is wrong here.
        Err(e) if meit::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every cause once, most specific last; no backtrace noise for operators.
            eprintln!("error: {}", meit::error_message(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
