//! The pipeline: every bed's source events in, window reports out, one task per stage.
//!
//! ```text
//! source (per bed) ──SourceEvent──▶ bed task (per bed) ──PendingWindow──▶ InferenceQueue
//!   serial/BLE/replay/     bounded     BedPipeline: windows,                 │ bounded, drops oldest
//!   simulator                          preprocessing, quality                ▼
//!                                         │ no-report / no-model     inference worker (1 thread,
//!                                         ▼                          Engine::generate, batches
//!                                      publisher task ◀──Finished──  across beds)
//!                                      (per-bed order) ──▶ Sink (stdout, MQTT)
//! ```
//!
//! - [`bed`]: the per-bed dsp stage (plain synchronous state, tested without a runtime).
//! - [`inference`]: the shared queue and worker thread, and the backpressure policy.
//! - [`publisher`]: the sink stage, which keeps each bed's reports in window order.
//! - [`model`]: finding and opening the bundle, and what beds are told when it cannot be used.
//!
//! [`run`] wires them on the current tokio runtime and stops them in order: on a stop signal
//! the sources stop, windows already made are finished (or, past the stop deadline, published
//! as not reported), and the sink is closed, all within `[pipeline] stop_seconds`.

pub mod bed;
pub mod inference;
pub mod model;
pub mod publisher;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::acquire::{SourceEvent, source};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::publish::{PublishError, Sink};
pub use bed::{BedOutput, BedPipeline, Finished, PendingWindow, WindowJob};
pub use inference::{BatchSettings, InferenceQueue, QueueStats};
pub use model::LoadedModel;
pub use publisher::PublishStats;

/// Why the pipeline could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A source could not start.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// The sink failed.
    #[error("publishing: {0}")]
    Publish(#[from] PublishError),
    /// A stage's thread could not start.
    #[error("starting the inference worker: {0}")]
    Worker(std::io::Error),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What to do when inference falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenBehind {
    /// Drop the oldest pending windows (published as not reported, counted): latency and
    /// memory stay bounded. For live sources.
    #[default]
    DropOldest,
    /// Make the beds wait: nothing is dropped, latency grows. For replays and batch runs.
    Wait,
}

/// The `[pipeline]` table: batching, backpressure and stopping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most windows generated together, across beds (1-256).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the oldest ready window waits for others to fill a batch, ms (0-10000).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Most windows waiting for inference (memory bound; 1-65536).
    #[serde(default = "default_queue_windows")]
    pub queue_windows: usize,
    /// Longest a window waits for inference before it is dropped as stale, s (default: the
    /// window hop, by when the same bed's next window is ready).
    #[serde(default)]
    pub max_queue_seconds: Option<f64>,
    /// What to do when inference falls behind: `drop-oldest` (live) or `wait` (replays).
    #[serde(default)]
    pub when_behind: WhenBehind,
    /// Seconds from a stop signal (SIGTERM, SIGINT) to exit: sources stop, windows already
    /// made are finished, the sink is flushed (0.5-60).
    #[serde(default = "default_stop_seconds")]
    pub stop_seconds: f64,
    /// Test hook: extra milliseconds the worker waits before each batch, to simulate slow
    /// inference (0-60000; 0, the default, in production).
    #[serde(default)]
    pub inference_delay_ms: u64,
}

fn default_max_batch() -> usize {
    8
}
fn default_max_wait_ms() -> u64 {
    50
}
fn default_queue_windows() -> usize {
    256
}
fn default_stop_seconds() -> f64 {
    4.0
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch: default_max_batch(),
            max_wait_ms: default_max_wait_ms(),
            queue_windows: default_queue_windows(),
            max_queue_seconds: None,
            when_behind: WhenBehind::default(),
            stop_seconds: default_stop_seconds(),
            inference_delay_ms: 0,
        }
    }
}

impl PipelineConfig {
    /// The first unusable field, as (`field`, what is allowed).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=256).contains(&self.max_batch) {
            return Err((
                "max_batch",
                format!("is {}; allowed: 1 to 256", self.max_batch),
            ));
        }
        if self.max_wait_ms > 10_000 {
            return Err((
                "max_wait_ms",
                format!("is {}; allowed: 0 to 10000 ms", self.max_wait_ms),
            ));
        }
        if !(1..=65_536).contains(&self.queue_windows) {
            return Err((
                "queue_windows",
                format!("is {}; allowed: 1 to 65536", self.queue_windows),
            ));
        }
        if let Some(s) = self.max_queue_seconds
            && !(s > 0.0 && s <= 3600.0)
        {
            return Err((
                "max_queue_seconds",
                format!("is {s}; allowed: above 0 and at most 3600 s"),
            ));
        }
        if self.inference_delay_ms > 60_000 {
            return Err((
                "inference_delay_ms",
                format!("is {}; allowed: 0 to 60000 ms", self.inference_delay_ms),
            ));
        }
        if !(0.5..=60.0).contains(&self.stop_seconds) {
            return Err((
                "stop_seconds",
                format!("is {}; allowed: 0.5 to 60 s", self.stop_seconds),
            ));
        }
        Ok(())
    }

    /// The worker's settings for windows hopping every `hop_seconds`.
    pub fn batch_settings(&self, hop_seconds: f64) -> BatchSettings {
        let age = match self.when_behind {
            WhenBehind::Wait => Duration::MAX,
            // A hop that is not a usable number (a damaged manifest) must not panic here.
            WhenBehind::DropOldest => Duration::try_from_secs_f64(
                self.max_queue_seconds
                    .unwrap_or(hop_seconds)
                    .clamp(0.001, 3600.0),
            )
            .unwrap_or(Duration::from_secs(10)),
        };
        BatchSettings {
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            capacity: self.queue_windows,
            max_queue_age: age,
            delay: Duration::from_millis(self.inference_delay_ms),
        }
    }
}

