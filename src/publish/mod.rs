//! Publishing: sinks that deliver [`WindowReport`]s.
//!
//! A sink is the last stage of the pipeline; adding one (MQTT with a durable outbox, TLS and
//! FHIR payloads lands with the publishing issue) touches one file here.

pub mod stdout;

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
}

/// A channel to the publishing stage is itself a sink: beds fan in to one publisher.
impl Sink for tokio::sync::mpsc::Sender<WindowReport> {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        self.send(report.clone())
            .await
            .map_err(|_| PublishError::Closed)
    }
}
