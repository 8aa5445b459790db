//! `meit run`: the daemon. Every `[[source]]` feeds its own bed task; one inference worker
//! serves all beds; one publishing stage delivers the reports: over MQTT through the durable
//! outbox when `[mqtt] enabled = true`, and as lines on standard output. Without `--config` it runs `configs/meit.toml` when the working directory has
//! one, and the embedded default (one simulated bed, the default bundle) otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use meit::config::Config;
use meit::dsp::PreprocessSpec;
use meit::pipeline::{self, LoadedModel, model, reload};
use meit::publish::mqtt::MqttPublisher;
use meit::publish::payload::Identity;
use meit::publish::stdout::{LineFormat, LineSink};
use meit::publish::{Sink, Tee};
use meit::telemetry;
use tokio::sync::mpsc;

/// The configuration used when `--config` is not given and the working directory has no
/// `configs/meit.toml`: the demo's (one simulated bed, the default bundle).
pub const EMBEDDED_CONFIG: &str = include_str!("../../configs/meit.toml");
/// The configuration looked for in the working directory when `--config` is not given.
pub const LOCAL_CONFIG: &str = "configs/meit.toml";

/// How long a stopping daemon waits for the broker to acknowledge what is in flight.
const MQTT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Options of `meit run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file (default: `configs/meit.toml` if present, else the embedded demo
    /// configuration: one simulated bed, the default bundle, reports on standard output).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How reports are printed on standard output.
    #[arg(long, value_enum, default_value_t = LineFormat::Text)]
    pub output: LineFormat,
    /// Stop after this many window reports (all beds together); runs until SIGTERM or
    /// Ctrl-C otherwise.
    #[arg(long)]
    pub max_windows: Option<u64>,
}

/// The configuration `meit run` uses, a name for it in logs, and its file (none for the
/// embedded default).
pub fn load_config(given: Option<&Path>) -> anyhow::Result<(Config, String, Option<PathBuf>)> {
    if let Some(path) = given {
        return Ok((
            Config::load(path)?,
            path.display().to_string(),
            Some(path.to_path_buf()),
        ));
    }
    let local = Path::new(LOCAL_CONFIG);
    if local.is_file() {
        return Ok((
            Config::load(local)?,
            LOCAL_CONFIG.to_string(),
            Some(local.to_path_buf()),
        ));
    }
    let name = "embedded default configuration";
    let mut config = Config::parse(EMBEDDED_CONFIG, Path::new(name))?;
    config.apply_env(|k| std::env::var(k).ok());
    Ok((config, name.to_string(), None))
}

/// Loads the model as `config` says, logging whether reports will be generated; fails only
/// when `[model] required = true` and the bundle cannot be used.
pub fn load_model(config: &Config) -> anyhow::Result<LoadedModel> {
    let loaded = model::load(&config.model, &config.runtime, &config.dsp);
    match &loaded.engine {
        Ok(engine) => {
            let m = &engine.bundle().manifest.model;
            tracing::info!(
                bundle = %engine.bundle().dir.display(),
                model = %m.id,
                version = %m.version,
                provider = engine.primary_provider(),
                "model loaded; reports will be generated"
            );
        }
        Err(reason) if loaded.provider_refused => {
            anyhow::bail!(
                "{reason} (an execution provider in [runtime] is `required`; make it `preferred` to fall back)"
            );
        }
        Err(reason) if config.model.required => {
            anyhow::bail!("{reason} ([model] required = true)");
        }
        Err(reason) => {
            tracing::error!(%reason, "model unavailable: windows get quality and measurements but no report text");
        }
    }
    Ok(loaded)
}

/// Starts every source and publishes window reports until stopped.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, name, file) = load_config(args.config.as_deref())?;
    anyhow::ensure!(
        !config.sources.is_empty(),
        "{name}: no [[source]] configured"
    );
    telemetry::apply(&config.log).map_err(anyhow::Error::msg)?;
    tracing::info!(config = %name, sources = config.sources.len(), "starting");
    let model = load_model(&config)?;
    model.check_beds(&config, Path::new(&name))?;
    // SIGHUP re-reads this file; its text names the fields a reload cannot apply.
    let reload = match file {
        Some(path) => {
            let (_, text) = Config::load_with_text(&path)?;
            Some(ReloadSource {
                path,
                text,
                spec: model.spec.clone(),
                encoder_window_seconds: model.encoder_window_seconds,
            })
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lines = LineSink::stdout(args.output);
    let summary = if config.mqtt.enabled {
        // Reports go to the durable outbox and the broker, and are printed as published.
        let identity = Identity {
            site: config.site.name.clone(),
            unit: config.site.unit.clone(),
            gateway: config.mqtt.client_id.clone(),
            model_id: model
                .engine
                .as_ref()
                .ok()
                .map(|e| e.bundle().manifest.model.id.clone()),
            model_version: model
                .engine
                .as_ref()
                .ok()
                .map(|e| e.bundle().manifest.model.version.clone()),
            execution_provider: model
                .engine
                .as_ref()
                .ok()
                .map(|e| e.primary_provider().to_string()),
        };
        runtime.block_on(async {
            let publisher = MqttPublisher::start(&config.mqtt, identity)
                .await
                .context("starting MQTT publishing ([mqtt])")?;
            let sink = Tee::new(publisher.sink(), lines);
            let summary = serve(&config, model, sink, args.max_windows, reload).await;
            // Whatever is not acknowledged by then stays in the outbox for the next start.
            if let Err(e) = publisher.shutdown(MQTT_DRAIN).await {
                tracing::warn!(error = %e, "MQTT shutdown: undelivered reports stay in the outbox");
            }
            summary
        })?
    } else {
        runtime.block_on(serve(&config, model, lines, args.max_windows, reload))?
    };
    // Threads of sources that did not stop in time must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if summary.deadline_missed {
        tracing::warn!("the stop deadline passed; some windows were published as not reported");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the pipeline into `sink` until SIGTERM, SIGINT or `max_windows`; on SIGHUP the
/// configuration file of `reload` is re-read and what is safe applies live.
pub async fn serve<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    max_windows: Option<u64>,
    reload: Option<ReloadSource>,
) -> anyhow::Result<pipeline::RunSummary> {
    let stop = stop_signal().context("installing signal handlers")?;
    let reloads = reload_on_sighup(config, reload).context("installing signal handlers")?;
    Ok(pipeline::run(config, model, sink, stop, max_windows, Some(reloads)).await?)
}

/// The file `meit run` re-reads on SIGHUP, and what a new configuration is checked against.
pub struct ReloadSource {
    /// The configuration file.
    pub path: PathBuf,
    /// Its text at the start.
    pub text: String,
    /// The model's preprocessing (beds' windows are checked against it).
    pub spec: PreprocessSpec,
    /// The window the bundle's encoder takes, when a bundle was found.
    pub encoder_window_seconds: Option<f64>,
}

/// On every SIGHUP: re-reads and validates the file, logs what needs a restart, applies the
/// log filter and sends the configuration to run to the pipeline. An unreadable or invalid
/// file changes nothing (the error is logged).
fn reload_on_sighup(
    running: &Config,
    reload: Option<ReloadSource>,
) -> std::io::Result<mpsc::Receiver<Config>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    let mut running = running.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(source) = &reload else {
                tracing::warn!(
                    "SIGHUP: running the embedded default configuration; there is no file to reload"
                );
                continue;
            };
            tracing::info!(config = %source.path.display(), "SIGHUP: reloading the configuration");
            let path = source.path.clone();
            let read = tokio::task::spawn_blocking(move || Config::load_with_text(&path)).await;
            let checked = match read {
                Ok(Ok((new, text))) => model::check_beds(
                    &source.spec,
                    source.encoder_window_seconds,
                    &new,
                    &source.path,
                )
                .map(|()| (new, text))
                .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let (new, text) = match checked {
                Ok(checked) => checked,
                Err(error) => {
                    tracing::error!(%error, "configuration reload refused; the running configuration stays");
                    continue;
                }
            };
            let plan = reload::plan(&running, &source.text, new, &text);
            for field in &plan.needs_restart {
                tracing::warn!("needs restart: {field} (changed in the file, not applied)");
            }
            match telemetry::apply(&plan.config.log) {
                Ok(filter) => tracing::info!(%filter, "log filter"),
                Err(e) => tracing::error!(error = %e, "log filter not applied"),
            }
            running = plan.config.clone();
            if tx.send(plan.config).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// A future that completes on SIGTERM or SIGINT.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
