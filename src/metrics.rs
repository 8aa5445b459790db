//! Prometheus metrics of the daemon: counters kept by the stages, and a tiny hand-written
//! text exposition (format 0.0.4) served over a tokio `TcpListener` (`[metrics] listen`).
//!
//! No patient data is exposed: beds by identifier, counts and durations only.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `meit_frames_total` | counter | `bed` |
//! | `meit_source_gaps_total` | counter | `bed` (lost-block events) |
//! | `meit_windows_total` | counter | `bed`, `outcome` (`report`, `no_report`, `no_model`) |
//! | `meit_no_report_total` | counter | `bed`, `reason` (`noisy`, `lead_off`, `railed`, `flat`, `missing`, `gaps`, `low_quality`, `non_finite`, `dropped`, `stopping`, `other`) |
//! | `meit_report_flags_total` | counter | `bed` (reports with a consistency flag) |
//! | `meit_reports_refused_total` | counter | `bed` (reports the sink refused: outbox full, over the broker's size limit) |
//! | `meit_inference_dropped_total` | counter | `cause` (`full`, `stale`, `stopping`) |
//! | `meit_inference_queue_depth` / `meit_inference_queue_max_depth` | gauge | |
//! | `meit_dsp_dropped_total` | counter | `cause` (`full`, `stale`, `stopping`: windows the signal processing did not reach) |
//! | `meit_dsp_queue_depth` / `meit_dsp_queue_max_depth` / `meit_dsp_threads` | gauge | |
//! | `meit_dsp_windows_total` | counter | (windows judged) |
//! | `meit_inference_batches_total` / `meit_inference_windows_total` | counter | |
//! | `meit_stage_seconds` | summary (`_sum`, `_count`) | `stage` (`dsp`, `queue`, `inference`, `end_to_end`) |
//! | `meit_end_to_end_seconds` | histogram | (window end -> handed to the sink) |
//! | `meit_window_end_to_puback_seconds` | histogram | (window end -> the broker's PUBACK; MQTT only) |
//! | `meit_acknowledgements_missed_total` | counter | (PUBACKs this histogram missed: it fell over 4096 behind) |
//! | `meit_model_ready` | gauge | `provider` |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::pipeline::{DspQueue, InferenceQueue};
use crate::publish::mqtt::Delivered;
use crate::report::{Outcome, WindowReport};

/// The `[metrics]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on, e.g. `"127.0.0.1:9464"` (keep it on localhost or a
    /// management network); absent: no metrics endpoint.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// Upper bounds of the latency histograms, seconds.
