//! The signal-processing stage shared by every bed: one bounded queue of finished windows
//! ([`WindowJob`]s), a fixed pool of threads that judge them (preprocessing, quality, beats).
//!
//! ```text
//! bed tasks ──push──▶ DspQueue ──next──▶ dsp threads (WindowJob::judge, [pipeline] dsp_threads)
//! (windowing only)    (bounded, drops      ├─ no report / no model ──Finished──▶ publisher
//!                      oldest and stale)   └─ reportable ──push──▶ InferenceQueue
//! ```
//!
//! The bed tasks only cut windows (cheap, on the async threads) and never wait for the
//! judging: a window's end ([`WindowJob::completed_at`]) is the instant its last block
//! arrived, whatever the load. Judging is milliseconds of CPU per window, so it runs on
//! `[pipeline] dsp_threads` OS threads (default: one per core), never on the async runtime
//! and never on an unbounded number of threads.
//!
//! Backpressure, as for inference ([`super::inference`], same settings): when judging falls
//! behind, the **oldest** windows are dropped, never the newest: a window older than
//! [`BatchSettings::max_window_age`] from its end is dropped instead of judged, and a full
//! queue ([`BatchSettings::capacity`]) drops its oldest to take a new one. A dropped window
//! is published as a no-report result ("not reported: signal processing fell behind ...",
//! without quality or measurements: it was never judged) and counted
//! ([`DspStats::dropped`]), at once: by the bed task whose window made room, or by the thread
//! that found it stale, never waiting for a thread to finish judging. Its samples are freed
//! at once, so memory is bounded by the queue whatever the load. With `when_behind = "wait"` nothing is dropped and the beds wait.
//! Per bed, the publisher puts the results back in window order.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::bed::{BedOutput, Finished, WindowJob};
use super::inference::{BatchSettings, DropCause, InferenceQueue, STOPPING, is_stale};

/// Counters of the signal-processing stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DspStats {
    /// Windows handed to the stage.
    pub queued: u64,
    /// Windows judged.
    pub judged: u64,
    /// Windows dropped because the queue was full.
    pub dropped_full: u64,
    /// Windows dropped because they were older than the age limit before being judged.
    pub dropped_stale: u64,
    /// Windows dropped at shutdown because the stop deadline passed.
    pub dropped_shutdown: u64,
    /// Windows now waiting.
    pub depth: u64,
    /// Most windows ever waiting at once.
    pub max_depth: u64,
    /// Threads judging.
    pub threads: u64,
}

impl DspStats {
    /// Every window dropped, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_stale + self.dropped_shutdown
    }
}

impl DropCause {
    /// The no-report reason of a window this stage dropped.
    fn dsp_reason(self) -> &'static str {
        match self {
            DropCause::Full => {
                "not reported: signal processing fell behind and its queue was full (oldest window dropped)"
            }
            DropCause::Stale => {
                "not reported: signal processing fell behind and the window went stale (dropped)"
            }
            DropCause::Shutdown => STOPPING,
        }
    }
}

struct State {
    settings: BatchSettings,
    pending: VecDeque<WindowJob>,
    /// Results of the windows dropped (to make room, for age, at the stop deadline), oldest
    /// first, for the threads to publish: they never wait on a bed task, which a reload may
    /// abort.
    dropped: VecDeque<Finished>,
    closed: bool,
    abandoned: bool,
    stats: DspStats,
}

/// The queue between the bed tasks and the dsp threads. Cloning gives another handle to it.
#[derive(Clone)]
pub struct DspQueue {
    shared: Arc<(Mutex<State>, Condvar)>,
}

/// What a dsp thread does next (a return value moved once: the size difference of its
/// variants costs nothing).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Publish a dropped window's result.
    Publish(Finished),
    /// Judge a window.
    Judge(WindowJob),
}

