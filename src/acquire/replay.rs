//! The replay source: a recorded file streamed as sample blocks, at real-time pace or as fast
//! as possible, into the same [`SourceEvent`] channel as live sources.
//!
//! CSV files have a header row of lead names (`I,II,...,V6`), optionally preceded by a time
//! column (`time`, `time_s`, `t` or `seconds`, in seconds) from which the sample rate is taken;
//! values are microvolts. WFDB records (`.hea`, or the `.dat` next to it) are read through
//! [`crate::wfdb`] at their own sample rate; of their signals, the standard leads are replayed
//! (in any spelling [`crate::ecg::LeadName::parse`] accepts) and the rest (Frank X/Y/Z, respiration,
//! ...) are left out with a logged note.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{DeviceInfo, SourceEvent};
use crate::ecg::{Lead, LeadSet, Recording, SampleBlock};
use crate::wfdb::{self, LeadSelection, WfdbError};

/// Why a file could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header row is missing or names something that is not a lead.
    #[error("{path}: header: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A cell is not a number, or a row has the wrong number of cells.
    #[error("{path}:{line}: {reason}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The sample rate is neither in the file nor given, or is not positive.
    #[error("{path}: sample rate unknown: add a time column or pass --sample-rate")]
    NoRate {
        /// The file.
        path: PathBuf,
    },
    /// The sample rate (the file's or the one given) is outside what any source may have.
    #[error(
        "{path}: sample rate {sample_rate_hz:?} Hz is outside 1 to 32000 Hz (a replayed device's rate)"
    )]
    RateOutOfRange {
        /// The file.
        path: PathBuf,
        /// The rate.
        sample_rate_hz: f64,
    },
    /// The WFDB record could not be read.
    #[error("{path}: {source}")]
    Wfdb {
        /// The header file.
        path: PathBuf,
        /// Why.
        source: WfdbError,
    },
    /// The recording lasts longer, at its sample rate, than a clock can count (a `Duration`
    /// or `u64` nanoseconds of device time).
    #[error(
        "{path}: {frames} samples at sample_rate_hz {sample_rate_hz:?} last longer than a clock can count"
    )]
    TooLong {
        /// The file.
        path: PathBuf,
        /// Samples per lead.
        frames: usize,
        /// The rate (from the file or `--sample-rate`).
        sample_rate_hz: f64,
    },
    /// A sample's time in the recording (frame / sample rate) does not fit a clock.
    #[error(
        "sample {frame} at sample_rate_hz {sample_rate_hz:?} lies beyond what a clock can count"
    )]
    Clock {
        /// The sample (frame) index.
        frame: usize,
        /// The recording's rate.
        sample_rate_hz: f64,
    },
    /// A format this build cannot read.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
}

const TIME_COLUMNS: [&str; 4] = ["time", "time_s", "t", "seconds"];

/// Loads a record to replay; `sample_rate_hz` overrides (or supplies) the file's rate.
/// A rate outside [`super::DEVICE_RATE_RANGE_HZ`], or a record whose length at its rate no
/// clock can count, is an error.
pub fn load(path: &Path, sample_rate_hz: Option<f64>) -> Result<Recording, ReplayError> {
    let recording = load_any(path, sample_rate_hz)?;
    if !super::DEVICE_RATE_RANGE_HZ.contains(&recording.sample_rate_hz) {
        return Err(ReplayError::RateOutOfRange {
            path: path.to_path_buf(),
            sample_rate_hz: recording.sample_rate_hz,
        });
    }
    if clock_at(recording.len(), recording.sample_rate_hz).is_none() {
        return Err(ReplayError::TooLong {
            path: path.to_path_buf(),
            frames: recording.len(),
            sample_rate_hz: recording.sample_rate_hz,
        });
    }
    Ok(recording)
}