const LATENCY_BUCKETS_S: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// A latency histogram with [`LATENCY_BUCKETS_S`].
#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_S.len()],
    sum_s: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS_S) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum_s += seconds;
        self.count += 1;
    }

    /// The exposition lines of metric `name`.
    fn lines(&self, name: &str) -> String {
        let mut lines = String::new();
        for (n, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            let _ = writeln!(lines, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(lines, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(lines, "{name}_sum {}", self.sum_s);
        let _ = writeln!(lines, "{name}_count {}", self.count);
        lines
    }
}

#[derive(Default)]
struct Inner {
    frames: BTreeMap<String, u64>,
    gaps: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
    windows: BTreeMap<(String, &'static str), u64>,
    no_report: BTreeMap<(String, &'static str), u64>,
    flagged: BTreeMap<String, u64>,
    stage_sum_s: BTreeMap<&'static str, f64>,
    stage_count: BTreeMap<&'static str, u64>,
    end_to_end: Histogram,
    puback: Histogram,
    acknowledgements_missed: u64,
}

/// The daemon's counters, shared by the stages.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    queue: Mutex<Option<InferenceQueue>>,
    dsp: Mutex<Option<DspQueue>>,
    model_ready: Mutex<Option<Option<&'static str>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The reason class of a no-report reason phrase (the label keeps cardinality low).
pub fn reason_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    [
        ("fell behind", "dropped"),
        ("leads this device lacks", "unsupported_leads"),
        ("daemon was stopping", "stopping"),
        ("lead off", "lead_off"),
        ("noisy", "noisy"),
        ("railed", "railed"),
        ("flat", "flat"),
        ("baseline wander", "wander"),
        ("implausible amplitude", "implausible_amplitude"),
        ("missing", "missing"),
        ("interpolated", "gaps"),
        ("non-finite", "non_finite"),
        ("quality index", "low_quality"),
    ]
    .iter()
    .find(|(needle, _)| r.contains(needle))
    .map_or("other", |(_, class)| class)
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the exposition read the inference queue's counters.
    pub fn watch_queue(&self, queue: InferenceQueue) {
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    /// Lets the exposition read the signal-processing queue's counters.
    pub fn watch_dsp(&self, queue: DspQueue) {
        *self.dsp.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    /// Records a report the broker acknowledged: window end -> PUBACK.
    pub fn acknowledged(&self, delivered: &Delivered) {
        let seconds = delivered
            .acknowledged
            .duration_since(delivered.window_closed)
            .unwrap_or_default()
            .as_secs_f64();
        self.lock().puback.observe(seconds);
    }

    /// Counts acknowledgements the PUBACK histogram missed (its listener fell behind).
    pub fn acknowledgements_missed(&self, missed: u64) {
        self.lock().acknowledgements_missed += missed;
    }

    /// Records whether the model is loaded, and on which execution provider its decoder runs
    /// (`None`: not loaded).
    pub fn set_model_ready(&self, provider: Option<&'static str>) {
        *self.model_ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(provider);
    }

    /// Counts frames received from a bed's device.
    pub fn frames(&self, bed: &str, frames: usize) {
        *self.lock().frames.entry(bed.to_string()).or_default() += frames as u64;
    }

    /// Counts a gap (lost blocks) reported by a bed's source.
    pub fn gap(&self, bed: &str) {
        *self.lock().gaps.entry(bed.to_string()).or_default() += 1;
    }

    /// Counts a report the sink refused (the report alone; the sink goes on).
    pub fn refused(&self, bed: &str) {
        *self.lock().refused.entry(bed.to_string()).or_default() += 1;
    }

    /// Records a report handed to the sink.
    pub fn published(&self, report: &WindowReport) {
        let mut m = self.lock();
        let bed = report.bed.clone();
        let outcome = match &report.outcome {
            Outcome::Report { contradictions, .. } => {
                if !contradictions.is_empty() {
                    *m.flagged.entry(bed.clone()).or_default() += 1;
                }
                "report"
            }
            Outcome::NoReport { reasons } => {
                let mut classes: Vec<&'static str> =
                    reasons.iter().map(|r| reason_class(r)).collect();
                classes.sort_unstable();
                classes.dedup();
                for class in classes {
                    *m.no_report.entry((bed.clone(), class)).or_default() += 1;
                }
                "no_report"
            }
            Outcome::NoModel { .. } => "no_model",
        };
        *m.windows.entry((bed, outcome)).or_default() += 1;
        let t = &report.timings;
        let mut stage = |name: &'static str, ms: f64| {
            *m.stage_sum_s.entry(name).or_default() += ms / 1e3;
            *m.stage_count.entry(name).or_default() += 1;
        };
        // A window dropped before its signal was judged has no dsp time.
        if t.dsp_ms > 0.0 {
            stage("dsp", t.dsp_ms);
        }
        if let Some(q) = t.queue_ms {
            stage("queue", q);
        }
        if let Some(i) = t.inference {
            stage("inference", i.encode_ms + i.prefill_ms + i.decode_ms);
        }
        stage("end_to_end", t.latency_ms);
        m.end_to_end.observe(t.latency_ms / 1e3);
    }

    /// Reports handed to the sink so far, all beds and outcomes.
    pub fn published_total(&self) -> u64 {
        self.lock().windows.values().sum()
    }

    /// The text exposition (Prometheus format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = self.lock();
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let section = |out: &mut String, name: &str, kind: &str, help: &str, lines: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&lines);
        };
        let per_bed = |out: &mut String, name: &str, help: &str, counts: &BTreeMap<String, u64>| {
            let lines = counts
                .iter()
                .map(|(bed, n)| format!("{name}{{bed=\"{}\"}} {n}\n", esc(bed)))
                .collect();
            section(out, name, "counter", help, lines);
        };
        per_bed(
            &mut out,
            "meit_frames_total",
            "Frames received per bed.",
            &m.frames,
        );
        per_bed(
            &mut out,
            "meit_source_gaps_total",
            "Lost-block events per bed.",
            &m.gaps,
        );
        per_bed(
            &mut out,
            "meit_reports_refused_total",
            "Reports the sink refused per bed (outbox full, over the broker's size limit).",
            &m.refused,
        );
        let lines = m
            .windows
            .iter()
            .map(|((bed, o), n)| {
                format!(
                    "meit_windows_total{{bed=\"{}\",outcome=\"{o}\"}} {n}\n",
                    esc(bed)
                )
            })
            .collect();
        section(
            &mut out,
            "meit_windows_total",
            "counter",
            "Windows published per bed and outcome.",
            lines,
        );
        let lines = m
            .no_report
            .iter()
            .map(|((bed, r), n)| {
                format!(
                    "meit_no_report_total{{bed=\"{}\",reason=\"{r}\"}} {n}\n",
                    esc(bed)
                )
            })
            .collect();
        section(
            &mut out,
            "meit_no_report_total",
            "counter",
            "No-report windows per bed and reason class.",
            lines,
        );
        let lines = m
            .flagged
            .iter()
            .map(|(bed, n)| format!("meit_report_flags_total{{bed=\"{}\"}} {n}\n", esc(bed)))
            .collect();
        section(
            &mut out,
            "meit_report_flags_total",
            "counter",
            "Reports with a consistency flag per bed.",
            lines,
        );
        let mut lines = String::new();
        for (stage, sum) in &m.stage_sum_s {
            let count = m.stage_count.get(stage).copied().unwrap_or(0);
            let _ = writeln!(lines, "meit_stage_seconds_sum{{stage=\"{stage}\"}} {sum}");
            let _ = writeln!(
                lines,
                "meit_stage_seconds_count{{stage=\"{stage}\"}} {count}"
            );
        }
        section(
            &mut out,
            "meit_stage_seconds",
            "summary",
            "Time per window in each stage (inference: the whole batch's).",
            lines,
        );
        section(
            &mut out,
            "meit_end_to_end_seconds",
            "histogram",
            "Window end (last block arrived) to the report handed to the sink.",
            m.end_to_end.lines("meit_end_to_end_seconds"),
        );
        section(
            &mut out,
            "meit_window_end_to_puback_seconds",
            "histogram",
            "Window end (last block arrived) to the broker's PUBACK of its report (MQTT).",
            m.puback.lines("meit_window_end_to_puback_seconds"),
        );
        section(
            &mut out,
            "meit_acknowledgements_missed_total",
            "counter",
            "PUBACKs the window end -> PUBACK histogram missed.",
            format!(
                "meit_acknowledgements_missed_total {}\n",
                m.acknowledgements_missed
            ),
        );
        drop(m);
        let dsp = self
            .dsp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(DspQueue::stats)
            .unwrap_or_default();
        let lines = format!(
            "meit_dsp_dropped_total{{cause=\"full\"}} {}\nmeit_dsp_dropped_total{{cause=\"stale\"}} {}\nmeit_dsp_dropped_total{{cause=\"stopping\"}} {}\n",
            dsp.dropped_full, dsp.dropped_stale, dsp.dropped_shutdown
        );
        section(
            &mut out,
            "meit_dsp_dropped_total",
            "counter",
            "Windows dropped unjudged because signal processing fell behind, by cause.",
            lines,
        );
        for (name, kind, help, value) in [
            (
                "meit_dsp_queue_depth",
                "gauge",
                "Windows waiting for signal processing.",
                dsp.depth,
            ),
            (
                "meit_dsp_queue_max_depth",
                "gauge",
                "Most windows ever waiting for signal processing.",
                dsp.max_depth,
            ),
            (
                "meit_dsp_threads",
                "gauge",
                "Threads judging windows.",
                dsp.threads,
            ),
            (
                "meit_dsp_windows_total",
                "counter",
                "Windows judged.",
                dsp.judged,
            ),
        ] {
            section(&mut out, name, kind, help, format!("{name} {value}\n"));
        }
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(InferenceQueue::stats)
            .unwrap_or_default();
        let lines = format!(
            "meit_inference_dropped_total{{cause=\"full\"}} {}\nmeit_inference_dropped_total{{cause=\"stale\"}} {}\nmeit_inference_dropped_total{{cause=\"stopping\"}} {}\n",
            queue.dropped_full, queue.dropped_stale, queue.dropped_shutdown
        );
        section(
            &mut out,
            "meit_inference_dropped_total",
            "counter",
            "Windows dropped because inference fell behind, by cause.",
            lines,
        );
        for (name, kind, help, value) in [
            (
                "meit_inference_queue_depth",
                "gauge",
                "Windows waiting for inference.",
                queue.depth,
            ),
            (
                "meit_inference_queue_max_depth",
                "gauge",
                "Most windows ever waiting for inference.",
                queue.max_depth,
            ),
            (
                "meit_inference_batches_total",
                "counter",
                "Inference batches run.",
                queue.batches,
            ),
            (
                "meit_inference_windows_total",
                "counter",
                "Windows generated.",
                queue.generated,
            ),
        ] {
            section(&mut out, name, kind, help, format!("{name} {value}\n"));
        }
        if let Some(provider) = *self.model_ready.lock().unwrap_or_else(|p| p.into_inner()) {
            section(
                &mut out,
                "meit_model_ready",
                "gauge",
                "1 when the model bundle is loaded, labelled with the execution provider its decoder runs on.",
                format!(
                    "meit_model_ready{{provider=\"{}\"}} {}\n",
                    provider.unwrap_or("none"),
                    u8::from(provider.is_some())
                ),
            );
        }
        out
    }
}

/// Scrapes served at once; a further client waits in the listener's backlog until one ends
/// (each ends within [`SCRAPE_READ_TIMEOUT`] plus [`SCRAPE_WRITE_TIMEOUT`]), so a flood of idle
/// or never-reading connections
/// costs at most this many tasks and descriptors.
pub const MAX_SCRAPES_IN_FLIGHT: usize = 16;

/// How long a scrape may take to send its request before it gets the metrics anyway.
pub const SCRAPE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a scrape may take to read the response: a client that stops reading is dropped
/// then, so it cannot keep one of the [`MAX_SCRAPES_IN_FLIGHT`] slots for ever.
pub const SCRAPE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves [`Metrics::render`] to every HTTP request on `listener` until the task is dropped,
/// at most [`MAX_SCRAPES_IN_FLIGHT`] at once.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES_IN_FLIGHT));
    loop {
        // Never closed, so this only waits while the limit's scrapes are being served.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) and the like fail again at once: back off instead
                // of spinning a worker thread, and say why the endpoint stalls.
                tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            // The request itself does not matter (every path gets the metrics); read what the
            // client sent so that it sees a clean response.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(SCRAPE_READ_TIMEOUT, stream.read(&mut buf)).await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let send = async {
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            };
            if tokio::time::timeout(SCRAPE_WRITE_TIMEOUT, send)
                .await
                .is_err()
            {
                tracing::debug!("metrics endpoint: a client stopped reading; dropped");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{InferenceTimings, WindowTimings};

    fn report(bed: &str, outcome: Outcome, latency_ms: f64) -> WindowReport {
        WindowReport {
            outcome,
            timings: WindowTimings {
                dsp_ms: 2.0,
                queue_ms: Some(10.0),
                inference: Some(InferenceTimings {
                    batch: 2,
                    encode_ms: 1.0,
                    prefill_ms: 2.0,
                    decode_ms: 7.0,
                    decode_steps: 5,
                }),
                latency_ms,
            },
            ..WindowReport::for_test(bed, 0)
        }
    }

    #[test]
    fn the_exposition_counts_outcomes_reasons_and_latency() {
        let m = Metrics::default();
        m.frames("b\"1", 500);
        m.published(&report(
            "b1",
            Outcome::Report {
                text: "x".into(),
                codes: vec![],
                contradictions: vec!["y".into()],
                withheld: vec![],
            },
            300.0,
        ));
        m.published(&report(
            "b1",
            Outcome::NoReport {
                reasons: vec!["I noisy (required)".into(), "II noisy (required)".into()],
            },
            3000.0,
        ));
        let text = m.render();
        for line in [
            "meit_frames_total{bed=\"b\\\"1\"} 500",
            "meit_windows_total{bed=\"b1\",outcome=\"report\"} 1",
            "meit_windows_total{bed=\"b1\",outcome=\"no_report\"} 1",
            "meit_no_report_total{bed=\"b1\",reason=\"noisy\"} 1",
            "meit_report_flags_total{bed=\"b1\"} 1",
            "meit_end_to_end_seconds_bucket{le=\"0.5\"} 1",
            "meit_end_to_end_seconds_bucket{le=\"5\"} 2",
            "meit_end_to_end_seconds_count 2",
            "meit_stage_seconds_count{stage=\"inference\"} 2",
            "meit_inference_dropped_total{cause=\"full\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.contains("# TYPE meit_end_to_end_seconds histogram"));
    }

    #[test]
    fn reasons_fall_into_few_classes() {
        assert_eq!(reason_class("V2 lead off (required)"), "lead_off");
        assert_eq!(reason_class("quality index 0.12 too low"), "low_quality");
        assert_eq!(
            reason_class("not reported: inference fell behind and the queue was full"),
            "dropped"
        );
        assert_eq!(
            reason_class(
                "not reported: signal processing fell behind and the window went stale (dropped)"
            ),
            "dropped"
        );
        // Every lead issue the quality gate names has a class of its own.
        use crate::dsp::quality::LeadIssue;
        for issue in [
            LeadIssue::Missing,
            LeadIssue::LeadOff,
            LeadIssue::Flat,
            LeadIssue::Railed,
            LeadIssue::HighFrequencyNoise,
            LeadIssue::BaselineWander,
            LeadIssue::ImplausibleAmplitude,
            LeadIssue::NonFinite,
        ] {
            let reason = format!("V2 {issue} (required)");
            assert_ne!(reason_class(&reason), "other", "{reason}");
        }
        assert_eq!(reason_class("V2 baseline wander (required)"), "wander");
        assert_eq!(reason_class("something new"), "other");
    }

    #[test]
    fn window_end_to_puback_is_a_histogram() {
        let m = Metrics::default();
        let closed = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        for ms in [80, 700] {
            m.acknowledged(&Delivered {
                bed: "b1".into(),
                window: 0,
                window_closed: closed,
                acknowledged: closed + std::time::Duration::from_millis(ms),
            });
        }
        m.acknowledgements_missed(3);
        m.refused("b1");
        m.refused("b1");
        let text = m.render();
        for line in [
            "meit_window_end_to_puback_seconds_bucket{le=\"0.1\"} 1",
            "meit_window_end_to_puback_seconds_bucket{le=\"1\"} 2",
            "meit_window_end_to_puback_seconds_count 2",
            "meit_acknowledgements_missed_total 3",
            "meit_reports_refused_total{bed=\"b1\"} 2",
            "meit_dsp_dropped_total{cause=\"stale\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_past_the_limit_wait_for_a_scrape_to_end()
    -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::default())));
        // The limit's worth of clients that connect and send nothing, then a scrape.
        let started = std::time::Instant::now();
        let mut idle = Vec::new();
        for _ in 0..MAX_SCRAPES_IN_FLIGHT {
            idle.push(tokio::net::TcpStream::connect(address).await?);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut client = tokio::net::TcpStream::connect(address).await?;
        client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
        let mut response = String::new();
        client.read_to_string(&mut response).await?;
        let waited = started.elapsed();
        server.abort();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        // Served only once an idle client's read timed out, which is no sooner than the timeout
        // after `started` (a lower bound holds on any machine, however slow).
        assert!(
            waited >= SCRAPE_READ_TIMEOUT,
            "served after {waited:?} while {MAX_SCRAPES_IN_FLIGHT} idle clients were open"
        );
        drop(idle);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_that_never_read_the_response_cannot_hold_the_endpoint()
    -> Result<(), Box<dyn std::error::Error>> {
        // A large exposition (many beds with long names): more than the socket buffers hold.
        let metrics = Metrics::default();
        let pad = "x".repeat(1000);
        for i in 0..8000 {
            metrics.frames(&format!("{pad}{i}"), 1);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(serve(listener, Arc::new(metrics)));
        // The limit's worth of clients that ask and then never read.
        let mut stalled = Vec::new();
        for _ in 0..MAX_SCRAPES_IN_FLIGHT {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(4096)?;
            let mut stream = socket.connect(address).await?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
            stalled.push(stream);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut client = tokio::net::TcpStream::connect(address).await?;
        client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
        let mut response = Vec::new();
        let read = client.read_to_end(&mut response);
        // Served once the stalled writes time out (without the timeout: never).
        tokio::time::timeout(std::time::Duration::from_secs(60), read).await??;
        server.abort();
        let text = String::from_utf8(response)?;
        assert!(
            text.starts_with("HTTP/1.1 200 OK"),
            "{}",
            &text[..100.min(text.len())]
        );
        assert!(
            text.len() > 8_000_000,
            "the whole exposition: {} bytes",
            text.len()
        );
        drop(stalled);
        Ok(())
    }
}
