//! `meit doctor`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use meit::config::Config;
use meit::doctor::{Status, examine};

/// Prints one line per check; fails when the daemon could not run here.
pub fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let findings = examine(&config, config_path);
    for f in &findings {
        writeln!(std::io::stdout(), "{f}")?;
    }
    Ok(if findings.iter().any(|f| f.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
