//! Frame types and their body layouts (see `PROTOCOL.md` for the byte tables).
//!
//! A raw frame is `version | type | body | crc32`, all multi-byte fields little-endian. This
//! module turns a [`Frame`] into raw bytes (through any byte sink) and parses a raw frame whose
//! CRC has already been checked back into a [`Frame`], validating every field.

use crate::DecodeError;

/// Protocol version carried in the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Most leads a device may stream (the standard 12).
pub const MAX_LEADS: usize = 12;
/// Most sample frames (time points) in one [`Samples`] frame.
pub const MAX_FRAMES_PER_BLOCK: usize = 32;
/// Highest sample rate a hello or set-rate command may carry, in Hz.
pub const MAX_SAMPLE_RATE_HZ: u32 = 32_000;
/// Length of the device serial number field (ASCII, NUL-padded).
pub const SERIAL_LEN: usize = 16;
/// Microvolts per ADC count a hello may announce (inclusive): from a sub-nanovolt step to
/// 1 mV per count, generous on both sides of real ECG front ends (ADS1298: 0.02-0.3 uV).
/// Within it a full-scale 24-bit count stays a finite `f32` in microvolts; outside it a
/// device's samples could become infinite.
pub const UV_PER_COUNT_RANGE: (f32, f32) = (1e-6, 1e3);

const HELLO_BODY_LEN: usize = SERIAL_LEN + 4 + 1 + MAX_LEADS + 4 + 3;
const SAMPLES_HEADER_LEN: usize = 4 + 8 + 1 + 1;
const STATUS_BODY_LEN: usize = 2 + 1 + 2;
const COMMAND_BODY_LEN: usize = 1 + 1 + 4;
const ACK_BODY_LEN: usize = 1 + 1 + 1 + 4;

/// Largest raw frame (version, type, body, CRC) the protocol allows.
pub const MAX_RAW_FRAME_LEN: usize =
    2 + SAMPLES_HEADER_LEN + 3 * MAX_LEADS * MAX_FRAMES_PER_BLOCK + 4;

/// Frame type codes (second byte of a raw frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Device identity and stream format, sent after every start command.
    Hello = 0x01,
    /// A block of samples.
    Samples = 0x02,
    /// Electrode contact, battery and error flags.
    Status = 0x03,
    /// Host to device command.
    Command = 0x10,
    /// Device answer to a command.
    Ack = 0x11,
}

impl FrameType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Samples,
            0x03 => FrameType::Status,
            0x10 => FrameType::Command,
            0x11 => FrameType::Ack,
            _ => return None,
        })
    }
}

/// One decoded frame; sample data borrows the decoder's buffer (no allocation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frame<'a> {
    /// Device identity and stream format.
    Hello(Hello),
    /// A block of samples.
    Samples(Samples<'a>),
    /// Device status.
    Status(Status),
    /// A host command.
    Command(Command),
    /// A device acknowledgement.
    Ack(Ack),
}

impl Frame<'_> {
    /// This frame's type code.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Samples(_) => FrameType::Samples,
            Frame::Status(_) => FrameType::Status,
            Frame::Command(_) => FrameType::Command,
            Frame::Ack(_) => FrameType::Ack,
        }
    }
}

/// Device identity and stream format.
///
/// Lead codes are positions in the standard order I, II, III, aVR, aVL, aVF, V1..V6 (0..=11),
/// listed in the order the device's channels arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hello {
    /// Device serial number, ASCII, NUL-padded.
    pub serial: [u8; SERIAL_LEN],
    /// Sample rate in Hz (1..=[`MAX_SAMPLE_RATE_HZ`]).
    pub sample_rate_hz: u32,
    /// Number of valid entries in `leads` (1..=12).
    pub lead_count: u8,
    /// Lead codes in channel order; entries past `lead_count` are `0xFF` on the wire.
    pub leads: [u8; MAX_LEADS],
    /// Microvolts per ADC count (within [`UV_PER_COUNT_RANGE`]).
    pub uv_per_count: f32,
    /// Firmware version major, minor, patch.
    pub firmware_version: [u8; 3],
}

impl Hello {
    /// The lead codes in channel order.
    pub fn leads(&self) -> &[u8] {
        &self.leads[..(self.lead_count as usize).min(MAX_LEADS)]
    }

