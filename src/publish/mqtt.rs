//! The MQTT sink: reports go through the durable [`Outbox`] to the broker, at least once and
//! in order, across broker restarts and daemon crashes.
//!
//! ```text
//! MqttSink::publish ──append──▶ outbox thread (write + fdatasync, group commit)
//!        ▲ returns once durable        │ durable record
//!                                      ▼
//!                     link task (one per publisher) ──try_publish──▶ rumqttc EventLoop
//!                       ▲  PUBACK(pkid) → seq → outbox ack            (own poller task)
//!                       └──────────────── events ◀──────────────────────┘
//! ```
//!
//! rumqttc reconnects without backoff and, on a new session, silently drops what it had in
//! flight; so the link task makes a fresh client and event loop per connection, reconnects
//! with exponential backoff and jitter, and after every ConnAck publishes the retained
//! `online` status and resends, in order, every record not yet acknowledged. Packet ids are
//! mapped to records through the order of `Outgoing::Publish` events (rumqttc emits one per
//! request, in request order). A clean [`MqttPublisher::shutdown`] publishes a retained
//! `offline` status, waits for outstanding PUBACKs and sends DISCONNECT; if the connection
//! dies instead, the broker publishes the same `offline` as the last will.
//!
//! MQTT 3.1.1 only (rumqttc's v4 client).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{MqttConfig, is_loopback};
use super::outbox::{Outbox, OutboxError, OutboxStats, Record};
use super::payload::{Identity, ReportPayload, StatusPayload, window_closed_at};
use super::topic::{TopicBase, TopicError, TopicKind};
use super::{PublishError, Sink};
use crate::config::Secret;
use crate::report::WindowReport;

/// Why the MQTT publisher or subscriber could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A configuration value is not usable.
    #[error("`{field}` {reason}")]
    Config {
        /// Dotted field name.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An id cannot be a topic level.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A TLS file is missing or unusable.
    #[error("`mqtt.{field}` {path}: {cause}")]
    Tls {
        /// Which setting.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The password file cannot be read.
    #[error("`mqtt.password_file` {path}: {cause}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A background task failed.
    #[error("the publisher's {0} task failed")]
    Task(&'static str),
}

/// The connection as the link task sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Connected (ConnAck received) right now.
    pub connected: bool,
    /// ConnAcks received since start.
    pub connects: u64,
    /// Why the last connection attempt or connection failed (cleared on ConnAck).
    pub last_error: Option<String>,
    /// Measurements not sent because the link was down or busy.
    pub measurements_dropped: u64,
}

/// The rumqttc options shared by the publisher and `meit subscribe`: address, keep-alive,
/// credentials (from `password`, `password_file` or the environment; never logged) and TLS.
/// Plaintext to a broker that is not on loopback is refused unless `allow_insecure`.
pub fn connect_options(cfg: &MqttConfig, client_id: &str) -> Result<MqttOptions, MqttError> {
    if !cfg.tls() && !cfg.allow_insecure && !is_loopback(&cfg.host) {
        return Err(MqttError::Config {
            field: "mqtt.ca_file".into(),
            reason: format!(
                "is not set, so reports and credentials would travel unencrypted to {:?}, which is not loopback; set ca_file (TLS) or, on a network you trust, allow_insecure = true",
                cfg.host
            ),
        });
    }
    let mut o = MqttOptions::new(client_id, cfg.host.trim_matches(['[', ']']), cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_seconds.max(5)));
    o.set_clean_session(true);
    let max_packet = cfg.max_payload_bytes + 64 * 1024;
    o.set_max_packet_size(max_packet, max_packet);
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_password(path)?,
            (None, None) => Secret::default(),
        };
        o.set_credentials(user.clone(), password.expose());
    }
    if cfg.tls() {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls_config(cfg)?,
        )));
    }
    Ok(o)
}

