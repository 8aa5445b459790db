//! The publishing stage: every bed's finished windows in, one [`Sink`] out.
//!
//! Windows reach this stage by two roads (straight from the bed when no model is needed, or
//! through the inference worker), so a no-report window can overtake an earlier window still
//! being generated. The stage puts each bed's windows back in order before publishing: per
//! bed, reports leave in window order.
//!
//! A report the sink refuses on its own account (the outbox is full under `reject-new`, the
//! report is over the broker's size limit) is logged, counted and passed over: one refused
//! report must not stop every bed's reports, nor lose the windows already finished. An error
//! of the sink itself (I/O, a stopped outbox) stops the stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::bed::Finished;
use crate::metrics::Metrics;
use crate::publish::{PublishError, Sink};

/// Windows held back per bed, waiting for an earlier one, before the earlier one is given up
/// (it can only be missing if a stage failed): keeps memory bounded whatever happens.
const MAX_HELD_PER_BED: usize = 64;

/// What the publishing stage did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Reports handed to the sink.
    pub published: u64,
    /// Windows given up as missing (a stage failed before they arrived).
    pub skipped: u64,
    /// Reports the sink refused, each on its own account
    /// ([`PublishError::refuses_only_this_report`]); the stage went on.
    pub refused: u64,
    /// Windows still waiting for the sink when the stop deadline made the stage give up:
    /// neither published nor reported (logged and counted, not silently gone).
    pub lost_at_stop: u64,
}

impl PublishStats {
    /// Reports the stage is done with: published or refused.
    fn handled(&self) -> u64 {
        self.published + self.refused
    }
}

/// Per-bed order.
#[derive(Default)]
struct BedOrder {
    next: u64,
    held: BTreeMap<u64, Finished>,
}

/// Publishes reports from `finished` into `sink` in per-bed window order until the channel
/// closes or `max_windows` have been handled (published or refused); then closes the sink.
/// Each report is counted in `metrics`. When `give_up` turns true (the stop deadline), the
/// stage takes no more windows: those still waiting are counted in
/// [`PublishStats::lost_at_stop`] and logged, and the sink is closed.
pub async fn publish_stage<S: Sink>(
    mut sink: S,
    mut finished: mpsc::Receiver<Finished>,
    max_windows: Option<u64>,
    metrics: Arc<Metrics>,
    mut give_up: watch::Receiver<bool>,
) -> Result<PublishStats, PublishError> {
    let mut beds: HashMap<String, BedOrder> = HashMap::new();
    let mut stats = PublishStats::default();
    let limit_reached = |stats: &PublishStats| max_windows.is_some_and(|m| stats.handled() >= m);
    let mut gave_up = false;
    'receive: loop {
        let item = tokio::select! {
            biased;
            () = given_up(&mut give_up) => {
                gave_up = true;
                break 'receive;
            }
            item = finished.recv() => match item {
                Some(item) => item,
                None => break 'receive,
            },
        };
        let order = beds.entry(item.report.bed.clone()).or_default();
        order.held.insert(item.report.window_index, item);
        if order.held.len() > MAX_HELD_PER_BED
            && let Some((&first, _)) = order.held.first_key_value()
        {
            tracing::warn!(
                missing_from = order.next,
                resumed_at = first,
                "windows never reached the publisher; skipping them"
            );
            stats.skipped += first.saturating_sub(order.next);
            order.next = first;
        }
        while let Some(ready) = order.held.remove(&order.next) {
            order.next += 1;
            send(&mut sink, ready, &metrics, &mut stats).await?;
            if limit_reached(&stats) {
                break 'receive;
            }
        }
    }
    if gave_up {
        finished.close();
        let mut lost: u64 = beds.values().map(|o| o.held.len() as u64).sum();
        while finished.try_recv().is_ok() {
            lost += 1;
        }
        stats.lost_at_stop = lost;
        if lost > 0 {
            tracing::error!(
                windows = lost,
                "stop deadline: windows still waiting to be published are lost (neither \
                 published nor reported)"
            );
        }
    } else if !limit_reached(&stats) {
        // The channel closed (shutdown): what is held waits for nothing more.
        'flush: for order in beds.values_mut() {
            for (_, ready) in std::mem::take(&mut order.held) {
                send(&mut sink, ready, &metrics, &mut stats).await?;
                if limit_reached(&stats) {
                    break 'flush;
                }
            }
        }
    }
    sink.close().await?;
    Ok(stats)
}

