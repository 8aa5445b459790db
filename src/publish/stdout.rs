//! The standard-output sink: one line per report, human-readable or JSON.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{PublishError, Sink};
use crate::report::WindowReport;

/// How the stdout sink writes reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LineFormat {
    /// [`WindowReport::to_line`].
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Writes each report as one line to an async writer (standard output in the daemon).
pub struct LineSink<W> {
    out: W,
    format: LineFormat,
}

impl LineSink<tokio::io::Stdout> {
    /// A sink on the process's standard output.
    pub fn stdout(format: LineFormat) -> Self {
        LineSink {
            out: tokio::io::stdout(),
            format,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> LineSink<W> {
    /// A sink on any writer.
    pub fn new(out: W, format: LineFormat) -> Self {
        LineSink { out, format }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: AsyncWrite + Unpin + Send> Sink for LineSink<W> {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        let mut line = match self.format {
            LineFormat::Text => report.to_line(),
            LineFormat::Json => serde_json::to_string(report)?,
        };
        line.push('\n');
        self.out.write_all(line.as_bytes()).await?;
        self.out.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;

    fn report() -> WindowReport {
        WindowReport {
            bed: "bed-7".into(),
            window_index: 3,
            device_start_ns: 30_000_000_000,
            device_end_ns: 40_000_000_000,
            interpolated_fraction: 0.0,
            quality_index: 0.25,
            quality_reasons: vec![],
            masked_leads: vec![],
            measurements: None,
            outcome: Outcome::NoReport {
                reasons: vec!["V1 lead off (required)".into()],
            },
            timings: crate::report::WindowTimings::default(),
        }
    }

    #[tokio::test]
    async fn json_lines_round_trip_the_report_fields() {
        let mut sink = LineSink::new(Vec::new(), LineFormat::Json);
        sink.publish(&report()).await.unwrap();
        sink.publish(&report()).await.unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["bed"], "bed-7");
        assert_eq!(v["outcome"]["kind"], "no_report");
        assert_eq!(v["outcome"]["reasons"][0], "V1 lead off (required)");
    }

    #[tokio::test]
    async fn text_lines_say_no_report_loudly() {
        let mut sink = LineSink::new(Vec::new(), LineFormat::Text);
        sink.publish(&report()).await.unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        assert_eq!(
            text,
            "bed-7 window 3 [30.0-40.0 s] quality 0.25: NO REPORT (V1 lead off (required))\n"
        );
    }
}
