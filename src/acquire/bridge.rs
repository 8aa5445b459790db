//! The daemon side of the project's own `firmware-bridge` protocol: frames to
//! [`SampleBlock`]s in microvolts, using the scaling and lead set from the device's hello.

use firmware_bridge::{Frame, FrameDecoder, Hello, Samples, electrode};

use super::{Decoded, DeviceInfo, DeviceStatus, FrameRejected, SequenceTracker, WireDecoder};
use crate::ecg::{Lead, LeadSet, SampleBlock};

/// Decodes a firmware-bridge byte stream.
#[derive(Debug, Clone)]
pub struct BridgeDecoder {
    frames: FrameDecoder,
    stream: StreamState,
}

/// What the decoder knows about the stream, apart from the partial frame.
#[derive(Debug, Clone)]
struct StreamState {
    hello: Option<(Hello, LeadSet)>,
    electrodes_off: u16,
    sequence: SequenceTracker,
    /// The sequence number and device time of the last block delivered.
    last_block: Option<(u32, u64)>,
}

impl Default for BridgeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BridgeDecoder {
    /// A decoder waiting for the device's hello.
    pub fn new() -> Self {
        BridgeDecoder {
            frames: FrameDecoder::new(),
            stream: StreamState {
                hello: None,
                electrodes_off: 0,
                sequence: SequenceTracker::new(32),
                last_block: None,
            },
        }
    }
}

impl WireDecoder for BridgeDecoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        for &b in bytes {
            match self.frames.push(b) {
                None => {}
                Some(Err(e)) => out.push(Decoded::Rejected(FrameRejected::Bridge(e))),
                Some(Ok(frame)) => self.stream.frame(frame, out),
            }
        }
    }

    fn reset(&mut self) {
        self.frames.reset();
        self.stream.hello = None;
        self.stream.electrodes_off = 0;
        self.stream.sequence.reset();
        self.stream.last_block = None;
    }
}

impl StreamState {
    fn frame(&mut self, frame: Frame<'_>, out: &mut Vec<Decoded>) {
        match frame {
            Frame::Hello(h) => {
                let leads = LeadSet(
                    h.leads()
                        .iter()
                        .filter_map(|&c| Lead::STANDARD_12.get(c as usize).copied())
                        .collect(),
                );
                out.push(Decoded::Device(device_info(&h, &leads)));
                // A new hello starts a new stream: sequence numbers restart.
                self.sequence.reset();
                self.last_block = None;
                self.hello = Some((h, leads));
            }
            Frame::Samples(s) => self.samples(&s, out),
            Frame::Status(s) => {
                self.electrodes_off = s.lead_off;
                out.push(Decoded::Status(DeviceStatus {
                    electrodes_off: s.lead_off,
                    battery_percent: (s.battery_percent <= 100).then_some(s.battery_percent),
                    errors: s.errors,
                }));
            }
            Frame::Ack(a) => out.push(Decoded::Ack(a)),
            // A host command coming back (e.g. a loopback cable) is not from a device.
            Frame::Command(_) => out.push(Decoded::Rejected(FrameRejected::Malformed {
                protocol: "firmware-bridge",
                reason: "host command received from the device side".into(),
            })),
        }
    }