/// The time of sample `frame` at `sample_rate_hz`, as a `Duration` and as `u64` device
/// nanoseconds; `None` when either does not fit (or the rate is not a positive number).
fn clock_at(frame: usize, sample_rate_hz: f64) -> Option<(Duration, u64)> {
    let due = Duration::try_from_secs_f64(frame as f64 / sample_rate_hz).ok()?;
    let ns = (frame as f64 * 1e9 / sample_rate_hz).trunc();
    // 2^64 is exactly representable; at or above it (or NaN) does not fit.
    (0.0..18_446_744_073_709_551_616.0)
        .contains(&ns)
        .then_some((due, ns as u64))
}

fn load_any(path: &Path, sample_rate_hz: Option<f64>) -> Result<Recording, ReplayError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => {
            let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_csv(&text, path, sample_rate_hz)
        }
        Some(e) if e.eq_ignore_ascii_case("hea") || e.eq_ignore_ascii_case("dat") => {
            load_wfdb(&path.with_extension("hea"), sample_rate_hz)
        }
        _ => Err(ReplayError::Format {
            path: path.to_path_buf(),
            reason: "unknown extension: expected .csv or .hea".into(),
        }),
    }
}

/// Loads the standard leads of the WFDB record whose header is `hea`.
fn load_wfdb(hea: &Path, sample_rate_hz: Option<f64>) -> Result<Recording, ReplayError> {
    let (record, selection) =
        wfdb::read_standard_leads(hea).map_err(|source| ReplayError::Wfdb {
            path: hea.to_path_buf(),
            source,
        })?;
    let corrupted = record.checksum_mismatches();
    if !corrupted.is_empty() {
        tracing::warn!(
            file = %hea.display(),
            signals = ?corrupted,
            "WFDB checksum mismatch: the data file may be corrupted"
        );
    }
    let LeadSelection {
        mut recording,
        ignored,
        approximated,
    } = selection;
    if !ignored.is_empty() {
        tracing::info!(
            file = %hea.display(),
            ignored = %ignored.join(", "),
            "signals that are not one of the 12 standard leads are not replayed"
        );
    }
    for (name, lead) in &approximated {
        tracing::warn!(
            file = %hea.display(),
            signal = %name,
            lead = %lead,
            "signal replayed as a chest-lead approximation: its morphology can differ from the standard lead"
        );
    }
    if let Some(rate) = sample_rate_hz {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ReplayError::NoRate {
                path: hea.to_path_buf(),
            });
        }
        recording.sample_rate_hz = rate;
    }
    Ok(recording)
}

