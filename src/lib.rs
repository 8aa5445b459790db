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
pub mod pipeline;
pub mod publish;
pub mod report;
pub mod synth;
pub mod telemetry;
pub mod wfdb;