    /// The serial number without NUL padding (lossy: stops at the first non-ASCII byte).
    pub fn serial_str(&self) -> &str {
        let end = self
            .serial
            .iter()
            .position(|&b| b == 0 || !b.is_ascii())
            .unwrap_or(SERIAL_LEN);
        core::str::from_utf8(&self.serial[..end]).unwrap_or("")
    }
}

/// A block of samples: `frame_count` time points of `lead_count` signed 24-bit samples each,
/// interleaved (all leads of time point 0, then time point 1, ...), 3 bytes little-endian each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Samples<'a> {
    /// Block sequence number; increments by one per block and wraps.
    pub sequence: u32,
    /// Device time of the first time point, in nanoseconds since device start.
    pub device_time_ns: u64,
    /// Leads per time point (1..=12, equal to the hello's lead count).
    pub lead_count: u8,
    packed: &'a [u8],
}

/// Why a sample block could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplesError {
    /// Lead count outside 1..=12.
    LeadCount(u8),
    /// Packed length is not `3 * lead_count * frames` with 1..=32 frames.
    Length(usize),
    /// A value does not fit in 24 signed bits.
    OutOfRange(i32),
    /// The output buffer is too small.
    BufferFull,
}

impl<'a> Samples<'a> {
    /// Wraps packed 24-bit little-endian samples, checking the counts.
    pub fn new(
        sequence: u32,
        device_time_ns: u64,
        lead_count: u8,
        packed: &'a [u8],
    ) -> Result<Self, SamplesError> {
        let leads = lead_count as usize;
        if leads == 0 || leads > MAX_LEADS {
            return Err(SamplesError::LeadCount(lead_count));
        }
        let stride = 3 * leads;
        let frames = packed.len() / stride;
        if !packed.len().is_multiple_of(stride) || frames == 0 || frames > MAX_FRAMES_PER_BLOCK {
            return Err(SamplesError::Length(packed.len()));
        }
        Ok(Samples {
            sequence,
            device_time_ns,
            lead_count,
            packed,
        })
    }

    /// Number of time points.
    pub fn frame_count(&self) -> usize {
        self.packed.len() / (3 * self.lead_count as usize).max(1)
    }

    /// The packed sample bytes.
    pub fn packed(&self) -> &'a [u8] {
        self.packed
    }

    /// All samples in interleaved order, as ADC counts.
    pub fn iter(&self) -> impl Iterator<Item = i32> + 'a {
        self.packed
            .chunks_exact(3)
            .map(|c| i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8)
    }

    /// The sample of `lead` (channel index) at time point `frame`.
    pub fn get(&self, frame: usize, lead: usize) -> Option<i32> {
        if lead >= self.lead_count as usize {
            return None;
        }
        let i = (frame * self.lead_count as usize + lead) * 3;
        let c = self.packed.get(i..i + 3)?;
        Some(i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8)
    }
}

/// Smallest and largest value of a signed 24-bit sample.
pub const I24_RANGE: (i32, i32) = (-(1 << 23), (1 << 23) - 1);

/// Packs counts as signed 24-bit little-endian into `out`; returns the bytes written.
pub fn pack_i24(counts: &[i32], out: &mut [u8]) -> Result<usize, SamplesError> {
    let needed = counts.len() * 3;
    let out = out.get_mut(..needed).ok_or(SamplesError::BufferFull)?;
    for (&v, dst) in counts.iter().zip(out.chunks_exact_mut(3)) {
        if v < I24_RANGE.0 || v > I24_RANGE.1 {
            return Err(SamplesError::OutOfRange(v));
        }
        dst.copy_from_slice(&v.to_le_bytes()[..3]);
    }
    Ok(needed)
}

/// Lead-off bit positions in [`Status::lead_off`], one per electrode.
pub mod electrode {
    /// Right arm.
    pub const RA: u16 = 1 << 0;
    /// Left arm.
    pub const LA: u16 = 1 << 1;
    /// Left leg.
    pub const LL: u16 = 1 << 2;
    /// Right leg (driven reference).
    pub const RL: u16 = 1 << 3;
    /// Chest electrode V1; V2..V6 follow in bits 5..9.
    pub const V1: u16 = 1 << 4;
}

