//! The beat-detection benchmark: [`beats::analyze`] against reference beat annotations, the
//! way ANSI/AAMI EC57 judges QRS detectors.
//!
//! A detection matches a reference beat within [`MATCH_WINDOW_S`] (150 ms), one to one;
//! sensitivity Se = TP / (TP + FN), positive predictivity +P = TP / (TP + FP), per record and
//! gross (summed counts). As EC57 prescribes for the MIT-BIH Arrhythmia Database (and WFDB's
//! `bxb` does by default), the first [`EC57_LEARNING_S`] (5 minutes) of a record are a learning
//! period and are not scored; records shorter than that are scored whole.
//!
//! The detector runs as the daemon runs it: on consecutive windows of the record (10 s, the
//! daemon's default), each analysed on its own; the detections are put back on the record's
//! time line, and a beat cut by a window boundary and found in both windows counts once.
//! Noise-stress variants add seeded artefacts to the real record (the reference annotations
//! stay true), in the manner of the MIT-BIH Noise Stress Test.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::dsp::beats;
use crate::ecg::Recording;
use crate::wfdb::annotation::{self, AnnotationError};
use crate::wfdb::{self, WfdbError};

/// A detection matches a reference beat this close, seconds (EC57).
pub const MATCH_WINDOW_S: f64 = 0.15;
/// Learning period left unscored at the start of a record, seconds (EC57, MIT-BIH).
pub const EC57_LEARNING_S: f64 = 300.0;
/// Window length the daemon analyses by default, seconds.
pub const DAEMON_WINDOW_S: f64 = 10.0;

/// Why a record could not be benchmarked.
#[derive(Debug, thiserror::Error)]
pub enum BeatBenchError {
    /// The record's signals could not be read.
    #[error("record {path}")]
    Record {
        /// The header file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: WfdbError,
    },
    /// The reference annotations could not be read.
    #[error("annotations of {path}")]
    Annotations {
        /// The header file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: AnnotationError,
    },
    /// The record holds no standard ECG lead.
    #[error("record {0} holds no standard ECG lead")]
    NoLead(PathBuf),
    /// The window length is not a positive number of seconds.
    #[error("window length {0} s is not a positive number")]
    Window(f64),
}

/// Counts of one comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Matching {
    /// Reference beats with a matching detection.
    pub true_positives: usize,
    /// Reference beats without one.
    pub false_negatives: usize,
    /// Detections matching no reference beat.
    pub false_positives: usize,
}

impl Matching {
    /// Sensitivity TP / (TP + FN); none without reference beats.
    pub fn sensitivity(&self) -> Option<f64> {
        let d = self.true_positives + self.false_negatives;
        (d > 0).then(|| self.true_positives as f64 / d as f64)
    }

    /// Positive predictivity TP / (TP + FP); none without detections.
    pub fn positive_predictivity(&self) -> Option<f64> {
        let d = self.true_positives + self.false_positives;
        (d > 0).then(|| self.true_positives as f64 / d as f64)
    }

    /// The sum of two comparisons (gross figures).
    pub fn plus(self, other: Matching) -> Matching {
        Matching {
            true_positives: self.true_positives + other.true_positives,
            false_negatives: self.false_negatives + other.false_negatives,
            false_positives: self.false_positives + other.false_positives,
        }
    }
}

/// Matches sorted `detected` against sorted `reference` sample indices within `window`
/// samples, each reference beat to the nearest detection not yet taken; only beats and
/// detections at or after `from` are counted.
pub fn match_beats(reference: &[u64], detected: &[u64], window: u64, from: u64) -> Matching {
    let mut m = Matching::default();
    let mut j = 0;
    let count_fp = |m: &mut Matching, d: u64| {
        if d >= from {
            m.false_positives += 1;
        }
    };
    for &r in reference {
        while j < detected.len() && detected[j] + window < r {
            count_fp(&mut m, detected[j]);
            j += 1;
        }
        // Detections within the window of r: det[j..end].
        let end = (j..detected.len())
            .find(|&k| detected[k] > r + window)
            .unwrap_or(detected.len());
        let nearest = (j..end).min_by_key(|&k| detected[k].abs_diff(r));
        if let Some(k) = nearest {
            for &d in &detected[j..k] {
                count_fp(&mut m, d);
            }
            j = k + 1;
        }
        if r >= from {
            match nearest {
                Some(_) => m.true_positives += 1,
                None => m.false_negatives += 1,
            }
        }
    }
    for &d in &detected[j..] {
        count_fp(&mut m, d);
    }
    m
}

