//! The meit device wire protocol, shared by acquisition firmware (on the MCU) and the daemon.
//!
//! `no_std` and allocation-free so that the same code runs in firmware. A frame on the wire is
//! `COBS(version | type | body | CRC-32) 0x00`: the zero delimiter lets a receiver resynchronise
//! at the next frame after any corruption, and the CRC rejects corrupted frames. The byte
//! layout, precise enough for a C implementation, is in `PROTOCOL.md` next to this crate.
//!
//! * [`encode`] writes one frame into a caller buffer of at least [`MAX_WIRE_FRAME_LEN`] bytes.
//! * [`FrameDecoder`] takes bytes one at a time and yields each frame or the reason it was
//!   rejected; it never panics and keeps at most one frame in a fixed buffer.
#![no_std]

pub mod cobs;
pub mod crc;
pub mod frame;

pub use frame::{
    Ack, AckResult, BATTERY_UNKNOWN, Command, CommandKind, Frame, FrameType, Hello, I24_RANGE,
    MAX_FRAMES_PER_BLOCK, MAX_LEADS, MAX_RAW_FRAME_LEN, MAX_SAMPLE_RATE_HZ, PROTOCOL_VERSION,
    SERIAL_LEN, Samples, SamplesError, Status, UV_PER_COUNT_RANGE, device_error, electrode,
    pack_i24,
};

use crc::Crc32;

/// Largest encoded frame on the wire, both delimiters included: size encode buffers with this.
pub const MAX_WIRE_FRAME_LEN: usize = cobs::max_encoded_len(MAX_RAW_FRAME_LEN) + 2;

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is smaller than the encoded frame.
    BufferFull,
}

/// Why received bytes did not form a valid frame. Each error covers one frame; decoding goes
/// on with the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes arrived without a delimiter than the largest frame can hold.
    Oversize,
    /// The bytes between two delimiters are not valid COBS.
    Cobs,
    /// Too short to hold version, type and CRC.
    TooShort {
        /// Raw length after COBS decoding.
        len: usize,
    },
    /// The CRC does not match: the frame was corrupted on the way.
    Crc,
    /// A protocol version this decoder does not speak.
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
    },
    /// A frame type code this decoder does not know.
    UnknownType {
        /// The type byte received.
        code: u8,
    },
    /// The body length does not match the frame type.
    BodyLength {
        /// The frame type.
        frame_type: FrameType,
        /// The body length received.
        len: usize,
    },
    /// A sample rate of 0 or above [`MAX_SAMPLE_RATE_HZ`].
    SampleRate {
        /// The rate received.
        hz: u32,
    },
    /// A lead count of 0 or above [`MAX_LEADS`].
    LeadCount {
        /// The count received.
        count: u8,
    },
    /// A field holds a value the protocol does not define.
    InvalidField {
        /// Which field, e.g. `hello.uv_per_count`.
        field: &'static str,
    },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Oversize => write!(f, "frame longer than {MAX_RAW_FRAME_LEN} bytes"),
            DecodeError::Cobs => f.write_str("invalid COBS framing"),
            DecodeError::TooShort { len } => write!(f, "frame of {len} bytes is too short"),
            DecodeError::Crc => f.write_str("CRC mismatch (corrupted frame)"),
            DecodeError::UnsupportedVersion { found } => write!(
                f,
                "protocol version {found} is not supported (this host speaks {PROTOCOL_VERSION})"
            ),
            DecodeError::UnknownType { code } => write!(f, "unknown frame type 0x{code:02x}"),
            DecodeError::BodyLength { frame_type, len } => {
                write!(
                    f,
                    "{frame_type:?} frame body of {len} bytes has the wrong length"
                )
            }
            DecodeError::SampleRate { hz } => write!(
                f,
                "sample rate {hz} Hz is impossible (allowed 1..={MAX_SAMPLE_RATE_HZ})"
            ),
            DecodeError::LeadCount { count } => {
                write!(
                    f,
                    "lead count {count} is impossible (allowed 1..={MAX_LEADS})"
                )
            }
            DecodeError::InvalidField { field } => write!(f, "invalid value in `{field}`"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Encodes `frame` into `out` as `0x00 COBS(raw frame + CRC-32) 0x00`; returns the length.
///
/// The leading delimiter means a corrupted trailing delimiter costs only the frame it closed,
/// never the next one as well.
pub fn encode(frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let (lead, body) = out.split_first_mut().ok_or(EncodeError::BufferFull)?;
    *lead = 0;
    let mut writer = cobs::CobsWriter::new(body).map_err(|_| EncodeError::BufferFull)?;
    let mut crc = Crc32::new();
    frame::write_raw(frame, &mut |bytes: &[u8]| {
        crc.update(bytes);
        writer.extend(bytes)
    })
    .map_err(|_| EncodeError::BufferFull)?;
    writer
        .extend(&crc.finish().to_le_bytes())
        .map_err(|_| EncodeError::BufferFull)?;
    writer
        .finish()
        .map(|n| n + 1)
        .map_err(|_| EncodeError::BufferFull)
}

/// A streaming decoder holding at most one encoded frame (`CAP` bytes, by default
/// [`MAX_WIRE_FRAME_LEN`]).
#[derive(Debug, Clone)]
pub struct FrameDecoder<const CAP: usize = MAX_WIRE_FRAME_LEN> {
    buf: [u8; CAP],
    len: usize,
    oversize: bool,
}

impl<const CAP: usize> Default for FrameDecoder<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> FrameDecoder<CAP> {
    /// An empty decoder, waiting for the start of a frame.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: [0; CAP],
            len: 0,
            oversize: false,
        }
    }

    /// Forgets any partial frame (e.g. after reopening a port).
    pub fn reset(&mut self) {
        self.len = 0;
        self.oversize = false;
    }

    /// Feeds one byte. At each delimiter returns the frame just completed or why it was
    /// rejected; empty frames (consecutive delimiters) are skipped silently.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, DecodeError>> {
        if byte != 0 {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.oversize = true,
            }
            return None;
        }
        let (len, oversize) = (self.len, self.oversize);
        self.reset();
        if oversize {
            return Some(Err(DecodeError::Oversize));
        }
        if len == 0 {
            return None;
        }
        Some(decode_frame(&mut self.buf[..len]))
    }
}

