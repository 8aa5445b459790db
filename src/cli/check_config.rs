//! `meit check-config FILE`.

use std::path::Path;
use std::process::ExitCode;

use meit::config::Config;

/// Loads and validates `file`; prints a summary or the first error with its line and field.
pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    tracing::info!(file = %file.display(), sources = config.sources.len(), "configuration valid");
    println!(
        "{}: ok ({} source(s), bundle {}, broker {}:{})",
        file.display(),
        config.sources.len(),
        config.model.bundle.display(),
        config.mqtt.host,
        config.mqtt.port
    );
    Ok(ExitCode::SUCCESS)
}
