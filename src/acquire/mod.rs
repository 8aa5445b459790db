//! Acquisition: sources that turn bytes from ECG hardware (serial, BLE) or files (replay)
//! into [`SampleBlock`](crate::ecg::SampleBlock)s with device timestamps, lead set and flags.
//!
//! Everything downstream is source-agnostic. The serial, BLE and replay sources and the
//! device simulator land with the acquisition issue.