/// Decodes one encoded frame (without its delimiter) in place.
pub fn decode_frame(encoded: &mut [u8]) -> Result<Frame<'_>, DecodeError> {
    let len = cobs::decode_in_place(encoded).map_err(|_| DecodeError::Cobs)?;
    let raw = &encoded[..len];
    if raw.len() < 6 {
        return Err(DecodeError::TooShort { len: raw.len() });
    }
    let (content, crc_bytes) = raw.split_at(raw.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(crc_bytes);
    if Crc32::checksum(content) != u32::from_le_bytes(crc) {
        return Err(DecodeError::Crc);
    }
    frame::parse_raw(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_sizes_match_the_constants() {
        // PROTOCOL.md states these numbers; a C implementation sizes its buffers from them.
        assert_eq!(MAX_RAW_FRAME_LEN, 1172);
        assert_eq!(MAX_WIRE_FRAME_LEN, 1179);
    }

    #[test]
    fn a_ping_is_framed_by_zeros_and_skips_empty_frames() {
        let ping = Frame::Command(Command {
            token: 7,
            kind: CommandKind::Ping(1),
        });
        let mut out = [0u8; 32];
        let n = encode(&ping, &mut out).unwrap();
        assert_eq!((out[0], out[n - 1]), (0, 0));
        assert!(!out[1..n - 1].contains(&0));
        let mut decoder: FrameDecoder = FrameDecoder::new();
        let mut frames = 0;
        for &b in out[..n].iter().chain(&[0, 0]) {
            if let Some(r) = decoder.push(b) {
                assert_eq!(r, Ok(ping));
                frames += 1;
            }
        }
        assert_eq!(frames, 1);
    }
}
