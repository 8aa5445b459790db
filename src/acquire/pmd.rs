//! Polar H10 chest strap: the Polar Measurement Data (PMD) ECG stream over BLE.
//!
//! The strap streams one lead at 130 Hz in microvolts. Each BLE notification on the PMD data
//! characteristic is one frame: byte 0 measurement type (0 = ECG), bytes 1-8 the u64
//! little-endian timestamp in ns of the LAST sample, byte 9 the frame type (bit 7 = compressed),
//! then for frame type 0 signed 24-bit little-endian samples in microvolts. This module parses
//! frames and control-point responses; the BLE transport (btleplug) sits behind the `ble`
//! feature. As a [`WireDecoder`], each `feed` call must be exactly one notification.

use super::{Decoded, DeviceInfo, FrameRejected, WireDecoder};
use crate::ecg::{Lead, LeadSet, SampleBlock};

const PROTOCOL: &str = "polar-pmd";

/// Whether an advertised strap (`name`, `address`) is the one a bed asked for: before the bed's
/// first connection, an address equal to `wanted` or a name containing it (both ignoring
/// case); once a strap has been connected, only that strap's address (`pinned`), so a
/// reconnect after a dropout cannot pick up another patient's strap whose name also matches.
pub fn strap_matches(wanted: &str, pinned: Option<&str>, name: &str, address: &str) -> bool {
    if let Some(pinned) = pinned {
        return address.eq_ignore_ascii_case(pinned);
    }
    let wanted = wanted.trim().to_lowercase();
    !wanted.is_empty()
        && (address.eq_ignore_ascii_case(&wanted) || name.to_lowercase().contains(&wanted))
}
/// PMD service UUID.
pub const PMD_SERVICE: &str = "fb005c80-02e7-f387-1cad-8acd2d8df0c8";
/// PMD control point characteristic UUID (write, indicate).
pub const PMD_CONTROL_POINT: &str = "fb005c81-02e7-f387-1cad-8acd2d8df0c8";
/// PMD data characteristic UUID (notify).
pub const PMD_DATA: &str = "fb005c82-02e7-f387-1cad-8acd2d8df0c8";
/// Control-point command that starts ECG at 130 Hz, 14-bit resolution.
pub const START_ECG_130HZ: [u8; 10] = [0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00];
/// Control-point command that stops ECG.
pub const STOP_ECG: [u8; 2] = [0x03, 0x00];
/// The H10's ECG sample rate.
pub const SAMPLE_RATE_HZ: f64 = 130.0;
const HEADER_LEN: usize = 10;
const MEASUREMENT_ECG: u8 = 0;

/// Why a PMD frame or response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PmdError {
    /// Shorter than the 10-byte header.
    #[error("frame of {len} bytes is shorter than the 10-byte header")]
    TooShort {
        /// Frame length.
        len: usize,
    },
    /// A measurement other than ECG.
    #[error("measurement type {0} is not ECG (0)")]
    NotEcg(u8),
    /// A frame type this parser does not decode (compressed or unknown).
    #[error("frame type 0x{0:02x} is not supported (only uncompressed type 0)")]
    FrameType(u8),
    /// Sample bytes are not a multiple of 3, or there are none.
    #[error("{len} sample bytes is not a positive multiple of 3")]
    SampleBytes {
        /// Bytes after the header.
        len: usize,
    },
    /// A control-point response that does not start with 0xF0.
    #[error("not a control-point response")]
    NotAResponse,
}

/// One parsed ECG frame.
#[derive(Debug, Clone, PartialEq)]
pub struct EcgFrame {
    /// Device time of the first sample in ns (derived from the last-sample timestamp).
    pub first_sample_ns: u64,
    /// Device time of the last sample in ns (as sent).
    pub last_sample_ns: u64,
    /// Samples in microvolts.
    pub samples_uv: Vec<f32>,
}

impl EcgFrame {
    /// Device timestamp of sample `i`, in ns.
    pub fn sample_time_ns(&self, i: usize) -> u64 {
        self.first_sample_ns
            .saturating_add((i as f64 * 1e9 / SAMPLE_RATE_HZ) as u64)
    }
}

