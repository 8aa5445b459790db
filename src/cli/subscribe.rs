//! `meit subscribe`: what a nursing station sees. Subscribes to the report and status topics,
//! drops redelivered duplicates by report id, and prints one line per report (bed, time,
//! quality, text or why none, flags) or, with `--json`, the raw payload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meit::config::{Config, MqttConfig};
use meit::publish::subscribe::{Dedup, Subscription, format_line, report_id, terminal_safe};
use tokio::io::AsyncWriteExt;

/// Options of `meit subscribe`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubscribeArgs {
    /// Broker as `mqtt://HOST[:PORT]` (plaintext, default port 1883) or `mqtts://HOST[:PORT]`
    /// (TLS, default 8883: needs `mqtt.ca_file` from --config). Default: the config's broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Topic filter; repeat for several. Default: every report and status under the config's
    /// topic prefix (`<prefix>/v1/+/+/+/report` and `.../status`).
    #[arg(long)]
    pub topic: Vec<String>,
    /// Print each payload as received, one per line (control characters, a payload's own line
    /// breaks included, escaped as `\uXXXX`).
    #[arg(long)]
    pub json: bool,
    /// Configuration file: broker, TLS files, credentials (env MEIT_MQTT_USERNAME and
    /// MEIT_MQTT_PASSWORD apply) and topic prefix.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Stop after this many reports; runs until Ctrl-C otherwise.
    #[arg(long)]
    pub count: Option<u64>,
    /// Allow plaintext to a broker that is not on loopback.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// Applies `mqtt://host:port` / `mqtts://host:port` to the broker settings.
fn apply_broker_url(mqtt: &mut MqttConfig, url: &str) -> anyhow::Result<()> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url));
    let (tls, default_port) = match scheme {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => anyhow::bail!("--broker {url:?}: scheme {other:?}; allowed: mqtt:// or mqtts://"),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("--broker {url:?}: port {port:?}; allowed: 1-65535"))?,
        ),
        _ => (rest, default_port),
    };
    anyhow::ensure!(!host.is_empty(), "--broker {url:?}: no host");
    if tls {
        anyhow::ensure!(
            mqtt.ca_file.is_some(),
            "--broker {url:?} is TLS: give --config with mqtt.ca_file (the CA that signed the broker's certificate)"
        );
    } else {
        mqtt.ca_file = None;
        mqtt.client_cert = None;
        mqtt.client_key = None;
    }
    mqtt.host = host.to_string();
    mqtt.port = port;
    Ok(())
}

/// Subscribes and prints until Ctrl-C or `--count` reports.
pub fn run(args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let mut c = Config::default();
            c.apply_env(|k| std::env::var(k).ok());
            c
        }
    };
    let mut mqtt = config.mqtt.clone();
    mqtt.allow_insecure |= args.allow_insecure;
    if let Some(url) = &args.broker {
        apply_broker_url(&mut mqtt, url)?;
    }
    let filters = if args.topic.is_empty() {
        ["report", "status"]
            .map(|kind| format!("{}/v1/+/+/+/{kind}", mqtt.topic_prefix))
            .to_vec()
    } else {
        args.topic.clone()
    };
    let client_id = format!("meit-subscribe-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut subscription = Subscription::start(&mqtt, &client_id, filters.clone(), false)?;
        eprintln!(
            "meit subscribe: {}:{} {}",
            mqtt.host,
            mqtt.port,
            filters.join(" ")
        );
        let mut dedup = Dedup::new(100_000);
        let mut reports = 0u64;
        // Tokio's stdout: a slow terminal or a full pipe must not block the one runtime thread
        // the subscription's event loop (and its keep-alives) runs on.
        let mut out = tokio::io::stdout();
        loop {
            let message = tokio::select! {
                m = subscription.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            };
            let id = report_id(&message.payload);
            if let Some(id) = &id
                && !dedup.first(id)
            {
                continue;
            }
            let line = if args.json {
                terminal_safe(&String::from_utf8_lossy(&message.payload))
            } else {
                format_line(&message)
            };
            let written = async {
                out.write_all(format!("{line}\n").as_bytes()).await?;
                out.flush().await
            };
            if written.await.is_err() {
                break; // stdout closed (e.g. piped into `head`)
            }
            if id.is_some() {
                reports += 1;
                if args.count.is_some_and(|n| reports >= n) {
                    break;
                }
            }
        }
        subscription.stop();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_set_host_port_and_check_tls() {
        let mut m = MqttConfig::default();
        apply_broker_url(&mut m, "mqtt://10.0.0.5:1884").unwrap();
        assert_eq!((m.host.as_str(), m.port), ("10.0.0.5", 1884));
        apply_broker_url(&mut m, "localhost").unwrap();
        assert_eq!((m.host.as_str(), m.port), ("localhost", 1883));
        let err = apply_broker_url(&mut m, "mqtts://broker:8883").unwrap_err();
        assert!(err.to_string().contains("mqtt.ca_file"), "{err}");
        m.ca_file = Some("ca.pem".into());
        apply_broker_url(&mut m, "mqtts://broker").unwrap();
        assert_eq!(m.port, 8883);
        assert!(apply_broker_url(&mut m, "http://x").is_err());
        assert!(apply_broker_url(&mut m, "mqtt://x:0").is_err());
    }
}
