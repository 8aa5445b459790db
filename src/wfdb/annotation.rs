//! WFDB annotation files in MIT format (`.atr` reference annotations, `.qrs` detector output):
//! the reader, and the table of annotation codes that tells beats from everything else.
//!
//! An MIT-format file is a sequence of 16-bit little-endian words. The top 6 bits of a word
//! are the annotation code, the low 10 bits the time since the previous annotation, in samples.
//! Codes 59-63 are pseudo-annotations: `SKIP` (a 32-bit interval follows, high half first,
//! for gaps over 1023 samples), and `NUM`, `SUB`, `CHN`, `AUX`, which set fields of the
//! annotation they follow (`AUX` is followed by its text, padded to a whole word). A zero word
//! ends the file. Nothing in the file is trusted: a truncated or corrupt file is an
//! [`AnnotationError`] naming the byte offset, never a panic (random-bytes property test below).

use std::path::{Path, PathBuf};

/// Pseudo-annotation: a 32-bit time interval follows.
const SKIP: u8 = 59;
/// Pseudo-annotation: sets the `num` field of the annotation it follows.
const NUM: u8 = 60;
/// Pseudo-annotation: sets the `subtype` field.
const SUB: u8 = 61;
/// Pseudo-annotation: sets the `channel` field.
const CHN: u8 = 62;
/// Pseudo-annotation: auxiliary text follows.
const AUX: u8 = 63;
/// The largest code of a real annotation (WFDB's `ACMAX`).
const MAX_CODE: u8 = 49;

/// An annotation code (WFDB's `anntyp`), 0 to 49.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnnotationCode(pub u8);

/// WFDB's standard codes: (code, mnemonic symbol, description, is a beat). Codes 15, 17 and
/// 42-49 are unassigned (user-defined). The beat codes are the ones EC57 compares
/// (N L R B A a J S V r F e j n E / f Q ?), WFDB's `isqrs` table.
const CODE_TABLE: [(u8, &str, &str, bool); 40] = [
    (0, " ", "not an annotation", false),
    (1, "N", "normal beat", true),
    (2, "L", "left bundle branch block beat", true),
    (3, "R", "right bundle branch block beat", true),
    (4, "a", "aberrated atrial premature beat", true),
    (5, "V", "premature ventricular contraction", true),
    (6, "F", "fusion of ventricular and normal beat", true),
    (7, "J", "nodal (junctional) premature beat", true),
    (8, "A", "atrial premature beat", true),
    (9, "S", "supraventricular premature or ectopic beat", true),
    (10, "E", "ventricular escape beat", true),
    (11, "j", "nodal (junctional) escape beat", true),
    (12, "/", "paced beat", true),
    (13, "Q", "unclassifiable beat", true),
    (14, "~", "signal quality change", false),
    (16, "|", "isolated QRS-like artifact", false),
    (18, "s", "ST change", false),
    (19, "T", "T-wave change", false),
    (20, "*", "systole", false),
    (21, "D", "diastole", false),
    (22, "\"", "comment annotation", false),
    (23, "=", "measurement annotation", false),
    (24, "p", "P-wave peak", false),
    (25, "B", "bundle branch block beat (unspecified)", true),
    (26, "^", "non-conducted pacer spike", false),
    (27, "t", "T-wave peak", false),
    (28, "+", "rhythm change", false),
    (29, "u", "U-wave peak", false),
    (30, "?", "beat not classified during learning", true),
    (31, "!", "ventricular flutter wave", false),
    (32, "[", "start of ventricular flutter/fibrillation", false),
    (33, "]", "end of ventricular flutter/fibrillation", false),
    (34, "e", "atrial escape beat", true),
    (35, "n", "supraventricular escape beat", true),
    (36, "@", "link to external data", false),
    (37, "x", "non-conducted P-wave (blocked APC)", false),
    (38, "f", "fusion of paced and normal beat", true),
    (39, "(", "waveform onset", false),
    (40, ")", "waveform end", false),
    (41, "r", "R-on-T premature ventricular contraction", true),
];

