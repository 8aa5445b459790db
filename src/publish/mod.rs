//! Publishing: sinks that deliver [`WindowReport`]s.
//!
//! A sink is the last stage of the pipeline: [`stdout`] prints lines, [`mqtt`] publishes the
//! versioned [`payload`]s on the documented [`topic`]s through the durable [`outbox`], with
//! TLS and credentials from [`config`], optionally also as HL7 FHIR ([`fhir`]). [`subscribe`] is the nursing-station side.

pub mod config;
pub mod fhir;
pub mod mqtt;
pub mod outbox;
pub mod payload;
pub mod schema;
pub mod stdout;
pub mod subscribe;
pub mod topic;

use std::future::Future;
use std::time::Duration;

use crate::report::WindowReport;

/// Why a report could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Writing to the output failed.
    #[error("writing report: {0}")]
    Io(#[from] std::io::Error),
    /// The report could not be encoded.
    #[error("encoding report: {0}")]
    Encode(#[from] serde_json::Error),
    /// The stage downstream has stopped.
    #[error("the publishing stage has stopped")]
    Closed,
    /// An id cannot be a topic level.
    #[error(transparent)]
    Topic(#[from] topic::TopicError),
    /// The encoded report is larger than the broker accepts; it was not queued.
    #[error(
        "report for bed {bed:?} window {window} is {size} bytes, over mqtt.max_payload_bytes = {max} (the broker's limit): not queued"
    )]
    PayloadTooLarge {
        /// The bed.
        bed: String,
        /// The window index.
        window: u64,
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The outbox refused or failed to store the report.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

impl PublishError {
    /// True when the error refuses this one report and leaves the sink able to take the next
    /// (the outbox is full under `reject-new`, the report is over a size limit, its bed cannot
    /// be a topic, it cannot be encoded); false when the sink itself has failed (I/O, a
    /// stopped stage or outbox). The publishing stage logs and counts the first kind and goes
    /// on; the second stops it.
    pub fn refuses_only_this_report(&self) -> bool {
        match self {
            PublishError::Encode(_)
            | PublishError::Topic(_)
            | PublishError::PayloadTooLarge { .. }
            | PublishError::Outbox(
                outbox::OutboxError::Full { .. } | outbox::OutboxError::TooLarge { .. },
            ) => true,
            PublishError::Io(_)
            | PublishError::Closed
            | PublishError::Outbox(
                outbox::OutboxError::Io { .. }
                | outbox::OutboxError::Closed
                | outbox::OutboxError::Locked(_),
            ) => false,
        }
    }
}

/// A destination for window reports.
pub trait Sink: Send {
    /// Delivers one report; returns once the sink has taken responsibility for it.
    fn publish(
        &mut self,
        report: &WindowReport,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Delivers (or persists) whatever the sink still holds; called once when the daemon
    /// stops, within its stop deadline. Sinks that hold nothing need not implement it.
    fn close(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send {
        async { Ok(()) }
    }

    /// Acknowledgements of delivered reports from now on, for sinks whose receiver
    /// acknowledges (MQTT PUBACK): what the window end -> acknowledgement latency metric
    /// reads. `None` (the default): the sink has no acknowledgements.
    fn acknowledgements(&self) -> Option<tokio::sync::broadcast::Receiver<mqtt::Delivered>> {
        None
    }
}

/// A channel to the publishing stage is itself a sink: beds fan in to one publisher.
impl Sink for tokio::sync::mpsc::Sender<WindowReport> {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        self.send(report.clone())
            .await
            .map_err(|_| PublishError::Closed)
    }
}

/// Two sinks in turn: a report is handed to `first` (the durable one, MQTT), then to `second`
/// (the station-style line on standard output). An error of `first` is the report's error.
/// Once `first` has taken the report, `second` cannot lose it: its failure (a closed pipe, a
/// reader that stopped reading: [`TEE_SECOND_TIMEOUT`]) is logged, and lines to it are skipped
/// for [`TEE_SECOND_RETRY`] at a time until it takes one again.
pub struct Tee<A, B> {
    first: A,
    second: B,
    /// While `second` is failing: when to try it again, and the lines it has missed.
    second_down: Option<(tokio::time::Instant, u64)>,
}

/// How long the second sink of a [`Tee`] may take for one report.
pub const TEE_SECOND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a failed second sink of a [`Tee`] is skipped before it is tried again.
pub const TEE_SECOND_RETRY: Duration = Duration::from_secs(10);

impl<A, B> Tee<A, B> {
    /// `first`, then `second`.
    pub fn new(first: A, second: B) -> Self {
        Tee {
            first,
            second,
            second_down: None,
        }
    }

    /// Lines the second sink missed since it last failed (0 while it works).
    pub fn second_missed(&self) -> u64 {
        self.second_down.map_or(0, |(_, missed)| missed)
    }

    fn second_failed(&mut self, reason: &str) {
        let missed = self.second_missed() + 1;
        if missed == 1 {
            tracing::warn!(
                reason,
                retry_seconds = TEE_SECOND_RETRY.as_secs(),
                "the second report sink (standard output) failed; reports still go to the \
                 first, its lines are skipped until it works again"
            );
        }
        self.second_down = Some((tokio::time::Instant::now() + TEE_SECOND_RETRY, missed));
    }
}

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        self.first.publish(report).await?;
        if let Some((retry_at, missed)) = self.second_down
            && tokio::time::Instant::now() < retry_at
        {
            self.second_down = Some((retry_at, missed + 1));
            return Ok(());
        }
        match tokio::time::timeout(TEE_SECOND_TIMEOUT, self.second.publish(report)).await {
            Ok(Ok(())) => {
                if let Some((_, missed)) = self.second_down.take() {
                    tracing::info!(missed, "the second report sink works again");
                }
            }
            Ok(Err(e)) => self.second_failed(&e.to_string()),
            Err(_) => self.second_failed("it took more than 1 s for one report"),
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), PublishError> {
        let first = self.first.close().await;
        let second = self.second.close().await;
        first.and(second)
    }

    fn acknowledgements(&self) -> Option<tokio::sync::broadcast::Receiver<mqtt::Delivered>> {
        self.first
            .acknowledgements()
            .or_else(|| self.second.acknowledgements())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(index: u64) -> WindowReport {
        WindowReport::for_test("bed-1", index)
    }

    /// A second sink that fails (a closed pipe) or never finishes (a reader that stopped).
    struct Failing {
        calls: usize,
        hang: bool,
    }

    impl Sink for Failing {
        async fn publish(&mut self, _: &WindowReport) -> Result<(), PublishError> {
            self.calls += 1;
            if self.hang {
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into())
        }
    }

    /// Standard output failing after MQTT took the report neither fails the report (which
    /// stopped the publishing stage, and with it every bed) nor holds the next one: the line
    /// sink is skipped until its retry time, and every report still reaches the first sink.
    #[tokio::test]
    async fn a_failing_second_sink_loses_no_report_of_the_first() {
        for hang in [false, true] {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let mut tee = Tee::new(tx, Failing { calls: 0, hang });
            for index in 0..3 {
                tee.publish(&report(index))
                    .await
                    .unwrap_or_else(|e| panic!("hang {hang}: report {index}: {e}"));
            }
            for index in 0..3 {
                assert_eq!(rx.recv().await.unwrap().window_index, index);
            }
            // Tried once (the first report), then skipped until the retry time.
            assert_eq!(tee.second.calls, 1, "hang {hang}");
            assert_eq!(tee.second_missed(), 3, "hang {hang}");
        }
    }

    /// The first sink's error is still the report's error.
    #[tokio::test]
    async fn the_first_sinks_error_is_the_reports_error() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        drop(rx);
        let (lines, _keep) = tokio::sync::mpsc::channel(8);
        let mut tee = Tee::new(tx, lines);
        assert!(matches!(
            tee.publish(&report(0)).await,
            Err(PublishError::Closed)
        ));
    }
}
