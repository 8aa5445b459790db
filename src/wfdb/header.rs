//! The WFDB header (`.hea`): parsing every field a single-segment record may carry, and
//! writing headers that PhysioNet's tools read.
//!
//! Parsing never trusts the text: numbers are checked, counts are bounded, and every error
//! names the line it came from.

use std::fmt::{self, Write as _};

use super::{SignalFormat, WfdbError};

/// Most signals a header may declare (real records have 1-16; MIMIC and PTB-XL have 12).
pub const MAX_SIGNALS: usize = 1024;

/// The record line and signal lines of a header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Record name.
    pub record_name: String,
    /// Sampling frequency, Hz (250 when the header omits it).
    pub sample_rate_hz: f64,
    /// Samples per signal, when given (WFDB's 0 means "not given": `None`).
    pub n_samples: Option<u64>,
    /// Base time and date, as written (`hh:mm:ss dd/mm/yyyy`), when given.
    pub base_time: Option<String>,
    /// One entry per signal, in file order.
    pub signals: Vec<SignalSpec>,
    /// Comment lines (without the leading `#`).
    pub comments: Vec<String>,
}

/// One signal line.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSpec {
    /// Data file holding the signal.
    pub file_name: String,
    /// Storage format.
    pub format: SignalFormat,
    /// Bytes to skip at the start of the data file.
    pub byte_offset: u64,
    /// ADC units per physical unit (200 when the header says 0 or omits it).
    pub adc_gain: f64,
    /// Digital value of physical zero.
    pub baseline: i32,
    /// Physical units (`mV` when omitted).
    pub units: String,
    /// ADC resolution in bits.
    pub adc_resolution: u32,
    /// ADC zero.
    pub adc_zero: i32,
    /// First sample value.
    pub initial_value: Option<i32>,
    /// 16-bit checksum of the samples.
    pub checksum: Option<i32>,
    /// Block size (0 for ordinary files).
    pub block_size: u32,
    /// Signal description (the lead name in ECG records).
    pub description: String,
}

impl SignalSpec {
    /// A signal line for an ECG lead stored in `file_name` with `format` and `adc_gain` units
    /// per mV.
    pub fn ecg(file_name: &str, format: SignalFormat, adc_gain: f64, lead: &str) -> Self {
        SignalSpec {
            file_name: file_name.to_string(),
            format,
            byte_offset: 0,
            adc_gain,
            baseline: 0,
            units: "mV".into(),
            adc_resolution: format.bits(),
            adc_zero: 0,
            initial_value: None,
            checksum: None,
            block_size: 0,
            description: lead.to_string(),
        }
    }
}

fn bad(line: usize, what: impl Into<String>) -> WfdbError {
    WfdbError::Header {
        line,
        reason: what.into(),
    }
}

fn number<T: std::str::FromStr>(line: usize, field: &str, text: &str) -> Result<T, WfdbError> {
    text.parse()
        .map_err(|_| bad(line, format!("{field} `{text}` is not a valid number")))
}

impl Header {
    /// Parses header text.
    pub fn parse(text: &str) -> Result<Self, WfdbError> {
        let mut comments = Vec::new();
        let mut content = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if let Some(c) = l.strip_prefix('#') {
                comments.push(c.trim().to_string());
            } else if !l.is_empty() {
                content.push((i + 1, l));
            }
        }
        let mut lines = content.into_iter();
        let (n, record_line) = lines.next().ok_or_else(|| bad(1, "no record line"))?;
        let mut f = record_line.split_whitespace();
        let name = f.next().ok_or_else(|| bad(n, "no record name"))?;
        if name.contains('/') {
            return Err(WfdbError::Unsupported(format!(
                "line {n}: multi-segment record `{name}`"
            )));
        }
        let n_sig: usize = number(n, "number of signals", f.next().unwrap_or("0"))?;
        if n_sig > MAX_SIGNALS {
            return Err(bad(n, format!("{n_sig} signals (at most {MAX_SIGNALS})")));
        }
        let sample_rate_hz = match f.next() {
            // `fs[/counter_freq[(base_counter)]]`: only the sampling frequency matters here.
            Some(fs) => {
                let fs_text = fs.split('/').next().unwrap_or(fs);
                let fs: f64 = number(n, "sampling frequency", fs_text)?;
                if !(fs.is_finite() && fs > 0.0) {
                    return Err(bad(n, format!("sampling frequency {fs} is not positive")));
                }
                fs
            }
            None => 250.0,
        };
        let n_samples = f
            .next()
            .map(|s| number::<u64>(n, "number of samples", s))
            .transpose()?
            .filter(|&samples| samples != 0);
        let rest: Vec<&str> = f.collect();
        let base_time = (!rest.is_empty()).then(|| rest.join(" "));

