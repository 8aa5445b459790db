//! The inference stage: one queue of reportable windows from every bed, one worker thread
//! that owns the [`Engine`] and generates their reports in batches.
//!
//! ```text
//! dsp threads ──push──▶ InferenceQueue ──next_batch──▶ worker thread (Engine::generate)
//!                       (bounded, drop oldest)          ──Finished──▶ publisher
//! ```
//!
//! The worker is a dedicated OS thread: generation is seconds of CPU work that must never run
//! on the async runtime's threads. It takes the oldest window, waits up to
//! [`BatchSettings::max_wait`] for more (from any bed) to fill a batch of at most
//! [`BatchSettings::max_batch`], and runs them as one batch.
//!
//! Backpressure policy (report latency bounded, memory flat): when inference falls behind,
//! the **oldest** pending windows are dropped, never the newest, in two ways:
//! - a window older than [`BatchSettings::max_window_age`] **counted from the window's end**
//!   (its last block arriving, [`PendingWindow::completed_at`]; default one hop: by then the
//!   same bed's next window is on its way) is dropped when the worker next looks, however
//!   that age was spent (waiting for signal processing, in this queue);
//! - when [`BatchSettings::capacity`] windows are pending, adding one drops the oldest.
//!
//! The signal-processing stage before this queue applies the same policy with the same
//! settings ([`super::dsp`]), so whichever stage falls behind, a window is dropped once it is
//! older than `max_window_age`.
//!
//! A dropped window is not lost silently: it is published like any other, with its quality and
//! measurements and a no-report outcome saying it was skipped because inference fell behind,
//! and it is counted ([`QueueStats::dropped`]). Per bed, reports still leave in window order.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::bed::{Finished, PendingWindow};
use crate::infer::engine::{Engine, Generated};
use crate::report::{InferenceTimings, Outcome, WindowReport};

/// The least time a batch counts as under the slowdown test hook.
const SLOWDOWN_FLOOR: Duration = Duration::from_millis(25);

/// How the worker batches and when the queue drops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Most windows generated together.
    pub max_batch: usize,
    /// Longest the oldest pending window waits for others to fill a batch.
    pub max_wait: Duration,
    /// Most windows pending; adding one more drops the oldest.
    pub capacity: usize,
    /// Oldest a window may be, from its end (its last block arriving), before it is dropped
    /// as stale instead of judged or generated.
    pub max_window_age: Duration,
    /// Test hook: a pause before each batch, simulating slow inference (zero in production).
    pub delay: Duration,
    /// Test hook: each batch's generation time is stretched to this many times its real
    /// duration by a pause after it, simulating a slower machine (1 in production).
    pub slowdown: f64,
    /// Make the beds wait while the queue is full instead of dropping the oldest window
    /// (replays: nothing is dropped, latency grows).
    pub wait_when_full: bool,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_batch: 8,
            max_wait: Duration::from_millis(50),
            capacity: 256,
            max_window_age: Duration::from_secs(10),
            delay: Duration::ZERO,
            slowdown: 1.0,
            wait_when_full: false,
        }
    }
}

/// Counters of the queue and the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Windows pushed.
    pub queued: u64,
    /// Windows dropped because the queue was full.
    pub dropped_full: u64,
    /// Windows dropped because they waited too long.
    pub dropped_stale: u64,
    /// Windows dropped at shutdown because the stop deadline passed.
    pub dropped_shutdown: u64,
    /// Batches generated.
    pub batches: u64,
    /// Windows generated.
    pub generated: u64,
    /// Windows now pending.
    pub depth: u64,
    /// Most windows ever pending at once.
    pub max_depth: u64,
}

impl QueueStats {
    /// Every window dropped, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_stale + self.dropped_shutdown
    }
}

/// Why a window was dropped (by this stage or the signal-processing stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// The stage's queue was full: the oldest window made room.
    Full,
    /// The window was older than [`BatchSettings::max_window_age`] from its end.
    Stale,
    /// The stop deadline passed.
    Shutdown,
}

