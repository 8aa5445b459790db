//! WFDB records (PhysioNet): reading and writing single-segment records in formats 16, 212
//! and 80, and converting them to and from [`Recording`].
//!
//! The `wfdb` crate on crates.io (0.1.6) only reads, so the project carries its own reader and
//! writer. Nothing from a file is trusted: header counts are bounded, only the bytes the
//! header declares are read and decoded (the data file's size decides where the header gives
//! no sample count), and malformed input is an error, never a panic (see the
//! fuzz target under `fuzz/` and the random-bytes tests in `tests/synth_wfdb.rs`).

pub mod annotation;
pub mod header;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ndarray::Array2;

pub use header::{Header, SignalSpec};

use crate::ecg::{Lead, LeadName, LeadSet, Recording};

/// What can go wrong reading or writing WFDB.
#[derive(Debug, thiserror::Error)]
pub enum WfdbError {
    /// A malformed header line.
    #[error("WFDB header line {line}: {reason}")]
    Header {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A valid WFDB feature this reader does not implement.
    #[error("unsupported WFDB feature: {0}")]
    Unsupported(String),
    /// Signal data that does not match the header.
    #[error("WFDB signal data: {0}")]
    Data(String),
    /// A signal description that is not an ECG lead name.
    #[error("signal {index} is `{description}`, not a standard ECG lead")]
    UnknownLead {
        /// Signal index.
        index: usize,
        /// The description found.
        description: String,
    },
    /// None of the record's signals is one of the twelve standard leads.
    #[error(
        "no standard ECG lead among the signals ({signals}); expected I, II, III, aVR, aVL, aVF or V1..V6"
    )]
    NoStandardLead {
        /// The signal descriptions found, comma-separated.
        signals: String,
    },
    /// File access failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A WFDB sample storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalFormat {
    /// 16-bit two's complement, little-endian.
    Format16,
    /// Pairs of 12-bit two's complement samples packed in 3 bytes.
    Format212,
    /// 8-bit offset binary.
    Format80,
}

impl SignalFormat {
    /// The format from its header code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            16 => Some(SignalFormat::Format16),
            212 => Some(SignalFormat::Format212),
            80 => Some(SignalFormat::Format80),
            _ => None,
        }
    }

    /// The header code.
    pub fn code(self) -> u32 {
        match self {
            SignalFormat::Format16 => 16,
            SignalFormat::Format212 => 212,
            SignalFormat::Format80 => 80,
        }
    }

    /// Bits per sample.
    pub fn bits(self) -> u32 {
        match self {
            SignalFormat::Format16 => 16,
            SignalFormat::Format212 => 12,
            SignalFormat::Format80 => 8,
        }
    }

    /// Bytes that hold `samples` samples (212 packs two in three bytes, a last odd one in
    /// two); none when that overflows.
    pub fn bytes_for(self, samples: u64) -> Option<u64> {
        match self {
            SignalFormat::Format16 => samples.checked_mul(2),
            SignalFormat::Format80 => Some(samples),
            SignalFormat::Format212 => (samples / 2)
                .checked_mul(3)?
                .checked_add(if samples % 2 == 1 { 2 } else { 0 }),
        }
    }

    /// The value WFDB reserves for "no sample" in this format.
    pub fn invalid_value(self) -> i32 {
        -(1 << (self.bits() - 1))
    }

    /// The largest and smallest storable valid samples.
    pub fn valid_range(self) -> (i32, i32) {
        let half = 1 << (self.bits() - 1);
        (-half + 1, half - 1)
    }
}

/// Decodes interleaved samples of one data file.
pub fn decode_samples(format: SignalFormat, bytes: &[u8]) -> Vec<i32> {
    match format {
        SignalFormat::Format16 => bytes
            .chunks_exact(2)
            .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
            .collect(),
        SignalFormat::Format80 => bytes.iter().map(|&b| i32::from(b) - 128).collect(),
        SignalFormat::Format212 => {
            let mut out = Vec::with_capacity(bytes.len() / 3 * 2 + 1);
            let sign12 = |v: i32| if v >= 2048 { v - 4096 } else { v };
            let mut chunks = bytes.chunks_exact(3);
            for c in &mut chunks {
                let (b0, b1, b2) = (i32::from(c[0]), i32::from(c[1]), i32::from(c[2]));
                out.push(sign12(b0 | ((b1 & 0x0f) << 8)));
                out.push(sign12(b2 | ((b1 & 0xf0) << 4)));
            }
            // A trailing 2-byte group holds one last sample.
            if let [b0, b1] = *chunks.remainder() {
                out.push(sign12(i32::from(b0) | ((i32::from(b1) & 0x0f) << 8)));
            }
            out
        }
    }
}

