//! Consistent Overhead Byte Stuffing: removes every zero byte from a frame so that a single
//! `0x00` can delimit frames on the wire, with at most one byte of overhead per 254.
//!
//! The encoder writes straight into the caller's buffer while the frame is serialised (no
//! scratch copy); the decoder works in place, since decoded data is never longer than encoded.

/// The caller's buffer is too small for the encoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferFull;

/// Worst-case COBS length of `raw_len` bytes, without the delimiter.
pub const fn max_encoded_len(raw_len: usize) -> usize {
    raw_len + raw_len / 254 + 1
}

/// Streams bytes into `out` as COBS; [`CobsWriter::finish`] closes the frame with `0x00`.
pub struct CobsWriter<'a> {
    out: &'a mut [u8],
    code_at: usize,
    pos: usize,
    code: u8,
}

impl<'a> CobsWriter<'a> {
    /// Starts a frame at the beginning of `out`.
    pub fn new(out: &'a mut [u8]) -> Result<Self, BufferFull> {
        if out.is_empty() {
            return Err(BufferFull);
        }
        Ok(CobsWriter {
            out,
            code_at: 0,
            pos: 1,
            code: 1,
        })
    }

    /// Appends one raw byte.
    pub fn push(&mut self, byte: u8) -> Result<(), BufferFull> {
        if byte == 0 {
            return self.close_block();
        }
        *self.out.get_mut(self.pos).ok_or(BufferFull)? = byte;
        self.pos += 1;
        self.code += 1;
        if self.code == 0xFF {
            self.close_block()?;
        }
        Ok(())
    }

    /// Appends raw bytes.
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        bytes.iter().try_for_each(|&b| self.push(b))
    }

    fn close_block(&mut self) -> Result<(), BufferFull> {
        self.out[self.code_at] = self.code;
        if self.pos >= self.out.len() {
            return Err(BufferFull);
        }
        self.code_at = self.pos;
        self.pos += 1;
        self.code = 1;
        Ok(())
    }

    /// Writes the last block code and the `0x00` delimiter; returns the bytes written.
    pub fn finish(self) -> Result<usize, BufferFull> {
        self.out[self.code_at] = self.code;
        *self.out.get_mut(self.pos).ok_or(BufferFull)? = 0;
        Ok(self.pos + 1)
    }
}

/// The encoded bytes are not valid COBS (a block code points past the end, or a zero appears).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCobs;

/// Decodes the COBS bytes in `buf` (without the delimiter) in place; returns the raw length.
pub fn decode_in_place(buf: &mut [u8]) -> Result<usize, InvalidCobs> {
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let code = buf[read] as usize;
        if code == 0 || read + code > buf.len() {
            return Err(InvalidCobs);
        }
        read += 1;
        for _ in 1..code {
            let byte = buf[read];
            if byte == 0 {
                return Err(InvalidCobs);
            }
            buf[write] = byte;
            write += 1;
            read += 1;
        }
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(raw: &[u8]) -> usize {
        let mut out = [0u8; 1024];
        let mut w = CobsWriter::new(&mut out).unwrap();
        w.extend(raw).unwrap();
        let n = w.finish().unwrap();
        assert!(n <= max_encoded_len(raw.len()) + 1, "overhead bound");
        assert_eq!(out[n - 1], 0, "delimiter ends the frame");
        assert!(
            !out[..n - 1].contains(&0),
            "no zero inside an encoded frame"
        );
        let len = decode_in_place(&mut out[..n - 1]).unwrap();
        assert_eq!(&out[..len], raw);
        n
    }

    #[test]
    fn encodes_the_textbook_examples() {
        let mut out = [0u8; 16];
        let mut w = CobsWriter::new(&mut out).unwrap();
        w.extend(&[0x11, 0x22, 0x00, 0x33]).unwrap();
        let n = w.finish().unwrap();
        assert_eq!(&out[..n], &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00]);
        assert_eq!(round_trip(&[0x00]), 3);
    }

    #[test]
    fn round_trips_long_runs_without_zeros() {
        let raw: [u8; 600] = core::array::from_fn(|i| (i % 255) as u8 + 1);
        round_trip(&raw);
        round_trip(&raw[..254]);
        round_trip(&raw[..253]);
        round_trip(&[]);
    }

    #[test]
    fn rejects_codes_that_run_past_the_end() {
        assert_eq!(decode_in_place(&mut [0x05, 1, 2]), Err(InvalidCobs));
        assert_eq!(decode_in_place(&mut [0x00]), Err(InvalidCobs));
    }

    #[test]
    fn reports_a_full_buffer_instead_of_writing_past_it() {
        let mut out = [0u8; 3];
        let mut w = CobsWriter::new(&mut out).unwrap();
        assert_eq!(w.extend(&[1, 2, 3]), Err(BufferFull));
    }
}