/// Error bits in [`Status::errors`].
pub mod device_error {
    /// The ADC delivered a sample before the previous one was read.
    pub const ADC_OVERRUN: u16 = 1 << 0;
    /// The transmit buffer overflowed and blocks were dropped on the device.
    pub const TX_OVERFLOW: u16 = 1 << 1;
    /// The supply voltage is too low for specified accuracy.
    pub const LOW_SUPPLY: u16 = 1 << 2;
    /// The ADC failed its self test.
    pub const ADC_FAULT: u16 = 1 << 3;
}

/// Battery value meaning "no battery or unknown".
pub const BATTERY_UNKNOWN: u8 = 0xFF;

/// Device status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// One bit per electrode that has lost contact (see [`electrode`]).
    pub lead_off: u16,
    /// Battery charge in percent (0..=100) or [`BATTERY_UNKNOWN`].
    pub battery_percent: u8,
    /// Error bits (see [`device_error`]).
    pub errors: u16,
}

/// What a host asks a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Send a hello and start streaming.
    Start,
    /// Stop streaming.
    Stop,
    /// Change the sample rate (Hz); takes effect at the next start.
    SetRate(u32),
    /// Answer with an ack echoing the nonce.
    Ping(u32),
}

impl CommandKind {
    /// Wire code of the command.
    pub fn code(self) -> u8 {
        match self {
            CommandKind::Start => 1,
            CommandKind::Stop => 2,
            CommandKind::SetRate(_) => 3,
            CommandKind::Ping(_) => 4,
        }
    }

    fn argument(self) -> u32 {
        match self {
            CommandKind::Start | CommandKind::Stop => 0,
            CommandKind::SetRate(v) | CommandKind::Ping(v) => v,
        }
    }
}

/// A host command with a token the device echoes in its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Correlates the ack with the command.
    pub token: u8,
    /// The command.
    pub kind: CommandKind,
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckResult {
    /// Done.
    Ok = 0,
    /// The device does not implement this command.
    Unsupported = 1,
    /// The argument is out of range.
    InvalidArgument = 2,
    /// The device cannot do it now.
    Busy = 3,
}

/// A device's answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Token of the command answered.
    pub token: u8,
    /// Code of the command answered ([`CommandKind::code`]).
    pub command: u8,
    /// Outcome.
    pub result: AckResult,
    /// Ping nonce, rate now in effect, or 0.
    pub value: u32,
}

/// Writes the raw bytes of `frame` (without CRC) to `sink`.
pub(crate) fn write_raw<E>(
    frame: &Frame<'_>,
    sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    sink(&[PROTOCOL_VERSION, frame.frame_type() as u8])?;
    match frame {
        Frame::Hello(h) => {
            let mut leads = [0xFFu8; MAX_LEADS];
            let n = h.leads().len();
            leads[..n].copy_from_slice(h.leads());
            sink(&h.serial)?;
            sink(&h.sample_rate_hz.to_le_bytes())?;
            sink(&[h.lead_count])?;
            sink(&leads)?;
            sink(&h.uv_per_count.to_le_bytes())?;
            sink(&h.firmware_version)
        }
        Frame::Samples(s) => {
            sink(&s.sequence.to_le_bytes())?;
            sink(&s.device_time_ns.to_le_bytes())?;
            sink(&[s.lead_count, s.frame_count() as u8])?;
            sink(s.packed)
        }
        Frame::Status(s) => {
            sink(&s.lead_off.to_le_bytes())?;
            sink(&[s.battery_percent])?;
            sink(&s.errors.to_le_bytes())
        }
        Frame::Command(c) => {
            sink(&[c.token, c.kind.code()])?;
            sink(&c.kind.argument().to_le_bytes())
        }
        Frame::Ack(a) => {
            sink(&[a.token, a.command, a.result as u8])?;
            sink(&a.value.to_le_bytes())
        }
    }
}

