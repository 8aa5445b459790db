//! The pipeline: every bed's source events in, window reports out, one task per stage.
//!
//! ```text
//! source (per bed) ──SourceEvent──▶ bed task (per bed) ──WindowJob──▶ DspQueue ──▶ dsp threads
//!   serial/BLE/replay/     bounded     BedPipeline: windows    bounded, drops   (dsp_threads:
//!   simulator                          (cheap, async)          oldest & stale   preprocessing,
//!                                                                               quality, beats)
//!                                     ┌── no-report / no-model ──────────────────────┤
//!                                     ▼                                               ▼
//!                                  publisher task ◀──Finished── inference worker ◀── InferenceQueue
//!                                  (per-bed order)              (1 thread, batches  bounded, drops
//!                                     ──▶ Sink (stdout, MQTT)    across beds)       oldest & stale
//! ```
//!
//! Backpressure, whichever stage falls behind: both queues drop the oldest windows, counted
//! and published as not reported with the reason, once a window is older than
//! `[pipeline] max_window_age_seconds` **from its end** (its last block arriving) or its
//! queue is full; nothing else between a source and the publisher grows with the load.
//!
//! - [`bed`]: the per-bed windowing and the judging of one window (plain synchronous state,
//!   tested without a runtime).
//! - [`dsp`]: the shared judging queue and its fixed pool of threads.
//! - [`inference`]: the shared queue and worker thread, and the backpressure policy.
//! - [`publisher`]: the sink stage, which keeps each bed's reports in window order.
//! - [`model`]: finding and opening the bundle, and what beds are told when it cannot be used.
//! - [`reload`]: what a configuration reload (SIGHUP) applies live and what needs a restart.
//!
//! [`run`] wires them on the current tokio runtime and stops them in order: on a stop signal
//! the sources stop, windows already made are finished (or, past the stop deadline, published
//! as not reported; those a slow sink cannot take in time are counted as lost at stop), and the
//! sink is closed, all within `[pipeline] stop_seconds`. While it
//! runs, a reloaded configuration adds, removes and restarts beds and replaces the
//! `[pipeline]` settings of the queue and the worker.