/// Resolves once `give_up` is true; never when its sender is gone without giving up.
async fn given_up(give_up: &mut watch::Receiver<bool>) {
    if give_up.wait_for(|g| *g).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hands one report to the sink: published, refused (logged, counted; the stage goes on) or
/// the sink's own failure (returned).
async fn send<S: Sink>(
    sink: &mut S,
    mut item: Finished,
    metrics: &Metrics,
    stats: &mut PublishStats,
) -> Result<(), PublishError> {
    item.report.timings.latency_ms = Instant::now()
        .duration_since(item.completed_at)
        .as_secs_f64()
        * 1e3;
    match sink.publish(&item.report).await {
        Ok(()) => {
            metrics.published(&item.report);
            stats.published += 1;
            Ok(())
        }
        Err(e) if e.refuses_only_this_report() => {
            tracing::error!(
                bed = %item.report.bed,
                window = item.report.window_index,
                error = %e,
                "report refused by the sink; going on with the next"
            );
            metrics.refused(&item.report.bed);
            stats.refused += 1;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::stdout::{LineFormat, LineSink};
    use crate::report::WindowReport;

    fn finished(bed: &str, index: u64) -> Finished {
        Finished {
            report: WindowReport::for_test(bed, index),
            completed_at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn each_beds_reports_leave_in_window_order() {
        let (tx, rx) = mpsc::channel(16);
        for (bed, i) in [("a", 1), ("b", 0), ("a", 0), ("a", 3), ("a", 2)] {
            tx.send(finished(bed, i)).await.unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        let stats = publish_stage(
            LineSink::new(&mut out, LineFormat::Json),
            rx,
            None,
            Arc::default(),
            watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(stats.published, 5);
        let text = String::from_utf8(out).unwrap();
        let a: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["bed"] == "a")
            .map(|v| v["window_index"].as_u64().unwrap())
            .collect();
        assert_eq!(a, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn publishing_stops_after_max_windows() {
        let (tx, rx) = mpsc::channel(16);
        for i in 0..5 {
            tx.send(finished("a", i)).await.unwrap();
        }
        let mut out = Vec::new();
        let stats = publish_stage(
            LineSink::new(&mut out, LineFormat::Json),
            rx,
            Some(2),
            Arc::default(),
            watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(stats.published, 2);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }

    /// At the stop deadline the stage stops taking windows and counts those still waiting
    /// (held for an earlier window, or still in the channel) instead of losing them silently.
    #[tokio::test]
    async fn windows_waiting_at_the_stop_deadline_are_counted_as_lost() {
        let (tx, rx) = mpsc::channel(16);
        // Bed a's window 0 never comes: 1 and 2 are held for it; b's 0 is published.
        for (bed, i) in [("a", 1), ("a", 2), ("b", 0)] {
            tx.send(finished(bed, i)).await.unwrap();
        }
        let (give_up_tx, give_up) = watch::channel(false);
        let mut out = Vec::new();
        let stage = publish_stage(
            LineSink::new(&mut out, LineFormat::Json),
            rx,
            None,
            Arc::default(),
            give_up,
        );
        let stats = async {
            // Once the three are in, the deadline comes; two more wait in the channel.
            tokio::task::yield_now().await;
            tx.send(finished("a", 3)).await.unwrap();
            tx.send(finished("c", 0)).await.unwrap();
            give_up_tx.send(true).unwrap();
        };
        let (stats, ()) = tokio::join!(stage, stats);
        let stats = stats.unwrap();
        assert_eq!(stats.published + stats.lost_at_stop, 5, "{stats:?}");
        assert!(stats.lost_at_stop >= 2, "{stats:?}");
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count() as u64,
            stats.published
        );
    }
}
