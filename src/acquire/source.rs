//! One entry point from a `[[source]]` table to a running source: [`start`] returns a
//! [`SourceHandle`] whose events arrive on the given channel, whatever the kind. A
//! `simulated` source runs the device simulator on a pty and reads it through the real serial
//! path, so the demo exercises the same code as a bedside device.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::replay::{self, ReplayError, ReplaySettings};
use super::serial::{PortSelector, SerialError, SerialSettings, SerialSource};
use super::signal::{PeriodicPqrst, PqrstSettings, Rhythm};
use super::simulator::{Device, DeviceSettings, run_on_pty};
use super::{LinkStats, SourceEvent};
use crate::config::{SerialProtocol, SourceConfig};
use crate::ecg::LeadSet;

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The serial source could not start.
    #[error("source {bed:?}: {source}")]
    Serial {
        /// The bed.
        bed: String,
        /// Why.
        source: SerialError,
    },
    /// The replay file could not be loaded.
    #[error("source {bed:?}: {source}")]
    Replay {
        /// The bed.
        bed: String,
        /// Why.
        source: ReplayError,
    },
    /// A setting is not usable.
    #[error("source {bed:?}: {reason}")]
    Invalid {
        /// The bed.
        bed: String,
        /// What is wrong.
        reason: String,
    },
    /// The kind is not available in this build.
    #[error("source {bed:?}: {reason}")]
    Unavailable {
        /// The bed.
        bed: String,
        /// What is missing.
        reason: String,
    },
}

/// A running source. Dropping it stops the source.
pub struct SourceHandle {
    serial: Option<SerialSource>,
    simulator: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SourceHandle {
    /// Link counters of a serial or simulated source (zero for other kinds).
    pub fn stats(&self) -> LinkStats {
        self.serial
            .as_ref()
            .map(SerialSource::stats)
            .unwrap_or_default()
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        drop(self.serial.take());
        if let Some((stop, thread)) = self.simulator.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the source a `[[source]]` table describes. Call from inside a tokio runtime.
pub fn start(
    config: &SourceConfig,
    events: mpsc::Sender<SourceEvent>,
) -> Result<SourceHandle, SourceError> {
    let bed = config.bed().to_string();
    let mut handle = SourceHandle {
        serial: None,
        simulator: None,
        task: None,
    };
    match config {
        SourceConfig::Serial { .. } => {
            let settings =
                SerialSettings::from_config(config).ok_or_else(|| SourceError::Invalid {
                    bed: bed.clone(),
                    reason: "needs `path` or a valid `usb`".into(),
                })?;
            handle.serial = Some(
                SerialSource::spawn(settings, events)
                    .map_err(|source| SourceError::Serial { bed, source })?,
            );
        }
        SourceConfig::Simulated {
            condition,
            sample_rate_hz,
            ..
        } => {
            let rhythm = Rhythm::from_condition(condition).ok_or_else(|| SourceError::Invalid {
                bed: bed.clone(),
                reason: format!("condition {condition:?}: allowed normal, af"),
            })?;
            let generator = PeriodicPqrst::new(PqrstSettings {
                sample_rate_hz: *sample_rate_hz,
                leads: LeadSet::standard_12(),
                heart_rate_bpm: 72.0,
                rhythm,
                noise_uv: 10.0,
                seed: 1,
            });
            let mut device = Device::new(Box::new(generator), DeviceSettings::default());
            let link = std::env::temp_dir().join(format!("meit-sim-{bed}"));
            let stop = Arc::new(AtomicBool::new(false));
            let (l, s) = (link.clone(), Arc::clone(&stop));
            let thread = std::thread::Builder::new()
                .name("meit-simulator".into())
                .spawn(move || {
                    if let Err(e) = run_on_pty(&mut device, &l, &s, |_| {}) {
                        tracing::error!(error = %e, "device simulator failed");
                    }
                })
                .map_err(|e| SourceError::Serial {
                    bed: bed.clone(),
                    source: SerialError::Thread(e),
                })?;
            handle.simulator = Some((stop, thread));
            // The serial source retries until the simulator has published its pty.
            let settings = SerialSettings::new(
                PortSelector::Path(PathBuf::from(&link)),
                SerialProtocol::FirmwareBridge,
            );
            handle.serial = Some(
                SerialSource::spawn(settings, events)
                    .map_err(|source| SourceError::Serial { bed, source })?,
            );
        }
        SourceConfig::Replay { file, realtime, .. } => {
            let recording =
                replay::load(file, None).map_err(|source| SourceError::Replay { bed, source })?;
            let settings = ReplaySettings {
                block_frames: (recording.sample_rate_hz / 10.0).round().max(1.0) as usize,
                realtime: *realtime,
            };
            handle.task = Some(tokio::spawn(async move {
                replay::stream(&recording, settings, &events).await;
            }));
        }
        SourceConfig::Ble { device, .. } => {
            #[cfg(feature = "ble")]
            {
                let settings = super::ble::BleSettings::new(device.clone());
                handle.task = Some(tokio::spawn(async move {
                    if let Err(e) = super::ble::run(settings, events).await {
                        tracing::error!(error = %e, "BLE source stopped");
                    }
                }));
            }
            #[cfg(not(feature = "ble"))]
            {
                let _ = (device, events);
                return Err(SourceError::Unavailable {
                    bed,
                    reason: "BLE sources need a build with `--features ble`".into(),
                });
            }
        }
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_simulated_source_streams_through_the_serial_path() {
        let config = SourceConfig::Simulated {
            bed: format!("test-{}", std::process::id()),
            condition: "normal".into(),
            sample_rate_hz: 500.0,
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let handle = start(&config, tx).unwrap();
        let mut blocks = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while blocks < 20 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(SourceEvent::Block(b))) => {
                    assert_eq!(b.leads.len(), 12);
                    blocks += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert_eq!(blocks, 20);
        assert!(handle.stats().connects >= 1);
    }

    #[test]
    fn an_unknown_condition_is_a_named_error() {
        let config = SourceConfig::Simulated {
            bed: "b".into(),
            condition: "torsades".into(),
            sample_rate_hz: 500.0,
        };
        let (tx, _rx) = mpsc::channel(1);
        let err = start(&config, tx).err().unwrap().to_string();
        assert!(
            err.contains("torsades") && err.contains("normal, af"),
            "{err}"
        );
    }
}
