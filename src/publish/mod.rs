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

/// Two sinks in turn: a report is handed to `first`, then to `second` (MQTT, then the
/// station-style line on standard output). An error of either is the report's error.
pub struct Tee<A, B> {
    /// The sink that takes responsibility first (the durable one).
    pub first: A,
    /// The sink that follows.
    pub second: B,
}

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        self.first.publish(report).await?;
        self.second.publish(report).await
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