/// Reads little-endian fields off the front of a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let head = self.take(N);
        a[..head.len()].copy_from_slice(head);
        a
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Parses a raw frame (version, type, body; CRC already stripped and checked).
pub(crate) fn parse_raw(raw: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let [version, code, body @ ..] = raw else {
        return Err(DecodeError::TooShort { len: raw.len() });
    };
    if *version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: *version });
    }
    let frame_type = FrameType::from_code(*code).ok_or(DecodeError::UnknownType { code: *code })?;
    let expect_len = |expected: usize| {
        if body.len() == expected {
            Ok(())
        } else {
            Err(DecodeError::BodyLength {
                frame_type,
                len: body.len(),
            })
        }
    };
    let mut r = Reader(body);
    match frame_type {
        FrameType::Hello => {
            expect_len(HELLO_BODY_LEN)?;
            parse_hello(&mut r).map(Frame::Hello)
        }
        FrameType::Samples => {
            if body.len() < SAMPLES_HEADER_LEN {
                return Err(DecodeError::BodyLength {
                    frame_type,
                    len: body.len(),
                });
            }
            let sequence = r.u32();
            let device_time_ns = r.u64();
            let lead_count = r.u8();
            let frame_count = r.u8() as usize;
            let packed = r.take(usize::MAX);
            if packed.len() != 3 * lead_count as usize * frame_count {
                return Err(DecodeError::BodyLength {
                    frame_type,
                    len: body.len(),
                });
            }
            Samples::new(sequence, device_time_ns, lead_count, packed)
                .map(Frame::Samples)
                .map_err(|e| match e {
                    SamplesError::LeadCount(n) => DecodeError::LeadCount { count: n },
                    _ => DecodeError::BodyLength {
                        frame_type,
                        len: body.len(),
                    },
                })
        }
        FrameType::Status => {
            expect_len(STATUS_BODY_LEN)?;
            let lead_off = r.u16();
            let battery_percent = r.u8();
            let errors = r.u16();
            if battery_percent > 100 && battery_percent != BATTERY_UNKNOWN {
                return Err(DecodeError::InvalidField {
                    field: "status.battery_percent",
                });
            }
            Ok(Frame::Status(Status {
                lead_off,
                battery_percent,
                errors,
            }))
        }
        FrameType::Command => {
            expect_len(COMMAND_BODY_LEN)?;
            let token = r.u8();
            let code = r.u8();
            let arg = r.u32();
            let kind = match code {
                1 => CommandKind::Start,
                2 => CommandKind::Stop,
                3 => CommandKind::SetRate(arg),
                4 => CommandKind::Ping(arg),
                _ => {
                    return Err(DecodeError::InvalidField {
                        field: "command.code",
                    });
                }
            };
            Ok(Frame::Command(Command { token, kind }))
        }
        FrameType::Ack => {
            expect_len(ACK_BODY_LEN)?;
            let token = r.u8();
            let command = r.u8();
            let result = match r.u8() {
                0 => AckResult::Ok,
                1 => AckResult::Unsupported,
                2 => AckResult::InvalidArgument,
                3 => AckResult::Busy,
                _ => {
                    return Err(DecodeError::InvalidField {
                        field: "ack.result",
                    });
                }
            };
            let value = r.u32();
            Ok(Frame::Ack(Ack {
                token,
                command,
                result,
                value,
            }))
        }
    }
}

fn parse_hello(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
    let serial = r.array::<SERIAL_LEN>();
    let sample_rate_hz = r.u32();
    let lead_count = r.u8();
    let leads = r.array::<MAX_LEADS>();
    let uv_per_count = f32::from_le_bytes(r.array());
    let firmware_version = r.array::<3>();
    if sample_rate_hz == 0 || sample_rate_hz > MAX_SAMPLE_RATE_HZ {
        return Err(DecodeError::SampleRate { hz: sample_rate_hz });
    }
    if lead_count == 0 || lead_count as usize > MAX_LEADS {
        return Err(DecodeError::LeadCount { count: lead_count });
    }
    let used = &leads[..lead_count as usize];
    let mut seen = 0u16;
    for &code in used {
        if code as usize >= MAX_LEADS || seen & (1 << code) != 0 {
            return Err(DecodeError::InvalidField {
                field: "hello.leads",
            });
        }
        seen |= 1 << code;
    }
    let (min_scale, max_scale) = UV_PER_COUNT_RANGE;
    if !(min_scale..=max_scale).contains(&uv_per_count) {
        return Err(DecodeError::InvalidField {
            field: "hello.uv_per_count",
        });
    }
    let mut normalised = [0xFFu8; MAX_LEADS];
    normalised[..used.len()].copy_from_slice(used);
    Ok(Hello {
        serial,
        sample_rate_hz,
        lead_count,
        leads: normalised,
        uv_per_count,
        firmware_version,
    })
}