/// Encodes interleaved samples; values outside the format's range are an error.
pub fn encode_samples(format: SignalFormat, samples: &[i32]) -> Result<Vec<u8>, WfdbError> {
    let (lo, hi) = format.valid_range();
    let invalid = format.invalid_value();
    if let Some(v) = samples
        .iter()
        .find(|&&v| (v < lo || v > hi) && v != invalid)
    {
        return Err(WfdbError::Data(format!(
            "sample {v} does not fit format {}",
            format.code()
        )));
    }
    Ok(match format {
        SignalFormat::Format16 => samples
            .iter()
            .flat_map(|&v| (v as i16).to_le_bytes())
            .collect(),
        SignalFormat::Format80 => samples.iter().map(|&v| (v + 128) as u8).collect(),
        SignalFormat::Format212 => {
            let mut out = Vec::with_capacity(samples.len() * 3 / 2 + 2);
            for pair in samples.chunks(2) {
                let a = (pair[0] & 0xfff) as u16;
                out.push((a & 0xff) as u8);
                match pair.get(1) {
                    Some(&b) => {
                        let b = (b & 0xfff) as u16;
                        out.push((((a >> 8) & 0x0f) | ((b >> 4) & 0xf0)) as u8);
                        out.push((b & 0xff) as u8);
                    }
                    None => out.push(((a >> 8) & 0x0f) as u8),
                }
            }
            out
        }
    })
}

/// A record as stored: header and digital samples (`signals x frames`).
#[derive(Debug, Clone, PartialEq)]
pub struct WfdbRecord {
    /// The parsed header.
    pub header: Header,
    /// Digital samples, one row per signal.
    pub digital: Array2<i32>,
}

/// Decodes the signals of `header` from data files supplied by `read_file` (file name to
/// bytes). Signals sharing a file are interleaved in header order.
pub fn decode_record(
    header: Header,
    mut read_file: impl FnMut(&str) -> Result<Vec<u8>, WfdbError>,
) -> Result<WfdbRecord, WfdbError> {
    let n_sig = header.signals.len();
    let mut rows: Vec<Vec<i32>> = vec![Vec::new(); n_sig];
    let mut i = 0;
    while i < n_sig {
        let first = &header.signals[i];
        let group_len = header.signals[i..]
            .iter()
            .take_while(|s| s.file_name == first.file_name)
            .count();
        let group = &header.signals[i..i + group_len];
        if group
            .iter()
            .any(|s| s.format != first.format || s.byte_offset != first.byte_offset)
        {
            return Err(WfdbError::Unsupported(format!(
                "mixed formats or offsets within {}",
                first.file_name
            )));
        }
        let bytes = read_file(&first.file_name)?;
        let start = usize::try_from(first.byte_offset)
            .ok()
            .filter(|&o| o <= bytes.len())
            .ok_or_else(|| {
                WfdbError::Data(format!("byte offset beyond the end of {}", first.file_name))
            })?;
        // Only the frames the header declares are decoded (a data file far longer than its
        // header says costs nothing beyond them).
        let end = header
            .n_samples
            .and_then(|n| n.checked_mul(group_len as u64))
            .and_then(|k| first.format.bytes_for(k))
            .and_then(|b| usize::try_from(b).ok())
            .and_then(|b| start.checked_add(b))
            .map_or(bytes.len(), |end| end.min(bytes.len()));
        let samples = decode_samples(first.format, &bytes[start..end]);
        let frames = samples.len() / group_len;
        for (k, row) in rows[i..i + group_len].iter_mut().enumerate() {
            *row = samples
                .iter()
                .skip(k)
                .step_by(group_len)
                .take(frames)
                .copied()
                .collect();
        }
        i += group_len;
    }
    let available = rows.iter().map(Vec::len).min().unwrap_or(0);
    let frames = match header.n_samples {
        Some(n) if n > available as u64 => {
            return Err(WfdbError::Data(format!(
                "header declares {n} samples per signal but the data holds {available}"
            )));
        }
        Some(n) => n as usize,
        None => available,
    };
    let mut digital = Array2::<i32>::zeros((n_sig, frames));
    for (mut out, row) in digital.rows_mut().into_iter().zip(&rows) {
        for (o, v) in out.iter_mut().zip(row) {
            *o = *v;
        }
    }
    Ok(WfdbRecord { header, digital })
}

