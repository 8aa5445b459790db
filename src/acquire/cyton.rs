//! OpenBCI Cyton (ADS1299, 8 channels, 250 Hz) 33-byte packets at 115200 8-N-1.
//!
//! Packet: `0xA0`, sample number (u8, wraps), 8 x 24-bit signed big-endian channel values,
//! 3 x 16-bit aux values, footer `0xCX`. `0xA0` can appear inside data, so a header counts
//! only when the footer sits 32 bytes later; otherwise the decoder skips one byte and looks
//! again. Scaling: uV per count = 4.5 V / gain / (2^23 - 1) * 1e6 (default gain 24).

use super::{Decoded, DeviceInfo, PacketBuffer, Scan, SequenceTracker, WireDecoder};
use crate::ecg::{Lead, LeadSet, SampleBlock};

const PROTOCOL: &str = "openbci-cyton";
/// Packet length in bytes.
pub const PACKET_LEN: usize = 33;
/// Header byte.
pub const HEADER: u8 = 0xA0;
/// Channels per packet.
pub const CHANNELS: usize = 8;
/// The Cyton's fixed sample rate over serial.
pub const SAMPLE_RATE_HZ: f64 = 250.0;
/// The board's default programmable gain.
pub const DEFAULT_GAIN: f64 = 24.0;

/// Microvolts per count at `gain`.
pub fn uv_per_count(gain: f64) -> f64 {
    4.5 / gain / f64::from((1u32 << 23) - 1) * 1e6
}

/// The default electrode montage: channels 1-8 as I, II, V1..V6 (III and the augmented
/// leads are derived from I and II downstream).
pub fn default_leads() -> LeadSet {
    LeadSet(vec![
        Lead::I,
        Lead::II,
        Lead::V1,
        Lead::V2,
        Lead::V3,
        Lead::V4,
        Lead::V5,
        Lead::V6,
    ])
}

/// Decodes a Cyton byte stream into one-frame sample blocks.
#[derive(Debug, Clone)]
pub struct CytonDecoder {
    buffer: PacketBuffer,
    leads: LeadSet,
    uv_per_count: f64,
    sequence: SequenceTracker,
    announced: bool,
}

impl CytonDecoder {
    /// A decoder mapping the first `leads.len()` channels (at most 8) to `leads`, at `gain`.
    pub fn new(mut leads: LeadSet, gain: f64) -> Self {
        leads.0.truncate(CHANNELS);
        CytonDecoder {
            buffer: PacketBuffer::default(),
            leads,
            uv_per_count: uv_per_count(gain),
            // The board restarts its counter only on the host's `b` (start) command, which
            // resets the decoder: a backward step is a loss of half a second or more.
            sequence: SequenceTracker::without_restarts(8),
            announced: false,
        }
    }
}

impl Default for CytonDecoder {
    fn default() -> Self {
        Self::new(default_leads(), DEFAULT_GAIN)
    }
}

fn scan(b: &[u8]) -> Scan {
    match b {
        [] => Scan::NeedMore,
        [h, ..] if *h != HEADER => Scan::Skip,
        _ if b.len() < PACKET_LEN => Scan::NeedMore,
        _ if b[PACKET_LEN - 1] & 0xF0 != 0xC0 => Scan::Skip,
        _ => Scan::Packet(PACKET_LEN),
    }
}