/// Parses one PMD data notification carrying uncompressed ECG.
pub fn parse_ecg_frame(frame: &[u8]) -> Result<EcgFrame, PmdError> {
    if frame.len() < HEADER_LEN {
        return Err(PmdError::TooShort { len: frame.len() });
    }
    let (header, data) = frame.split_at(HEADER_LEN);
    if header[0] != MEASUREMENT_ECG {
        return Err(PmdError::NotEcg(header[0]));
    }
    if header[9] != 0 {
        return Err(PmdError::FrameType(header[9]));
    }
    if data.is_empty() || data.len() % 3 != 0 {
        return Err(PmdError::SampleBytes { len: data.len() });
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[1..9]);
    let last_sample_ns = u64::from_le_bytes(ts);
    let samples_uv: Vec<f32> = data
        .chunks_exact(3)
        .map(|c| (i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8) as f32)
        .collect();
    let span_ns = ((samples_uv.len() - 1) as f64 * 1e9 / SAMPLE_RATE_HZ) as u64;
    Ok(EcgFrame {
        first_sample_ns: last_sample_ns.saturating_sub(span_ns),
        last_sample_ns,
        samples_uv,
    })
}

/// A control-point response: `F0 <op> <measurement type> <status> ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlResponse {
    /// The op code answered (2 start, 3 stop, 1 get settings).
    pub op: u8,
    /// The measurement type (0 = ECG).
    pub measurement: u8,
    /// 0 = success; other values are Polar error codes.
    pub status: u8,
}

/// Parses a control-point response.
pub fn parse_control_response(bytes: &[u8]) -> Result<ControlResponse, PmdError> {
    match bytes {
        [0xF0, op, measurement, status, ..] => Ok(ControlResponse {
            op: *op,
            measurement: *measurement,
            status: *status,
        }),
        [0xF0, ..] => Err(PmdError::TooShort { len: bytes.len() }),
        _ => Err(PmdError::NotAResponse),
    }
}

/// The single lead an H10 delivers, labelled lead I; the synthetic training data's chest-strap
/// lead set is this one (`meit-models`, `LeadProfile::Single`).
///
/// Why lead I: the strap's two electrodes sit left and right of the sternum at the level of the
/// xiphoid, so the lead's axis is horizontal, right (-) to left (+): the axis of lead I. No
/// source was found that measures which standard lead the H10's waveform matches, and the
/// sources found say it is none: a chest strap's ECG is "measured roughly between V1 and V2 and
/// has therefore a non-standard shape" (B. Porr, Glasgow biosignals notes, "ECG chest strap",
/// <https://biosignals.berndporr.me.uk/doku.php?id=ecg:cheststrap>), and the clinical study of
/// the H10's ECG used it as a 1-lead ECG for rhythm only (T. Skala et al., "Feasibility of
/// evaluation of Polar H10 chest-belt ECG in patients with a broad range of heart conditions",
/// Cor et Vasa 64(4), 2022, doi:10.33678/cor.2022.083). The label is therefore the
/// conservative one: an axis, not a claim of lead I's morphology. It does not widen what a
/// report may say: from one lead only rhythm, rate, ectopy and interval statements are
/// supported (`synth::report::leads_needed`), whichever lead it is.
pub fn h10_leads() -> LeadSet {
    LeadSet(vec![Lead::I])
}

/// Turns PMD notifications into sample blocks (one `feed` call per notification).
#[derive(Debug, Clone, Default)]
pub struct PmdDecoder {
    frames: u64,
}