/// Parses CSV text (see the module comment); `path` is used in error messages only.
pub fn parse_csv(
    text: &str,
    path: &Path,
    sample_rate_hz: Option<f64>,
) -> Result<Recording, ReplayError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header_error = |reason: String| ReplayError::Header {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = lines
        .next()
        .ok_or_else(|| header_error("the file is empty".into()))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let has_time = names
        .first()
        .is_some_and(|n| TIME_COLUMNS.iter().any(|t| t.eq_ignore_ascii_case(n)));
    let leads = names[usize::from(has_time)..]
        .iter()
        .map(|n| n.parse::<Lead>().map_err(|e| header_error(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if leads.is_empty() {
        return Err(header_error("no lead columns".into()));
    }
    // A lead named twice is a mislabelled column: the lead mapping would take the first and
    // drop the other without a word.
    if let Some((i, lead)) = leads
        .iter()
        .enumerate()
        .find(|(i, lead)| leads[..*i].contains(lead))
    {
        return Err(header_error(format!(
            "lead {} named twice (column {} repeats an earlier one)",
            lead.name(),
            i + 1 + usize::from(has_time)
        )));
    }
    let mut columns: Vec<Vec<f32>> = vec![Vec::new(); leads.len()];
    let mut times = Vec::new();
    for (i, line) in lines {
        let row_error = |reason: String| ReplayError::Row {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err(row_error(format!(
                "{} cells, header has {}",
                cells.len(),
                names.len()
            )));
        }
        let mut values = cells.iter().map(|c| {
            let v = c
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| row_error(format!("`{c}` is not a finite number")))?;
            // Samples are stored as f32: a value beyond its range would become infinite.
            if !(v as f32).is_finite() {
                return Err(row_error(format!(
                    "`{c}` is out of range (at most {:e} in magnitude)",
                    f32::MAX
                )));
            }
            Ok(v)
        });
        if has_time {
            times.push(values.next().transpose()?.unwrap_or(0.0));
        }
        for (col, v) in columns.iter_mut().zip(values) {
            col.push(v? as f32);
        }
    }
    let rate = sample_rate_hz.or_else(|| rate_from_times(&times));
    let rate = rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| ReplayError::NoRate {
            path: path.to_path_buf(),
        })?;
    let frames = columns.first().map_or(0, Vec::len);
    let flat: Vec<f32> = columns.into_iter().flatten().collect();
    let samples_uv = ndarray::Array2::from_shape_vec((leads.len(), frames), flat)
        .map_err(|e| header_error(e.to_string()))?;
    Ok(Recording {
        sample_rate_hz: rate,
        leads: LeadSet(leads),
        samples_uv,
    })
}

/// The rate implied by a time column: 1 / median step.
fn rate_from_times(times: &[f64]) -> Option<f64> {
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by(f64::total_cmp);
    let median = steps[steps.len() / 2];
    // Rounded to a microhertz so that 0.004 s steps read as 250 Hz, not 249.99999.
    (median > 0.0).then(|| (1e6 / median).round() / 1e6)
}

/// How a recording is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySettings {
    /// Time points per block.
    pub block_frames: usize,
    /// Pace blocks at the recording's sample rate (true) or send as fast as the channel takes.
    pub realtime: bool,
}

