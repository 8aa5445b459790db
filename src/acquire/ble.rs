//! The BLE source for the Polar H10 (feature `ble`): scan for the strap by name or address,
//! connect, start the PMD ECG stream, decode notifications with [`PmdDecoder`] and reconnect
//! with backoff when the strap goes away. Frame parsing lives in [`super::pmd`] and is tested
//! without a radio; this module is the transport only.

use std::time::Duration;

use btleplug::api::{
    Central, Characteristic, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::pmd::{
    PMD_CONTROL_POINT, PMD_DATA, PmdDecoder, START_ECG_130HZ, parse_control_response, strap_matches,
};
use super::{Decoded, SourceEvent, WireDecoder};

/// How the BLE source finds and keeps its strap.
#[derive(Debug, Clone, PartialEq)]
pub struct BleSettings {
    /// Advertised name (substring match, e.g. `Polar H10 1234ABCD`) or address of the strap;
    /// after the first connection only that strap's address ([`strap_matches`]).
    pub device: String,
    /// How long one scan looks for the strap.
    pub scan_timeout: Duration,
    /// Silence after which the link counts as lost.
    pub stall_timeout: Duration,
    /// First wait before retrying; doubles per failure.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl BleSettings {
    /// Defaults for `device`: 10 s scans, 3 s stall, 0.5-10 s backoff.
    pub fn new(device: impl Into<String>) -> Self {
        BleSettings {
            device: device.into(),
            scan_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Why a BLE session failed.
#[derive(Debug, thiserror::Error)]
pub enum BleError {
    /// The Bluetooth stack reported an error.
    #[error("bluetooth: {0}")]
    Stack(#[from] btleplug::Error),
    /// No Bluetooth adapter is present.
    #[error("no Bluetooth adapter found")]
    NoAdapter,
    /// The strap was not seen during a scan.
    #[error("no device matching {device:?} seen within {timeout:?}")]
    NotFound {
        /// Name or address searched for.
        device: String,
        /// Scan length.
        timeout: Duration,
    },
    /// The device lacks the PMD service characteristics (not a Polar PMD device).
    #[error("{device:?} has no PMD characteristic {uuid}")]
    MissingCharacteristic {
        /// The device.
        device: String,
        /// The missing characteristic.
        uuid: &'static str,
    },
    /// The strap refused to start ECG.
    #[error("ECG start refused with PMD status {status}")]
    StartRefused {
        /// PMD error code.
        status: u8,
    },
    /// The strap stopped sending.
    #[error("no ECG data for {0:?}")]
    Stalled(Duration),
    /// The event receiver went away.
    #[error("event receiver closed")]
    Closed,
}

/// Runs the source until the event receiver is dropped; fails only when there is no adapter.
pub async fn run(settings: BleSettings, events: mpsc::Sender<SourceEvent>) -> Result<(), BleError> {
    let manager = Manager::new().await?;
    let adapter = manager
        .adapters()
        .await?
        .into_iter()
        .next()
        .ok_or(BleError::NoAdapter)?;
    let mut backoff = settings.backoff_min;
    // The address of the first strap connected: every reconnect goes to it alone.
    let mut pinned = None;
    loop {
        match session(&adapter, &settings, &mut pinned, &events).await {
            Err(BleError::Closed) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, device = %settings.device, "BLE session ended; retrying");
                let event = SourceEvent::Disconnected {
                    reason: e.to_string(),
                };
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
            Ok(()) => {
                backoff = settings.backoff_min;
                tracing::warn!(device = %settings.device, "BLE strap disconnected; reconnecting");
                let event = SourceEvent::Disconnected {
                    reason: "the strap disconnected".into(),
                };
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

async fn find(
    adapter: &Adapter,
    settings: &BleSettings,
    pinned: Option<&str>,
) -> Result<Peripheral, BleError> {
    adapter.start_scan(ScanFilter::default()).await?;
    let deadline = tokio::time::Instant::now() + settings.scan_timeout;
    let found = 'scan: loop {
        for p in adapter.peripherals().await? {
            let name = p
                .properties()
                .await?
                .and_then(|props| props.local_name)
                .unwrap_or_default();
            let address = p.address().to_string();
            if strap_matches(&settings.device, pinned, &name, &address) {
                break 'scan Some(p);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _ = adapter.stop_scan().await;
    found.ok_or_else(|| BleError::NotFound {
        device: settings.device.clone(),
        timeout: settings.scan_timeout,
    })
}

fn characteristic(
    p: &Peripheral,
    device: &str,
    uuid: &'static str,
) -> Result<Characteristic, BleError> {
    p.characteristics()
        .into_iter()
        .find(|c| c.uuid.to_string().eq_ignore_ascii_case(uuid))
        .ok_or_else(|| BleError::MissingCharacteristic {
            device: device.to_string(),
            uuid,
        })
}

async fn session(
    adapter: &Adapter,
    settings: &BleSettings,
    pinned: &mut Option<String>,
    events: &mpsc::Sender<SourceEvent>,
) -> Result<(), BleError> {
    let strap = find(adapter, settings, pinned.as_deref()).await?;
    strap.connect().await?;
    if pinned.is_none() {
        let address = strap.address().to_string();
        tracing::info!(device = %settings.device, %address, "BLE strap connected; reconnects go to this strap only");
        *pinned = Some(address);
    }
    let result = stream(&strap, settings, events).await;
    let _ = strap.disconnect().await;
    result
}

async fn stream(
    strap: &Peripheral,
    settings: &BleSettings,
    events: &mpsc::Sender<SourceEvent>,
) -> Result<(), BleError> {
    strap.discover_services().await?;
    let control = characteristic(strap, &settings.device, PMD_CONTROL_POINT)?;
    let data = characteristic(strap, &settings.device, PMD_DATA)?;
    strap.subscribe(&control).await?;
    strap.subscribe(&data).await?;
    let mut notifications = strap.notifications().await?;
    strap
        .write(&control, &START_ECG_130HZ, WriteType::WithResponse)
        .await?;
    let mut decoder = PmdDecoder::default();
    let mut decoded = Vec::new();
    loop {
        let note = tokio::time::timeout(settings.stall_timeout, notifications.next())
            .await
            .map_err(|_| BleError::Stalled(settings.stall_timeout))?;
        // The stream ends when the strap disconnects.
        let Some(note) = note else { return Ok(()) };
        if note.uuid == control.uuid {
            if let Ok(r) = parse_control_response(&note.value)
                && r.status != 0
            {
                return Err(BleError::StartRefused { status: r.status });
            }
            continue;
        }
        if note.uuid != data.uuid {
            continue;
        }
        decoded.clear();
        decoder.feed(&note.value, &mut decoded);
        for item in decoded.drain(..) {
            let event = match item {
                Decoded::Device(info) => SourceEvent::Connected(info),
                Decoded::Block(b) => SourceEvent::Block(b),
                Decoded::Rejected(reason) => {
                    tracing::debug!(%reason, "PMD frame rejected");
                    continue;
                }
                Decoded::Status(_) | Decoded::Ack(_) | Decoded::Gap(_) => continue,
            };
            events.send(event).await.map_err(|_| BleError::Closed)?;
        }
    }
}
