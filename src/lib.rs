//! # meit — ECG reports generated at the bedside
//!
//! The library behind the `meit` daemon and the `meit-models` training crate. Read it in the
//! order the data flows:
//!
//! ```text
//!  acquire ──SampleBlock──▶ dsp ──Window──▶ infer ──Report──▶ publish
//!  (serial, BLE,            (filter, leads,  (ONNX encoder    (MQTT, stdout)
//!   replay, simulator)       quality, beats)  + 4-bit LLM)
//! ```
//!
//! [`pipeline`] wires the stages together; each stage sits behind a small trait so that a new
//! source or sink touches one file. [`ecg`] holds the domain types every stage shares,
//! [`config`] the daemon's TOML configuration, and [`infer::runtime`] finds and loads ONNX
//! Runtime. [`synth`] is the physiological ECG synthesizer used by the device simulator, the
//! training data and the tests.
//!
//! meit is **not a certified medical device**: its reports are decision support for trained
//! staff and never replace a clinician's reading of the ECG.

pub mod acquire;
pub mod config;
pub mod doctor;
pub mod dsp;
pub mod ecg;
pub mod infer;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod report;
pub mod synth;
pub mod telemetry;
pub mod wfdb;

/// One line for an error and its causes, each cause said once: `outer: cause: deeper cause`.
///
/// The project's errors spell their cause in their own message (`#[error("{path}: {source}")]`,
/// so a log line written with `%e` is complete) and also expose it as
/// [`std::error::Error::source`]. Printing every link of the chain (`anyhow`'s `{:#}`) would
/// then repeat each cause; here a cause is left out when the message above it already contains
/// it, and printed otherwise (a context such as "dsp settings" names no cause of its own).
pub fn error_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut above = message.clone();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !above.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        above = text;
        cause = e.source();
    }
    message
}

/// Whether `error` or one of its causes is a write to a closed pipe (`meit replay r.hea | head`):
/// the reader has gone, so the binaries end quietly and successfully, as `cat` does, instead of
/// printing an error (or, with `println!`, panicking).
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Spelled {
        path: &'static str,
        source: wfdb::WfdbError,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading the record")]
    struct Silent {
        #[source]
        source: Spelled,
    }

    fn spelled() -> Spelled {
        Spelled {
            path: "r.hea",
            source: wfdb::Header::parse("").unwrap_err(),
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        // anyhow's alternate form repeats a cause the message already spells.
        let chained = format!("{:#}", anyhow::Error::new(spelled()));
        assert_eq!(
            chained
                .matches("WFDB header line 1: no record line")
                .count(),
            2,
            "{chained}"
        );
        assert_eq!(
            error_message(&spelled()),
            "r.hea: WFDB header line 1: no record line"
        );
        // A message that does not spell its cause gets it appended; contexts are kept.
        let silent = Silent { source: spelled() };
        assert_eq!(
            error_message(&silent),
            "reading the record: r.hea: WFDB header line 1: no record line"
        );
        let with_context = anyhow::Error::new(silent).context("replay");
        assert_eq!(
            error_message(with_context.as_ref()),
            "replay: reading the record: r.hea: WFDB header line 1: no record line"
        );
    }

    #[test]
    fn a_closed_pipe_is_found_however_deep_and_nothing_else_is_taken_for_one() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&pipe()));
        let wrapped = anyhow::Error::new(publish::PublishError::Io(pipe())).context("publishing");
        assert!(is_broken_pipe(wrapped.as_ref()));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_broken_pipe(&other));
        assert!(!is_broken_pipe(&spelled()));
        assert!(!is_broken_pipe(
            anyhow::Error::new(Silent { source: spelled() }).as_ref()
        ));
    }
}