/// Streams `recording` as a source would: a `Connected` event, then blocks in order. Returns
/// the number of blocks sent; stops early if the receiver is dropped. A block whose time at
/// the recording's rate does not fit a clock ends the stream with [`ReplayError::Clock`]
/// ([`load`] refuses such recordings up front).
pub async fn stream(
    recording: &Recording,
    settings: ReplaySettings,
    events: &mpsc::Sender<SourceEvent>,
) -> Result<u64, ReplayError> {
    let info = DeviceInfo {
        protocol: "replay".into(),
        serial: String::new(),
        firmware_version: String::new(),
        sample_rate_hz: recording.sample_rate_hz,
        leads: recording.leads.clone(),
        uv_per_count: 1.0,
    };
    if events.send(SourceEvent::Connected(info)).await.is_err() {
        return Ok(0);
    }
    let step = settings.block_frames.max(1);
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    for (k, first) in (0..recording.len()).step_by(step).enumerate() {
        let last = (first + step).min(recording.len());
        let clock = |frame: usize| {
            clock_at(frame, recording.sample_rate_hz).ok_or(ReplayError::Clock {
                frame,
                sample_rate_hz: recording.sample_rate_hz,
            })
        };
        let (_, device_time_ns) = clock(first)?;
        let (due, _) = clock(last)?;
        if settings.realtime {
            let Some(at) = start.checked_add(due) else {
                return Err(ReplayError::Clock {
                    frame: last,
                    sample_rate_hz: recording.sample_rate_hz,
                });
            };
            tokio::time::sleep_until(at).await;
        }
        let window = recording.samples_uv.slice(ndarray::s![.., first..last]);
        // Interleave: time point by time point, one value per lead.
        let samples_uv = window.t().iter().copied().collect();
        let block = SampleBlock {
            sequence: k as u64,
            device_time_ns,
            sample_rate_hz: recording.sample_rate_hz,
            leads: recording.leads.clone(),
            samples_uv,
            lead_off: vec![false; recording.leads.len()],
        };
        if events.send(SourceEvent::Block(block)).await.is_err() {
            break;
        }
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const CSV: &str = "time,I,II\n0.000,1,2\n0.002,3,4\n0.004,5,6\n";

    #[test]
    fn csv_with_a_time_column_gives_rate_leads_and_samples() {
        let r = parse_csv(CSV, Path::new("x.csv"), None).unwrap();
        assert!((r.sample_rate_hz - 500.0).abs() < 1e-6);
        assert_eq!(r.leads, LeadSet(vec![Lead::I, Lead::II]));
        assert_eq!(r.lead(Lead::II).unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
    }

    #[test]
    fn bad_csv_errors_name_the_line_or_the_header() {
        let e = parse_csv("I,X\n1,2\n", Path::new("a.csv"), Some(1.0)).unwrap_err();
        assert!(e.to_string().contains("unknown lead `X`"), "{e}");
        let e = parse_csv("I,II\n1,2\n1,nan\n", Path::new("a.csv"), Some(1.0)).unwrap_err();
        assert!(e.to_string().starts_with("a.csv:3:"), "{e}");
        let e = parse_csv("I,II\n1,2\n", Path::new("a.csv"), None).unwrap_err();
        assert!(matches!(e, ReplayError::NoRate { .. }));
        // A lead named twice (a mislabelled V2): refused, naming the lead and the column.
        let e = parse_csv(
            "time,I,II,V1,V1\n0,1,2,3,4\n",
            Path::new("a.csv"),
            Some(1.0),
        )
        .unwrap_err();
        assert!(matches!(e, ReplayError::Header { .. }), "{e}");
        assert!(
            e.to_string().contains("lead V1 named twice (column 5"),
            "{e}"
        );
    }

    /// Writes 2 s of a synthesized 12-lead record at 250 Hz as WFDB `r` into `dir`, with the
    /// signal descriptions replaced by `names` (in standard lead order); returns the record.
    pub(crate) fn write_wfdb(dir: &Path, names: &[&str; 12]) -> Recording {
        use crate::synth::{ConditionSet, RecordSpec, generate};
        use crate::wfdb::{SignalFormat, WriteOptions, write_record};
        let spec = RecordSpec {
            sample_rate_hz: 250.0,
            seconds: 2.0,
            ..RecordSpec::ten_seconds(ConditionSet::normal())
        };
        let recording = generate(&spec, 3).unwrap().recording;
        let options = WriteOptions {
            format: SignalFormat::Format16,
            adc_gain_per_mv: 1000.0,
        };
        let mut header = write_record(dir, "r", &recording, options, &[]).unwrap();
        for (s, name) in header.signals.iter_mut().zip(names) {
            s.description = (*name).to_string();
        }
        std::fs::write(dir.join("r.hea"), header.to_text()).unwrap();
        recording
    }

    #[test]
    fn a_wfdb_record_replays_its_standard_leads_at_its_own_rate() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "i", "II", "III", "AVR", "aVL", "avf", "vx", "vy", "vz", "V4", "V5", "V6",
        ];
        let written = write_wfdb(dir.path(), &names);
        let r = load(&dir.path().join("r.hea"), None).unwrap();
        let mut want = Lead::STANDARD_12.to_vec();
        want.retain(|l| ![Lead::V1, Lead::V2, Lead::V3].contains(l));
        assert_eq!(r.leads, LeadSet(want.clone()));
        assert_eq!((r.sample_rate_hz, r.len()), (250.0, 500));
        for lead in want {
            let (got, sent) = (r.lead(lead).unwrap(), written.lead(lead).unwrap());
            // Stored at 1000 adu/mV: within half a microvolt.
            assert!(
                got.iter()
                    .zip(sent)
                    .all(|(g, s)| (g - s).abs() <= 0.5 + 1e-3),
                "{lead}"
            );
        }
        // Naming the data file loads the same record; a rate given overrides the header's.
        let via_dat = load(&dir.path().join("r.dat"), Some(500.0)).unwrap();
        assert_eq!(via_dat.samples_uv, r.samples_uv);
        assert_eq!(via_dat.sample_rate_hz, 500.0);
    }

    #[test]
    fn a_wfdb_record_without_a_standard_lead_is_an_error_naming_its_signals() {
        let dir = tempfile::tempdir().unwrap();
        write_wfdb(
            dir.path(),
            &["x", "y", "z", "Resp", "ABP", "", "", "", "", "", "", ""],
        );
        let e = load(&dir.path().join("r.hea"), None).unwrap_err();
        assert!(
            matches!(
                e,
                ReplayError::Wfdb {
                    source: WfdbError::NoStandardLead { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("x, y, z, Resp, ABP"), "{e}");
    }

    #[test]
    fn a_value_beyond_f32_is_an_error_naming_the_line_not_an_infinity() {
        let e = parse_csv("I,II\n1,2\n3,1e300\n", Path::new("a.csv"), Some(500.0)).unwrap_err();
        assert!(matches!(e, ReplayError::Row { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("`1e300` is out of range"), "{e}");
        let e = parse_csv("I\n-1e39\n", Path::new("a.csv"), Some(500.0)).unwrap_err();
        assert!(e.to_string().contains("a.csv:2: `-1e39`"), "{e}");
        let ok = parse_csv("I\n3e38\n", Path::new("a.csv"), Some(500.0)).unwrap();
        assert!(ok.samples_uv.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_rate_outside_what_a_device_may_have_is_an_error_not_gigabytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.csv");
        std::fs::write(&path, "I,II\n1,2\n3,4\n5,6\n").unwrap();
        // 1e7 Hz: a 10 s window would hold 1e8 frames a lead (gigabytes); 1e-300 Hz: three
        // samples would last 3e300 s.
        for rate in [1e7, 0.5, 1e-300] {
            let e = load(&path, Some(rate)).unwrap_err();
            assert!(
                matches!(e, ReplayError::RateOutOfRange { sample_rate_hz, .. } if sample_rate_hz == rate),
                "{e}"
            );
            assert!(e.to_string().contains("outside 1 to 32000 Hz"), "{e}");
        }
        // The same from the file's own time column (a step of 0.1 us).
        let timed = dir.path().join("timed.csv");
        std::fs::write(&timed, "time,I\n0,1\n0.0000001,2\n0.0000002,3\n").unwrap();
        let e = load(&timed, None).unwrap_err();
        assert!(matches!(e, ReplayError::RateOutOfRange { .. }), "{e}");
        assert!(load(&path, Some(500.0)).is_ok());
        assert!(load(&path, Some(32_000.0)).is_ok());
    }

    #[tokio::test]
    async fn streaming_a_recording_no_clock_can_count_is_an_error_not_a_panic() {
        let mut r = parse_csv(CSV, Path::new("x.csv"), None).unwrap();
        // 1e-12 Hz: the second block starts 2e12 s in (fits a Duration, not u64 nanoseconds).
        r.sample_rate_hz = 1e-12;
        for realtime in [false, true] {
            let (tx, mut rx) = mpsc::channel(16);
            let settings = ReplaySettings {
                block_frames: 2,
                realtime,
            };
            let e = stream(&r, settings, &tx).await.unwrap_err();
            assert!(matches!(e, ReplayError::Clock { .. }), "{e}");
            assert!(matches!(rx.recv().await, Some(SourceEvent::Connected(_))));
        }
    }

    #[tokio::test]
    async fn streams_interleaved_blocks_in_order() {
        let r = parse_csv(CSV, Path::new("x.csv"), None).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let settings = ReplaySettings {
            block_frames: 2,
            realtime: false,
        };
        assert_eq!(stream(&r, settings, &tx).await.unwrap(), 2);
        assert!(matches!(rx.recv().await, Some(SourceEvent::Connected(_))));
        let Some(SourceEvent::Block(b)) = rx.recv().await else {
            panic!()
        };
        assert_eq!(b.samples_uv, vec![1.0, 2.0, 3.0, 4.0]);
        let Some(SourceEvent::Block(b)) = rx.recv().await else {
            panic!()
        };
        assert_eq!((b.sequence, b.samples_uv.clone()), (1, vec![5.0, 6.0]));
        assert_eq!(b.device_time_ns, 4_000_000);
    }
}
