//! Acquisition: sources that turn bytes from ECG hardware (serial, BLE) or files (replay)
//! into [`SampleBlock`]s with device timestamps, lead set and flags.
//!
//! Every wire format is a [`WireDecoder`]: bytes in, [`Decoded`] items out (sample blocks,
//! device identity, status, sequence gaps and rejected frames). The decoders never panic on
//! any input; they resynchronise and count what they reject. Sources ([`serial`], replay, BLE)
//! drive a decoder and deliver [`SourceEvent`]s, so everything downstream is source-agnostic.

/// Device sample rates meit takes from any source (a serial device's setting, a replayed
/// file's rate), Hz: monitors' 125 Hz to research amplifiers' 32 kHz. Outside it a 10 s window
/// would need gigabytes (or hold under ten samples).
pub const DEVICE_RATE_RANGE_HZ: std::ops::RangeInclusive<f64> = 1.0..=32_000.0;

#[cfg(feature = "ble")]
pub mod ble;
pub mod bridge;
pub mod config;
pub mod cyton;
pub mod openview;
pub mod pmd;
pub mod replay;
pub mod serial;
pub mod signal;
pub mod simulator;
pub mod source;

use crate::ecg::{LeadSet, SampleBlock};

/// Identity and stream format a device announced (or a decoder knows from its protocol).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// Protocol name, e.g. `firmware-bridge/1`, `openbci-cyton`.
    pub protocol: String,
    /// Device serial number, when the protocol carries one.
    pub serial: String,
    /// Firmware version, when the protocol carries one.
    pub firmware_version: String,
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Leads in channel order.
    pub leads: LeadSet,
    /// Microvolts per ADC count.
    pub uv_per_count: f64,
}

/// Device status beyond the samples themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Lead-off bits per electrode (firmware-bridge layout: RA, LA, LL, RL, V1..V6).
    pub electrodes_off: u16,
    /// Battery charge in percent, if known.
    pub battery_percent: Option<u8>,
    /// Device error bits (firmware-bridge layout).
    pub errors: u16,
}

/// Why a decoder threw bytes away. One value per rejected frame or resync run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameRejected {
    /// A firmware-bridge frame failed to decode.
    #[error("firmware-bridge: {0}")]
    Bridge(firmware_bridge::DecodeError),
    /// Samples arrived before the device said hello (format unknown).
    #[error("samples before hello: format unknown, block dropped")]
    SamplesBeforeHello,
    /// A block's lead count differs from the announced lead set.
    #[error("block has {got} leads, device announced {announced}")]
    LeadCountMismatch {
        /// Leads in the block.
        got: usize,
        /// Leads in the hello.
        announced: usize,
    },
    /// Bytes skipped while searching for the next packet header.
    #[error("{protocol}: skipped {bytes} bytes to resynchronise")]
    Resync {
        /// Protocol name.
        protocol: &'static str,
        /// Bytes skipped.
        bytes: usize,
    },
    /// A block that repeats the last one (same sequence number and device time): delivered
    /// again, it would look like time going backwards and cost the window being built.
    #[error("{protocol}: block {sequence} repeated, dropped")]
    Repeated {
        /// Protocol name.
        protocol: &'static str,
        /// The repeated sequence number, as the device sent it.
        sequence: u64,
    },
    /// A packet whose length field or layout is impossible.
    #[error("{protocol}: malformed packet: {reason}")]
    Malformed {
        /// Protocol name.
        protocol: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One item a wire decoder produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Samples, scaled to microvolts.
    Block(SampleBlock),
    /// The device announced itself.
    Device(DeviceInfo),
    /// The device reported its status.
    Status(DeviceStatus),
    /// The device acknowledged a command.
    Ack(firmware_bridge::Ack),
    /// Blocks are missing between the previous block and the next one.
    Gap(Gap),
    /// Bytes were rejected (corruption, resync, malformed packet).
    Rejected(FrameRejected),
}

impl Decoded {
    /// The sample block, if this item is one.
    pub fn block(&self) -> Option<&SampleBlock> {
        match self {
            Decoded::Block(b) => Some(b),
            _ => None,
        }
    }
}

/// Blocks missing in a stream, detected from sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Sequence number of the last block before the gap.
    pub after: u64,
    /// Number of blocks missing.
    pub missing: u64,
}

/// Bytes in, decoded items out. Implementations never panic and bound their memory.
pub trait WireDecoder: Send {
    /// Feeds received bytes; appends whatever became complete to `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>);
    /// Forgets partial packets and sequence history (after a reconnect).
    fn reset(&mut self);
}

/// What a header scanner decided about the bytes at the front of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Too few bytes to decide; wait for more.
    NeedMore,
    /// No packet starts here: skip one byte.
    Skip,
    /// A complete packet of this many bytes starts here.
    Packet(usize),
}

/// A bounded receive buffer for header/footer packet formats (Cyton, OpenView): finds packets
/// with a scanner, skips bytes that start none and reports each skipped run once.
#[derive(Debug, Clone, Default)]
pub(crate) struct PacketBuffer {
    buf: Vec<u8>,
    skipped: usize,
}

impl PacketBuffer {
    /// Appends `bytes`, then hands every complete packet to `on_packet`.
    pub(crate) fn feed(
        &mut self,
        protocol: &'static str,
        bytes: &[u8],
        out: &mut Vec<Decoded>,
        scan: impl Fn(&[u8]) -> Scan,
        mut on_packet: impl FnMut(&[u8], &mut Vec<Decoded>),
    ) {
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        while pos < self.buf.len() {
            match scan(&self.buf[pos..]) {
                Scan::NeedMore => break,
                Scan::Skip => {
                    self.skipped += 1;
                    pos += 1;
                }
                Scan::Packet(n) => {
                    self.flush_skipped(protocol, out);
                    let end = (pos + n.max(1)).min(self.buf.len());
                    on_packet(&self.buf[pos..end], out);
                    pos = end;
                }
            }
        }
        self.buf.drain(..pos);
    }