/// How a run ended and what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunSummary {
    /// The publishing stage's counters.
    pub published: PublishStats,
    /// The inference queue's counters.
    pub queue: QueueStats,
    /// Seconds from the stop (signal, `max_windows`, or the last source ending) to the sink
    /// being closed.
    pub stop_seconds: f64,
    /// True when the stop deadline passed and work was abandoned.
    pub deadline_missed: bool,
}

/// Runs every `[[source]]` of `config` through `model` into `sink` on the current tokio
/// runtime (multi-threaded) until `shutdown` completes, `max_windows` reports have been
/// published, or every source has ended (replays); then stops in order (module docs).
pub async fn run<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    shutdown: impl Future<Output = ()>,
    max_windows: Option<u64>,
) -> Result<RunSummary, PipelineError> {
    run_with_sources(config, model, sink, shutdown, max_windows, source::start).await
}

/// [`run`] with the sources started by `start` instead of [`source::start`] (an in-process
/// source, a recording already in memory); `start` gets each `[[source]]` table in turn.
pub async fn run_with_sources<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    shutdown: impl Future<Output = ()>,
    max_windows: Option<u64>,
    mut start: impl FnMut(
        &crate::config::SourceConfig,
        mpsc::Sender<SourceEvent>,
    ) -> Result<source::SourceHandle, source::SourceError>,
) -> Result<RunSummary, PipelineError> {
    let LoadedModel { engine, spec, .. } = model;
    let settings = config.pipeline.batch_settings(spec.hop_seconds);
    let queue = InferenceQueue::new(settings);
    let (finished_tx, finished_rx) = mpsc::channel::<Finished>(1024);
    let unavailable = engine.as_ref().err().cloned();
    let metrics = Arc::new(Metrics::default());
    metrics.watch_queue(queue.clone());
    metrics.set_model_ready(
        engine
            .as_ref()
            .ok()
            .map(crate::infer::engine::Engine::primary_provider),
    );
    let _metrics_server = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| PipelineError::Metrics { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(address = %format!("http://{bound}/metrics"), "metrics served");
            Some(AbortOnDrop(tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&metrics),
            ))))
        }
        None => None,
    };
    // The worker after the metrics endpoint: a port that cannot be bound stops the start
    // before any thread runs.
    let worker = match engine {
        Ok(engine) => Some(
            inference::spawn_worker(engine, queue.clone(), finished_tx.clone())
                .map_err(PipelineError::Worker)?,
        ),
        Err(_) => None,
    };
    let publisher = tokio::spawn(publisher::publish_stage(
        sink,
        finished_rx,
        max_windows,
        Arc::clone(&metrics),
    ));

    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut handles = Vec::new();
    let mut beds: Vec<JoinHandle<()>> = Vec::new();
    let mut failed = Vec::new();
    for source_config in &config.sources {
        let (events_tx, events) = mpsc::channel(1024);
        // One bed that cannot start (a BLE bed in a build without BLE, a replay file that
        // went missing) must not take the other beds of a gateway down with it.
        match start(source_config, events_tx) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                tracing::error!(bed = source_config.bed(), error = %e, "source cannot start; the other beds run on");
                failed.push(e);
                continue;
            }
        }
        let bed = BedPipeline::new(source_config.bed(), spec.clone(), unavailable.clone());
        beds.push(tokio::spawn(bed_task(
            bed,
            events,
            queue.clone(),
            config.pipeline.when_behind,
            finished_tx.clone(),
            alive_tx.clone(),
            Arc::clone(&metrics),
        )));
        tracing::info!(bed = source_config.bed(), "source started");
    }
    drop((alive_tx, finished_tx));
    if handles.is_empty()
        && let Some(first) = failed.into_iter().next()
    {
        queue.close();
        return Err(PipelineError::Source(first));
    }

    let mut publisher = publisher;
    let mut published_early = None;
    let bounded = tokio::select! {
        () = shutdown => {
            tracing::info!("stop requested; stopping sources and finishing windows in flight");
            true
        }
        result = &mut publisher => {
            published_early = Some(result);
            true
        }
        _ = alive_rx.recv() => {
            tracing::info!("every source has ended; finishing the windows in flight");
            false
        }
    };
    let stop_started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(config.pipeline.stop_seconds.clamp(0.5, 60.0));
    let mut missed = false;

    // 1. Sources stop (their threads are joined off the async threads); bed tasks drain.
    let _ = tokio::task::spawn_blocking(move || drop(handles)).await;
    for bed in beds {
        let abort = bed.abort_handle();
        if tokio::time::timeout_at(deadline, bed).await.is_err() {
            abort.abort();
            missed = true;
        }
    }
    // 2. The worker finishes what was queued; past the deadline (less a margin for the sink)
    //    the rest is published as not reported.
    queue.close();
    if let Some(worker) = worker {
        let margin = Duration::from_millis(300);
        let worker_deadline = if bounded {
            deadline.checked_sub(margin).unwrap_or(deadline)
        } else {
            tokio::time::Instant::now() + Duration::from_secs(24 * 3600)
        };
        let join = tokio::task::spawn_blocking(move || worker.join());
        tokio::pin!(join);
        if tokio::time::timeout_at(worker_deadline, &mut join)
            .await
            .is_err()
        {
            tracing::warn!(
                "stop deadline: windows still waiting for inference are published as not reported"
            );
            queue.abandon();
            missed = true;
            let _ = tokio::time::timeout_at(deadline, &mut join).await;
        }
    }
    // 3. The publisher drains and closes the sink.
    let published = match published_early {
        Some(result) => result,
        None => {
            let abort = publisher.abort_handle();
            let until = if bounded {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_secs(24 * 3600)
            };
            match tokio::time::timeout_at(until, publisher).await {
                Ok(result) => result,
                Err(_) => {
                    abort.abort();
                    missed = true;
                    tracing::error!("stop deadline: the sink did not finish in time");
                    Ok(Ok(PublishStats {
                        published: metrics.published_total(),
                        skipped: 0,
                    }))
                }
            }
        }
    };
    let published = match published {
        Ok(result) => result?,
        Err(join) => {
            tracing::error!(error = %join, "the publishing stage failed");
            PublishStats::default()
        }
    };
    let summary = RunSummary {
        published,
        queue: queue.stats(),
        stop_seconds: stop_started.elapsed().as_secs_f64(),
        deadline_missed: missed,
    };
    tracing::info!(
        published = summary.published.published,
        dropped = summary.queue.dropped(),
        batches = summary.queue.batches,
        stop_s = format!("{:.2}", summary.stop_seconds),
        "stopped"
    );
    Ok(summary)
}

