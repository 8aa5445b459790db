//! ProtoCentral OpenView packets (ADS1292R, ADS1293, MAX30001/3, HealthyPi boards).
//!
//! Packet: `0x0A 0xFA <len LSB> <len MSB> 0x02 <payload: len bytes> 0x00 0x0B`. A header counts
//! only when the type byte is `0x02` and the two-byte footer sits where the length says;
//! otherwise the decoder skips one byte and looks again. What the payload holds differs between
//! board sketches, so the decoder takes an [`OpenViewLayout`]: the first `leads.len()` values
//! of `sample_bytes` signed little-endian bytes each are ECG channels; the rest of the payload
//! (respiration, heart rate, ...) is ignored. OpenView carries no sequence number, so gaps
//! cannot be detected from the stream itself.

use super::{Decoded, DeviceInfo, FrameRejected, PacketBuffer, Scan, WireDecoder};
use crate::ecg::{Lead, LeadSet, SampleBlock};

const PROTOCOL: &str = "protocentral-openview";
/// First header byte.
pub const START_1: u8 = 0x0A;
/// Second header byte.
pub const START_2: u8 = 0xFA;
/// Packet type for data.
pub const TYPE_DATA: u8 = 0x02;
/// Footer bytes.
pub const FOOTER: [u8; 2] = [0x00, 0x0B];
/// Longest payload accepted; longer length fields are treated as corruption.
pub const MAX_PAYLOAD: usize = 512;

/// Where the ECG channels sit in a payload and how to scale them.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenViewLayout {
    /// Lead of each ECG channel, in payload order.
    pub leads: LeadSet,
    /// Bytes per channel value: 2, 3 or 4 (signed little-endian).
    pub sample_bytes: usize,
    /// Microvolts per count.
    pub uv_per_count: f64,
    /// Packet rate of the board's sketch in Hz.
    pub sample_rate_hz: f64,
}

impl Default for OpenViewLayout {
    /// Three 32-bit channels I, II, V1 at 200 Hz, one count per microvolt. Board sketches
    /// differ: check the sketch's payload and scaling and set the layout to match.
    fn default() -> Self {
        OpenViewLayout {
            leads: LeadSet(vec![Lead::I, Lead::II, Lead::V1]),
            sample_bytes: 4,
            uv_per_count: 1.0,
            sample_rate_hz: 200.0,
        }
    }
}

/// Decodes an OpenView byte stream into one-frame sample blocks.
#[derive(Debug, Clone)]
pub struct OpenViewDecoder {
    buffer: PacketBuffer,
    layout: OpenViewLayout,
    packets: u64,
}

impl OpenViewDecoder {
    /// A decoder for `layout`; a `sample_bytes` outside 2..=4 is clamped into that range.
    pub fn new(mut layout: OpenViewLayout) -> Self {
        layout.sample_bytes = layout.sample_bytes.clamp(2, 4);
        OpenViewDecoder {
            buffer: PacketBuffer::default(),
            layout,
            packets: 0,
        }
    }
}

fn scan(b: &[u8]) -> Scan {
    match b {
        [] => Scan::NeedMore,
        [s, ..] if *s != START_1 => Scan::Skip,
        [_] => Scan::NeedMore,
        [_, s, ..] if *s != START_2 => Scan::Skip,
        [_, _, lo, hi, t, ..] => {
            let len = usize::from(u16::from_le_bytes([*lo, *hi]));
            if *t != TYPE_DATA || len > MAX_PAYLOAD {
                return Scan::Skip;
            }
            match b.get(5 + len..7 + len) {
                None => Scan::NeedMore,
                Some(footer) if footer == FOOTER => Scan::Packet(7 + len),
                Some(_) => Scan::Skip,
            }
        }
        _ => Scan::NeedMore,
    }
}