    fn flush_skipped(&mut self, protocol: &'static str, out: &mut Vec<Decoded>) {
        if self.skipped > 0 {
            out.push(Decoded::Rejected(FrameRejected::Resync {
                protocol,
                bytes: std::mem::take(&mut self.skipped),
            }));
        }
    }

    /// Drops buffered bytes and the skip count.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.skipped = 0;
    }
}

/// What a source tells the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// The link is up and the device identified itself.
    Connected(DeviceInfo),
    /// Samples.
    Block(SampleBlock),
    /// Device status.
    Status(DeviceStatus),
    /// Blocks were lost.
    Gap(Gap),
    /// The link went down; the source retries on its own.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// No device is connected yet and the source keeps trying (sent when the reason changes),
    /// e.g. the port is missing or what answers is not a device speaking the protocol.
    Waiting {
        /// Why the last attempt failed.
        reason: String,
    },
}

/// Counters a source keeps for its link; cheap to copy into telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes received.
    pub bytes: u64,
    /// Sample blocks delivered.
    pub blocks: u64,
    /// Frames or byte runs rejected.
    pub rejected: u64,
    /// Gaps detected.
    pub gaps: u64,
    /// Blocks missing in those gaps.
    pub blocks_missing: u64,
    /// Successful (re)connections.
    pub connects: u64,
}

impl LinkStats {
    /// Counts one decoded item.
    pub fn count(&mut self, item: &Decoded) {
        match item {
            Decoded::Block(_) => self.blocks += 1,
            Decoded::Rejected(_) => self.rejected += 1,
            Decoded::Gap(g) => {
                self.gaps += 1;
                self.blocks_missing += g.missing;
            }
            Decoded::Device(_) | Decoded::Status(_) | Decoded::Ack(_) => {}
        }
    }
}

/// Widens a wrapping device sequence counter of `bits` bits to a monotonic `u64` and reports
/// gaps. A counter that jumps backwards is treated as a device restart (no gap), unless the
/// device cannot restart mid-stream ([`SequenceTracker::without_restarts`]).
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    bits: u32,
    last_raw: Option<u64>,
    widened: u64,
    restarts: bool,
}

impl SequenceTracker {
    /// A tracker for a counter of `bits` bits (1..=64).
    pub fn new(bits: u32) -> Self {
        SequenceTracker {
            bits: bits.clamp(1, 64),
            last_raw: None,
            widened: 0,
            restarts: true,
        }
    }

    /// A tracker for a counter that cannot restart without the host knowing (a device that
    /// restarts only on the host's start command, which resets the tracker): every step is
    /// forward, so more than half the range is a loss, not a restart, and the same value again
    /// is a whole cycle lost. The size of such a loss is a lower bound (whole cycles more may
    /// have gone); it is reported as a gap, so the window being built is not spliced over it.
    pub fn without_restarts(bits: u32) -> Self {
        SequenceTracker {
            restarts: false,
            ..Self::new(bits)
        }
    }

    /// Forgets history: the next value starts a new stream.
    pub fn reset(&mut self) {
        self.last_raw = None;
    }

    /// Observes the next raw counter value; returns the widened sequence and any gap before it.
    pub fn observe(&mut self, raw: u64) -> (u64, Option<Gap>) {
        let mask = if self.bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        };
        let raw = raw & mask;
        let Some(last) = self.last_raw.replace(raw) else {
            self.widened = raw;
            return (raw, None);
        };
        let mut delta = raw.wrapping_sub(last) & mask;
        // More than half the counter range forward is really a step backwards: a restart.
        if self.restarts && (delta == 0 || delta > mask / 2) {
            self.widened = self.widened.wrapping_add(1);
            return (self.widened, None);
        }
        if delta == 0 {
            delta = mask.saturating_add(1);
        }
        let after = self.widened;
        self.widened = self.widened.wrapping_add(delta);
        let gap = (delta > 1).then_some(Gap {
            after,
            missing: delta - 1,
        });
        (self.widened, gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_tracker_widens_wraps_and_reports_gaps() {
        let mut t = SequenceTracker::new(8);
        assert_eq!(t.observe(254), (254, None));
        assert_eq!(t.observe(255), (255, None));
        assert_eq!(t.observe(0), (256, None));
        assert_eq!(
            t.observe(3),
            (
                259,
                Some(Gap {
                    after: 256,
                    missing: 2
                })
            )
        );
        t.reset();
        assert_eq!(t.observe(10), (10, None));
    }

    #[test]
    fn a_counter_that_cannot_restart_reports_a_long_loss_as_a_gap() {
        let mut t = SequenceTracker::without_restarts(8);
        for raw in 0..3 {
            t.observe(raw);
        }
        // 197 packets lost: more than half the 8-bit range, still forward.
        assert_eq!(
            t.observe(200),
            (
                200,
                Some(Gap {
                    after: 2,
                    missing: 197
                })
            )
        );
        // The same value again: at least a whole cycle lost.
        assert_eq!(
            t.observe(200),
            (
                456,
                Some(Gap {
                    after: 200,
                    missing: 255
                })
            )
        );
        assert_eq!(t.observe(201), (457, None));
    }

    #[test]
    fn sequence_tracker_treats_a_backward_jump_as_a_restart() {
        let mut t = SequenceTracker::new(32);
        t.observe(1000);
        let (seq, gap) = t.observe(0);
        assert_eq!((seq, gap), (1001, None));
    }
}