pub mod bed;
pub mod dsp;
pub mod inference;
pub mod model;
pub mod publisher;
pub mod reload;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::acquire::{SourceEvent, source};
use crate::config::{Config, SourceConfig};
use crate::metrics::{self, Metrics};
use crate::publish::{PublishError, Sink};
pub use bed::{BedOutput, BedPipeline, Finished, PendingWindow, WindowJob};
pub use dsp::{DspQueue, DspStats};
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
    /// A signal-processing thread could not start.
    #[error("starting the signal-processing threads: {0}")]
    DspThreads(std::io::Error),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What to do when signal processing or inference falls behind.
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
///
/// Backpressure (`when_behind = "drop-oldest"`, the default): a window's age counts from its
/// end, the instant its last block arrived. Whichever stage it waits for (the signal
/// processing of `dsp_threads`, then inference), a window older than `max_window_age_seconds`
/// is dropped instead of processed, and a full queue (`dsp_queue_windows`, `queue_windows`)
/// drops its oldest to take a new one. A dropped window is published as not reported, with the stage
/// that fell behind as the reason, and counted (`meit_dsp_dropped_total`,
/// `meit_inference_dropped_total`). Report latency stays near `max_window_age_seconds` plus
/// one window's processing, and memory is bounded by the queues, however many beds there are.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most windows generated together, across beds (1-256).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the oldest ready window waits for others to fill a batch, ms (0-10000).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Most windows waiting for inference (memory bound; 1-65536): a full queue drops its
    /// oldest window.
    #[serde(default = "default_queue_windows")]
    pub queue_windows: usize,
    /// Most windows waiting for signal processing (memory bound: a window holds its raw and
    /// filtered samples; 1-65536): a full queue drops its oldest window.
    #[serde(default = "default_queue_windows")]
    pub dsp_queue_windows: usize,
    /// Oldest a window may be, counted from its end (its last block arriving), and still be
    /// judged or generated, s; older, it is dropped as stale at whichever stage it waits
    /// (default: the window hop, by when the same bed's next window is ready). Also read
    /// under its former name `max_queue_seconds`.
    #[serde(default, alias = "max_queue_seconds")]
    pub max_window_age_seconds: Option<f64>,
    /// Threads that preprocess and judge windows, shared by every bed (1-256; default: one
    /// per core). Read at the start (a reload does not change it).
    #[serde(default)]
    pub dsp_threads: Option<usize>,
    /// What to do when signal processing or inference falls behind: `drop-oldest` (live) or
    /// `wait` (replays: nothing is dropped, the beds wait).
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
    /// Test hook: stretches each batch's inference to this many times its real duration
    /// (1-100; 1, the default, in production). Applied live on SIGHUP, so a test can slow a
    /// running daemon down and let it recover.
    #[serde(default = "default_slowdown")]
    pub inference_slowdown: f64,
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
fn default_slowdown() -> f64 {
    1.0
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch: default_max_batch(),
            max_wait_ms: default_max_wait_ms(),
            queue_windows: default_queue_windows(),
            dsp_queue_windows: default_queue_windows(),
            max_window_age_seconds: None,
            dsp_threads: None,
            when_behind: WhenBehind::default(),
            stop_seconds: default_stop_seconds(),
            inference_delay_ms: 0,
            inference_slowdown: default_slowdown(),
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
        if !(1..=65_536).contains(&self.dsp_queue_windows) {
            return Err((
                "dsp_queue_windows",
                format!("is {}; allowed: 1 to 65536", self.dsp_queue_windows),
            ));
        }
        if let Some(s) = self.max_window_age_seconds
            && !(s > 0.0 && s <= 3600.0)
        {
            return Err((
                "max_window_age_seconds",
                format!("is {s}; allowed: above 0 and at most 3600 s"),
            ));
        }
        if let Some(n) = self.dsp_threads
            && !(1..=256).contains(&n)
        {
            return Err(("dsp_threads", format!("is {n}; allowed: 1 to 256")));
        }
        if self.inference_delay_ms > 60_000 {
            return Err((
                "inference_delay_ms",
                format!("is {}; allowed: 0 to 60000 ms", self.inference_delay_ms),
            ));
        }
        if !(1.0..=100.0).contains(&self.inference_slowdown) {
            return Err((
                "inference_slowdown",
                format!("is {}; allowed: 1 to 100", self.inference_slowdown),
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

    /// The signal-processing threads to start.
    pub fn dsp_threads(&self) -> usize {
        self.dsp_threads.unwrap_or_else(dsp::default_threads)
    }

    /// The signal-processing queue's settings for windows hopping every `hop_seconds` (those
    /// of [`PipelineConfig::batch_settings`] with its own capacity).
    pub fn dsp_settings(&self, hop_seconds: f64) -> BatchSettings {
        BatchSettings {
            capacity: self.dsp_queue_windows,
            ..self.batch_settings(hop_seconds)
        }
    }

    /// The inference queue's settings for windows hopping every `hop_seconds`.
    pub fn batch_settings(&self, hop_seconds: f64) -> BatchSettings {
        let age = match self.when_behind {
            WhenBehind::Wait => Duration::MAX,
            // A hop that is not a usable number (a damaged manifest) must not panic here.
            WhenBehind::DropOldest => Duration::try_from_secs_f64(
                self.max_window_age_seconds
                    .unwrap_or(hop_seconds)
                    .clamp(0.001, 3600.0),
            )
            .unwrap_or(Duration::from_secs(10)),
        };
        BatchSettings {
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            capacity: self.queue_windows,
            max_window_age: age,
            delay: Duration::from_millis(self.inference_delay_ms),
            slowdown: self.inference_slowdown,
            wait_when_full: self.when_behind == WhenBehind::Wait,
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
    /// The signal-processing stage's counters.
    pub dsp: DspStats,
    /// Seconds from the stop (signal, `max_windows`, or the last source ending) to the sink
    /// being closed.
    pub stop_seconds: f64,
    /// True when the stop deadline passed and work was abandoned.
    pub deadline_missed: bool,
}

/// Runs every `[[source]]` of `config` through `model` into `sink` on the current tokio
/// runtime (multi-threaded) until `shutdown` completes, `max_windows` reports have been
/// published, or every source has ended (replays); then stops in order (module docs).
/// Configurations received on `reloads` (already validated: SIGHUP in `meit run`) apply live:
/// their `[pipeline]` settings and their beds (added, removed, or restarted when changed);
/// the other tables need a restart and are not read ([`reload`]).
pub async fn run<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    shutdown: impl Future<Output = ()>,
    max_windows: Option<u64>,
    reloads: Option<mpsc::Receiver<Config>>,
) -> Result<RunSummary, PipelineError> {
    run_pipeline(
        config,
        model,
        sink,
        shutdown,
        max_windows,
        source::start,
        reloads,
    )
    .await
}

/// [`run`] with the sources started by `start` instead of [`source::start`] (an in-process
/// source, a recording already in memory); `start` gets each `[[source]]` table in turn.
pub async fn run_with_sources<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    shutdown: impl Future<Output = ()>,
    max_windows: Option<u64>,
    start: impl FnMut(
        &crate::config::SourceConfig,
        mpsc::Sender<SourceEvent>,
    ) -> Result<source::SourceHandle, source::SourceError>,
) -> Result<RunSummary, PipelineError> {
    run_pipeline(config, model, sink, shutdown, max_windows, start, None).await
}

/// A bed whose source and dsp task run.
struct RunningBed {
    id: u64,
    config: SourceConfig,
    handle: source::SourceHandle,
    /// Ends with the bed's next window index once its source has stopped and it has drained.
    task: JoinHandle<u64>,
    /// The index after the last window the task handed on (to the dsp queue or the
    /// publisher): where the numbering goes on if the task has to be aborted.
    handed_on: Arc<AtomicU64>,
}

impl RunningBed {
    /// Waits for the bed's task until `deadline` and returns where its numbering goes on: the
    /// task's own answer, or, when it has to be aborted (stuck waiting for a full queue), the
    /// index after the last window it handed on. Without that a restarted bed would count
    /// from 0 again and the publisher would hold its windows back as out of order.
    async fn finish(
        task: JoinHandle<u64>,
        handed_on: &AtomicU64,
        deadline: tokio::time::Instant,
    ) -> (u64, bool) {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(next)) => (next, true),
            _ => {
                abort.abort();
                (handed_on.load(Ordering::Acquire), false)
            }
        }
    }
}

/// The beds of a run and what starting one needs.
struct Beds {
    running: Vec<RunningBed>,
    next_id: u64,
    /// Where a bed that stopped left its window numbering: a bed restarted by a reload goes
    /// on from there, so its reports keep one order per bed.
    next_index: std::collections::HashMap<String, u64>,
    dsp: DspQueue,
    ended: mpsc::UnboundedSender<u64>,
    metrics: Arc<Metrics>,
    spec: crate::dsp::PreprocessSpec,
    encoder_window_seconds: Option<f64>,
    unavailable: Option<String>,
}

impl Beds {
    /// The preprocessing of `source`'s bed (the model's with the bed's window and hop).
    fn spec_of(
        &self,
        source: &SourceConfig,
    ) -> Result<crate::dsp::PreprocessSpec, (&'static str, String)> {
        source
            .window()
            .apply(&self.spec, self.encoder_window_seconds)
    }

    /// The shortest hop of `sources` (the model's without any): how long a window may wait
    /// for inference before it is stale, by default.
    fn shortest_hop(&self, sources: &[SourceConfig]) -> f64 {
        sources
            .iter()
            .filter_map(|s| self.spec_of(s).ok())
            .map(|s| s.hop_seconds)
            .reduce(f64::min)
            .unwrap_or(self.spec.hop_seconds)
    }

    /// Starts `source` and its dsp task; an error leaves the other beds running.
    fn start(
        &mut self,
        source: &SourceConfig,
        start: &mut impl FnMut(
            &SourceConfig,
            mpsc::Sender<SourceEvent>,
        ) -> Result<source::SourceHandle, source::SourceError>,
    ) -> Result<(), source::SourceError> {
        let bed = source.bed().to_string();
        let spec =
            self.spec_of(source)
                .map_err(|(field, reason)| source::SourceError::Invalid {
                    bed: bed.clone(),
                    reason: format!("`{field}` {reason}"),
                })?;
        let (events_tx, events) = mpsc::channel(1024);
        let handle = start(source, events_tx)?;
        let first_index = self.next_index.remove(&bed).unwrap_or(0);
        let pipeline =
            BedPipeline::new(bed.clone(), spec, self.unavailable.clone()).starting_at(first_index);
        let id = self.next_id;
        self.next_id += 1;
        let handed_on = Arc::new(AtomicU64::new(first_index));
        let task = tokio::spawn(bed_task(
            pipeline,
            events,
            BedOutlets {
                dsp: self.dsp.clone(),
                handed_on: Arc::clone(&handed_on),
            },
            EndedGuard(id, self.ended.clone()),
            Arc::clone(&self.metrics),
        ));
        self.running.push(RunningBed {
            id,
            config: source.clone(),
            handle,
            task,
            handed_on,
        });
        tracing::info!(bed = %bed, "source started");
        Ok(())
    }

    /// Stops the beds `names` together: their sources stop at once, their windows already
    /// made go on, and their numbering is kept for a restart. Gives up on a bed (aborts) at
    /// `deadline`, one deadline for all (a stuck bed does not delay the next one's stop, nor
    /// the daemon's answer to a stop signal, by a deadline of its own).
    async fn stop(&mut self, names: &[String], deadline: tokio::time::Instant) {
        let (stopping, running): (Vec<RunningBed>, Vec<RunningBed>) =
            std::mem::take(&mut self.running)
                .into_iter()
                .partition(|b| names.iter().any(|n| n == b.config.bed()));
        self.running = running;
        let (handles, beds): (Vec<_>, Vec<_>) = stopping
            .into_iter()
            .map(|b| (b.handle, (b.config, b.task, b.handed_on)))
            .unzip();
        let _ = tokio::task::spawn_blocking(move || drop(handles)).await;
        for (config, task, handed_on) in beds {
            let name = config.bed();
            let (next, drained) = RunningBed::finish(task, &handed_on, deadline).await;
            if !drained {
                tracing::warn!(bed = %name, next_window = next, "the bed did not drain in time; stopped");
            }
            self.next_index.insert(name.to_string(), next);
        }
    }

    /// Applies a reloaded configuration's beds: removed and changed beds stop, new and
    /// changed beds start.
    async fn reload(
        &mut self,
        sources: &[SourceConfig],
        stop_within: Duration,
        start: &mut impl FnMut(
            &SourceConfig,
            mpsc::Sender<SourceEvent>,
        ) -> Result<source::SourceHandle, source::SourceError>,
    ) {
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|b| !sources.contains(&b.config))
            .map(|b| b.config.bed().to_string())
            .collect();
        self.stop(&stale, tokio::time::Instant::now() + stop_within)
            .await;
        for name in &stale {
            if !sources.iter().any(|s| s.bed() == name) {
                tracing::info!(bed = %name, "bed removed by the reloaded configuration");
            }
        }
        for source in sources {
            if self.running.iter().any(|b| b.config == *source) {
                continue;
            }
            let changed = stale.iter().any(|n| n == source.bed());
            match self.start(source, start) {
                Ok(()) if changed => {
                    tracing::info!(bed = source.bed(), "bed restarted with its new settings");
                }
                Ok(()) => tracing::info!(
                    bed = source.bed(),
                    "bed added by the reloaded configuration"
                ),
                Err(e) => {
                    tracing::error!(bed = source.bed(), error = %e, "source cannot start; the other beds run on");
                }
            }
        }
    }
}