fn read_password(path: &Path) -> Result<Secret, MqttError> {
    let text = std::fs::read_to_string(path).map_err(|cause| MqttError::PasswordFile {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok(Secret::from(
        text.lines().next().unwrap_or_default().to_string(),
    ))
}

/// A rustls client configuration (ring provider) trusting `ca_file`, with the client
/// certificate and key when both are set.
fn tls_config(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |field: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |cause: String| MqttError::Tls { field, path, cause }
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &cfg.ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect())
            .map_err(|e| tls_err("ca_file", ca)(e.to_string()))?;
        if certs.is_empty() {
            return Err(tls_err("ca_file", ca)(
                "no PEM certificate in the file".into(),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_err("ca_file", ca)(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls {
            field: "ca_file",
            path: PathBuf::new(),
            cause: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect())
                .map_err(|e| tls_err("client_cert", cert)(e.to_string()))?;
            if chain.is_empty() {
                return Err(tls_err("client_cert", cert)(
                    "no PEM certificate in the file".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err("client_key", key)(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err("client_cert", cert)(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Exponential backoff with "equal jitter": each delay is half the current step plus a
/// random part of the other half; the step doubles per failure up to `max`.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    rng: SmallRng,
}

impl Backoff {
    /// A backoff from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ u64::from(std::process::id());
        Backoff {
            initial,
            max,
            step: initial,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }

    /// Back to `initial` (after a successful connect).
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// A window report the broker acknowledged (PUBACK), as [`MqttPublisher::delivered`] tells
/// it: what a latency metric or benchmark needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Bed id.
    pub bed: String,
    /// Window index.
    pub window: u64,
    /// When the window closed (its last sample arrived), gateway clock.
    pub window_closed: SystemTime,
    /// When its PUBACK arrived, gateway clock.
    pub acknowledged: SystemTime,
}

/// How many acknowledgements [`MqttPublisher::delivered`] keeps for a slow listener.
const DELIVERED_BACKLOG: usize = 4096;

/// The window a report record is about (absent for records recovered from the outbox and for
/// payloads appended without one).
#[derive(Debug, Clone)]
struct Window {
    bed: String,
    index: u64,
    closed: SystemTime,
}

enum Command {
    Append {
        topic: String,
        payload: Vec<u8>,
        window: Option<Window>,
        reply: oneshot::Sender<Result<u64, OutboxError>>,
    },
    Ack(u64),
    Stop,
}

enum Durable {
    Appended(Record, Option<Window>),
    Dropped(Vec<u64>),
}

/// Starts the outbox thread: appends are group-committed (one fdatasync per batch of
/// whatever is queued), acknowledgements are applied in the same loop.
fn spawn_outbox_thread(
    mut outbox: Outbox,
    mut commands: mpsc::UnboundedReceiver<Command>,
    durable: mpsc::UnboundedSender<Durable>,
    stats: watch::Sender<OutboxStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("meit-outbox".into())
        .spawn(move || {
            let mut stop = false;
            while !stop {
                let Some(first) = commands.blocking_recv() else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < 1024
                    && let Ok(more) = commands.try_recv()
                {
                    batch.push(more);
                }
                let mut acks = Vec::new();
                let mut appends = Vec::new();
                let mut replies = Vec::new();
                for command in batch {
                    match command {
                        Command::Ack(seq) => acks.push(seq),
                        Command::Append {
                            topic,
                            payload,
                            window,
                            reply,
                        } => {
                            appends.push((topic, payload));
                            replies.push((reply, window));
                        }
                        Command::Stop => stop = true,
                    }
                }
                if !acks.is_empty()
                    && let Err(e) = outbox.ack(&acks)
                {
                    tracing::error!(error = %e, "outbox: recording acknowledgements failed (they will be redelivered)");
                }
                let (results, dropped) = if appends.is_empty() {
                    (Vec::new(), Vec::new())
                } else {
                    outbox.append(appends)
                };
                // Counters first: a producer that sees its answer sees them updated.
                stats.send_replace(outbox.stats());
                if !dropped.is_empty() {
                    let _ = durable.send(Durable::Dropped(dropped));
                }
                for (result, (reply, window)) in results.into_iter().zip(replies) {
                    let answer = match result {
                        Ok(record) => {
                            let seq = record.seq;
                            let _ = durable.send(Durable::Appended(record, window));
                            Ok(seq)
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
            }
        })
}

/// Delivers reports to the broker through the durable outbox. Cheap to clone: one per bed.
#[derive(Clone)]
pub struct MqttSink {
    identity: Arc<Identity>,
    topics: TopicBase,
    max_payload: usize,
    fhir: bool,
    commands: mpsc::UnboundedSender<Command>,
    measurements: mpsc::Sender<(String, Vec<u8>)>,
    delivered: broadcast::Sender<Delivered>,
    /// The link's state, to count measurements dropped before they reach the link.
    state: watch::Sender<LinkState>,
}

impl MqttSink {
    /// Appends an already-encoded payload for `bed`'s report topic; returns its outbox
    /// sequence number once it is durable.
    pub async fn publish_payload(
        &self,
        bed: &str,
        window: u64,
        payload: Vec<u8>,
    ) -> Result<u64, PublishError> {
        self.append(bed, window, TopicKind::Report, payload, None)
            .await
    }

    /// Appends `payload` to `bed`'s topic of `kind`; `closed` (when the window's last sample
    /// arrived) makes its PUBACK a [`Delivered`].
    async fn append(
        &self,
        bed: &str,
        window: u64,
        kind: TopicKind,
        payload: Vec<u8>,
        closed: Option<SystemTime>,
    ) -> Result<u64, PublishError> {
        let topic = self.topics.topic(bed, kind)?;
        if payload.len() > self.max_payload {
            tracing::error!(
                bed,
                window,
                size = payload.len(),
                max = self.max_payload,
                "report larger than mqtt.max_payload_bytes: not queued"
            );
            return Err(PublishError::PayloadTooLarge {
                bed: bed.to_string(),
                window,
                size: payload.len(),
                max: self.max_payload,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append {
                topic,
                payload,
                window: closed.map(|closed| Window {
                    bed: bed.to_string(),
                    index: window,
                    closed,
                }),
                reply,
            })
            .map_err(|_| PublishError::Closed)?;
        Ok(answer.await.map_err(|_| PublishError::Closed)??)
    }
}

impl Sink for MqttSink {
    async fn publish(&mut self, report: &WindowReport) -> Result<(), PublishError> {
        let now = SystemTime::now();
        let payload = ReportPayload::at(&self.identity, report, now);
        self.append(
            &report.bed,
            report.window_index,
            TopicKind::Report,
            payload.to_json()?,
            Some(window_closed_at(report, now)),
        )
        .await?;
        // The report is durable from here: what follows is extra, and its failure is logged
        // and counted, never the report's (it would be counted refused, yet delivered).
        if self.fhir {
            let resource = serde_json::to_vec(&super::fhir::diagnostic_report(&payload))
                .map_err(PublishError::from);
            let appended = match resource {
                Ok(resource) => {
                    self.append(
                        &report.bed,
                        report.window_index,
                        TopicKind::Fhir,
                        resource,
                        None,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = appended {
                tracing::warn!(
                    bed = %report.bed,
                    window = report.window_index,
                    error = %e,
                    "FHIR DiagnosticReport not queued; the report itself is"
                );
            }
        }
        // Measurements are best effort: dropped (and counted) when the link is busy.
        let queued = match (
            self.topics.topic(&report.bed, TopicKind::Measurements),
            payload.measurements_json(),
        ) {
            (Ok(topic), Ok(json)) => self.measurements.try_send((topic, json)).is_ok(),
            _ => false,
        };
        if !queued {
            self.state.send_modify(|s| s.measurements_dropped += 1);
        }
        Ok(())
    }

    fn acknowledgements(&self) -> Option<broadcast::Receiver<Delivered>> {
        Some(self.delivered.subscribe())
    }
}

/// A running MQTT publisher: the outbox thread and the link task.
pub struct MqttPublisher {
    sink: MqttSink,
    /// Set once, to the drain time, when a clean shutdown starts.
    shutdown: watch::Sender<Option<Duration>>,
    link_task: JoinHandle<()>,
    outbox_thread: std::thread::JoinHandle<()>,
    link: watch::Receiver<LinkState>,
    stats: watch::Receiver<OutboxStats>,
    delivered: broadcast::Sender<Delivered>,
}

/// Everything the link task owns.
struct Link {
    options: MqttOptions,
    status_topic: String,
    identity: Arc<Identity>,
    window: usize,
    measurements_qos: QoS,
    backoff: Backoff,
    queue: VecDeque<Item>,
    sent: usize,
    commands: mpsc::UnboundedSender<Command>,
    durable: mpsc::UnboundedReceiver<Durable>,
    measurements: mpsc::Receiver<(String, Vec<u8>)>,
    /// The drain time, once a clean shutdown has started.
    shutdown: watch::Receiver<Option<Duration>>,
    state: watch::Sender<LinkState>,
    delivered: broadcast::Sender<Delivered>,
    endpoint: String,
    /// The last connect failure logged at warn level (repeats are logged at debug).
    last_logged: Option<String>,
}

struct Item {
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    window: Option<Window>,
}

impl MqttPublisher {
    /// Validates the configuration, opens the outbox (returning what it recovered to the
    /// queue first) and starts connecting in the background.
    pub async fn start(cfg: &MqttConfig, identity: Identity) -> Result<MqttPublisher, MqttError> {
        cfg.validate(&identity.site, &identity.unit)
            .map_err(|(field, reason)| MqttError::Config { field, reason })?;
        let topics = TopicBase::new(&cfg.topic_prefix, &identity.site, &identity.unit)?;
        let status_topic = topics.topic(&identity.gateway, TopicKind::Status)?;
        // TLS and password files are read off the async runtime.
        let owned = cfg.clone();
        let mut options =
            tokio::task::spawn_blocking(move || connect_options(&owned, &owned.client_id))
                .await
                .map_err(|_| MqttError::Task("connect options"))??;
        let window = usize::from(cfg.inflight);
        // rumqttc's own window has room for status and QoS 1 measurements on top of reports.
        options.set_inflight(cfg.inflight.saturating_mul(2).saturating_add(16));
        options.set_request_channel_capacity(window * 2 + 64);
        options.set_last_will(LastWill::new(
            &status_topic,
            StatusPayload::last_will(&identity).to_json(),
            QoS::AtLeastOnce,
            true,
        ));
        let outbox_options = cfg.outbox_options();
        let (outbox, recovered) = tokio::task::spawn_blocking(move || Outbox::open(outbox_options))
            .await
            .map_err(|_| MqttError::Task("outbox open"))??;
        let (stats_tx, stats) = watch::channel(outbox.stats());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (durable_tx, durable) = mpsc::unbounded_channel();
        let outbox_thread = spawn_outbox_thread(outbox, command_rx, durable_tx, stats_tx)
            .map_err(|_| MqttError::Task("outbox"))?;
        // A record stored under a larger `max_payload_bytes` would fail the connection on every
        // attempt (rumqttc refuses to send it): it is dropped once, loudly, instead.
        let (recovered, oversize): (Vec<Record>, Vec<Record>) = recovered
            .into_iter()
            .partition(|r| r.payload.len() <= cfg.max_payload_bytes);
        for r in oversize {
            tracing::error!(seq = r.seq, topic = %r.topic, size = r.payload.len(), max = cfg.max_payload_bytes, "outbox: a stored report is larger than mqtt.max_payload_bytes; dropped");
            let _ = commands.send(Command::Ack(r.seq));
        }
        let (measurements_tx, measurements) = mpsc::channel(256);
        let (shutdown, shutdown_rx) = watch::channel(None);
        let (state, link) = watch::channel(LinkState::default());
        let (delivered, _) = broadcast::channel(DELIVERED_BACKLOG);
        let identity = Arc::new(identity);
        let link_state = Link {
            options,
            status_topic,
            identity: identity.clone(),
            window,
            measurements_qos: if cfg.measurements_qos == 1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            backoff: Backoff::new(
                Duration::from_millis(cfg.backoff_initial_ms),
                Duration::from_millis(cfg.backoff_max_ms),
            ),
            queue: recovered
                .into_iter()
                .map(|r| Item {
                    seq: r.seq,
                    topic: r.topic,
                    payload: r.payload,
                    window: None,
                })
                .collect(),
            sent: 0,
            commands: commands.clone(),
            durable,
            measurements,
            shutdown: shutdown_rx,
            state: state.clone(),
            delivered: delivered.clone(),
            endpoint: format!("{}:{}", cfg.host, cfg.port),
            last_logged: None,
        };
        let link_task = tokio::spawn(link_state.run());
        Ok(MqttPublisher {
            sink: MqttSink {
                identity,
                topics,
                max_payload: cfg.max_payload_bytes,
                fhir: cfg.fhir,
                commands,
                measurements: measurements_tx,
                delivered: delivered.clone(),
                state,
            },
            shutdown,
            link_task,
            outbox_thread,
            link,
            stats,
            delivered,
        })
    }

    /// A sink feeding this publisher.
    pub fn sink(&self) -> MqttSink {
        self.sink.clone()
    }

    /// The connection state, updated by the link task.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        self.link.clone()
    }

    /// Outbox counters, updated after every batch.
    pub fn outbox_stats(&self) -> watch::Receiver<OutboxStats> {
        self.stats.clone()
    }

    /// Every window report the broker acknowledges from now on, with when its window closed
    /// and when the PUBACK came (a listener more than 4096 behind misses the oldest).
    pub fn delivered(&self) -> broadcast::Receiver<Delivered> {
        self.delivered.subscribe()
    }

    /// Waits until connected, at most `timeout`; false on timeout.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut link = self.link.clone();
        tokio::time::timeout(timeout, link.wait_for(|s| s.connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Clean shutdown: publishes the retained `offline` status, waits up to `drain` for
    /// outstanding PUBACKs, sends DISCONNECT and stops the outbox (unsent reports stay in it
    /// for the next start).
    pub async fn shutdown(self, drain: Duration) -> Result<(), MqttError> {
        let _ = self.shutdown.send(Some(drain));
        // The link waits `drain` for acknowledgements; a link still running a second later
        // (a stuck connection) is stopped, so nothing updates the outbox after it stops.
        let abort = self.link_task.abort_handle();
        let link = tokio::time::timeout(drain + Duration::from_secs(1), self.link_task).await;
        if link.is_err() {
            abort.abort();
        }
        let _ = self.sink.commands.send(Command::Stop);
        let thread = self.outbox_thread;
        let joined = tokio::task::spawn_blocking(move || thread.join().is_ok())
            .await
            .unwrap_or(false);
        match (link, joined) {
            (Ok(Ok(())), true) => Ok(()),
            (Ok(Ok(())), false) => Err(MqttError::Task("outbox")),
            _ => Err(MqttError::Task("link")),
        }
    }

    /// Stops everything at once, as a crash would: no DISCONNECT (the broker sends the last
    /// will when it notices), nothing drained. The outbox keeps what was not acknowledged.
    pub async fn abort(self) {
        self.link_task.abort();
        let _ = self.link_task.await;
        let _ = self.sink.commands.send(Command::Stop);
        let thread = self.outbox_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Spawns the task that polls `eventloop` and forwards every event; it stops after the first
/// error (the link task makes a fresh client and event loop for the next connection).
fn spawn_poller(
    mut eventloop: EventLoop,
) -> (
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                break;
            }
        }
    });
    (task, rx)
}

/// Network options: TCP_NODELAY (a report is one small packet: without it, Nagle's algorithm
/// and the broker's delayed ACK add ~40 ms to every PUBACK round trip), 5 s connect timeout.
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(5);
    n
}

/// Says why a connection failed, naming the cause once.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

impl Link {
    async fn run(mut self) {
        let mut stopping = false;
        loop {
            if stopping || self.shutdown.borrow().is_some() {
                break;
            }
            let (client, mut eventloop) =
                AsyncClient::new(self.options.clone(), self.window * 2 + 64);
            eventloop.set_network_options(network_options());
            let (poller, events) = spawn_poller(eventloop);
            let (cause, stop) = self.connection(&client, events).await;
            poller.abort();
            stopping = stop;
            self.sent = 0;
            let was_connected = self.state.borrow().connected;
            self.state.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(cause.clone());
            });
            if stopping {
                break;
            }
            let delay = self.backoff.next_delay();
            if was_connected {
                tracing::warn!(broker = %self.endpoint, cause = %cause, pending = self.queue.len(), "MQTT connection lost; reconnecting");
            } else {
                tracing::debug!(broker = %self.endpoint, cause = %cause, retry_in_ms = delay.as_millis() as u64, "MQTT connect failed");
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.shutdown.changed() => { stopping = true; break; }
                    d = self.durable.recv() => match d {
                        Some(d) => self.on_durable(d),
                        None => { stopping = true; break; }
                    },
                    m = self.measurements.recv() => if m.is_some() {
                        self.state.send_modify(|s| s.measurements_dropped += 1);
                    },
                }
            }
        }
    }

    /// Runs one connection until it fails or shutdown completes; returns the cause and
    /// whether the publisher is stopping.
    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    ) -> (String, bool) {
        // Publishes handed to the client whose `Outgoing::Publish` has not been seen yet, in
        // order: `Some(seq)` for an outbox record, `None` for status and measurements.
        let mut fifo: VecDeque<Option<u64>> = VecDeque::new();
        let mut in_flight: HashMap<u16, Option<u64>> = HashMap::new();
        let mut connected = false;
        let mut stopping = false;
        let mut disconnecting = false;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut deadline = far;
        loop {
            if stopping
                && !disconnecting
                && (!connected || (in_flight.is_empty() && fifo.is_empty()))
            {
                if !connected {
                    return ("shut down while not connected".into(), true);
                }
                disconnecting = true;
                let _ = client.try_disconnect();
                deadline = deadline.min(Instant::now() + Duration::from_secs(2));
            }
            tokio::select! {
                event = events.recv() => match event {
                    None => return ("the MQTT event loop ended".into(), stopping),
                    Some(Err(e)) => {
                        let cause = format!("{}: {}", self.endpoint, describe(&e));
                        if self.last_logged.as_deref() != Some(cause.as_str()) && !connected {
                            tracing::warn!(broker = %self.endpoint, cause = %describe(&e), "MQTT connect failed (retrying with backoff)");
                            self.last_logged = Some(cause.clone());
                        }
                        return (cause, stopping);
                    }
                    Some(Ok(event)) => match event {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            connected = true;
                            self.backoff.reset();
                            self.last_logged = None;
                            self.state.send_modify(|s| {
                                s.connected = true;
                                s.connects += 1;
                                s.last_error = None;
                            });
                            tracing::info!(broker = %self.endpoint, queued = self.queue.len(), "MQTT connected");
                            let status = StatusPayload::online(&self.identity).to_json();
                            if client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, status).is_ok() {
                                fifo.push_back(None);
                            }
                            if !stopping {
                                self.fill(client, &mut fifo);
                            }
                        }
                        Event::Outgoing(Outgoing::Publish(pkid)) => {
                            let seq = fifo.pop_front().flatten();
                            if pkid != 0 {
                                in_flight.insert(pkid, seq);
                            }
                        }
                        Event::Incoming(Packet::PubAck(ack)) => {
                            if let Some(Some(seq)) = in_flight.remove(&ack.pkid) {
                                if let Ok(i) = self.queue.binary_search_by_key(&seq, |it| it.seq) {
                                    let item = self.queue.remove(i);
                                    if i < self.sent {
                                        self.sent -= 1;
                                    }
                                    if let Some(Item { window: Some(w), .. }) = item {
                                        // Nobody listening is not an error.
                                        let _ = self.delivered.send(Delivered {
                                            bed: w.bed,
                                            window: w.index,
                                            window_closed: w.closed,
                                            acknowledged: SystemTime::now(),
                                        });
                                    }
                                }
                                let _ = self.commands.send(Command::Ack(seq));
                            }
                            if !stopping {
                                self.fill(client, &mut fifo);
                            }
                        }
                        // `Outgoing::AwaitAck` (a packet id collision) is not popped: rumqttc
                        // emits `Outgoing::Publish` for the same request once the id is free,
                        // and reads no new request meanwhile, so the order still holds.
                        Event::Outgoing(Outgoing::Disconnect) => {
                            return ("disconnected (shutdown)".into(), true);
                        }
                        _ => {}
                    },
                },
                d = self.durable.recv() => match d {
                    Some(d) => {
                        self.on_durable(d);
                        if connected && !stopping {
                            self.fill(client, &mut fifo);
                        }
                    }
                    None => stopping = true,
                },
                m = self.measurements.recv() => if let Some((topic, payload)) = m {
                    if connected && !stopping && client.try_publish(topic, self.measurements_qos, false, payload).is_ok() {
                        fifo.push_back(None);
                    } else {
                        self.state.send_modify(|s| s.measurements_dropped += 1);
                    }
                },
                _ = self.shutdown.changed(), if !stopping => {
                    stopping = true;
                    deadline = Instant::now() + self.shutdown.borrow().unwrap_or_default();
                    if connected {
                        let status = StatusPayload::shutdown(&self.identity).to_json();
                        if client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, status).is_ok() {
                            fifo.push_back(None);
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return ("shutdown: outstanding acknowledgements not received in time".into(), true);
                }
            }
        }
    }

    fn on_durable(&mut self, d: Durable) {
        match d {
            Durable::Appended(record, window) => self.queue.push_back(Item {
                seq: record.seq,
                topic: record.topic,
                payload: record.payload,
                window,
            }),
            Durable::Dropped(seqs) => {
                for seq in seqs {
                    if let Ok(i) = self.queue.binary_search_by_key(&seq, |it| it.seq) {
                        self.queue.remove(i);
                        if i < self.sent {
                            self.sent -= 1;
                        }
                    }
                }
            }
        }
    }

    /// Hands queued records to the client, in order, up to the in-flight window.
    fn fill(&mut self, client: &AsyncClient, fifo: &mut VecDeque<Option<u64>>) {
        while self.sent < self.window && self.sent < self.queue.len() {
            let item = &self.queue[self.sent];
            if client
                .try_publish(&item.topic, QoS::AtLeastOnce, false, item.payload.clone())
                .is_err()
            {
                break;
            }
            fifo.push_back(Some(item.seq));
            self.sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let steps = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, step) in delays.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(
                *d >= step / 2 && *d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        assert!(
            delays[4..].windows(2).any(|w| w[0] != w[1]),
            "jitter varies the delays: {delays:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn plaintext_to_a_remote_broker_is_refused_and_tls_files_are_named() {
        let cfg = MqttConfig {
            host: "10.1.2.3".into(),
            ..MqttConfig::default()
        };
        let err = connect_options(&cfg, "gw").unwrap_err().to_string();
        assert!(err.contains("allow_insecure"), "{err}");
        let cfg = MqttConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..MqttConfig::default()
        };
        let err = connect_options(&cfg, "gw").unwrap_err().to_string();
        assert!(
            err.starts_with("`mqtt.ca_file` /nonexistent/ca.pem: "),
            "{err}"
        );
    }

    #[test]
    fn the_password_file_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret-pw\n").unwrap();
        let cfg = MqttConfig {
            username: Some("meit".into()),
            password_file: Some(path),
            ..MqttConfig::default()
        };
        let options = connect_options(&cfg, "gw").unwrap();
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("meit", "s3cret-pw")
        );
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