impl AnnotationCode {
    fn entry(self) -> Option<&'static (u8, &'static str, &'static str, bool)> {
        CODE_TABLE.iter().find(|e| e.0 == self.0)
    }

    /// True for the codes that label a QRS complex (a beat), as EC57's beat-by-beat
    /// comparison counts them.
    pub fn is_beat(self) -> bool {
        self.entry().is_some_and(|e| e.3)
    }

    /// WFDB's one-character mnemonic (`N`, `V`, `+`, ...); `user` for an unassigned code.
    pub fn symbol(self) -> &'static str {
        self.entry().map_or("user", |e| e.1)
    }

    /// What the code means ("user-defined" for the unassigned ones).
    pub fn description(self) -> &'static str {
        self.entry().map_or("user-defined", |e| e.2)
    }
}

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Sample index from the start of the record.
    pub sample: u64,
    /// What it marks.
    pub code: AnnotationCode,
    /// Subtype (`SUB`), 0 unless given.
    pub subtype: i8,
    /// Signal the annotation refers to (`CHN`), carried over from the previous annotation.
    pub channel: u8,
    /// Annotator's number (`NUM`), carried over from the previous annotation.
    pub num: i8,
    /// Auxiliary text (`AUX`): a rhythm such as `(N` or `(AFIB`, a comment; trailing NULs
    /// removed, invalid UTF-8 replaced.
    pub aux: Option<String>,
}

/// Why an annotation file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// The file could not be read.
    #[error("cannot read annotation file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds an odd number of bytes, or ends inside a `SKIP` interval or `AUX` text.
    #[error("annotation file truncated at byte {offset}: {what} is incomplete")]
    Truncated {
        /// Byte offset of the incomplete item.
        offset: usize,
        /// The item ("word", "SKIP interval", "AUX text").
        what: &'static str,
    },
    /// A code between the last real code (49) and `SKIP` (59).
    #[error("annotation word at byte {offset}: code {code} is not defined in MIT format")]
    InvalidCode {
        /// Byte offset of the word.
        offset: usize,
        /// The code found.
        code: u8,
    },
    /// `NUM`, `SUB`, `CHN` or `AUX` before any annotation.
    #[error("annotation word at byte {offset}: pseudo-annotation {code} precedes every annotation")]
    OrphanField {
        /// Byte offset of the word.
        offset: usize,
        /// The pseudo-annotation code.
        code: u8,
    },
    /// A `SKIP` that moves the time before the record start or beyond `u64`.
    #[error("annotation word at byte {offset}: time {time} is outside the record")]
    TimeOutOfRange {
        /// Byte offset of the word that moved the time.
        offset: usize,
        /// The time it would have reached, in samples.
        time: i128,
    },
}