impl DropCause {
    fn reason(self) -> &'static str {
        match self {
            DropCause::Full => {
                "not reported: inference fell behind and the queue was full (oldest window dropped)"
            }
            DropCause::Stale => {
                "not reported: inference fell behind and the window went stale (dropped)"
            }
            DropCause::Shutdown => STOPPING,
        }
    }
}

/// The no-report reason of a window the daemon dropped because it was stopping.
pub(crate) const STOPPING: &str = "not reported: the daemon was stopping";

/// True when a window that closed at `completed_at` is older than `max_age` at `now`.
pub(crate) fn is_stale(completed_at: Instant, now: Instant, max_age: Duration) -> bool {
    now.saturating_duration_since(completed_at) > max_age
}

struct Queued {
    window: PendingWindow,
    queued_at: Instant,
}

struct State {
    settings: BatchSettings,
    pending: VecDeque<Queued>,
    dropped: Vec<(PendingWindow, DropCause)>,
    closed: bool,
    abandoned: bool,
    stats: QueueStats,
}

/// The queue between the bed tasks and the worker. Cloning gives another handle to it.
#[derive(Clone)]
pub struct InferenceQueue {
    shared: Arc<(Mutex<State>, Condvar)>,
}

/// What the worker takes next: windows dropped since last time (publish them first: they
/// are older than the batch), and the batch.
pub struct Batch {
    /// Dropped windows with their no-report reason.
    pub dropped: Vec<(PendingWindow, &'static str)>,
    /// Windows to generate, oldest first.
    pub windows: Vec<PendingWindow>,
    /// How long each window of `windows` waited, ms.
    pub waited_ms: Vec<f64>,
}

impl InferenceQueue {
    /// An empty queue.
    pub fn new(settings: BatchSettings) -> Self {
        InferenceQueue {
            shared: Arc::new((
                Mutex::new(State {
                    settings: sane(settings),
                    pending: VecDeque::new(),
                    dropped: Vec::new(),
                    closed: false,
                    abandoned: false,
                    stats: QueueStats::default(),
                }),
                Condvar::new(),
            )),
        }
    }

    /// Applies new settings to the running queue (a configuration reload): a smaller capacity
    /// drops the oldest windows beyond it at the next push.
    pub fn set_settings(&self, settings: BatchSettings) {
        self.lock().settings = sane(settings);
        self.shared.1.notify_all();
    }

    /// The settings in force.
    pub fn settings(&self) -> BatchSettings {
        self.lock().settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (plain pushes and pops).
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a window; when the queue is full the oldest pending one is dropped. Never blocks
    /// on inference.
    pub fn push(&self, window: PendingWindow) {
        let mut state = self.lock();
        if state.abandoned {
            // Past the stop deadline (a dsp thread finishing late): published as stopping.
            state.dropped.push((window, DropCause::Shutdown));
            state.stats.dropped_shutdown += 1;
            drop(state);
            self.shared.1.notify_all();
            return;
        }
        while state.pending.len() >= state.settings.capacity
            && let Some(oldest) = state.pending.pop_front()
        {
            state.dropped.push((oldest.window, DropCause::Full));
            state.stats.dropped_full += 1;
        }
        state.pending.push_back(Queued {
            window,
            queued_at: Instant::now(),
        });
        state.stats.queued += 1;
        state.stats.depth = state.pending.len() as u64;
        state.stats.max_depth = state.stats.max_depth.max(state.stats.depth);
        drop(state);
        self.shared.1.notify_all();
    }

    /// No more windows will come: the worker finishes what is pending and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.1.notify_all();
    }

    /// Drops everything pending (the stop deadline has passed): the worker publishes them as
    /// not reported and stops after its current batch.
    pub fn abandon(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.abandoned = true;
        let pending: Vec<Queued> = state.pending.drain(..).collect();
        state.stats.dropped_shutdown += pending.len() as u64;
        state
            .dropped
            .extend(pending.into_iter().map(|q| (q.window, DropCause::Shutdown)));
        state.stats.depth = 0;
        drop(state);
        self.shared.1.notify_all();
    }

    /// True when pending windows fill the queue (a push would drop the oldest).
    pub fn is_full(&self) -> bool {
        let state = self.lock();
        state.pending.len() >= state.settings.capacity
    }