impl WireDecoder for CytonDecoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        let (leads, scale, sequence, announced) = (
            &self.leads,
            self.uv_per_count,
            &mut self.sequence,
            &mut self.announced,
        );
        self.buffer.feed(PROTOCOL, bytes, out, scan, |packet, out| {
            if !std::mem::replace(announced, true) {
                out.push(Decoded::Device(DeviceInfo {
                    protocol: PROTOCOL.into(),
                    serial: String::new(),
                    firmware_version: String::new(),
                    sample_rate_hz: SAMPLE_RATE_HZ,
                    leads: leads.clone(),
                    uv_per_count: scale,
                }));
            }
            let (seq, gap) = sequence.observe(u64::from(packet[1]));
            if let Some(gap) = gap {
                out.push(Decoded::Gap(gap));
            }
            let samples_uv = packet[2..2 + 3 * CHANNELS]
                .chunks_exact(3)
                .take(leads.len())
                .map(|c| {
                    let count = i32::from_be_bytes([c[0], c[1], c[2], 0]) >> 8;
                    (f64::from(count) * scale) as f32
                })
                .collect();
            out.push(Decoded::Block(SampleBlock {
                sequence: seq,
                device_time_ns: (seq as f64 * 1e9 / SAMPLE_RATE_HZ) as u64,
                sample_rate_hz: SAMPLE_RATE_HZ,
                leads: leads.clone(),
                samples_uv,
                lead_off: vec![false; leads.len()],
            }));
        });
    }

    fn reset(&mut self) {
        self.buffer.clear();
        self.sequence.reset();
        self.announced = false;
    }
}

/// Builds one Cyton packet (for tests, fuzz seeds and a Cyton-speaking simulator).
pub fn encode_packet(sample_number: u8, counts: &[i32; CHANNELS], footer: u8) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = HEADER;
    p[1] = sample_number;
    for (dst, &c) in p[2..26].chunks_exact_mut(3).zip(counts) {
        dst.copy_from_slice(&c.to_be_bytes()[1..]);
    }
    p[PACKET_LEN - 1] = 0xC0 | (footer & 0x0F);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::FrameRejected;

    fn blocks(out: &[Decoded]) -> Vec<&SampleBlock> {
        out.iter().filter_map(Decoded::block).collect()
    }

    #[test]
    fn scales_big_endian_counts_at_the_default_gain() {
        let mut d = CytonDecoder::default();
        let mut out = Vec::new();
        let counts = [1, -1, 1 << 20, -(1 << 23), 0, 5, 6, (1 << 23) - 1];
        d.feed(&encode_packet(9, &counts, 0), &mut out);
        let b = blocks(&out)[0];
        let scale = 4.5 / 24.0 / 8_388_607.0 * 1e6;
        for (got, &c) in b.samples_uv.iter().zip(&counts) {
            let want = (f64::from(c) * scale) as f32;
            assert!((got - want).abs() <= want.abs() * 1e-6, "{got} vs {want}");
        }
        assert_eq!((b.sequence, b.leads.len()), (9, 8));
        assert!(matches!(out[0], Decoded::Device(_)));
    }

    #[test]
    fn resyncs_past_garbage_and_a_false_header_inside_data() {
        let mut d = CytonDecoder::default();
        let mut out = Vec::new();
        let mut bytes = vec![0x11, HEADER, 0x22];
        // A packet whose data holds 0xA0 bytes, fed in pieces.
        let p1 = encode_packet(1, &[0xA0A0A0u32 as i32 - (1 << 24); 8], 0);
        bytes.extend_from_slice(&p1[..10]);
        d.feed(&bytes, &mut out);
        d.feed(&p1[10..], &mut out);
        d.feed(&encode_packet(2, &[0; 8], 1), &mut out);
        assert_eq!(blocks(&out).len(), 2);
        assert!(out.contains(&Decoded::Rejected(FrameRejected::Resync {
            protocol: PROTOCOL,
            bytes: 3
        })));
    }

    #[test]
    fn a_packet_with_a_corrupted_footer_is_skipped_and_reported_as_a_gap() {
        let mut d = CytonDecoder::default();
        let mut out = Vec::new();
        let mut bad = encode_packet(2, &[0; 8], 0);
        bad[PACKET_LEN - 1] = 0x00;
        for p in [
            encode_packet(1, &[0; 8], 0),
            bad,
            encode_packet(3, &[0; 8], 0),
        ] {
            d.feed(&p, &mut out);
        }
        assert_eq!(blocks(&out).len(), 2);
        assert!(out.contains(&Decoded::Gap(crate::acquire::Gap {
            after: 1,
            missing: 1
        })));
    }
}