/// Reads a record from its header file (`.hea`); data files are looked up next to it.
pub fn read_record(hea_path: &Path) -> Result<WfdbRecord, WfdbError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WfdbError::Io {
            path: path.clone(),
            source,
        }
    };
    let text = std::fs::read_to_string(hea_path).map_err(io(hea_path))?;
    let header = Header::parse(&text)?;
    let dir = hea_path.parent().unwrap_or(Path::new("."));
    let needed = |name: &str| data_bytes_needed(&header, name);
    let limits: Vec<(String, Option<u64>)> = header
        .signals
        .iter()
        .map(|s| (s.file_name.clone(), needed(&s.file_name)))
        .collect();
    decode_record(header, |name| {
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(WfdbError::Unsupported(format!("data file path `{name}`")));
        }
        let p = dir.join(name);
        let limit = limits.iter().find(|(n, _)| n == name).and_then(|(_, l)| *l);
        let mut file = std::fs::File::open(&p).map_err(io(&p))?;
        let mut bytes = Vec::new();
        match limit {
            // Only what the header declares is read: a data file of gigabytes behind a
            // 10 s header is not loaded whole.
            Some(limit) => file.take(limit).read_to_end(&mut bytes),
            None => file.read_to_end(&mut bytes),
        }
        .map_err(io(&p))?;
        Ok(bytes)
    })
}

/// The bytes of data file `name` that hold what `header` declares (its byte offset and
/// `n_samples` frames of the signals stored in it); none when the header gives no sample count
/// (the data's length decides) or the count overflows.
pub fn data_bytes_needed(header: &Header, name: &str) -> Option<u64> {
    let mut in_file = header.signals.iter().filter(|s| s.file_name == name);
    let first = in_file.next()?;
    let signals = 1 + in_file.count() as u64;
    let samples = header.n_samples?.checked_mul(signals)?;
    first
        .format
        .bytes_for(samples)?
        .checked_add(first.byte_offset)
}

/// The standard leads of the record whose header is `hea` ([`WfdbRecord::standard_leads`])
/// with the record itself (its header, checksums): what `meit replay` and
/// `meit-models generate` read. A record none of whose signals is a standard lead is an error
/// listing its signals.
pub fn read_standard_leads(hea: &Path) -> Result<(WfdbRecord, LeadSelection), WfdbError> {
    let record = read_record(hea)?;
    let selection = record.standard_leads();
    if selection.recording.leads.is_empty() {
        let signals: Vec<&str> = record
            .header
            .signals
            .iter()
            .map(|s| s.description.as_str())
            .collect();
        return Err(WfdbError::NoStandardLead {
            signals: signals.join(", "),
        });
    }
    Ok((record, selection))
}

impl WfdbRecord {
    /// Indices of the signals whose samples do not add up to the header's checksum (a
    /// corrupted file). Signals without a checksum are not checked.
    pub fn checksum_mismatches(&self) -> Vec<usize> {
        self.header
            .signals
            .iter()
            .zip(self.digital.rows())
            .enumerate()
            .filter_map(|(i, (s, row))| {
                let want = s.checksum?;
                let sum = row.iter().fold(0i32, |acc, &v| acc.wrapping_add(v)) as u16;
                (i32::from(sum) != want.rem_euclid(65_536)).then_some(i)
            })
            .collect()
    }

    /// Converts to microvolts. Every signal must be a standard lead (see [`lead_of`]); WFDB's
    /// invalid-sample value becomes NaN.
    pub fn to_recording(&self) -> Result<Recording, WfdbError> {
        let mut picked = Vec::with_capacity(self.header.signals.len());
        for (index, s) in self.header.signals.iter().enumerate() {
            let lead = lead_of(&s.description).ok_or_else(|| WfdbError::UnknownLead {
                index,
                description: s.description.clone(),
            })?;
            picked.push((index, lead));
        }
        Ok(self.leads_uv(&picked))
    }