        let mut signals = Vec::with_capacity(n_sig);
        for _ in 0..n_sig {
            let (n, line) = lines.next().ok_or_else(|| {
                bad(
                    n,
                    format!("header declares {n_sig} signals but has fewer lines"),
                )
            })?;
            signals.push(parse_signal(n, line)?);
        }
        Ok(Header {
            record_name: name.to_string(),
            sample_rate_hz,
            n_samples,
            base_time,
            signals,
            comments,
        })
    }

    /// The header as text.
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}

fn parse_signal(n: usize, line: &str) -> Result<SignalSpec, WfdbError> {
    let mut f = line.split_whitespace();
    let file_name = f
        .next()
        .ok_or_else(|| bad(n, "empty signal line"))?
        .to_string();
    let fmt_field = f
        .next()
        .ok_or_else(|| bad(n, "signal line has no format"))?;
    // format[xsamples_per_frame][:skew][+byte_offset]
    let (fmt_part, byte_offset) = match fmt_field.split_once('+') {
        Some((a, off)) => (a, number::<u64>(n, "byte offset", off)?),
        None => (fmt_field, 0),
    };
    let (fmt_part, skew) = match fmt_part.split_once(':') {
        Some((a, s)) => (a, number::<i64>(n, "skew", s)?),
        None => (fmt_part, 0),
    };
    let (fmt_code, spf) = match fmt_part.split_once('x') {
        Some((a, s)) => (a, number::<u32>(n, "samples per frame", s)?),
        None => (fmt_part, 1),
    };
    if spf != 1 || skew != 0 {
        return Err(WfdbError::Unsupported(format!(
            "line {n}: samples per frame {spf} / skew {skew} (only 1 / 0 are supported)"
        )));
    }
    let code: u32 = number(n, "format", fmt_code)?;
    let format = SignalFormat::from_code(code)
        .ok_or_else(|| WfdbError::Unsupported(format!("line {n}: signal format {code}")))?;

    let mut adc_gain = 200.0;
    let mut baseline = None;
    let mut units = "mV".to_string();
    if let Some(g) = f.next() {
        let (g, u) = match g.split_once('/') {
            Some((g, u)) => (g, Some(u)),
            None => (g, None),
        };
        let (g, b) = match g.split_once('(') {
            Some((g, b)) => {
                let b = b
                    .strip_suffix(')')
                    .ok_or_else(|| bad(n, format!("baseline `({b}` has no closing parenthesis")))?;
                (g, Some(number::<i32>(n, "baseline", b)?))
            }
            None => (g, None),
        };
        let gain: f64 = number(n, "ADC gain", g)?;
        if !gain.is_finite() || gain < 0.0 {
            return Err(bad(n, format!("ADC gain {gain} is negative or not finite")));
        }
        if gain > 0.0 {
            adc_gain = gain;
        }
        baseline = b;
        if let Some(u) = u {
            units = u.to_string();
        }
    }
    let adc_resolution = f
        .next()
        .map(|s| number::<u32>(n, "ADC resolution", s))
        .transpose()?
        .unwrap_or(format.bits());
    let adc_zero = f
        .next()
        .map(|s| number::<i32>(n, "ADC zero", s))
        .transpose()?
        .unwrap_or(0);
    let initial_value = f
        .next()
        .map(|s| number::<i32>(n, "initial value", s))
        .transpose()?;
    let checksum = f
        .next()
        .map(|s| number::<i32>(n, "checksum", s))
        .transpose()?;
    let block_size = f
        .next()
        .map(|s| number::<u32>(n, "block size", s))
        .transpose()?
        .unwrap_or(0);
    let description = f.collect::<Vec<_>>().join(" ");
    Ok(SignalSpec {
        file_name,
        format,
        byte_offset,
        adc_gain,
        baseline: baseline.unwrap_or(adc_zero),
        units,
        adc_resolution,
        adc_zero,
        initial_value,
        checksum,
        block_size,
        description,
    })
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = format!(
            "{} {} {}",
            self.record_name,
            self.signals.len(),
            self.sample_rate_hz
        );
        // A base time needs the number of samples before it: 0 when not given.
        if self.n_samples.is_some() || self.base_time.is_some() {
            let _ = write!(line, " {}", self.n_samples.unwrap_or(0));
            if let Some(t) = &self.base_time {
                let _ = write!(line, " {t}");
            }
        }
        writeln!(f, "{line}")?;
        for s in &self.signals {
            let offset = if s.byte_offset > 0 {
                format!("+{}", s.byte_offset)
            } else {
                String::new()
            };
            write!(
                f,
                "{} {}{} {}({})/{} {} {}",
                s.file_name,
                s.format.code(),
                offset,
                s.adc_gain,
                s.baseline,
                s.units,
                s.adc_resolution,
                s.adc_zero
            )?;
            write!(
                f,
                " {} {} {}",
                s.initial_value.unwrap_or(0),
                s.checksum.unwrap_or(0),
                s.block_size
            )?;
            if !s.description.is_empty() {
                write!(f, " {}", s.description)?;
            }
            writeln!(f)?;
        }
        for c in &self.comments {
            writeln!(f, "# {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTBXL: &str = "00001_hr 12 500 5000\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -119 1508 0 I\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -55 723 0 II\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 64 64758 0 III\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 86 64423 0 AVR\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -91 1211 0 AVL\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 4 7 0 AVF\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -69 63827 0 V1\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -31 6999 0 V2\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 0 63759 0 V3\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -26 61447 0 V4\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -39 64979 0 V5\n\
        00001_hr.dat 16 1000.0(0)/mV 16 0 -79 832 0 V6\n";

    #[test]
    fn parses_a_ptbxl_style_header() {
        let h = Header::parse(PTBXL).unwrap();
        assert_eq!(h.record_name, "00001_hr");
        assert_eq!(h.sample_rate_hz, 500.0);
        assert_eq!(h.n_samples, Some(5000));
        assert_eq!(h.signals.len(), 12);
        let s = &h.signals[3];
        assert_eq!(
            (s.adc_gain, s.baseline, s.units.as_str()),
            (1000.0, 0, "mV")
        );
        assert_eq!((s.initial_value, s.checksum), (Some(86), Some(64423)));
        assert_eq!(s.description, "AVR");
    }

    #[test]
    fn parses_minimal_and_mimic_style_lines() {
        let h = Header::parse(
            "# a comment\n40689238 2 500/1000(0) 5000 13:20:15 04/05/2180\n\
             40689238.dat 16 200/mV 16 0 -1 2 0 I\n\
             40689238.dat 212\n",
        )
        .unwrap();
        assert_eq!(h.base_time.as_deref(), Some("13:20:15 04/05/2180"));
        assert_eq!(h.signals[0].adc_gain, 200.0);
        assert_eq!(h.signals[1].format, SignalFormat::Format212);
        assert_eq!(h.signals[1].adc_gain, 200.0);
        assert_eq!(h.comments, vec!["a comment".to_string()]);
    }

    #[test]
    fn written_headers_parse_back_identically() {
        let h = Header::parse(PTBXL).unwrap();
        assert_eq!(Header::parse(&h.to_text()).unwrap(), h);
    }

    #[test]
    fn zero_samples_means_not_given_and_keeps_the_base_time() {
        let h = Header::parse(
            "r 1 500 0 13:20:15 04/05/2180
r.dat 16 200/mV 16 0 1 6 0 I
",
        )
        .unwrap();
        assert_eq!(h.n_samples, None);
        assert_eq!(h.base_time.as_deref(), Some("13:20:15 04/05/2180"));
        assert!(
            h.to_text().starts_with("r 1 500 0 13:20:15 04/05/2180\n"),
            "{}",
            h.to_text()
        );
        assert_eq!(Header::parse(&h.to_text()).unwrap(), h);
    }

    /// Each malformed header is refused with the line at fault; a valid feature this reader
    /// does not implement is refused as unsupported, naming it.
    #[test]
    fn malformed_headers_are_errors_naming_the_line() {
        enum Expect {
            Line(usize),
            Unsupported(&'static str),
        }
        use Expect::*;
        for (text, expect) in [
            ("", Line(1)),
            ("rec x 500", Line(1)),
            ("rec 2 500 10\nrec.dat 16\n", Line(1)),
            ("rec 1 -5\nrec.dat 16\n", Line(1)),
            ("rec 1 500\nrec.dat 16 200(0/mV\n", Line(2)),
            ("rec 1 500\nrec.dat 16 abc\n", Line(2)),
            ("rec 99999 500\n", Line(1)),
            (
                "rec 1 500\nrec.dat 99\n",
                Unsupported("line 2: signal format 99"),
            ),
            (
                "rec/2 2 500\n",
                Unsupported("line 1: multi-segment record `rec/2`"),
            ),
        ] {
            match (Header::parse(text), expect) {
                (Err(WfdbError::Header { line, .. }), Line(want)) => {
                    assert_eq!(line, want, "{text:?}")
                }
                (Err(WfdbError::Unsupported(what)), Unsupported(want)) => {
                    assert!(what.contains(want), "{text:?}: {what}")
                }
                (other, _) => panic!("{text:?}: unexpected {other:?}"),
            }
        }
    }
}