/// Tells the run loop that a bed's task ended (also when it is aborted).
struct EndedGuard(u64, mpsc::UnboundedSender<u64>);

impl Drop for EndedGuard {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

/// The next configuration from `reloads`, or never.
async fn next_reload(reloads: &mut Option<mpsc::Receiver<Config>>) -> Option<Config> {
    match reloads {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn run_pipeline<S: Sink + 'static>(
    config: &Config,
    model: LoadedModel,
    sink: S,
    shutdown: impl Future<Output = ()>,
    max_windows: Option<u64>,
    mut start: impl FnMut(
        &SourceConfig,
        mpsc::Sender<SourceEvent>,
    ) -> Result<source::SourceHandle, source::SourceError>,
    mut reloads: Option<mpsc::Receiver<Config>>,
) -> Result<RunSummary, PipelineError> {
    let LoadedModel {
        engine,
        spec,
        encoder_window_seconds,
        ..
    } = model;
    let queue = InferenceQueue::new(BatchSettings::default());
    let dsp_queue = DspQueue::new(BatchSettings::default());
    let (finished_tx, finished_rx) = mpsc::channel::<Finished>(1024);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<u64>();
    let unavailable = engine.as_ref().err().cloned();
    let metrics = Arc::new(Metrics::default());
    let mut beds = Beds {
        running: Vec::new(),
        next_id: 0,
        next_index: Default::default(),
        dsp: dsp_queue.clone(),
        ended: ended_tx,
        metrics: Arc::clone(&metrics),
        spec,
        encoder_window_seconds,
        unavailable: unavailable.clone(),
    };
    let mut settings = config.pipeline.clone();
    let hop = beds.shortest_hop(&config.sources);
    queue.set_settings(settings.batch_settings(hop));
    dsp_queue.set_settings(settings.dsp_settings(hop));
    metrics.watch_queue(queue.clone());
    metrics.watch_dsp(dsp_queue.clone());
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
    let dsp_threads = dsp::spawn_threads(settings.dsp_threads(), &dsp_queue, &queue, &finished_tx)
        .map_err(|e| {
            queue.close();
            dsp_queue.close();
            PipelineError::DspThreads(e)
        })?;
    drop(finished_tx);
    // Window end -> PUBACK, when the sink tells acknowledgements (MQTT).
    let _acknowledgements = sink.acknowledgements().map(|mut delivered| {
        let metrics = Arc::clone(&metrics);
        AbortOnDrop(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match delivered.recv().await {
                    Ok(d) => metrics.acknowledged(&d),
                    Err(RecvError::Lagged(missed)) => metrics.acknowledgements_missed(missed),
                    Err(RecvError::Closed) => break,
                }
            }
        }))
    });
    let (give_up_publishing, give_up) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(publisher::publish_stage(
        sink,
        finished_rx,
        max_windows,
        Arc::clone(&metrics),
        give_up,
    ));

    let mut failed = Vec::new();
    for source_config in &config.sources {
        // One bed that cannot start (a BLE bed in a build without BLE, a replay file that
        // went missing) must not take the other beds of a gateway down with it.
        if let Err(e) = beds.start(source_config, &mut start) {
            tracing::error!(bed = source_config.bed(), error = %e, "source cannot start; the other beds run on");
            failed.push(e);
        }
    }
    if beds.running.is_empty()
        && let Some(first) = failed.into_iter().next()
    {
        dsp_queue.close();
        queue.close();
        return Err(PipelineError::Source(first));
    }

    let mut publisher = publisher;
    let mut published_early = None;
    tokio::pin!(shutdown);
    let bounded = loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("stop requested; stopping sources and finishing windows in flight");
                break true;
            }
            result = &mut publisher => {
                published_early = Some(result);
                break true;
            }
            Some(id) = ended_rx.recv() => {
                // A bed whose source ended by itself (a replay); a bed stopped by a reload
                // is no longer listed.
                if let Some(at) = beds.running.iter().position(|b| b.id == id) {
                    let bed = beds.running.remove(at);
                    let name = bed.config.bed().to_string();
                    let _ = tokio::task::spawn_blocking(move || drop(bed.handle)).await;
                    // Its task has ended (the guard fires as it returns): keep where its
                    // numbering stopped, so a reload that starts the bed again goes on from
                    // there instead of from 0 (which the publisher would hold back as stale).
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                    let (next, _) = RunningBed::finish(bed.task, &bed.handed_on, deadline).await;
                    beds.next_index.insert(name, next);
                    if beds.running.is_empty() {
                        tracing::info!("every source has ended; finishing the windows in flight");
                        break false;
                    }
                }
            }
            Some(new) = next_reload(&mut reloads) => {
                settings = new.pipeline.clone();
                let hop = beds.shortest_hop(&new.sources);
                queue.set_settings(settings.batch_settings(hop));
                dsp_queue.set_settings(settings.dsp_settings(hop));
                let within = Duration::from_secs_f64(settings.stop_seconds.clamp(0.5, 60.0));
                beds.reload(&new.sources, within, &mut start).await;
                tracing::info!(beds = beds.running.len(), "configuration reloaded");
            }
        }
    };
    let stop_started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(settings.stop_seconds.clamp(0.5, 60.0));
    let mut missed = false;

    // 1. Sources stop (their threads are joined off the async threads); bed tasks drain.
    let running = std::mem::take(&mut beds.running);
    let (handles, tasks): (Vec<_>, Vec<_>) =
        running.into_iter().map(|b| (b.handle, b.task)).unzip();
    let _ = tokio::task::spawn_blocking(move || drop(handles)).await;
    for bed in tasks {
        let abort = bed.abort_handle();
        if tokio::time::timeout_at(deadline, bed).await.is_err() {
            abort.abort();
            missed = true;
        }
    }
    drop(beds);
    let margin = Duration::from_millis(300);
    let stage_deadline = if bounded {
        deadline.checked_sub(margin).unwrap_or(deadline)
    } else {
        tokio::time::Instant::now() + Duration::from_secs(24 * 3600)
    };
    // 2. The dsp threads judge what was cut; past the deadline (less a margin for the sink)
    //    the rest is published as not reported.
    dsp_queue.close();
    let join = tokio::task::spawn_blocking(move || {
        for thread in dsp_threads {
            let _ = thread.join();
        }
    });
    tokio::pin!(join);
    if tokio::time::timeout_at(stage_deadline, &mut join)
        .await
        .is_err()
    {
        tracing::warn!(
            "stop deadline: windows still waiting for signal processing are published as not reported"
        );
        dsp_queue.abandon();
        missed = true;
        let _ = tokio::time::timeout_at(deadline, &mut join).await;
    }
    // 3. The worker finishes what was queued; past the deadline (less a margin for the sink)
    //    the rest is published as not reported.
    queue.close();
    if let Some(worker) = worker {
        let worker_deadline = stage_deadline;
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
    // 4. The publisher drains and closes the sink.
    let published = match published_early {
        Some(result) => result,
        None => {
            let mut publisher = publisher;
            let abort = publisher.abort_handle();
            let until = if bounded {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_secs(24 * 3600)
            };
            // Shortly before the deadline the stage stops taking windows and counts those
            // still waiting; only a sink stuck past the deadline itself is aborted.
            let give_up_at = until
                .checked_sub(Duration::from_millis(100))
                .unwrap_or(until);
            let mut result = tokio::time::timeout_at(give_up_at, &mut publisher).await;
            if result.is_err() {
                missed = true;
                let _ = give_up_publishing.send(true);
                result = tokio::time::timeout_at(until, &mut publisher).await;
            }
            match result {
                Ok(result) => result,
                Err(_) => {
                    abort.abort();
                    missed = true;
                    tracing::error!("stop deadline: the sink did not finish in time");
                    Ok(Ok(PublishStats {
                        published: metrics.published_total(),
                        ..PublishStats::default()
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
        dsp: dsp_queue.stats(),
        stop_seconds: stop_started.elapsed().as_secs_f64(),
        deadline_missed: missed,
    };
    tracing::info!(
        published = summary.published.published,
        refused = summary.published.refused,
        lost_at_stop = summary.published.lost_at_stop,
        dropped = summary.queue.dropped() + summary.dsp.dropped(),
        dropped_dsp = summary.dsp.dropped(),
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

/// Where a bed task hands its windows on.
struct BedOutlets {
    /// The shared signal-processing queue.
    dsp: DspQueue,
    /// Set to the index after each window handed on (see [`RunningBed::handed_on`]).
    handed_on: Arc<AtomicU64>,
}

/// One bed's windowing: events in, finished windows to the shared signal-processing queue
/// (which never makes it wait, unless `when_behind = "wait"`; the windows it drops to make
/// room its threads publish). Returns the bed's next window index when its source has ended.
async fn bed_task(
    mut bed: BedPipeline,
    mut events: mpsc::Receiver<SourceEvent>,
    outlets: BedOutlets,
    _ended: EndedGuard,
    metrics: Arc<Metrics>,
) -> u64 {
    let BedOutlets { dsp, handed_on } = outlets;
    while let Some(event) = events.recv().await {
        match &event {
            SourceEvent::Block(block) => metrics.frames(bed.bed(), block.frames()),
            SourceEvent::Gap(_) => metrics.gap(bed.bed()),
            _ => {}
        }
        for job in bed.windows(&event) {
            while dsp.settings().wait_when_full && dsp.is_full() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let next = job.index() + 1;
            // What the queue drops to make room (maybe another bed's) its threads publish.
            dsp.push(job);
            handed_on.store(next, Ordering::Release);
        }
    }
    bed.next_index()
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
        assert_eq!(live.max_window_age, Duration::from_secs(10));
        let replay = PipelineConfig {
            when_behind: WhenBehind::Wait,
            ..PipelineConfig::default()
        }
        .batch_settings(10.0);
        assert_eq!(replay.max_window_age, Duration::MAX);
        let odd = PipelineConfig::default().batch_settings(f64::NAN);
        assert_eq!(odd.max_window_age, Duration::from_secs(10));
    }

    /// Beds whose dsp queue holds one window and is never emptied (no dsp threads), waiting
    /// when it is full: the second window of a bed keeps its task waiting for good.
    fn beds_with_a_stuck_queue() -> Beds {
        let (ended, _) = mpsc::unbounded_channel();
        Beds {
            running: Vec::new(),
            next_id: 0,
            next_index: Default::default(),
            dsp: DspQueue::new(BatchSettings {
                capacity: 1,
                wait_when_full: true,
                ..BatchSettings::default()
            }),
            ended,
            metrics: Arc::new(Metrics::default()),
            spec: crate::dsp::PreprocessSpec::default(),
            encoder_window_seconds: None,
            unavailable: Some("no model in this test".into()),
        }
    }

    #[tokio::test]
    async fn a_bed_aborted_at_its_stop_deadline_keeps_its_numbering_for_a_restart() {
        let mut beds = beds_with_a_stuck_queue();
        let source = SourceConfig::Replay {
            bed: "bed-1".into(),
            file: "unused.hea".into(),
            realtime: false,
            sample_rate_hz: None,
            window_seconds: None,
            hop_seconds: None,
        };
        // 35 s of flat 12-lead ECG: three 10 s windows; the first fills the queue.
        let recording = crate::ecg::Recording {
            sample_rate_hz: 500.0,
            leads: crate::ecg::LeadSet::standard_12(),
            samples_uv: ndarray::Array2::zeros((12, 35 * 500)),
        };
        let mut recording = Some(recording);
        beds.start(&source, &mut |_, events| {
            let r = recording.take().expect("started once");
            Ok(source::start_recording(r, false, events))
        })
        .unwrap();
        // Wait until the first window is in the queue and the task waits with the second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !beds.dsp.is_full() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no window reached the queue"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        beds.stop(
            &["bed-1".to_string()],
            tokio::time::Instant::now() + Duration::from_millis(200),
        )
        .await;
        assert!(beds.running.is_empty());
        // Window 0 was handed on; window 1 never was: a restart goes on at 1, not at 0.
        assert_eq!(beds.next_index.get("bed-1"), Some(&1));
    }
}