    /// The counters so far.
    pub fn stats(&self) -> QueueStats {
        self.lock().stats
    }

    /// Blocks until there is work: the next batch (after waiting up to `max_wait` for it to
    /// fill) and the windows dropped meanwhile. `None` once closed and empty.
    pub fn next_batch(&self) -> Option<Batch> {
        let (_, ready) = &*self.shared;
        let mut state = self.lock();
        while state.pending.is_empty() && state.dropped.is_empty() {
            if state.closed {
                return None;
            }
            state = ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let s = state.settings;
        if let Some(first) = state.pending.front() {
            let deadline = first.queued_at + s.max_wait;
            while state.pending.len() < s.max_batch && !state.closed {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = ready
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let now = Instant::now();
        while state
            .pending
            .front()
            .is_some_and(|q| is_stale(q.window.completed_at, now, s.max_window_age))
        {
            if let Some(stale) = state.pending.pop_front() {
                state.dropped.push((stale.window, DropCause::Stale));
                state.stats.dropped_stale += 1;
            }
        }
        let take = state.pending.len().min(s.max_batch);
        let taken: Vec<Queued> = state.pending.drain(..take).collect();
        state.stats.depth = state.pending.len() as u64;
        let dropped = std::mem::take(&mut state.dropped)
            .into_iter()
            .map(|(w, cause)| (w, cause.reason()))
            .collect();
        Some(Batch {
            dropped,
            waited_ms: taken
                .iter()
                .map(|q| now.duration_since(q.queued_at).as_secs_f64() * 1e3)
                .collect(),
            windows: taken.into_iter().map(|q| q.window).collect(),
        })
    }

    /// The test hook's pause before a batch ([`BatchSettings::delay`]); cut short when the
    /// queue is abandoned, so that the stop deadline holds.
    fn test_delay(&self) {
        let delay = self.settings().delay;
        self.test_pause(delay);
    }

    /// The slowdown test hook's pause after a batch that took `took` ([`BatchSettings::slowdown`]).
    /// A batch counts as at least [`SLOWDOWN_FLOOR`], so that a slowdown overloads the queue
    /// however fast the machine runs the tiny model.
    fn test_slowdown(&self, took: Duration) {
        let factor = self.settings().slowdown;
        if factor > 1.0 {
            self.test_pause(took.max(SLOWDOWN_FLOOR).mul_f64((factor - 1.0).min(1000.0)));
        }
    }

    /// Waits `delay` unless the queue is abandoned meanwhile (the stop deadline holds).
    fn test_pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let until = Instant::now() + delay;
        let mut state = self.lock();
        while !state.abandoned {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state = self
                .shared
                .1
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn record_batch(&self, windows: usize) {
        let mut state = self.lock();
        state.stats.batches += 1;
        state.stats.generated += windows as u64;
    }
}

/// `settings` with at least one window per batch and room for one.
fn sane(settings: BatchSettings) -> BatchSettings {
    BatchSettings {
        max_batch: settings.max_batch.max(1),
        capacity: settings.capacity.max(1),
        slowdown: if settings.slowdown.is_finite() {
            settings.slowdown.max(1.0)
        } else {
            1.0
        },
        ..settings
    }
}

/// Starts the worker thread: it owns `engine`, takes batches from `queue` until the queue is
/// closed and empty (or the publisher is gone), and sends every window's report to `out`.
pub fn spawn_worker(
    mut engine: Engine,
    queue: InferenceQueue,
    out: mpsc::Sender<Finished>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("meit-inference".into())
        .spawn(move || {
            while let Some(batch) = queue.next_batch() {
                for (window, reason) in batch.dropped {
                    let mut report = window.report;
                    report.outcome = Outcome::NoReport {
                        reasons: vec![reason.to_string()],
                    };
                    let finished = Finished {
                        report,
                        completed_at: window.completed_at,
                    };
                    if out.blocking_send(finished).is_err() {
                        return;
                    }
                }
                if batch.windows.is_empty() {
                    continue;
                }
                queue.test_delay();
                let started = Instant::now();
                let finished = generate(&mut engine, batch.windows, &batch.waited_ms);
                queue.test_slowdown(started.elapsed());
                for finished in finished {
                    if out.blocking_send(finished).is_err() {
                        return;
                    }
                }
                queue.record_batch(batch.waited_ms.len());
            }
        })
}

/// Sets aside the windows whose samples are not the `leads x samples` the encoder reads (a
/// device rate that gives a window one model sample more, say): each is published as a
/// no-report naming both shapes, so that one such bed does not fail every bed's batch.
/// Returns the windows that fit, their waits, and the finished misfits.
fn set_aside_misshapen(
    windows: Vec<PendingWindow>,
    waited_ms: &[f64],
    (leads, samples): (usize, usize),
) -> (Vec<PendingWindow>, Vec<f64>, Vec<Finished>) {
    let (mut fit, mut waits, mut misfits) = (Vec::new(), Vec::new(), Vec::new());
    for (w, &waited) in windows.into_iter().zip(waited_ms) {
        let (got_leads, got_samples) = w.samples.dim();
        if (got_leads, got_samples) == (leads, samples) {
            fit.push(w);
            waits.push(waited);
            continue;
        }
        let mut report = w.report;
        report.outcome = Outcome::NoReport {
            reasons: vec![format!(
                "the window is {got_leads} leads x {got_samples} samples after preprocessing; \
                 the model reads {leads} x {samples} (this device's sample rate or window does \
                 not fit the model's)"
            )],
        };
        report.timings.queue_ms = Some(waited);
        misfits.push(Finished {
            report,
            completed_at: w.completed_at,
        });
    }
    (fit, waits, misfits)
}

/// Generates one batch; a failure of the engine becomes every window's no-model reason.
fn generate(engine: &mut Engine, windows: Vec<PendingWindow>, waited_ms: &[f64]) -> Vec<Finished> {
    let encoder = &engine.bundle().manifest.encoder;
    let (windows, waited_ms, mut finished) =
        set_aside_misshapen(windows, waited_ms, (encoder.leads, encoder.samples));
    if windows.is_empty() {
        return finished;
    }
    finished.extend(generate_fitting(engine, windows, &waited_ms));
    finished
}

/// [`generate`] for windows of the encoder's shape.
fn generate_fitting(
    engine: &mut Engine,
    windows: Vec<PendingWindow>,
    waited_ms: &[f64],
) -> Vec<Finished> {
    // A panic inside the engine must not take the worker (and every later window) with it.
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.generate(&windows)))
            .unwrap_or_else(|_| {
                Err(crate::infer::engine::EngineError::Run {
                    graph: "engine",
                    reason: "panicked while generating".into(),
                })
            });
    let batch = windows.len();
    match result {
        Ok((generated, t)) => {
            let inference = InferenceTimings {
                batch,
                encode_ms: t.encode_ms,
                prefill_ms: t.prefill_ms,
                decode_ms: t.decode_ms,
                decode_steps: t.decode_steps,
            };
            windows
                .into_iter()
                .zip(generated)
                .zip(waited_ms)
                .map(|((w, g), &waited)| {
                    let mut report = w.report;
                    report.outcome = outcome_of(g, &report);
                    report.timings.queue_ms = Some(waited);
                    report.timings.inference = Some(inference);
                    Finished {
                        report,
                        completed_at: w.completed_at,
                    }
                })
                .collect()
        }
        Err(e) => {
            tracing::error!(error = %e, windows = batch, "inference failed");
            windows
                .into_iter()
                .zip(waited_ms)
                .map(|(w, &waited)| {
                    let mut report = w.report;
                    report.outcome = Outcome::NoModel {
                        reason: format!("no report generated: inference failed: {e}"),
                    };
                    report.timings.queue_ms = Some(waited);
                    Finished {
                        report,
                        completed_at: w.completed_at,
                    }
                })
                .collect()
        }
    }
}

/// What a window's generation says: the parsed report, or no report when the model was cut at
/// its token limit (the last statement may be half a statement).
fn outcome_of(generated: Generated, report: &WindowReport) -> Outcome {
    if !generated.finished {
        return Outcome::NoReport {
            reasons: vec![format!(
                "the model did not finish its report within {} tokens",
                generated.ids.len()
            )],
        };
    }
    Outcome::report(
        generated.text,
        report.measurements.as_ref(),
        &report.masked_leads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn window(bed: &str, index: u64) -> PendingWindow {
        PendingWindow {
            report: WindowReport::for_test(bed, index),
            samples: Array2::zeros((1, 8)),
            rhythm: None,
            completed_at: Instant::now(),
        }
    }

    fn ids(windows: &[PendingWindow]) -> Vec<(String, u64)> {
        windows
            .iter()
            .map(|w| (w.report.bed.clone(), w.report.window_index))
            .collect()
    }

    #[test]
    fn a_report_cut_at_the_token_limit_is_no_report_and_a_finished_one_is_parsed() {
        let pending = window("a", 0);
        let cut = Generated {
            ids: vec![5, 6, 7],
            text: "Sinus rhythm. Left bundle".into(),
            finished: false,
        };
        let Outcome::NoReport { reasons } = outcome_of(cut, &pending.report) else {
            panic!("a cut report was published")
        };
        assert_eq!(
            reasons,
            ["the model did not finish its report within 3 tokens"]
        );
        let whole = Generated {
            ids: vec![5, 6, 2],
            text: "Sinus rhythm.".into(),
            finished: true,
        };
        let Outcome::Report { text, .. } = outcome_of(whole, &pending.report) else {
            panic!("a finished report was not published")
        };
        assert_eq!(text, "Sinus rhythm.");
    }

    #[test]
    fn a_window_of_another_shape_is_set_aside_as_a_no_report_not_failing_the_batch() {
        let mut odd = window("b", 4);
        odd.samples = Array2::zeros((1, 9));
        let windows = vec![window("a", 0), odd, window("c", 2)];
        let (fit, waits, misfits) = set_aside_misshapen(windows, &[1.0, 2.0, 3.0], (1, 8));
        assert_eq!(ids(&fit), [("a".into(), 0), ("c".into(), 2)]);
        assert_eq!(waits, [1.0, 3.0]);
        let [odd] = &misfits[..] else {
            panic!("one window set aside: {}", misfits.len())
        };
        assert_eq!((odd.report.bed.as_str(), odd.report.window_index), ("b", 4));
        assert_eq!(odd.report.timings.queue_ms, Some(2.0));
        let line = odd.report.to_line();
        assert!(
            line.contains("1 leads x 9 samples") && line.contains("the model reads 1 x 8"),
            "{line}"
        );
    }

    #[test]
    fn windows_of_several_beds_ready_together_form_one_batch() {
        let queue = InferenceQueue::new(BatchSettings {
            max_batch: 3,
            max_wait: Duration::from_millis(500),
            ..BatchSettings::default()
        });
        for bed in ["a", "b", "c", "d"] {
            queue.push(window(bed, 0));
        }
        let batch = queue.next_batch().unwrap();
        assert_eq!(
            ids(&batch.windows),
            [("a".into(), 0), ("b".into(), 0), ("c".into(), 0)]
        );
        assert!(batch.dropped.is_empty());
        queue.close();
        // Closed: what is pending is still handed out, without waiting for more.
        let started = Instant::now();
        let batch = queue.next_batch().unwrap();
        assert_eq!(ids(&batch.windows), [("d".into(), 0)]);
        assert!(started.elapsed() < Duration::from_millis(400));
        assert!(queue.next_batch().is_none());
    }

    #[test]
    fn a_lone_window_waits_at_most_max_wait() {
        let queue = InferenceQueue::new(BatchSettings {
            max_batch: 8,
            max_wait: Duration::from_millis(30),
            ..BatchSettings::default()
        });
        queue.push(window("a", 0));
        let started = Instant::now();
        let batch = queue.next_batch().unwrap();
        let waited = started.elapsed();
        assert_eq!(batch.windows.len(), 1);
        assert!(
            waited >= Duration::from_millis(25) && waited < Duration::from_millis(500),
            "{waited:?}"
        );
    }

    #[test]
    fn new_settings_apply_to_the_running_queue() {
        let queue = InferenceQueue::new(BatchSettings {
            max_wait: Duration::ZERO,
            capacity: 8,
            ..BatchSettings::default()
        });
        for i in 0..6 {
            queue.push(window("a", i));
        }
        queue.set_settings(BatchSettings {
            max_batch: 2,
            max_wait: Duration::ZERO,
            capacity: 3,
            slowdown: f64::NAN,
            ..BatchSettings::default()
        });
        assert_eq!(
            queue.settings().slowdown,
            1.0,
            "a test hook that is not a number is off"
        );
        // The next push finds 6 pending with room for 3: the oldest go until it fits.
        queue.push(window("a", 6));
        let stats = queue.stats();
        assert_eq!((stats.dropped_full, stats.depth), (4, 3));
        let batch = queue.next_batch().unwrap();
        let dropped: Vec<u64> = batch
            .dropped
            .iter()
            .map(|(w, _)| w.report.window_index)
            .collect();
        assert_eq!(dropped, [0, 1, 2, 3]);
        let taken: Vec<u64> = batch
            .windows
            .iter()
            .map(|w| w.report.window_index)
            .collect();
        assert_eq!(taken, [4, 5], "the new max_batch");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_window_and_counts_it() {
        let queue = InferenceQueue::new(BatchSettings {
            max_batch: 8,
            max_wait: Duration::ZERO,
            capacity: 2,
            ..BatchSettings::default()
        });
        for i in 0..5 {
            queue.push(window("a", i));
        }
        let stats = queue.stats();
        assert_eq!(
            (stats.dropped_full, stats.depth, stats.max_depth),
            (3, 2, 2)
        );
        let batch = queue.next_batch().unwrap();
        let dropped: Vec<u64> = batch
            .dropped
            .iter()
            .map(|(w, _)| w.report.window_index)
            .collect();
        assert_eq!(dropped, [0, 1, 2], "the oldest go");
        assert!(batch.dropped[0].1.contains("inference fell behind"));
        assert_eq!(ids(&batch.windows), [("a".into(), 3), ("a".into(), 4)]);
    }

    #[test]
    fn staleness_counts_from_the_windows_end_not_from_entering_the_queue() {
        let queue = InferenceQueue::new(BatchSettings {
            max_batch: 8,
            max_wait: Duration::ZERO,
            max_window_age: Duration::from_millis(200),
            ..BatchSettings::default()
        });
        // Closed 300 ms ago (it spent that long in signal processing): stale on arrival.
        let mut late = window("a", 0);
        late.completed_at = Instant::now() - Duration::from_millis(300);
        queue.push(late);
        queue.push(window("a", 1));
        let batch = queue.next_batch().unwrap();
        assert_eq!(batch.dropped.len(), 1);
        assert_eq!(batch.dropped[0].0.report.window_index, 0);
        assert!(batch.dropped[0].1.contains("stale"));
        assert_eq!(ids(&batch.windows), [("a".into(), 1)]);
        assert_eq!(queue.stats().dropped_stale, 1);
    }

    #[test]
    fn stale_windows_are_dropped_and_abandon_drops_the_rest() {
        let queue = InferenceQueue::new(BatchSettings {
            max_batch: 1,
            max_wait: Duration::ZERO,
            capacity: 16,
            max_window_age: Duration::from_millis(20),
            ..BatchSettings::default()
        });
        queue.push(window("a", 0));
        queue.push(window("b", 0));
        std::thread::sleep(Duration::from_millis(40));
        queue.push(window("a", 1));
        let batch = queue.next_batch().unwrap();
        assert_eq!(batch.dropped.len(), 2);
        assert!(batch.dropped.iter().all(|(_, r)| r.contains("stale")));
        assert_eq!(ids(&batch.windows), [("a".into(), 1)]);
        queue.push(window("a", 2));
        queue.push(window("a", 3));
        queue.abandon();
        // A window that arrives after the deadline is not generated either.
        queue.push(window("a", 4));
        let batch = queue.next_batch().unwrap();
        assert!(batch.windows.is_empty());
        assert_eq!(batch.dropped.len(), 3);
        assert!(queue.next_batch().is_none());
        let stats = queue.stats();
        assert_eq!(
            (stats.dropped_stale, stats.dropped_shutdown, stats.dropped()),
            (2, 3, 5)
        );
    }
}