    /// The standard leads among the signals, converted like [`WfdbRecord::to_recording`];
    /// the other signals (Frank X/Y/Z, respiration, a repeated lead...) are left out and
    /// listed. The recording has no leads when none of the signals is a standard lead.
    pub fn standard_leads(&self) -> LeadSelection {
        let mut picked: Vec<(usize, Lead)> = Vec::new();
        let mut ignored = Vec::new();
        let mut approximated = Vec::new();
        for (index, s) in self.header.signals.iter().enumerate() {
            match LeadName::parse(&s.description) {
                Ok(name) if picked.iter().all(|&(_, l)| l != name.lead) => {
                    picked.push((index, name.lead));
                    if name.is_approximation() {
                        approximated.push((s.description.clone(), name.lead));
                    }
                }
                _ => ignored.push(s.description.clone()),
            }
        }
        LeadSelection {
            recording: self.leads_uv(&picked),
            ignored,
            approximated,
        }
    }

    /// Signals `picked` (signal index, its lead) in microvolts.
    fn leads_uv(&self, picked: &[(usize, Lead)]) -> Recording {
        let frames = self.digital.ncols();
        let mut samples = Array2::<f32>::zeros((picked.len(), frames));
        for (mut out, &(index, _)) in samples.rows_mut().into_iter().zip(picked) {
            let (Some(s), Some(row)) = (
                self.header.signals.get(index),
                self.digital.rows().into_iter().nth(index),
            ) else {
                continue;
            };
            let per_unit_uv = match s.units.to_ascii_lowercase().as_str() {
                "uv" | "µv" => 1.0,
                "v" => 1e6,
                _ => 1e3,
            };
            let scale = per_unit_uv / s.adc_gain;
            let invalid = s.format.invalid_value();
            for (o, &d) in out.iter_mut().zip(row) {
                *o = if d == invalid {
                    f32::NAN
                } else {
                    ((i64::from(d) - i64::from(s.baseline)) as f64 * scale) as f32
                };
            }
        }
        Recording {
            sample_rate_hz: self.header.sample_rate_hz,
            leads: LeadSet(picked.iter().map(|&(_, lead)| lead).collect()),
            samples_uv: samples,
        }
    }
}

/// The standard leads of a record and the signals left out ([`WfdbRecord::standard_leads`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadSelection {
    /// The standard leads in microvolts, in the record's order.
    pub recording: Recording,
    /// Descriptions of the signals left out, in the record's order.
    pub ignored: Vec<String>,
    /// Signals read as a standard lead they only approximate (`MCL1` or `V` as V1), with that
    /// lead ([`crate::ecg::LeadKind::ChestApproximation`]).
    pub approximated: Vec<(String, Lead)>,
}

/// The standard lead a signal description names, in any spelling [`LeadName::parse`] accepts
/// (the project's one lead-name mapping: `ii`, `ECG lead II`, `MLII`, `MCL1`, `V`, ...);
/// anything else (`vx`, `Resp`) is `None`.
pub fn lead_of(description: &str) -> Option<Lead> {
    LeadName::parse(description).ok().map(|n| n.lead)
}

/// How to store a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteOptions {
    /// Storage format.
    pub format: SignalFormat,
    /// ADC units per millivolt (PTB-XL 1000, MIMIC-IV-ECG 200).
    pub adc_gain_per_mv: f64,
}