    fn samples(&mut self, s: &Samples<'_>, out: &mut Vec<Decoded>) {
        let Some((hello, leads)) = &self.hello else {
            out.push(Decoded::Rejected(FrameRejected::SamplesBeforeHello));
            return;
        };
        if s.lead_count as usize != leads.len() {
            out.push(Decoded::Rejected(FrameRejected::LeadCountMismatch {
                got: s.lead_count as usize,
                announced: leads.len(),
            }));
            return;
        }
        // A frame sent twice (a retransmitting link, a bridge that repeats its last frame)
        // is dropped, not taken for a restart that empties the window being built.
        let this_block = (s.sequence, s.device_time_ns);
        if self.last_block.replace(this_block) == Some(this_block) {
            out.push(Decoded::Rejected(FrameRejected::Repeated {
                protocol: "firmware-bridge",
                sequence: u64::from(s.sequence),
            }));
            return;
        }
        let (sequence, gap) = self.sequence.observe(u64::from(s.sequence));
        if let Some(gap) = gap {
            out.push(Decoded::Gap(gap));
        }
        let scale = hello.uv_per_count;
        out.push(Decoded::Block(SampleBlock {
            sequence,
            device_time_ns: s.device_time_ns,
            sample_rate_hz: f64::from(hello.sample_rate_hz),
            samples_uv: s.iter().map(|c| c as f32 * scale).collect(),
            lead_off: leads
                .0
                .iter()
                .map(|&l| lead_electrodes(l) & self.electrodes_off != 0)
                .collect(),
            leads: leads.clone(),
        }));
    }
}

fn device_info(h: &Hello, leads: &LeadSet) -> DeviceInfo {
    let [major, minor, patch] = h.firmware_version;
    DeviceInfo {
        protocol: format!("firmware-bridge/{}", firmware_bridge::PROTOCOL_VERSION),
        serial: h.serial_str().to_string(),
        firmware_version: format!("{major}.{minor}.{patch}"),
        sample_rate_hz: f64::from(h.sample_rate_hz),
        leads: leads.clone(),
        uv_per_count: f64::from(h.uv_per_count),
    }
}