impl WireDecoder for OpenViewDecoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        let (layout, packets) = (&self.layout, &mut self.packets);
        self.buffer.feed(PROTOCOL, bytes, out, scan, |packet, out| {
            let payload = packet.get(5..packet.len().saturating_sub(2)).unwrap_or(&[]);
            let width = layout.sample_bytes;
            let needed = layout.leads.len() * width;
            if payload.len() < needed {
                out.push(Decoded::Rejected(FrameRejected::Malformed {
                    protocol: PROTOCOL,
                    reason: format!("payload of {} bytes, layout needs {needed}", payload.len()),
                }));
                return;
            }
            if *packets == 0 {
                out.push(Decoded::Device(DeviceInfo {
                    protocol: PROTOCOL.into(),
                    serial: String::new(),
                    firmware_version: String::new(),
                    sample_rate_hz: layout.sample_rate_hz,
                    leads: layout.leads.clone(),
                    uv_per_count: layout.uv_per_count,
                }));
            }
            let samples_uv = payload[..needed]
                .chunks_exact(width)
                .map(|c| (f64::from(signed_le(c)) * layout.uv_per_count) as f32)
                .collect();
            out.push(Decoded::Block(SampleBlock {
                sequence: *packets,
                device_time_ns: (*packets as f64 * 1e9 / layout.sample_rate_hz) as u64,
                sample_rate_hz: layout.sample_rate_hz,
                leads: layout.leads.clone(),
                samples_uv,
                lead_off: vec![false; layout.leads.len()],
            }));
            *packets += 1;
        });
    }

    fn reset(&mut self) {
        self.buffer.clear();
        self.packets = 0;
    }
}

/// Sign-extends 1..=4 little-endian bytes (more are ignored).
fn signed_le(bytes: &[u8]) -> i32 {
    let n = bytes.len().clamp(1, 4).min(bytes.len());
    let mut word = [0u8; 4];
    word[..n].copy_from_slice(&bytes[..n]);
    let shift = 8 * (4 - n.max(1)) as u32;
    (i32::from_le_bytes(word) << shift) >> shift
}

/// Builds one OpenView data packet around `payload` (for tests and fuzz seeds).
pub fn encode_packet(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(usize::from(u16::MAX)) as u16;
    let mut p = vec![START_1, START_2];
    p.extend_from_slice(&len.to_le_bytes());
    p.push(TYPE_DATA);
    p.extend_from_slice(&payload[..usize::from(len)]);
    p.extend_from_slice(&FOOTER);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> OpenViewLayout {
        OpenViewLayout {
            leads: LeadSet(vec![Lead::I, Lead::II]),
            sample_bytes: 3,
            uv_per_count: 0.5,
            sample_rate_hz: 125.0,
        }
    }

    fn payload(a: i32, b: i32, extra: &[u8]) -> Vec<u8> {
        let mut p = a.to_le_bytes()[..3].to_vec();
        p.extend_from_slice(&b.to_le_bytes()[..3]);
        p.extend_from_slice(extra);
        p
    }

    fn blocks(out: &[Decoded]) -> Vec<&SampleBlock> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Block(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn decodes_signed_channels_and_ignores_the_rest_of_the_payload() {
        let mut d = OpenViewDecoder::new(layout());
        let mut out = Vec::new();
        d.feed(&encode_packet(&payload(-2, 8, &[9, 9, 9])), &mut out);
        let b = blocks(&out)[0];
        assert_eq!(b.samples_uv, vec![-1.0, 4.0]);
        assert_eq!(b.sample_rate_hz, 125.0);
    }

    #[test]
    fn resyncs_after_garbage_a_false_header_and_a_broken_footer() {
        let mut d = OpenViewDecoder::new(layout());
        let mut out = Vec::new();
        let mut broken = encode_packet(&payload(1, 1, &[]));
        let last = broken.len() - 1;
        broken[last] = 0x0C;
        let mut bytes = vec![0x0A, 0x0A, 0xFA, 0xFF, 0xFF, 0x02];
        bytes.extend(broken);
        bytes.extend(encode_packet(&payload(3, 4, &[])));
        // Fed one byte at a time, as a slow serial link would deliver it.
        for b in &bytes {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].samples_uv, vec![1.5, 2.0]);
        assert!(
            out.iter()
                .any(|d| matches!(d, Decoded::Rejected(FrameRejected::Resync { .. })))
        );
    }

    #[test]
    fn a_payload_shorter_than_the_layout_is_rejected() {
        let mut d = OpenViewDecoder::new(layout());
        let mut out = Vec::new();
        d.feed(&encode_packet(&[1, 2, 3]), &mut out);
        assert!(blocks(&out).is_empty());
        assert!(matches!(
            out.last(),
            Some(Decoded::Rejected(FrameRejected::Malformed { .. }))
        ));
    }

    #[test]
    fn sign_extension_covers_every_width() {
        assert_eq!(signed_le(&[0xFF, 0xFF]), -1);
        assert_eq!(signed_le(&[0xFF, 0x7F]), 32767);
        assert_eq!(signed_le(&[0x00, 0x00, 0x80]), -(1 << 23));
        assert_eq!(signed_le(&(-5i32).to_le_bytes()), -5);
        assert_eq!(signed_le(&[]), 0);
    }
}