/// Runs [`beats::analyze`] on consecutive `window_s` windows of `recording` (the whole
/// recording when it is shorter) and returns the detections on the recording's time line,
/// sorted; a detection within the refractory period of the previous one (a beat cut by a
/// window boundary, found on both sides) is dropped. Windows that cannot be analysed
/// (too short a tail, no usable lead) contribute no detections and are counted.
pub fn detect_in_windows(recording: &Recording, window_s: f64) -> (Vec<u64>, usize) {
    let fs = recording.sample_rate_hz;
    let n = recording.len();
    let step = ((window_s * fs) as usize).clamp(1, n.max(1));
    let refractory = (beats::REFRACTORY_S * fs) as u64;
    let mut detected: Vec<u64> = Vec::new();
    let mut failed = 0;
    let mut start = 0;
    while start < n {
        let mut end = (start + step).min(n);
        // A short tail joins the last window instead of being analysed alone.
        if n - end < step / 2 {
            end = n;
        }
        let window = Recording {
            sample_rate_hz: fs,
            leads: recording.leads.clone(),
            samples_uv: recording
                .samples_uv
                .slice(ndarray::s![.., start..end])
                .to_owned(),
        };
        match beats::analyze(&window) {
            Ok(a) => {
                for p in a.r_peaks {
                    let t = (start + p) as u64;
                    if detected.last().is_none_or(|&last| t > last + refractory) {
                        detected.push(t);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, start, "window not analysed");
                failed += 1;
            }
        }
        start = end;
    }
    (detected, failed)
}

/// An artefact added to a real record (the reference annotations stay true).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stress {
    /// The record as stored.
    None,
    /// Every lead scaled to this fraction (a low-voltage QRS).
    LowAmplitude(f32),
    /// Broadband noise bursts (muscle artefact) of this RMS in uV, 2 s in every 10 s.
    NoiseBursts(f32),
    /// Baseline wander of this amplitude in uV (0.3 Hz sine plus a 0.05 Hz drift).
    BaselineWander(f32),
    /// A T wave this many times the lead's QRS amplitude added 280 ms after every reference
    /// beat (Gaussian, 45 ms standard deviation): T taller than R, as in hyperkalaemia, young
    /// adults or unusual lead placements.
    TallT(f32),
}

impl Stress {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Stress::None => "as recorded".into(),
            Stress::LowAmplitude(f) => format!("QRS x{f}"),
            Stress::NoiseBursts(uv) => format!("noise bursts {uv} uV rms"),
            Stress::BaselineWander(uv) => format!("baseline wander {uv} uV"),
            Stress::TallT(ratio) => format!("T waves {ratio}x the QRS"),
        }
    }

    /// Applies the artefact (seeded: the same record gets the same noise); `beats` are the
    /// reference beats (for [`Stress::TallT`]).
    pub fn apply(&self, recording: &mut Recording, beats: &[u64], seed: u64) {
        let fs = recording.sample_rate_hz;
        let mut rng = StdRng::seed_from_u64(seed);
        match *self {
            Stress::None => {}
            Stress::LowAmplitude(f) => recording.samples_uv.mapv_inplace(|v| v * f),
            Stress::NoiseBursts(rms) => {
                let period = (10.0 * fs) as usize;
                let burst = (2.0 * fs) as usize;
                for mut row in recording.samples_uv.rows_mut() {
                    for (t, v) in row.iter_mut().enumerate() {
                        // Bursts start 3 s into each 10 s so they do not sit on window edges.
                        let phase = t % period;
                        if (3 * period / 10..3 * period / 10 + burst).contains(&phase) {
                            let u: f32 = rng.random_range(-1.0..1.0);
                            *v += u * rms * 3f32.sqrt();
                        }
                    }
                }
            }
            Stress::BaselineWander(a) => {
                for mut row in recording.samples_uv.rows_mut() {
                    let phase: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                    for (t, v) in row.iter_mut().enumerate() {
                        let s = t as f64 / fs;
                        let w = (std::f64::consts::TAU * 0.3 * s + phase).sin()
                            + 0.5 * (std::f64::consts::TAU * 0.05 * s).sin();
                        *v += (f64::from(a) * w / 1.5) as f32;
                    }
                }
            }
            Stress::TallT(ratio) => {
                let (delay, sigma) = (0.28 * fs, 0.045 * fs);
                let reach = (4.0 * sigma) as i64;
                for mut row in recording.samples_uv.rows_mut() {
                    // The lead's QRS amplitude: the 99.5th percentile of |x - median|.
                    let mut sorted: Vec<f32> =
                        row.iter().copied().filter(|v| v.is_finite()).collect();
                    sorted.sort_by(f32::total_cmp);
                    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
                    let mut dev: Vec<f32> = sorted.iter().map(|v| (v - median).abs()).collect();
                    dev.sort_by(f32::total_cmp);
                    let qrs = dev.get(dev.len() * 995 / 1000).copied().unwrap_or(0.0);
                    let n = row.len() as i64;
                    for &b in beats {
                        let centre = b as f64 + delay;
                        for t in (centre as i64 - reach).max(0)..(centre as i64 + reach).min(n) {
                            let z = (t as f64 - centre) / sigma;
                            row[t as usize] += ratio * qrs * (-0.5 * z * z).exp() as f32;
                        }
                    }
                }
            }
        }
    }
}

