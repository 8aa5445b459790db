//! The meit device wire protocol, shared by acquisition firmware (on the MCU) and the daemon.
//!
//! `no_std` and allocation-free so that the same code runs in firmware. The framing and frame
//! types land with the acquisition issue.
#![no_std]
