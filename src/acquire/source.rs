//! One entry point from a `[[source]]` table to a running source: [`start`] returns a
//! [`SourceHandle`] whose events arrive on the given channel, whatever the kind. A
//! `simulated` source runs the device simulator, streaming the ECG synthesizer, on a pty and
//! reads it through the real serial path, so the demo exercises the same code as a bedside
//! device.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::replay::{self, ReplayError, ReplaySettings};
use super::serial::{PortSelector, SerialError, SerialSettings, SerialSource};
use super::signal::{
    DEFAULT_NOISE, ScenarioPart, ScenarioSignal, SignalError, SignalGenerator, SynthSettings,
    SynthSignal,
};
use super::simulator::{Device, DeviceSettings, run_on_pty};
use super::{LinkStats, SourceEvent};
use crate::acquire::config::{ScenarioStep, SerialProtocol, SourceConfig};
use crate::ecg::LeadSet;
use crate::synth::ConditionSet;

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
    /// The simulated signal cannot be built from the settings.
    #[error("source {bed:?}: {source}")]
    Signal {
        /// The bed.
        bed: String,
        /// Why.
        source: SignalError,
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
            heart_rate_bpm,
            noise,
            seed,
            leads,
            electrodes_off,
            scenario,
            ..
        } => {
            let invalid = |source: SignalError| SourceError::Signal {
                bed: bed.clone(),
                source,
            };
            let settings = SynthSettings {
                sample_rate_hz: *sample_rate_hz,
                conditions: ConditionSet::parse_list(condition).map_err(|e| invalid(e.into()))?,
                heart_rate_bpm: *heart_rate_bpm,
                noise: noise.unwrap_or(DEFAULT_NOISE),
                leads: leads.clone().map_or_else(LeadSet::standard_12, LeadSet),
                seed: seed.unwrap_or_else(|| seed_of(&bed)),
            };
            let (generator, device_off): (Box<dyn SignalGenerator>, u16) = match scenario {
                None => (
                    Box::new(SynthSignal::new(&settings).map_err(invalid)?),
                    electrode_bits(electrodes_off),
                ),
                Some(steps) => {
                    let parts = scenario_parts(&settings, electrodes_off, steps)
                        .map_err(|e| invalid(e.into()))?;
                    (Box::new(ScenarioSignal::new(&parts).map_err(invalid)?), 0)
                }
            };
            let device_settings = DeviceSettings {
                electrodes_off: device_off,
                ..DeviceSettings::default()
            };
            let mut device = Device::new(generator, device_settings);
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
        SourceConfig::Replay {
            file,
            realtime,
            sample_rate_hz,
            ..
        } => {
            // Reading and parsing a long record takes a while: on the daemon's multi-threaded
            // runtime the other tasks of this worker (beds, publisher) move elsewhere meanwhile.
            let load = || replay::load(file, *sample_rate_hz);
            let loaded = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(load),
                _ => load(),
            };
            let recording = loaded.map_err(|source| SourceError::Replay { bed, source })?;
            return Ok(start_recording(recording, *realtime, events));
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

/// Streams a recording already in memory as a replay source would (blocks of 100 ms, at
/// real-time pace or as fast as the channel takes them). Call from inside a tokio runtime.
pub fn start_recording(
    recording: crate::ecg::Recording,
    realtime: bool,
    events: mpsc::Sender<SourceEvent>,
) -> SourceHandle {
    start_recording_after(
        Arc::new(recording),
        realtime,
        std::time::Duration::ZERO,
        events,
    )
}

/// [`start_recording`] whose first block is sent `delay` from now (a device switched on
/// later: beds whose windows do not all end at the same instant). The recording is shared:
/// many beds may stream one recording without a copy each.
pub fn start_recording_after(
    recording: Arc<crate::ecg::Recording>,
    realtime: bool,
    delay: std::time::Duration,
    events: mpsc::Sender<SourceEvent>,
) -> SourceHandle {
    let settings = ReplaySettings {
        block_frames: (recording.sample_rate_hz / 10.0).round().max(1.0) as usize,
        realtime,
    };
    SourceHandle {
        serial: None,
        simulator: None,
        task: Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = replay::stream(&recording, settings, &events).await {
                tracing::error!(error = %e, "replay stopped");
            }
        })),
    }
}