impl WireDecoder for PmdDecoder {
    fn feed(&mut self, notification: &[u8], out: &mut Vec<Decoded>) {
        let frame = match parse_ecg_frame(notification) {
            Ok(f) => f,
            Err(e) => {
                out.push(Decoded::Rejected(FrameRejected::Malformed {
                    protocol: PROTOCOL,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        if self.frames == 0 {
            out.push(Decoded::Device(DeviceInfo {
                protocol: PROTOCOL.into(),
                serial: String::new(),
                firmware_version: String::new(),
                sample_rate_hz: SAMPLE_RATE_HZ,
                leads: h10_leads(),
                uv_per_count: 1.0,
            }));
        }
        out.push(Decoded::Block(SampleBlock {
            sequence: self.frames,
            device_time_ns: frame.first_sample_ns,
            sample_rate_hz: SAMPLE_RATE_HZ,
            leads: h10_leads(),
            samples_uv: frame.samples_uv,
            lead_off: vec![false],
        }));
        self.frames += 1;
    }

    fn reset(&mut self) {
        self.frames = 0;
    }
}

/// Builds an uncompressed ECG frame (for tests and fuzz seeds).
pub fn encode_ecg_frame(last_sample_ns: u64, samples_uv: &[i32]) -> Vec<u8> {
    let mut f = vec![MEASUREMENT_ECG];
    f.extend_from_slice(&last_sample_ns.to_le_bytes());
    f.push(0);
    for s in samples_uv {
        f.extend_from_slice(&s.to_le_bytes()[..3]);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strap_matches_by_name_or_address_until_one_is_connected_then_only_that_one() {
        let (h10_a, h10_b) = ("A0:9E:1A:00:00:01", "A0:9E:1A:00:00:02");
        assert!(strap_matches(
            "Polar H10",
            None,
            "Polar H10 1A2B3C4D",
            h10_a
        ));
        assert!(strap_matches(
            "polar h10",
            None,
            "Polar H10 5E6F7A8B",
            h10_b
        ));
        assert!(strap_matches("a0:9e:1a:00:00:01", None, "", h10_a));
        assert!(!strap_matches("Polar H10", None, "Polar OH1", h10_a));
        // Nothing asked for matches nothing (an empty name would match every strap in range).
        assert!(!strap_matches("", None, "Polar H10 1A2B3C4D", h10_a));
        assert!(!strap_matches("  ", None, "", h10_a));
        // Pinned to the first strap: the other H10 no longer matches, the first still does.
        assert!(strap_matches(
            "Polar H10",
            Some(h10_a),
            "Polar H10 1A2B3C4D",
            h10_a
        ));
        assert!(!strap_matches(
            "Polar H10",
            Some(h10_a),
            "Polar H10 5E6F7A8B",
            h10_b
        ));
    }

    #[test]
    fn parses_microvolts_and_dates_samples_back_from_the_last_one() {
        let last = 1_000_000_000_000u64;
        let frame = parse_ecg_frame(&encode_ecg_frame(last, &[-120, 0, 850])).unwrap();
        assert_eq!(frame.samples_uv, vec![-120.0, 0.0, 850.0]);
        assert_eq!(frame.last_sample_ns, last);
        let period = (1e9 / SAMPLE_RATE_HZ) as u64;
        assert!(frame.sample_time_ns(2).abs_diff(last) <= 1);
        assert!(frame.sample_time_ns(0).abs_diff(last - 2 * period) <= 1);
    }

    #[test]
    fn a_hand_built_frame_from_the_documented_layout_parses() {
        // type 0, timestamp 0x0102030405060708 LE, frame type 0, samples 1 and -2.
        let bytes = [
            0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00, 0x01, 0x00, 0x00, 0xFE,
            0xFF, 0xFF,
        ];
        let f = parse_ecg_frame(&bytes).unwrap();
        assert_eq!(f.last_sample_ns, 0x0102_0304_0506_0708);
        assert_eq!(f.samples_uv, vec![1.0, -2.0]);
    }

    #[test]
    fn rejects_other_measurements_compressed_frames_and_ragged_data() {
        let mut f = encode_ecg_frame(5, &[1, 2]);
        assert_eq!(parse_ecg_frame(&f[..9]), Err(PmdError::TooShort { len: 9 }));
        f.push(0);
        assert_eq!(parse_ecg_frame(&f), Err(PmdError::SampleBytes { len: 7 }));
        f[9] = 0x80;
        assert_eq!(parse_ecg_frame(&f), Err(PmdError::FrameType(0x80)));
        f[0] = 2;
        assert_eq!(parse_ecg_frame(&f), Err(PmdError::NotEcg(2)));
    }

    #[test]
    fn control_responses_carry_op_type_and_status() {
        assert_eq!(
            parse_control_response(&[0xF0, 0x02, 0x00, 0x00, 0x00]),
            Ok(ControlResponse {
                op: 2,
                measurement: 0,
                status: 0
            })
        );
        assert_eq!(parse_control_response(&[0x01]), Err(PmdError::NotAResponse));
    }
}