/// Aborts a task when dropped (the metrics server ends with the run).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One bed's dsp stage: events in; finished windows to the publisher, reportable ones to the
/// inference queue.
async fn bed_task(
    mut bed: BedPipeline,
    mut events: mpsc::Receiver<SourceEvent>,
    queue: InferenceQueue,
    when_behind: WhenBehind,
    out: mpsc::Sender<Finished>,
    _alive: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = events.recv().await {
        match &event {
            SourceEvent::Block(block) => metrics.frames(bed.bed(), block.frames()),
            SourceEvent::Gap(_) => metrics.gap(bed.bed()),
            _ => {}
        }
        for job in bed.windows(&event) {
            // Preprocessing, quality and beats take milliseconds: off the async threads.
            let Ok(output) = tokio::task::spawn_blocking(move || job.judge()).await else {
                tracing::error!(bed = %bed.bed(), "judging a window failed");
                continue;
            };
            match output {
                BedOutput::Done(finished) => {
                    if out.send(finished).await.is_err() {
                        return;
                    }
                }
                BedOutput::Pending(window) => {
                    if when_behind == WhenBehind::Wait {
                        while queue.is_full() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    queue.push(window);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_settings_are_checked_naming_the_field() {
        assert!(PipelineConfig::default().check().is_ok());
        let bad = PipelineConfig {
            max_batch: 0,
            ..PipelineConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "max_batch");
        let bad = PipelineConfig {
            stop_seconds: 120.0,
            ..PipelineConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "stop_seconds");
    }

    #[test]
    fn stale_windows_wait_one_hop_by_default_and_forever_when_waiting() {
        let live = PipelineConfig::default().batch_settings(10.0);
        assert_eq!(live.max_queue_age, Duration::from_secs(10));
        let replay = PipelineConfig {
            when_behind: WhenBehind::Wait,
            ..PipelineConfig::default()
        }
        .batch_settings(10.0);
        assert_eq!(replay.max_queue_age, Duration::MAX);
        let odd = PipelineConfig::default().batch_settings(f64::NAN);
        assert_eq!(odd.max_queue_age, Duration::from_secs(10));
    }
}
