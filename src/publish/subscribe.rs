//! The nursing-station side: subscribe to report and status topics, reconnect with backoff,
//! resubscribe after every ConnAck, drop duplicates by report id, and format one line per
//! report (`meit subscribe`).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::MqttConfig;
use super::mqtt::{Backoff, MqttError, connect_options, network_options};
use super::payload::{REPORT_SCHEMA_ID, STATUS_SCHEMA_ID};

/// One message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether the broker delivered it as the topic's retained message.
    pub retained: bool,
}

/// A running subscription; messages arrive on [`Subscription::next`].
pub struct Subscription {
    messages: mpsc::Receiver<Message>,
    task: JoinHandle<()>,
    subacks: watch::Receiver<u64>,
}

impl Subscription {
    /// Connects (in the background) and subscribes to `filters` at QoS 1 after every ConnAck.
    /// `persistent` asks the broker to keep the session (and queue QoS 1 messages) while this
    /// client is away; it needs a stable `client_id`.
    pub fn start(
        cfg: &MqttConfig,
        client_id: &str,
        filters: Vec<String>,
        persistent: bool,
    ) -> Result<Subscription, MqttError> {
        let mut options = connect_options(cfg, client_id)?;
        options.set_clean_session(!persistent);
        let (tx, messages) = mpsc::channel(1024);
        let (subacks_tx, subacks) = watch::channel(0u64);
        let mut backoff = Backoff::new(
            Duration::from_millis(cfg.backoff_initial_ms),
            Duration::from_millis(cfg.backoff_max_ms),
        );
        let endpoint = format!("{}:{}", cfg.host, cfg.port);
        let task = tokio::spawn(async move {
            let (client, mut eventloop) = AsyncClient::new(options, 64);
            eventloop.set_network_options(network_options());
            let mut last_error = None;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        last_error = None;
                        tracing::info!(broker = %endpoint, "subscriber connected");
                        for filter in &filters {
                            if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                                tracing::error!(%filter, error = %e, "subscribe request failed");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retained: p.retain,
                        };
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let cause = e.to_string();
                        if last_error.as_ref() != Some(&cause) {
                            tracing::warn!(broker = %endpoint, %cause, "subscriber connection failed; retrying with backoff");
                            last_error = Some(cause);
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        Ok(Subscription {
            messages,
            task,
            subacks,
        })
    }

    /// Waits until the broker has acknowledged `count` subscriptions in all (one per filter
    /// per connection), at most `timeout`; false on timeout.
    pub async fn wait_subscribed(&self, count: u64, timeout: Duration) -> bool {
        let mut subacks = self.subacks.clone();
        tokio::time::timeout(timeout, subacks.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The next message within `timeout`; `None` on timeout or when stopped.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Message> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message; `None` when the subscription has stopped.
    pub async fn next(&mut self) -> Option<Message> {
        self.messages.recv().await
    }

    /// Stops the subscription (no DISCONNECT: the session, if persistent, stays).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Remembers the last `capacity` report ids to drop redelivered duplicates.
#[derive(Debug)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Dedup {
    /// A filter remembering `capacity` ids.
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// The report id of a report payload, if it is one.
pub fn report_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    (v["schema"] == REPORT_SCHEMA_ID)
        .then(|| v["report_id"].as_str().map(str::to_string))
        .flatten()
}

/// `text` safe to print on a terminal: control characters (ESC and the other C0 and C1
/// codes, DEL, line breaks) and the Unicode bidirectional overrides, which could move the
/// cursor, recolour or reorder what a nurse reads, become `\uXXXX` (a JSON escape, so a JSON
/// payload stays JSON). Everything else, non-ASCII letters and units included, is kept.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// One line as a nursing station shows it: bed, time, quality, text or why none, flags; what
/// the payload carries is made [`terminal_safe`].
pub fn format_line(message: &Message) -> String {
    terminal_safe(&format_fields(message))
}

fn format_fields(message: &Message) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(&message.payload) else {
        return format!(
            "{}: {}",
            message.topic,
            String::from_utf8_lossy(&message.payload)
        );
    };
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    match v["schema"].as_str() {
        Some(REPORT_SCHEMA_ID) => {
            let mut line = format!(
                "{} {} quality {:.2}",
                s(&v["bed"]),
                s(&v["window"]["end_utc"]),
                v["quality"]["index"].as_f64().unwrap_or(f64::NAN)
            );
            if let Some(hr) = v["measurements"]["heart_rate_bpm"].as_f64() {
                line.push_str(&format!(", HR {hr:.0} bpm"));
            }
            let list = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default()
            };
            match v["kind"].as_str() {
                Some("report") => line.push_str(&format!(": {}", s(&v["text"]))),
                Some("no_report") => {
                    line.push_str(&format!(": NO REPORT ({})", list(&v["reasons"])))
                }
                _ => line.push_str(&format!(": signal reportable, {}", list(&v["reasons"]))),
            }
            let flags = list(&v["consistency_flags"]);
            if !flags.is_empty() {
                line.push_str(&format!(" [CHECK: {flags}]"));
            }
            let withheld = list(&v["withheld_statements"]);
            if !withheld.is_empty() {
                line.push_str(&format!(" [withheld: {withheld}]"));
            }
            line
        }
        Some(STATUS_SCHEMA_ID) => {
            let mut line = format!(
                "{} gateway {} ({}/{}): {}",
                v["time_utc"].as_str().unwrap_or("-"),
                s(&v["gateway"]),
                s(&v["site"]),
                s(&v["unit"]),
                s(&v["state"]).to_uppercase()
            );
            if let Some(reason) = v["reason"].as_str() {
                line.push_str(&format!(" ({reason})"));
            }
            if message.retained {
                line.push_str(" [retained]");
            }
            line
        }
        _ => format!("{}: {v}", message.topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::payload::{Identity, ReportPayload, StatusPayload};
    use crate::report::{Outcome, WindowReport};

    fn report(outcome: Outcome) -> Vec<u8> {
        let r = WindowReport {
            bed: "bed-7".into(),
            window_index: 1,
            device_start_ns: 0,
            device_end_ns: 10_000_000_000,
            interpolated_fraction: 0.0,
            quality_index: 0.25,
            quality_reasons: vec![],
            measurements: None,
            outcome,
            masked_leads: vec![],
            timings: crate::report::WindowTimings::default(),
        };
        ReportPayload::new(&Identity::default(), &r)
            .to_json()
            .unwrap()
    }

    fn line(payload: Vec<u8>, retained: bool) -> String {
        format_line(&Message {
            topic: "t".into(),
            payload,
            retained,
        })
    }

    #[test]
    fn lines_show_bed_time_quality_text_flags_and_withheld_statements() {
        let l = line(
            report(Outcome::Report {
                text: "Sinus bradycardia".into(),
                codes: vec![],
                contradictions: vec!["rate 88".into()],
                withheld: vec![],
            }),
            false,
        );
        assert!(l.starts_with("bed-7 20"), "{l}");
        assert!(
            l.ends_with("quality 0.25: Sinus bradycardia [CHECK: rate 88]"),
            "{l}"
        );
        let l = line(
            report(Outcome::Report {
                text: "Sinus rhythm".into(),
                codes: vec!["SR".into()],
                contradictions: vec![],
                withheld: vec!["Right axis deviation (needs aVF)".into()],
            }),
            false,
        );
        assert!(
            l.ends_with(": Sinus rhythm [withheld: Right axis deviation (needs aVF)]"),
            "{l}"
        );
        let l = line(
            report(Outcome::NoReport {
                reasons: vec!["V1 lead off".into()],
            }),
            false,
        );
        assert!(l.ends_with(": NO REPORT (V1 lead off)"), "{l}");
        let identity = Identity {
            gateway: "gw".into(),
            ..Identity::default()
        };
        let l = line(StatusPayload::last_will(&identity).to_json(), true);
        assert!(l.contains("gateway gw"), "{l}");
        assert!(l.ends_with("OFFLINE (connection lost) [retained]"), "{l}");
        assert_eq!(line(b"not json".to_vec(), false), "t: not json");
    }

    #[test]
    fn control_characters_and_bidi_overrides_from_the_broker_are_escaped() {
        let l = line(
            report(Outcome::Report {
                text: "Sinus rhythm\u{1b}[2J\u{1b}[31mVF\n\u{202e}gnorw 0.1 mV".into(),
                codes: vec![],
                contradictions: vec![],
                withheld: vec![],
            }),
            false,
        );
        assert!(
            l.ends_with(": Sinus rhythm\\u001b[2J\\u001b[31mVF\\u000a\\u202egnorw 0.1 mV"),
            "{l}"
        );
        assert_eq!(
            line(b"raw\x07\x7f\r".to_vec(), false),
            "t: raw\\u0007\\u007f\\u000d"
        );
        // Letters, units and symbols stay as they are.
        assert_eq!(terminal_safe("µV °C ≥ 0.95 Ärzte"), "µV °C ≥ 0.95 Ärzte");
        // A JSON payload stays JSON: the escapes are JSON's own.
        let v: Value = serde_json::from_str(&terminal_safe("{\"t\":\"a\u{7f}\u{85}b\"}")).unwrap();
        assert_eq!(v["t"], "a\u{7f}\u{85}b");
    }

    #[test]
    fn duplicates_are_dropped_by_report_id() {
        let payload = report(Outcome::NoReport { reasons: vec![] });
        let id = report_id(&payload).unwrap();
        let mut d = Dedup::new(2);
        assert!(d.first(&id));
        assert!(!d.first(&id));
        assert!(d.first("b") && d.first("c"));
        assert!(d.first(&id), "forgotten after `capacity` newer ids");
        assert_eq!(report_id(b"{}"), None);
    }
}