/// The electrodes whose contact a lead depends on (firmware-bridge lead-off bits).
pub fn lead_electrodes(lead: Lead) -> u16 {
    use electrode::{LA, LL, RA, V1};
    match lead {
        Lead::I => RA | LA,
        Lead::II => RA | LL,
        Lead::III => LA | LL,
        Lead::AVR | Lead::AVL | Lead::AVF => RA | LA | LL,
        // Chest leads are measured against Wilson's central terminal (RA, LA, LL).
        v => (V1 << (v.index() - Lead::V1.index())) | RA | LA | LL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_bridge::{MAX_WIRE_FRAME_LEN, Status, encode, pack_i24};

    fn hello(leads: &[u8]) -> Hello {
        let mut codes = [0xFF; 12];
        codes[..leads.len()].copy_from_slice(leads);
        Hello {
            serial: *b"SIM-1\0\0\0\0\0\0\0\0\0\0\0",
            sample_rate_hz: 500,
            lead_count: leads.len() as u8,
            leads: codes,
            uv_per_count: 0.5,
            firmware_version: [1, 2, 3],
        }
    }

    fn wire(frame: Frame<'_>) -> Vec<u8> {
        let mut out = vec![0u8; MAX_WIRE_FRAME_LEN];
        let n = encode(&frame, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn samples(seq: u32, counts: &[i32], leads: u8) -> Vec<u8> {
        let mut packed = [0u8; 256];
        let n = pack_i24(counts, &mut packed).unwrap();
        wire(Frame::Samples(
            Samples::new(seq, 1_000, leads, &packed[..n]).unwrap(),
        ))
    }

    #[test]
    fn scales_counts_with_the_hello_and_names_its_leads() {
        let mut d = BridgeDecoder::new();
        let mut out = Vec::new();
        d.feed(&wire(Frame::Hello(hello(&[0, 1]))), &mut out);
        d.feed(&samples(7, &[2, -4, 6, 8], 2), &mut out);
        let Decoded::Device(info) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(info.serial, "SIM-1");
        assert_eq!(info.firmware_version, "1.2.3");
        let Decoded::Block(b) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(b.leads, LeadSet(vec![Lead::I, Lead::II]));
        assert_eq!(b.samples_uv, vec![1.0, -2.0, 3.0, 4.0]);
        assert_eq!((b.sequence, b.device_time_ns, b.frames()), (7, 1_000, 2));
    }

    #[test]
    fn reports_gaps_and_rejects_blocks_before_hello_or_with_wrong_leads() {
        let mut d = BridgeDecoder::new();
        let mut out = Vec::new();
        d.feed(&samples(1, &[1, 2], 2), &mut out);
        assert_eq!(
            out.pop(),
            Some(Decoded::Rejected(FrameRejected::SamplesBeforeHello))
        );
        d.feed(&wire(Frame::Hello(hello(&[0, 1]))), &mut out);
        d.feed(&samples(1, &[1, 2], 2), &mut out);
        d.feed(&samples(4, &[1, 2], 2), &mut out);
        d.feed(&samples(5, &[1, 2, 3], 3), &mut out);
        assert!(out.contains(&Decoded::Gap(super::super::Gap {
            after: 1,
            missing: 2
        })));
        assert!(matches!(
            out.last(),
            Some(Decoded::Rejected(FrameRejected::LeadCountMismatch {
                got: 3,
                announced: 2
            }))
        ));
    }

    #[test]
    fn a_block_sent_twice_is_dropped_as_a_repeat_and_the_stream_goes_on() {
        let mut d = BridgeDecoder::new();
        let mut out = Vec::new();
        d.feed(&wire(Frame::Hello(hello(&[0, 1]))), &mut out);
        d.feed(&samples(1, &[1, 2], 2), &mut out);
        d.feed(&samples(1, &[1, 2], 2), &mut out);
        d.feed(&samples(2, &[3, 4], 2), &mut out);
        let blocks: Vec<u64> = out
            .iter()
            .filter_map(|d| match d {
                Decoded::Block(b) => Some(b.sequence),
                _ => None,
            })
            .collect();
        assert_eq!(blocks, [1, 2], "{out:?}");
        assert!(out.contains(&Decoded::Rejected(FrameRejected::Repeated {
            protocol: "firmware-bridge",
            sequence: 1
        })));
        assert!(!out.iter().any(|d| matches!(d, Decoded::Gap(_))), "{out:?}");
        // After a new hello the same numbers are a new stream, not repeats.
        d.feed(&wire(Frame::Hello(hello(&[0, 1]))), &mut out);
        out.clear();
        d.feed(&samples(2, &[3, 4], 2), &mut out);
        assert!(matches!(out[..], [Decoded::Block(_)]), "{out:?}");
    }

    #[test]
    fn an_absurd_scale_in_the_hello_is_rejected_naming_the_field() {
        let mut d = BridgeDecoder::new();
        let mut out = Vec::new();
        // 1e30 uV per count: a full-scale 24-bit count would be an infinite f32.
        let absurd = Hello {
            uv_per_count: 1e30,
            ..hello(&[0, 1])
        };
        d.feed(&wire(Frame::Hello(absurd)), &mut out);
        d.feed(&samples(0, &[(1 << 23) - 1, 1], 2), &mut out);
        let Some(Decoded::Rejected(rejected)) = out.first() else {
            panic!("{out:?}")
        };
        assert!(
            rejected.to_string().contains("hello.uv_per_count"),
            "{rejected}"
        );
        // No scale was taken from it: its samples are refused, never made infinite.
        assert_eq!(
            out.last(),
            Some(&Decoded::Rejected(FrameRejected::SamplesBeforeHello))
        );
        assert!(!out.iter().any(|d| matches!(d, Decoded::Block(_))));
    }

    #[test]
    fn lead_off_flags_follow_the_electrodes_of_each_lead() {
        let mut d = BridgeDecoder::new();
        let mut out = Vec::new();
        d.feed(&wire(Frame::Hello(hello(&[0, 1, 2, 7]))), &mut out);
        let status = Status {
            lead_off: electrode::LL | (electrode::V1 << 1),
            battery_percent: 80,
            errors: 0,
        };
        d.feed(&wire(Frame::Status(status)), &mut out);
        d.feed(&samples(0, &[0; 4], 4), &mut out);
        let Some(Decoded::Block(b)) = out.last() else {
            panic!("{out:?}")
        };
        // LL off: I is fine, II and III are off; V2 electrode off: V2 is off.
        assert_eq!(b.lead_off, vec![false, true, true, true]);
    }
}
