//! Logging setup: `tracing` with an environment filter and text or JSON output, and the
//! `[log]` table, whose filter can change while the daemon runs (SIGHUP).

use std::io::IsTerminal;
use std::sync::OnceLock;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter (falls back to `RUST_LOG`, then `info`).
pub const ENV_LOG: &str = "MEIT_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber writing to stderr, with colours only when stderr is a
/// terminal (never ANSI escape codes in a file or a pipe). Safe to call once per process; a
/// second call is ignored.
pub fn init(format: LogFormat) {
    let filter = env_filter()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // The filter stays replaceable ([`apply`]); the handle's type depends on the format.
    let _ = match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
    };
}

/// The filter when neither the environment nor `[log]` gives one.
pub const DEFAULT_FILTER: &str = "info,ort=warn";

/// Replaces the installed subscriber's filter.
type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static RELOAD: OnceLock<Reload> = OnceLock::new();

/// The filter the environment sets (`MEIT_LOG`, then `RUST_LOG`), if any.
fn env_filter() -> Option<String> {
    std::env::var(ENV_LOG)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
}

/// The `[log]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter in `tracing` directive syntax, e.g. `"info"` or `"info,meit::pipeline=debug"`
    /// (default `info,ort=warn`). `MEIT_LOG` or `RUST_LOG`, when set, win over it. Applied
    /// again on SIGHUP.
    #[serde(default)]
    pub filter: Option<String>,
}

impl LogConfig {
    /// The first unusable field, as (`field`, what is wrong).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match &self.filter {
            Some(f) => EnvFilter::try_new(f).map(|_| ()).map_err(|e| {
                (
                    "filter",
                    format!("is {f:?}: {e}; allowed: tracing directives such as \"info\" or \"warn,meit=debug\""),
                )
            }),
            None => Ok(()),
        }
    }
}

/// Makes `config`'s filter the running one (at the start and on every reload), unless the
/// environment sets one. Returns the filter now in force.
pub fn apply(config: &LogConfig) -> Result<String, String> {
    let wanted = match env_filter() {
        Some(env) => {
            if config.filter.is_some() {
                tracing::warn!(
                    "[log] filter is not applied: {ENV_LOG} or RUST_LOG is set and wins"
                );
            }
            env
        }
        None => config
            .filter
            .clone()
            .unwrap_or_else(|| DEFAULT_FILTER.to_string()),
    };
    let filter = EnvFilter::try_new(&wanted).map_err(|e| format!("log filter {wanted:?}: {e}"))?;
    if let Some(reload) = RELOAD.get() {
        reload(filter)?;
    }
    Ok(wanted)
}