impl DspQueue {
    /// An empty queue with `settings` (its `capacity`, `max_window_age` and
    /// `wait_when_full`; the batching fields are the inference worker's).
    pub fn new(settings: BatchSettings) -> Self {
        DspQueue {
            shared: Arc::new((
                Mutex::new(State {
                    settings: sane(settings),
                    pending: VecDeque::new(),
                    dropped: VecDeque::new(),
                    closed: false,
                    abandoned: false,
                    stats: DspStats::default(),
                }),
                Condvar::new(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (plain pushes and pops).
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new settings (a configuration reload).
    pub fn set_settings(&self, settings: BatchSettings) {
        self.lock().settings = sane(settings);
        self.shared.1.notify_all();
    }

    /// Adds a window to judge. Never blocks: stale windows at the front and, when the queue
    /// is full, the oldest are dropped to make room (unless the settings say to wait: see
    /// [`DspQueue::is_full`]). The dropped windows' results are published by the dsp threads
    /// before the next window they judge; returns how many were dropped.
    pub fn push(&self, job: WindowJob) -> usize {
        let mut state = self.lock();
        let now = Instant::now();
        let s = state.settings;
        let mut dropped = 0;
        if state.abandoned {
            state.stats.dropped_shutdown += 1;
            state.dropped.push_back(job.unjudged(STOPPING));
            dropped += 1;
        } else {
            while let Some(front) = state.pending.front() {
                let cause =
                    if !s.wait_when_full && is_stale(front.completed_at(), now, s.max_window_age) {
                        DropCause::Stale
                    } else if state.pending.len() >= s.capacity {
                        DropCause::Full
                    } else {
                        break;
                    };
                let Some(oldest) = state.pending.pop_front() else {
                    break;
                };
                let finished = state.drop_job(oldest, cause);
                state.dropped.push_back(finished);
                dropped += 1;
            }
            state.pending.push_back(job);
            state.stats.queued += 1;
        }
        state.stats.depth = state.pending.len() as u64;
        state.stats.max_depth = state.stats.max_depth.max(state.stats.depth);
        drop(state);
        self.shared.1.notify_one();
        dropped
    }

    /// True when the queue holds `capacity` windows (with `when_behind = "wait"` the bed
    /// waits instead of pushing).
    pub fn is_full(&self) -> bool {
        let state = self.lock();
        state.pending.len() >= state.settings.capacity
    }

    /// The settings in force.
    pub fn settings(&self) -> BatchSettings {
        self.lock().settings
    }

    /// No more windows will come: the threads judge what is waiting and stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.1.notify_all();
    }

    /// The stop deadline has passed: every waiting window is published as not reported and
    /// the threads stop after the window they are judging.
    pub fn abandon(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.abandoned = true;
        while let Some(job) = state.pending.pop_front() {
            let finished = state.drop_job(job, DropCause::Shutdown);
            state.dropped.push_back(finished);
        }
        state.stats.depth = 0;
        drop(state);
        self.shared.1.notify_all();
    }

    /// The counters so far.
    pub fn stats(&self) -> DspStats {
        self.lock().stats
    }

    /// Blocks until there is something to do; `None` once closed and empty.
    fn next(&self) -> Option<Next> {
        let mut state = self.lock();
        loop {
            if let Some(finished) = state.dropped.pop_front() {
                return Some(Next::Publish(finished));
            }
            if let Some(job) = state.pending.pop_front() {
                state.stats.depth = state.pending.len() as u64;
                let s = state.settings;
                if !s.wait_when_full
                    && is_stale(job.completed_at(), Instant::now(), s.max_window_age)
                {
                    state.stats.dropped_stale += 1;
                    return Some(Next::Publish(job.unjudged(DropCause::Stale.dsp_reason())));
                }
                return Some(Next::Judge(job));
            }
            if state.closed {
                return None;
            }
            state = self.shared.1.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn judged(&self) {
        self.lock().stats.judged += 1;
    }
}

impl State {
    /// Drops `job` for `cause`: counted; its result (samples freed) to publish.
    fn drop_job(&mut self, job: WindowJob, cause: DropCause) -> Finished {
        match cause {
            DropCause::Full => self.stats.dropped_full += 1,
            DropCause::Stale => self.stats.dropped_stale += 1,
            DropCause::Shutdown => self.stats.dropped_shutdown += 1,
        }
        job.unjudged(cause.dsp_reason())
    }
}

/// `settings` with room for at least one window.
fn sane(settings: BatchSettings) -> BatchSettings {
    BatchSettings {
        capacity: settings.capacity.max(1),
        ..settings
    }
}

/// The default number of dsp threads: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Starts `threads` dsp threads: each takes windows from `queue` until it is closed and empty
/// (or the publisher is gone), judges them, and sends what is final to `out` and what is
/// reportable to `inference`.
pub fn spawn_threads(
    threads: usize,
    queue: &DspQueue,
    inference: &InferenceQueue,
    out: &mpsc::Sender<Finished>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let threads = threads.max(1);
    queue.lock().stats.threads = threads as u64;
    (0..threads)
        .map(|i| {
            let (queue, inference, out) = (queue.clone(), inference.clone(), out.clone());
            std::thread::Builder::new()
                .name(format!("meit-dsp-{i}"))
                .spawn(move || run_thread(&queue, &inference, &out))
        })
        .collect()
}

/// The reason published for a window whose judging panicked.
const JUDGING_FAILED: &str =
    "signal processing failed: an internal error while judging this window (see the daemon's log)";

/// Runs `judge` on `job`, catching a panic: it must take neither the thread (and every later
/// window of every bed) nor the window with it. The failed window is published as a
/// no-report in its place, so that its bed's later reports are not held back waiting for it.
fn judge_guarded(job: WindowJob, judge: impl FnOnce(WindowJob) -> BedOutput) -> BedOutput {
    let failed = job.no_report(JUDGING_FAILED);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge(job))) {
        Ok(output) => output,
        Err(_) => {
            tracing::error!(
                bed = %failed.report.bed,
                window = failed.report.window_index,
                "judging a window failed (a panic); published as a no-report"
            );
            BedOutput::Done(failed)
        }
    }
}

fn run_thread(queue: &DspQueue, inference: &InferenceQueue, out: &mpsc::Sender<Finished>) {
    while let Some(next) = queue.next() {
        let job = match next {
            Next::Publish(finished) => {
                if out.blocking_send(finished).is_err() {
                    return;
                }
                continue;
            }
            Next::Judge(job) => job,
        };
        let output = judge_guarded(job, WindowJob::judge);
        queue.judged();
        match output {
            BedOutput::Done(finished) => {
                if out.blocking_send(finished).is_err() {
                    return;
                }
            }
            BedOutput::Pending(window) => {
                // `when_behind = "wait"`: a thread, not the runtime, waits for room.
                while inference.settings().wait_when_full && inference.is_full() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                inference.push(window);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::SourceEvent;
    use crate::pipeline::bed::BedPipeline;
    use crate::pipeline::bed::tests::{blocks, record, spec};
    use crate::report::Outcome;

    /// Three 2 s windows of one bed, cut but not judged.
    fn jobs() -> Vec<WindowJob> {
        let (rec, _) = record("normal", 6.0, 21);
        let mut bed = BedPipeline::new("bed-d", spec(2.0), None);
        blocks(&rec, |_| vec![false; 12])
            .iter()
            .flat_map(|b| bed.windows(&SourceEvent::Block(b.clone())))
            .collect()
    }

    fn settings(capacity: usize, max_age: Duration) -> BatchSettings {
        BatchSettings {
            capacity,
            max_window_age: max_age,
            ..BatchSettings::default()
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_window_published_unjudged_and_counted() {
        let queue = DspQueue::new(settings(2, Duration::from_secs(60)));
        let dropped: usize = jobs().into_iter().map(|j| queue.push(j)).sum();
        assert_eq!(dropped, 1);
        let stats = queue.stats();
        assert_eq!((stats.queued, stats.dropped_full, stats.depth), (3, 1, 2));
        // The threads publish it first, whichever bed pushed the window that displaced it.
        let Some(Next::Publish(dropped)) = queue.next() else {
            panic!("the dropped window is published before the next is judged")
        };
        assert_eq!(dropped.report.window_index, 0);
        let line = dropped.report.to_line();
        assert!(line.contains("signal processing fell behind"), "{line}");
        assert!(dropped.report.measurements.is_none());
        let Some(Next::Judge(job)) = queue.next() else {
            panic!("then the newer windows are judged")
        };
        assert_eq!(job.judge().report().window_index, 1);
    }

    #[test]
    fn a_window_older_than_the_age_limit_from_its_end_is_dropped_not_judged() {
        let queue = DspQueue::new(settings(16, Duration::from_millis(30)));
        let mut all = jobs().into_iter();
        assert_eq!(queue.push(all.next().unwrap()), 0);
        std::thread::sleep(Duration::from_millis(60));
        let Some(Next::Publish(stale)) = queue.next() else {
            panic!("a stale window is not judged")
        };
        assert!(stale.report.to_line().contains("went stale"));
        assert_eq!(queue.stats().dropped_stale, 1);
        // Waiting (replays): nothing is dropped for age.
        let waiting = DspQueue::new(BatchSettings {
            wait_when_full: true,
            ..settings(16, Duration::from_millis(30))
        });
        assert_eq!(waiting.push(all.next().unwrap()), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(waiting.next(), Some(Next::Judge(_))));
        assert_eq!(waiting.stats().dropped(), 0);
    }

    #[test]
    fn threads_judge_every_window_and_stop_when_closed() {
        let queue = DspQueue::new(settings(16, Duration::from_secs(60)));
        let inference = InferenceQueue::new(BatchSettings::default());
        let (tx, mut rx) = mpsc::channel(16);
        let threads = spawn_threads(2, &queue, &inference, &tx).unwrap();
        drop(tx);
        for job in jobs() {
            assert_eq!(queue.push(job), 0);
        }
        queue.close();
        for t in threads {
            t.join().unwrap();
        }
        // No model in this pipeline spec's bed: clean windows wait for the model.
        let mut done = 0;
        while rx.try_recv().is_ok() {
            done += 1;
        }
        let stats = queue.stats();
        assert_eq!((stats.judged, stats.dropped()), (3, 0));
        assert_eq!(done as u64 + inference.stats().queued, 3);
    }

    #[test]
    fn a_window_whose_judging_panics_is_published_as_a_no_report_in_its_place() {
        let job = jobs().remove(1);
        let BedOutput::Done(failed) = judge_guarded(job, |_| panic!("a bug in the dsp")) else {
            panic!("a panicking judge gives a finished window")
        };
        assert_eq!(
            (failed.report.bed.as_str(), failed.report.window_index),
            ("bed-d", 1)
        );
        match &failed.report.outcome {
            Outcome::NoReport { reasons } => assert_eq!(reasons, &[JUDGING_FAILED]),
            other => panic!("{other:?}"),
        }
        // Without a panic, the judge's own output.
        let job = jobs().remove(1);
        let output = judge_guarded(job, WindowJob::judge);
        assert!(!output.report().to_line().contains("internal error"));
    }

    #[test]
    fn abandon_publishes_what_waits_as_stopping() {
        let queue = DspQueue::new(settings(16, Duration::from_secs(60)));
        for job in jobs() {
            assert_eq!(queue.push(job), 0);
        }
        queue.abandon();
        let mut reasons = Vec::new();
        while let Some(Next::Publish(f)) = queue.next() {
            reasons.push(f.report.to_line());
        }
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons.iter().all(|r| r.contains("stopping")),
            "{reasons:?}"
        );
        assert_eq!(queue.stats().dropped_shutdown, 3);
    }
}