/// The figures of one record under one condition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordResult {
    /// Record name.
    pub record: String,
    /// Leads analysed, as named in the record and as read.
    pub leads: Vec<String>,
    /// Sample rate, Hz.
    pub sample_rate_hz: f64,
    /// Record length, seconds.
    pub duration_s: f64,
    /// Scoring starts here, seconds.
    pub scored_from_s: f64,
    /// The artefact added.
    pub stress: String,
    /// Windows that could not be analysed.
    pub failed_windows: usize,
    /// The comparison.
    pub matching: Matching,
}

/// Reads a record's standard leads and its reference beats (`.atr` next to the `.hea`).
pub fn load_annotated(hea: &Path) -> Result<(Recording, Vec<String>, Vec<u64>), BeatBenchError> {
    let record = wfdb::read_record(hea).map_err(|source| BeatBenchError::Record {
        path: hea.to_path_buf(),
        source,
    })?;
    let selection = record.standard_leads();
    if selection.recording.leads.is_empty() {
        return Err(BeatBenchError::NoLead(hea.to_path_buf()));
    }
    let names = record
        .header
        .signals
        .iter()
        .filter(|s| !selection.ignored.contains(&s.description))
        .map(|s| s.description.clone())
        .collect();
    let annotations =
        annotation::read_annotations(&hea.with_extension("atr")).map_err(|source| {
            BeatBenchError::Annotations {
                path: hea.to_path_buf(),
                source,
            }
        })?;
    let mut reference = annotation::beat_samples(&annotations);
    reference.sort_unstable();
    Ok((selection.recording, names, reference))
}

/// Benchmarks one annotated record under `stress`, windows of `window_s` seconds.
pub fn bench_record(
    hea: &Path,
    stress: Stress,
    window_s: f64,
) -> Result<RecordResult, BeatBenchError> {
    if !(window_s.is_finite() && window_s > 0.0) {
        return Err(BeatBenchError::Window(window_s));
    }
    let (mut recording, leads, reference) = load_annotated(hea)?;
    let name = hea
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seed = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    stress.apply(&mut recording, &reference, seed);
    let fs = recording.sample_rate_hz;
    let duration_s = recording.duration_s();
    let scored_from_s = if duration_s > 2.0 * EC57_LEARNING_S {
        EC57_LEARNING_S
    } else {
        0.0
    };
    let (detected, failed_windows) = detect_in_windows(&recording, window_s);
    let matching = match_beats(
        &reference,
        &detected,
        (MATCH_WINDOW_S * fs).round() as u64,
        (scored_from_s * fs).round() as u64,
    );
    Ok(RecordResult {
        record: name,
        leads,
        sample_rate_hz: fs,
        duration_s,
        scored_from_s,
        stress: stress.label(),
        failed_windows,
        matching,
    })
}

