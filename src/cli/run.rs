//! `meit run`: the daemon. Every `[[source]]` feeds its own bed pipeline; all beds fan in to
//! one publishing stage (standard output until the MQTT sink lands).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meit::acquire::source;
use meit::config::Config;
use meit::dsp::Preprocessor;
use meit::pipeline::{self, BedPipeline};
use meit::publish::Sink;
use meit::publish::stdout::{LineFormat, LineSink};
use meit::report::WindowReport;
use tokio::sync::mpsc;

/// Options of `meit run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, short, default_value = "configs/meit.toml")]
    pub config: PathBuf,
    /// How reports are printed on standard output.
    #[arg(long, value_enum, default_value_t = LineFormat::Text)]
    pub output: LineFormat,
    /// Stop after this many window reports (all beds together); runs until Ctrl-C otherwise.
    #[arg(long)]
    pub max_windows: Option<u64>,
}

/// Starts every source and publishes window reports until stopped.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    anyhow::ensure!(
        !config.sources.is_empty(),
        "{}: no [[source]] configured",
        args.config.display()
    );
    let preprocessor =
        Preprocessor::new(pipeline::preprocess_spec(&config)).context("dsp settings")?;
    let model_status = pipeline::model_status(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (reports_tx, mut reports) = mpsc::channel::<WindowReport>(64);
        let mut handles = Vec::new();
        for source_config in &config.sources {
            let (events_tx, events) = mpsc::channel(1024);
            handles.push(source::start(source_config, events_tx)?);
            let bed = BedPipeline::new(
                source_config.bed(),
                preprocessor.clone(),
                model_status.clone(),
            );
            let mut to_publisher = reports_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = pipeline::run(bed, events, &mut to_publisher, None).await {
                    tracing::error!(error = %e, "bed pipeline stopped");
                }
            });
            tracing::info!(bed = source_config.bed(), "source started");
        }
        drop(reports_tx);
        let mut sink = LineSink::stdout(args.output);
        let mut published = 0u64;
        loop {
            tokio::select! {
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    sink.publish(&report).await?;
                    published += 1;
                    if args.max_windows.is_some_and(|max| published >= max) {
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("interrupted; stopping");
                    break;
                }
            }
        }
        drop(handles);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
