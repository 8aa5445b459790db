//! The replay source: a recorded file streamed as sample blocks, at real-time pace or as fast
//! as possible, into the same [`SourceEvent`] channel as live sources.
//!
//! CSV files have a header row of lead names (`I,II,...,V6`), optionally preceded by a time
//! column (`time`, `time_s`, `t` or `seconds`, in seconds) from which the sample rate is taken;
//! values are microvolts. WFDB records (`.hea`) are read once the WFDB reader lands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{DeviceInfo, SourceEvent};
use crate::ecg::{Lead, LeadSet, Recording, SampleBlock};

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
pub fn load(path: &Path, sample_rate_hz: Option<f64>) -> Result<Recording, ReplayError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => {
            let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_csv(&text, path, sample_rate_hz)
        }
        Some(e) if e.eq_ignore_ascii_case("hea") || e.eq_ignore_ascii_case("dat") => {
            Err(ReplayError::Format {
                path: path.to_path_buf(),
                reason: "WFDB replay needs the WFDB reader, which has not landed in this build; \
                         export the record as CSV"
                    .into(),
            })
        }
        _ => Err(ReplayError::Format {
            path: path.to_path_buf(),
            reason: "unknown extension: expected .csv or .hea".into(),
        }),
    }
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
            c.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| row_error(format!("`{c}` is not a finite number")))
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
/// the number of blocks sent; stops early if the receiver is dropped.
pub async fn stream(
    recording: &Recording,
    settings: ReplaySettings,
    events: &mpsc::Sender<SourceEvent>,
) -> u64 {
    let info = DeviceInfo {
        protocol: "replay".into(),
        serial: String::new(),
        firmware_version: String::new(),
        sample_rate_hz: recording.sample_rate_hz,
        leads: recording.leads.clone(),
        uv_per_count: 1.0,
    };
    if events.send(SourceEvent::Connected(info)).await.is_err() {
        return 0;
    }
    let step = settings.block_frames.max(1);
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    for (k, first) in (0..recording.len()).step_by(step).enumerate() {
        let last = (first + step).min(recording.len());
        if settings.realtime {
            let due = Duration::from_secs_f64(last as f64 / recording.sample_rate_hz);
            tokio::time::sleep_until(start + due).await;
        }
        let window = recording.samples_uv.slice(ndarray::s![.., first..last]);
        // Interleave: time point by time point, one value per lead.
        let samples_uv = window.t().iter().copied().collect();
        let block = SampleBlock {
            sequence: k as u64,
            device_time_ns: (first as f64 * 1e9 / recording.sample_rate_hz) as u64,
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
    sent
}

#[cfg(test)]
mod tests {
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
    }

    #[tokio::test]
    async fn streams_interleaved_blocks_in_order() {
        let r = parse_csv(CSV, Path::new("x.csv"), None).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let settings = ReplaySettings {
            block_frames: 2,
            realtime: false,
        };
        assert_eq!(stream(&r, settings, &tx).await, 2);
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