/// Parses an MIT-format annotation file (see the module documentation).
pub fn parse_annotations(bytes: &[u8]) -> Result<Vec<Annotation>, AnnotationError> {
    let word_at = |offset: usize, what: &'static str| -> Result<u16, AnnotationError> {
        match bytes.get(offset..offset + 2) {
            Some(&[lo, hi]) => Ok(u16::from_le_bytes([lo, hi])),
            _ => Err(AnnotationError::Truncated { offset, what }),
        }
    };
    let mut annotations: Vec<Annotation> = Vec::new();
    let mut time: u64 = 0;
    let (mut channel, mut num) = (0u8, 0i8);
    let mut offset = 0;
    while offset < bytes.len() {
        let word = word_at(offset, "word")?;
        if word == 0 {
            break;
        }
        let code = (word >> 10) as u8;
        let field = word & 0x03ff;
        let here = offset;
        offset += 2;
        let low_byte = (field & 0xff) as u8;
        match code {
            SKIP => {
                let high = word_at(offset, "SKIP interval")?;
                let low = word_at(offset + 2, "SKIP interval")?;
                offset += 4;
                let interval = ((u32::from(high) << 16) | u32::from(low)) as i32;
                let reached = i128::from(time) + i128::from(interval);
                time = u64::try_from(reached).map_err(|_| AnnotationError::TimeOutOfRange {
                    offset: here,
                    time: reached,
                })?;
            }
            NUM => {
                num = low_byte as i8;
                last_annotation(&mut annotations, here, code)?.num = num;
            }
            SUB => last_annotation(&mut annotations, here, code)?.subtype = low_byte as i8,
            CHN => {
                channel = low_byte;
                last_annotation(&mut annotations, here, code)?.channel = channel;
            }
            AUX => {
                let len = usize::from(field);
                let text = bytes
                    .get(offset..offset + len)
                    .ok_or(AnnotationError::Truncated {
                        offset,
                        what: "AUX text",
                    })?;
                let text = String::from_utf8_lossy(text)
                    .trim_end_matches('\0')
                    .to_string();
                offset += len + len % 2;
                last_annotation(&mut annotations, here, code)?.aux = Some(text);
            }
            c if c <= MAX_CODE => {
                let reached = i128::from(time) + i128::from(field);
                time = u64::try_from(reached).map_err(|_| AnnotationError::TimeOutOfRange {
                    offset: here,
                    time: reached,
                })?;
                annotations.push(Annotation {
                    sample: time,
                    code: AnnotationCode(c),
                    subtype: 0,
                    channel,
                    num,
                    aux: None,
                });
            }
            c => {
                return Err(AnnotationError::InvalidCode {
                    offset: here,
                    code: c,
                });
            }
        }
    }
    Ok(annotations)
}

/// The annotation a `NUM`, `SUB`, `CHN` or `AUX` word at `offset` modifies.
fn last_annotation(
    annotations: &mut [Annotation],
    offset: usize,
    code: u8,
) -> Result<&mut Annotation, AnnotationError> {
    annotations
        .last_mut()
        .ok_or(AnnotationError::OrphanField { offset, code })
}