/// The firmware-bridge lead-off bits of electrodes named in a configuration (names already
/// checked by the configuration; an unknown one sets no bit).
fn electrode_bits(names: &[String]) -> u16 {
    names
        .iter()
        .filter_map(|e| super::simulator::electrode_bit(e))
        .fold(0, |bits, b| bits | b)
}

/// A scenario's steps as signals: each step is the source's `base` signal with the step's
/// conditions, and its heart rate and noise where it sets them; step `j` draws from seed
/// `base.seed + j`. A step without `electrodes_off` has the source's.
pub fn scenario_parts(
    base: &SynthSettings,
    electrodes_off: &[String],
    steps: &[ScenarioStep],
) -> Result<Vec<ScenarioPart>, crate::synth::SynthError> {
    steps
        .iter()
        .enumerate()
        .map(|(j, step)| {
            Ok(ScenarioPart {
                settings: SynthSettings {
                    conditions: ConditionSet::parse_list(&step.condition)?,
                    heart_rate_bpm: step.heart_rate_bpm.or(base.heart_rate_bpm),
                    noise: step.noise.unwrap_or(base.noise),
                    seed: base.seed.wrapping_add(j as u64),
                    ..base.clone()
                },
                seconds: step.seconds,
                electrodes_off: electrode_bits(
                    step.electrodes_off.as_deref().unwrap_or(electrodes_off),
                ),
            })
        })
        .collect()
}

/// The seed of a simulated bed without one: a hash of its name (FNV-1a), so that each bed
/// streams its own patient and every run streams the same one.
fn seed_of(bed: &str) -> u64 {
    bed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::Lead;
    use std::time::Duration;

    fn simulated(bed: String, condition: &str) -> SourceConfig {
        SourceConfig::Simulated {
            bed,
            condition: condition.into(),
            sample_rate_hz: 500.0,
            heart_rate_bpm: Some(66.0),
            noise: Some(0.2),
            seed: Some(7),
            leads: None,
            electrodes_off: Vec::new(),
            scenario: None,
            window_seconds: None,
            hop_seconds: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_simulated_source_streams_the_synthesizer_through_the_serial_path() {
        let config = simulated(format!("test-{}", std::process::id()), "af+pvc");
        let (tx, mut rx) = mpsc::channel(1024);
        let handle = start(&config, tx).unwrap();
        let mut blocks = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while blocks.len() < 20 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(SourceEvent::Block(b))) => blocks.push(b),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert_eq!(blocks.len(), 20);
        assert!(handle.stats().connects >= 1);
        // The samples are the configured synthesizer's, quantised by the device (0.5 uV).
        let mut reference = SynthSignal::new(&SynthSettings {
            conditions: ConditionSet::parse_list("af+pvc").unwrap(),
            heart_rate_bpm: Some(66.0),
            noise: 0.2,
            seed: 7,
            ..SynthSettings::default()
        })
        .unwrap();
        let mut frame = [0.0f32; 12];
        for b in &blocks {
            assert_eq!(b.leads, LeadSet::standard_12());
            for got in b.samples_uv.chunks_exact(12) {
                reference.next_frame(&mut frame);
                for (g, want) in got.iter().zip(frame) {
                    assert!((g - want).abs() <= 0.25 + 1e-3, "{got:?} vs {frame:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_replay_source_streams_the_standard_leads_of_a_wfdb_record() {
        let dir = tempfile::tempdir().unwrap();
        let names = Lead::STANDARD_12.map(Lead::name);
        let written = super::super::replay::tests::write_wfdb(dir.path(), &names);
        let config = SourceConfig::Replay {
            bed: "b".into(),
            file: dir.path().join("r.hea"),
            realtime: false,
            sample_rate_hz: None,
            window_seconds: None,
            hop_seconds: None,
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let _handle = start(&config, tx).unwrap();
        let Some(SourceEvent::Connected(info)) = rx.recv().await else {
            panic!("no Connected event first")
        };
        assert_eq!(info.leads, LeadSet::standard_12());
        assert_eq!(info.sample_rate_hz, written.sample_rate_hz);
        let mut frames = 0;
        while let Some(SourceEvent::Block(b)) = rx.recv().await {
            frames += b.frames();
        }
        assert_eq!(frames, written.len());
    }

    #[test]
    fn an_unknown_condition_is_a_named_error_listing_the_known_ones() {
        let (tx, _rx) = mpsc::channel(1);
        let err = start(&simulated("b".into(), "torsades"), tx)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("torsades") && err.contains("normal, brady, tachy"),
            "{err}"
        );
    }
}
