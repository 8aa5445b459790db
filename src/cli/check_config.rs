//! `meit check-config FILE`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use meit::config::Config;
use meit::pipeline::model;

/// Loads and validates `file` (the beds' windows against the bundle's manifest when the bundle
/// is found); prints a summary or the first error with its line and field.
pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    // The beds' windows against the bundle's encoder, when the bundle is here to read.
    let (spec, encoder_window_seconds, _) = model::read_spec(&config.model, &config.dsp);
    model::check_beds(&spec, encoder_window_seconds, &config, file)?;
    tracing::info!(file = %file.display(), sources = config.sources.len(), "configuration valid");
    for source in &config.sources {
        if matches!(source, meit::config::SourceConfig::Ble { .. }) && !cfg!(feature = "ble") {
            eprintln!(
                "warning: {}: source {:?} is a BLE bed, which this build cannot run (build with `--features ble`); `meit run` starts the other beds without it",
                file.display(),
                source.bed()
            );
        }
    }
    writeln!(
        std::io::stdout(),
        "{}: ok ({} source(s), bundle {}, broker {}:{})",
        file.display(),
        config.sources.len(),
        config.model.bundle.display(),
        config.mqtt.host,
        config.mqtt.port
    )?;
    Ok(ExitCode::SUCCESS)
}