/// Writes `recording` as `<dir>/<name>.hea` + `<dir>/<name>.dat` in the order of its leads.
/// Samples are rounded to the ADC grid and clipped to the format's range; NaN is stored as
/// WFDB's invalid value.
pub fn write_record(
    dir: &Path,
    name: &str,
    recording: &Recording,
    options: WriteOptions,
    comments: &[String],
) -> Result<Header, WfdbError> {
    let (lo, hi) = options.format.valid_range();
    let per_uv = options.adc_gain_per_mv / 1000.0;
    let (n_sig, frames) = recording.samples_uv.dim();
    if n_sig != recording.leads.len() {
        return Err(WfdbError::Data(format!(
            "{} leads named for {n_sig} signal rows",
            recording.leads.len()
        )));
    }
    let mut interleaved = Vec::with_capacity(n_sig * frames);
    for t in 0..frames {
        for v in recording.samples_uv.column(t) {
            interleaved.push(if v.is_nan() {
                options.format.invalid_value()
            } else {
                ((f64::from(*v) * per_uv).round() as i64).clamp(i64::from(lo), i64::from(hi)) as i32
            });
        }
    }
    let dat_name = format!("{name}.dat");
    let mut signals = Vec::with_capacity(n_sig);
    for (k, lead) in recording.leads.0.iter().enumerate() {
        let mut s = SignalSpec::ecg(
            &dat_name,
            options.format,
            options.adc_gain_per_mv,
            lead.name(),
        );
        let column = interleaved.iter().skip(k).step_by(n_sig.max(1));
        s.initial_value = interleaved.get(k).copied();
        // WFDB's checksum: the 16-bit sum of the samples, written unsigned as PhysioNet does.
        s.checksum = Some(i32::from(
            column.fold(0i32, |acc, &v| acc.wrapping_add(v)) as u16
        ));
        signals.push(s);
    }
    let header = Header {
        record_name: name.to_string(),
        sample_rate_hz: recording.sample_rate_hz,
        n_samples: Some(frames as u64),
        base_time: None,
        signals,
        comments: comments.to_vec(),
    };
    let bytes = encode_samples(options.format, &interleaved)?;
    let write = |path: PathBuf, data: &[u8]| {
        std::fs::write(&path, data).map_err(|source| WfdbError::Io { path, source })
    };
    write(dir.join(&dat_name), &bytes)?;
    write(dir.join(format!("{name}.hea")), header.to_text().as_bytes())?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_212_packs_pairs_into_three_bytes() {
        let samples = [0, -1, 2047, -2047, 5];
        let bytes = encode_samples(SignalFormat::Format212, &samples).unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(decode_samples(SignalFormat::Format212, &bytes), samples);
    }

    #[test]
    fn every_format_round_trips_its_full_range() {
        for f in [
            SignalFormat::Format16,
            SignalFormat::Format212,
            SignalFormat::Format80,
        ] {
            let (lo, hi) = f.valid_range();
            let samples: Vec<i32> = (lo..=hi)
                .step_by(7)
                .chain([hi, f.invalid_value()])
                .collect();
            let bytes = encode_samples(f, &samples).unwrap();
            assert_eq!(decode_samples(f, &bytes), samples, "format {}", f.code());
        }
    }

    #[test]
    fn out_of_range_samples_are_refused() {
        assert!(encode_samples(SignalFormat::Format212, &[4000]).is_err());
    }

    #[test]
    fn a_corrupted_sample_breaks_its_signal_checksum() {
        let h = Header::parse(
            "r 2 500 3\nr.dat 16 200/mV 16 0 1 6 0 I\nr.dat 16 200/mV 16 0 4 -1 0 II\n",
        )
        .unwrap();
        let data = encode_samples(SignalFormat::Format16, &[1, 4, 2, 0, 3, -5]).unwrap();
        let rec = decode_record(h, |_| Ok(data.clone())).unwrap();
        assert_eq!(rec.checksum_mismatches(), Vec::<usize>::new());
        let mut bad = data.clone();
        bad[0] = 9;
        let h = rec.header.clone();
        let rec = decode_record(h, |_| Ok(bad.clone())).unwrap();
        assert_eq!(rec.checksum_mismatches(), vec![0]);
    }

    #[test]
    fn a_header_with_zero_samples_reads_every_frame_of_the_data() {
        // WFDB writes 0 when the length is not known: the data file says how long it is, and
        // the checksums hold over all of it (no spurious corruption warning).
        let h = Header::parse(
            "r 2 500 0\nr.dat 16 200/mV 16 0 1 6 0 I\nr.dat 16 200/mV 16 0 4 -1 0 II\n",
        )
        .unwrap();
        let data = encode_samples(SignalFormat::Format16, &[1, 4, 2, 0, 3, -5]).unwrap();
        let rec = decode_record(h, |_| Ok(data.clone())).unwrap();
        assert_eq!(rec.digital.dim(), (2, 3));
        assert_eq!(rec.checksum_mismatches(), Vec::<usize>::new());
    }

    #[test]
    fn only_the_bytes_the_header_declares_are_read_from_a_longer_data_file() {
        // Format 212, 3 signals, 5 frames: 15 samples in 7 three-byte pairs and one last pair of
        // bytes, after a 10-byte offset.
        let h = Header::parse(
            "r 3 500 5\nr.dat 212 200/mV 12 0 0 0 0 I\nr.dat 212 200/mV 12 0 0 0 0 II\n\
             r.dat 212 200/mV 12 0 0 0 0 V1\n",
        )
        .unwrap();
        let mut with_offset = h.clone();
        with_offset
            .signals
            .iter_mut()
            .for_each(|s| s.byte_offset = 10);
        assert_eq!(
            data_bytes_needed(&with_offset, "r.dat"),
            Some(10 + 7 * 3 + 2)
        );
        assert_eq!(data_bytes_needed(&h, "other.dat"), None);
        assert_eq!(SignalFormat::Format16.bytes_for(u64::MAX), None);
        // Two format-16 signals declared at 3 frames, the file holding 100,000: the record has
        // the 3 frames, read from the first 12 bytes.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.hea"),
            "r 2 500 3\nr.dat 16 200/mV 16 0 0 0 0 I\nr.dat 16 200/mV 16 0 0 0 0 II\n",
        )
        .unwrap();
        let frames: Vec<i32> = (0..200_000).map(|v| v % 1000).collect();
        let data = encode_samples(SignalFormat::Format16, &frames).unwrap();
        std::fs::write(dir.path().join("r.dat"), data).unwrap();
        let rec = read_record(&dir.path().join("r.hea")).unwrap();
        assert_eq!(rec.digital.dim(), (2, 3));
        assert_eq!(rec.digital.row(1).to_vec(), [1, 3, 5]);
        let header = rec.header.clone();
        assert_eq!(data_bytes_needed(&header, "r.dat"), Some(12));
    }

    #[test]
    fn lead_of_reads_the_one_lead_name_mapping() {
        assert_eq!(lead_of("MLII"), Some(Lead::II));
        assert_eq!(lead_of("ECG lead II"), Some(Lead::II));
        assert_eq!(lead_of("V"), Some(Lead::V1));
        assert_eq!(lead_of("vx"), None);
    }

    #[test]
    fn chest_approximations_are_named_in_the_selection() {
        let h = Header::parse(
            "r 3 250 1\n\
             r.dat 16 1000/mV 16 0 0 0 0 II\n\
             r.dat 16 1000/mV 16 0 0 0 0 V\n\
             r.dat 16 1000/mV 16 0 0 0 0 PLETH\n",
        )
        .unwrap();
        let data = encode_samples(SignalFormat::Format16, &[1, 2, 3]).unwrap();
        let sel = decode_record(h, |_| Ok(data.clone()))
            .unwrap()
            .standard_leads();
        assert_eq!(sel.recording.leads, LeadSet(vec![Lead::II, Lead::V1]));
        assert_eq!(sel.approximated, vec![("V".to_string(), Lead::V1)]);
        assert_eq!(sel.ignored, vec!["PLETH"]);
    }

    #[test]
    fn standard_leads_keep_the_twelve_leads_and_list_the_other_signals() {
        let h = Header::parse(
            "r 5 250 2\n\
             r.dat 16 1000/mV 16 0 0 0 0 vx\n\
             r.dat 16 1000/mV 16 0 0 0 0 AVR\n\
             r.dat 16 1000/mV 16 0 0 0 0 i\n\
             r.dat 16 1000/mV 16 0 0 0 0 Resp\n\
             r.dat 16 1000/mV 16 0 0 0 0 aVR\n",
        )
        .unwrap();
        let data =
            encode_samples(SignalFormat::Format16, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        let rec = decode_record(h, |_| Ok(data.clone())).unwrap();
        let sel = rec.standard_leads();
        assert_eq!(sel.recording.leads, LeadSet(vec![Lead::AVR, Lead::I]));
        assert_eq!(sel.recording.sample_rate_hz, 250.0);
        // 1000 adu/mV: one count is one microvolt.
        assert_eq!(
            sel.recording.lead(Lead::AVR).unwrap().to_vec(),
            vec![2.0, 7.0]
        );
        assert_eq!(
            sel.recording.lead(Lead::I).unwrap().to_vec(),
            vec![3.0, 8.0]
        );
        assert_eq!(sel.ignored, vec!["vx", "Resp", "aVR"]);
        assert!(matches!(
            rec.to_recording(),
            Err(WfdbError::UnknownLead { index: 0, .. })
        ));
    }

    #[test]
    fn declared_length_longer_than_data_is_an_error() {
        let h = Header::parse("r 1 500 10\nr.dat 16 200/mV 16 0 0 0 0 I\n").unwrap();
        let r = decode_record(h, |_| Ok(vec![0u8; 8]));
        assert!(matches!(r, Err(WfdbError::Data(_))));
    }
}