/// Reads an MIT-format annotation file.
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>, AnnotationError> {
    let bytes = std::fs::read(path).map_err(|source| AnnotationError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_annotations(&bytes)
}

/// Sample indices of the beat annotations, in file order.
pub fn beat_samples(annotations: &[Annotation]) -> Vec<u64> {
    annotations
        .iter()
        .filter(|a| a.code.is_beat())
        .map(|a| a.sample)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn word(code: u8, field: u16) -> [u8; 2] {
        ((u16::from(code) << 10) | (field & 0x3ff)).to_le_bytes()
    }

    #[test]
    fn pseudo_annotations_set_the_fields_of_the_annotation_they_follow() {
        let mut bytes = Vec::new();
        bytes.extend(word(28, 18)); // rhythm change at 18
        bytes.extend(word(AUX, 3));
        bytes.extend(b"(N\0\0"); // 3 bytes padded to 4
        bytes.extend(word(1, 100)); // N at 118
        bytes.extend(word(CHN, 1));
        bytes.extend(word(NUM, 0xff)); // -1
        bytes.extend(word(SKIP, 0));
        bytes.extend(1u16.to_le_bytes()); // high half: 65536
        bytes.extend(4u16.to_le_bytes()); // low half: 4
        bytes.extend(word(5, 2)); // V at 118 + 65540 + 2
        bytes.extend(word(SUB, 3));
        bytes.extend([0, 0]);
        bytes.extend(word(1, 1)); // after the end: ignored
        let a = parse_annotations(&bytes).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].sample, a[0].code.symbol()), (18, "+"));
        assert_eq!(a[0].aux.as_deref(), Some("(N"));
        assert_eq!((a[1].sample, a[1].channel, a[1].num), (118, 1, -1));
        assert_eq!(a[1].aux, None);
        assert_eq!((a[2].sample, a[2].code.symbol()), (118 + 65_540 + 2, "V"));
        // Channel and number carry over; the subtype does not.
        assert_eq!((a[2].channel, a[2].num, a[2].subtype), (1, -1, 3));
        assert_eq!(beat_samples(&a), vec![118, 65_660]);
    }

    #[test]
    fn mit_bih_record_100_reference_annotations() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/physionet/100.atr");
        let a = read_annotations(&path).unwrap();
        // PhysioNet's summary of record 100: 2239 normal, 33 atrial premature, 1 ventricular
        // premature beat, sinus rhythm throughout.
        let count = |s: &str| a.iter().filter(|x| x.code.symbol() == s).count();
        assert_eq!((count("N"), count("A"), count("V")), (2239, 33, 1));
        assert_eq!(beat_samples(&a).len(), 2273);
        assert_eq!((a[0].sample, a[0].code.symbol()), (18, "+"));
        assert_eq!(a[0].aux.as_deref(), Some("(N"));
        let first: Vec<(u64, &str)> = a[1..5]
            .iter()
            .map(|x| (x.sample, x.code.symbol()))
            .collect();
        assert_eq!(first, vec![(77, "N"), (370, "N"), (662, "N"), (946, "N")]);
        // The last beat lies within the record's 650000 samples.
        assert!(a.last().unwrap().sample < 650_000);
    }

    #[test]
    fn corrupt_files_are_typed_errors() {
        assert!(matches!(
            parse_annotations(&[1]),
            Err(AnnotationError::Truncated { offset: 0, .. })
        ));
        let mut skip = word(SKIP, 0).to_vec();
        skip.extend([0, 0]);
        assert!(matches!(
            parse_annotations(&skip),
            Err(AnnotationError::Truncated { offset: 4, .. })
        ));
        let mut aux = word(1, 5).to_vec();
        aux.extend(word(AUX, 40));
        aux.extend(b"(AF");
        assert!(matches!(
            parse_annotations(&aux),
            Err(AnnotationError::Truncated { offset: 4, .. })
        ));
        assert!(matches!(
            parse_annotations(&word(55, 1)),
            Err(AnnotationError::InvalidCode {
                offset: 0,
                code: 55
            })
        ));
        assert!(matches!(
            parse_annotations(&word(CHN, 1)),
            Err(AnnotationError::OrphanField {
                offset: 0,
                code: CHN
            })
        ));
        // A negative SKIP before the start of the record.
        let mut back = word(SKIP, 0).to_vec();
        back.extend(0xffffu16.to_le_bytes());
        back.extend(0xfff0u16.to_le_bytes());
        assert!(matches!(
            parse_annotations(&back),
            Err(AnnotationError::TimeOutOfRange {
                offset: 0,
                time: -16
            })
        ));
    }

    #[test]
    fn random_bytes_never_panic_and_valid_words_always_parse() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a7);
        let mut parsed = 0;
        for _ in 0..5000 {
            let len = rng.random_range(0..200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if parse_annotations(&bytes).is_ok() {
                parsed += 1;
            }
            // Words of real codes only, with small times: always a valid file.
            let n = rng.random_range(0..50);
            let valid: Vec<u8> = (0..n)
                .flat_map(|_| word(rng.random_range(1..=MAX_CODE), rng.random_range(0..1024)))
                .collect();
            let a = parse_annotations(&valid).unwrap();
            assert!(a.windows(2).all(|w| w[0].sample <= w[1].sample));
        }
        // Random bytes reach both outcomes, so the errors are exercised.
        assert!(parsed > 100 && parsed < 4900, "{parsed} of 5000 parsed");
    }

    #[test]
    fn the_beat_table_counts_the_ec57_beat_labels() {
        let beats: String = (0..=MAX_CODE)
            .map(AnnotationCode)
            .filter(|c| c.is_beat())
            .map(|c| c.symbol())
            .collect();
        assert_eq!(beats, "NLRaVFJASEj/QB?enfr");
        assert!(!AnnotationCode(28).is_beat());
        assert_eq!(AnnotationCode(45).description(), "user-defined");
    }
}