/// Formats a fraction as a percentage with two decimals ("-" when undefined).
fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// The results as a Markdown table with a gross row per condition.
pub fn markdown_table(results: &[RecordResult]) -> String {
    let mut out = String::from(
        "| record | leads | condition | scored | TP | FN | FP | Se | +P |\n\
         | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut conditions: Vec<&str> = Vec::new();
    for r in results {
        if !conditions.contains(&r.stress.as_str()) {
            conditions.push(&r.stress);
        }
    }
    for c in conditions {
        let rows: Vec<&RecordResult> = results.iter().filter(|r| r.stress == c).collect();
        for r in &rows {
            let m = r.matching;
            out.push_str(&format!(
                "| {} | {} | {} | {:.0}-{:.0} s | {} | {} | {} | {} | {} |\n",
                r.record,
                r.leads.join(", "),
                r.stress,
                r.scored_from_s,
                r.duration_s,
                m.true_positives,
                m.false_negatives,
                m.false_positives,
                percent(m.sensitivity()),
                percent(m.positive_predictivity()),
            ));
        }
        if rows.len() > 1 {
            let g = rows
                .iter()
                .fold(Matching::default(), |g, r| g.plus(r.matching));
            out.push_str(&format!(
                "| gross | | {c} | | {} | {} | {} | {} | {} |\n",
                g.true_positives,
                g.false_negatives,
                g.false_positives,
                percent(g.sensitivity()),
                percent(g.positive_predictivity()),
            ));
        }
    }
    out
}

/// The whole Markdown report around `table`: what was measured, how, by which command.
pub fn markdown_report(table: &str, command: &str, window_s: f64, elapsed_s: f64) -> String {
    let date = crate::publish::payload::utc_rfc3339(std::time::SystemTime::now());
    let date = date.get(..10).unwrap_or(&date);
    format!(
        "# Beat detection against reference annotations\n\n\
         Written by `{command}` on {date} ({elapsed_s:.0} s, {build} build, on the project's \
         2-core x86_64 build box). Do not edit by hand: rerun the command.\n\n\
         What is measured: `meit::dsp::beats::analyze` on consecutive {window_s} s windows of each \
         record (the daemon analyses each window on its own), its detections matched one to one \
         with the record's reference beat annotations (every beat label EC57 counts: \
         N L R B A a J S V r F e j n E / f Q ?) within {match_ms:.0} ms (ANSI/AAMI EC57). \
         Se = TP / (TP + FN), +P = TP / (TP + FP); gross rows sum the counts. As EC57 prescribes \
         for the MIT-BIH Arrhythmia Database (WFDB `bxb`'s default), the first {learn:.0} s of a \
         record longer than {twice:.0} s are a learning period and are not scored (the \
         `scored` column). Target: Se and +P >= 99.5% on each record.\n\n\
         Conditions other than \"as recorded\" add a seeded artefact to the real signal, the \
         reference annotations staying true (in the manner of the MIT-BIH Noise Stress Test): \
         every lead scaled down (a low-voltage QRS), broadband noise bursts 2 s in every 10 s \
         (muscle artefact), baseline wander (0.3 Hz plus 0.05 Hz), and a T wave taller than \
         the QRS added 280 ms after every reference beat.\n\n\
         Records: `tests/fixtures/physionet/` (MIT-BIH Arrhythmia Database record 100, ODC-By \
         1.0; attribution in its README). For comparison on the whole MIT-BIH database: Pan & \
         Tompkins (IEEE Trans Biomed Eng 32(3):230-236, 1985) report 99.3% of beats detected \
         correctly.\n\n{table}",
        build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        match_ms = MATCH_WINDOW_S * 1000.0,
        learn = EC57_LEARNING_S,
        twice = 2.0 * EC57_LEARNING_S,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_pairs_each_reference_beat_with_the_nearest_detection_once() {
        // Window 10: 100 is matched by 104 (nearer than 93, which is false); 200 is missed;
        // 300 is matched by 291, so 290 is false; 400 matches nothing.
        let m = match_beats(&[100, 200, 300], &[93, 104, 290, 291, 400], 10, 0);
        assert_eq!(
            m,
            Matching {
                true_positives: 2,
                false_negatives: 1,
                false_positives: 3
            }
        );
        assert_eq!(m.sensitivity(), Some(2.0 / 3.0));
        assert_eq!(m.positive_predictivity(), Some(2.0 / 5.0));
        // Nothing before `from` counts.
        let m = match_beats(&[100, 200, 300], &[93, 104, 290, 291, 400], 10, 250);
        assert_eq!(
            m,
            Matching {
                true_positives: 1,
                false_negatives: 0,
                false_positives: 2
            }
        );
        assert_eq!(Matching::default().sensitivity(), None);
    }

    #[test]
    fn low_amplitude_stress_scales_and_bursts_add_noise_reproducibly() {
        let rec = Recording {
            sample_rate_hz: 100.0,
            leads: crate::ecg::LeadSet(vec![crate::ecg::Lead::II]),
            samples_uv: ndarray::Array2::from_elem((1, 2000), 100.0),
        };
        let mut low = rec.clone();
        Stress::LowAmplitude(0.25).apply(&mut low, &[], 1);
        assert!(low.samples_uv.iter().all(|&v| v == 25.0));
        let (mut a, mut b) = (rec.clone(), rec.clone());
        Stress::NoiseBursts(50.0).apply(&mut a, &[], 7);
        Stress::NoiseBursts(50.0).apply(&mut b, &[], 7);
        assert_eq!(a, b);
        // Only 2 s in every 10 s is touched.
        let touched = a.samples_uv.iter().filter(|&&v| v != 100.0).count();
        assert_eq!(touched, 400);
    }
}
