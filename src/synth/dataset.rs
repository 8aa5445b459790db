//! Synthetic data sets in the directory layouts of PTB-XL (`ptbxl_database.csv` +
//! `records500/` + `records100/`) and MIMIC-IV-ECG (`record_list.csv` +
//! `machine_measurements.csv` + `files/`), so the real-data loaders can be tested on generated
//! trees. Both layouts also get `labels.jsonl` with the full ground truth of every record.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::SynthError;
use super::acquisition::{Acquisition, Adc};
use super::condition::ConditionSet;
use super::record::{RecordSpec, SynthRecord, generate};
use crate::ecg::{Lead, LeadSet, Recording};
use crate::wfdb::{SignalFormat, WriteOptions, write_record};

/// Which real data set's layout to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetStyle {
    /// PTB-XL v1.0.3: 1000 adu/mV, 50 Hz mains, standard lead order.
    Ptbxl,
    /// MIMIC-IV-ECG v1.0: 200 adu/mV, 60 Hz mains, aVF stored before aVL.
    Mimic,
}

/// What data set to write.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Number of records.
    pub n: usize,
    /// Directory layout.
    pub style: DatasetStyle,
    /// Seed of the whole set (conditions, record seeds, artefact severities).
    pub seed: u64,
    /// Highest artefact severity; each record draws each artefact's severity in 0..this.
    pub max_noise: f32,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSummary {
    /// Records written.
    pub records: usize,
    /// Distinct condition combinations among them.
    pub distinct_mixes: usize,
}

/// MIMIC-IV-ECG's missing-measurement value.
const MIMIC_MISSING: &str = "29999";
/// MIMIC-IV-ECG's lead order.
const MIMIC_LEADS: [Lead; 12] = [
    Lead::I,
    Lead::II,
    Lead::III,
    Lead::AVR,
    Lead::AVF,
    Lead::AVL,
    Lead::V1,
    Lead::V2,
    Lead::V3,
    Lead::V4,
    Lead::V5,
    Lead::V6,
];

/// Quotes a CSV field when needed.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

struct Out {
    root: PathBuf,
}

impl Out {
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> SynthError {
        let path = path.to_path_buf();
        move |source| SynthError::Io { path, source }
    }

    fn dir(&self, rel: &str) -> Result<PathBuf, SynthError> {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).map_err(self.io(&p))?;
        Ok(p)
    }

    fn file(&self, rel: &str) -> Result<BufWriter<File>, SynthError> {
        let p = self.root.join(rel);
        let f = File::create(&p).map_err(self.io(&p))?;
        Ok(BufWriter::new(f))
    }

    fn line(&self, w: &mut impl Write, rel: &str, text: &str) -> Result<(), SynthError> {
        writeln!(w, "{text}").map_err(self.io(&self.root.join(rel)))
    }
}

/// The acquisition of one data-set record: each artefact at its own random severity, with the
/// style's mains frequency and ADC.
fn record_acquisition(style: DatasetStyle, max_noise: f32, rng: &mut impl Rng) -> Acquisition {
    let mut s = || {
        if max_noise > 0.0 {
            rng.random_range(0.0..max_noise)
        } else {
            0.0
        }
    };
    let (mains_hz, uv_per_count) = match style {
        DatasetStyle::Ptbxl => (50.0, 1.0),
        DatasetStyle::Mimic => (60.0, 5.0),
    };
    Acquisition {
        baseline_wander: s(),
        mains: s(),
        mains_hz,
        emg: s(),
        motion: s(),
        lead_off: 0.1 * s(),
        adc: Some(Adc {
            uv_per_count,
            bits: 16,
        }),
        amplifier_noise_uv: 0.0,
    }
}

/// Writes a data set of `spec.n` 10 s, 500 Hz records under `out`, calling `progress` with the
/// number of records done.
pub fn write_dataset(
    out: &Path,
    spec: &DatasetSpec,
    mut progress: impl FnMut(usize),
) -> Result<DatasetSummary, SynthError> {
    let o = Out {
        root: out.to_path_buf(),
    };
    o.dir("")?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut labels = o.file("labels.jsonl")?;
    let mut mixes = BTreeSet::new();
    let mut writer: Box<dyn StyleWriter> = match spec.style {
        DatasetStyle::Ptbxl => Box::new(PtbxlWriter::new(&o)?),
        DatasetStyle::Mimic => Box::new(MimicWriter::new(&o)?),
    };
    for i in 0..spec.n {
        let conditions = ConditionSet::random(&mut rng);
        let acquisition = record_acquisition(spec.style, spec.max_noise, &mut rng);
        let seed: u64 = rng.random();
        let record_spec = RecordSpec {
            acquisition,
            ..RecordSpec::ten_seconds(conditions.clone())
        };
        let rec = generate(&record_spec, seed)?;
        mixes.insert(conditions.slugs());
        let id = writer.write(&o, i, &rec)?;
        let json = serde_json::json!({ "id": id, "truth": rec.truth });
        o.line(&mut labels, "labels.jsonl", &json.to_string())?;
        progress(i + 1);
    }
    writer.finish(&o)?;
    labels.flush().map_err(o.io(&out.join("labels.jsonl")))?;
    Ok(DatasetSummary {
        records: spec.n,
        distinct_mixes: mixes.len(),
    })
}

/// One layout's files.
trait StyleWriter {
    /// Writes record number `i`; returns its identifier in the layout.
    fn write(&mut self, o: &Out, i: usize, rec: &SynthRecord) -> Result<String, SynthError>;
    /// Flushes index files.
    fn finish(&mut self, o: &Out) -> Result<(), SynthError>;
}

struct PtbxlWriter {
    database: BufWriter<File>,
    codes: BTreeSet<&'static str>,
}

/// PTB-XL rhythm statements (likelihood 0.0 in `scp_codes`, as PTB-XL writes them).
const PTBXL_RHYTHM: [&str; 7] = ["SR", "SBRAD", "STACH", "SARRH", "AFIB", "AFLT", "PACE"];

/// PTB-XL `heart_axis` category of a QRS axis.
fn ptbxl_heart_axis(axis_deg: f32) -> &'static str {
    match axis_deg {
        a if (-30.0..=90.0).contains(&a) => "MID",
        a if (-90.0..-30.0).contains(&a) => {
            if a < -45.0 {
                "ALAD"
            } else {
                "LAD"
            }
        }
        a if a > 90.0 && a <= 120.0 => "RAD",
        a if a > 120.0 => "ARAD",
        _ => "AXR",
    }
}

impl PtbxlWriter {
    fn new(o: &Out) -> Result<Self, SynthError> {
        let mut database = o.file("ptbxl_database.csv")?;
        o.line(
            &mut database,
            "ptbxl_database.csv",
            "ecg_id,patient_id,age,sex,recording_date,report,scp_codes,heart_axis,\
             baseline_drift,static_noise,burst_noise,electrodes_problems,extra_beats,pacemaker,\
             strat_fold,filename_lr,filename_hr",
        )?;
        Ok(PtbxlWriter {
            database,
            codes: BTreeSet::new(),
        })
    }
}

impl StyleWriter for PtbxlWriter {
    fn write(&mut self, o: &Out, i: usize, rec: &SynthRecord) -> Result<String, SynthError> {
        let ecg_id = i + 1;
        let folder = format!("{:05}", ecg_id / 1000 * 1000);
        let hr_dir = o.dir(&format!("records500/{folder}"))?;
        let lr_dir = o.dir(&format!("records100/{folder}"))?;
        let (hr, lr) = (format!("{ecg_id:05}_hr"), format!("{ecg_id:05}_lr"));
        let options = WriteOptions {
            format: SignalFormat::Format16,
            adc_gain_per_mv: 1000.0,
        };
        write_record(&hr_dir, &hr, &rec.recording, options, &[])?;
        write_record(&lr_dir, &lr, &decimate(&rec.recording, 5), options, &[])?;

        let truth = &rec.truth;
        let mut scp = String::from("{");
        for (k, code) in truth
            .codes
            .iter()
            .filter(|c| !matches!(**c, "BORD" | "ABN" | "LAD" | "RAD"))
            .enumerate()
        {
            let likelihood = if PTBXL_RHYTHM.contains(code) {
                0.0
            } else {
                100.0
            };
            let sep = if k > 0 { ", " } else { "" };
            let _ = write!(scp, "{sep}'{code}': {likelihood:.1}");
            self.codes.insert(code);
        }
        scp.push('}');
        let has = |c: &str| truth.conditions.iter().any(|x| x == c);
        let seed = truth.seed;
        let row = [
            ecg_id.to_string(),
            (10_000 + seed % 90_000).to_string(),
            (18 + seed % 70).to_string(),
            (seed % 2).to_string(),
            format!(
                "1995-{:02}-{:02} 09:{:02}:00",
                1 + i % 12,
                1 + i % 28,
                i % 60
            ),
            truth.report_ptbxl.clone(),
            scp,
            ptbxl_heart_axis(truth.measurements.qrs_axis_deg).to_string(),
            String::new(),
            String::new(),
            String::new(),
            truth
                .lead_off
                .map(|l| {
                    Lead::STANDARD_12
                        .get(l.lead)
                        .map_or("", |x| x.name())
                        .to_string()
                })
                .unwrap_or_default(),
            if has("pvc") || has("pac") {
                "1ES".into()
            } else {
                String::new()
            },
            if has("paced") {
                "ja, pacemaker".into()
            } else {
                String::new()
            },
            (1 + i % 10).to_string(),
            format!("records100/{folder}/{lr}"),
            format!("records500/{folder}/{hr}"),
        ];
        let line = row.iter().map(|f| csv(f)).collect::<Vec<_>>().join(",");
        o.line(&mut self.database, "ptbxl_database.csv", &line)?;
        Ok(ecg_id.to_string())
    }

    fn finish(&mut self, o: &Out) -> Result<(), SynthError> {
        self.database
            .flush()
            .map_err(o.io(&o.root.join("ptbxl_database.csv")))?;
        let mut statements = o.file("scp_statements.csv")?;
        o.line(
            &mut statements,
            "scp_statements.csv",
            ",description,diagnostic,form,rhythm",
        )?;
        for code in &self.codes {
            let rhythm = PTBXL_RHYTHM.contains(code);
            let line = format!(
                "{code},{},{},,{}",
                csv(code),
                if rhythm { "" } else { "1.0" },
                if rhythm { "1.0" } else { "" }
            );
            o.line(&mut statements, "scp_statements.csv", &line)?;
        }
        statements
            .flush()
            .map_err(o.io(&o.root.join("scp_statements.csv")))
    }
}

/// Averages `factor` consecutive samples (500 Hz -> 100 Hz for PTB-XL's `records100`).
fn decimate(r: &Recording, factor: usize) -> Recording {
    let factor = factor.max(1);
    let (leads, n) = r.samples_uv.dim();
    let m = n / factor;
    let samples = Array2::from_shape_fn((leads, m), |(l, t)| {
        let s = r
            .samples_uv
            .row(l)
            .iter()
            .skip(t * factor)
            .take(factor)
            .sum::<f32>();
        s / factor as f32
    });
    Recording {
        sample_rate_hz: r.sample_rate_hz / factor as f64,
        leads: r.leads.clone(),
        samples_uv: samples,
    }
}

struct MimicWriter {
    record_list: BufWriter<File>,
    measurements: BufWriter<File>,
}

impl MimicWriter {
    fn new(o: &Out) -> Result<Self, SynthError> {
        let mut record_list = o.file("record_list.csv")?;
        o.line(
            &mut record_list,
            "record_list.csv",
            "subject_id,study_id,file_name,ecg_time,path",
        )?;
        let mut measurements = o.file("machine_measurements.csv")?;
        let reports = (0..18)
            .map(|k| format!("report_{k}"))
            .collect::<Vec<_>>()
            .join(",");
        o.line(
            &mut measurements,
            "machine_measurements.csv",
            &format!(
                "subject_id,study_id,cart_id,ecg_time,{reports},bandwidth,filtering,rr_interval,\
                 p_onset,p_end,qrs_onset,qrs_end,t_end,p_axis,qrs_axis,t_axis"
            ),
        )?;
        Ok(MimicWriter {
            record_list,
            measurements,
        })
    }
}

impl StyleWriter for MimicWriter {
    fn write(&mut self, o: &Out, i: usize, rec: &SynthRecord) -> Result<String, SynthError> {
        let subject = 10_000_000 + i;
        let study = 40_000_000 + i;
        let subject_text = subject.to_string();
        let rel_dir = format!(
            "files/p{}/p{subject}/s{study}",
            subject_text.get(..4).unwrap_or("1000")
        );
        let dir = o.dir(&rel_dir)?;
        write_record(
            &dir,
            &study.to_string(),
            &reorder(&rec.recording, &MIMIC_LEADS),
            WriteOptions {
                format: SignalFormat::Format16,
                adc_gain_per_mv: 200.0,
            },
            &[],
        )?;
        let ecg_time = format!(
            "2180-{:02}-{:02} {:02}:{:02}:00",
            1 + (i / 40_320) % 12,
            1 + (i / 1440) % 28,
            (i / 60) % 24,
            i % 60
        );
        let line = [
            subject_text.clone(),
            study.to_string(),
            study.to_string(),
            ecg_time.clone(),
            format!("{rel_dir}/{study}"),
        ]
        .join(",");
        o.line(&mut self.record_list, "record_list.csv", &line)?;

        let m = &rec.truth.measurements;
        let whole = |v: Option<f32>| v.map_or(MIMIC_MISSING.to_string(), |v| format!("{:.0}", v));
        let mut fields = vec![
            subject_text,
            study.to_string(),
            format!("{}", 6000 + i % 7),
            ecg_time,
        ];
        for k in 0..18 {
            fields.push(
                rec.truth
                    .statements
                    .get(k)
                    .map(|s| csv(&s.mimic))
                    .unwrap_or_default(),
            );
        }
        fields.extend([
            "0.005-150 Hz".to_string(),
            "60 Hz notch Baseline filter".to_string(),
            whole(Some(m.rr_ms)),
            whole(m.p_onset_ms),
            whole(m.p_end_ms),
            whole(Some(m.qrs_onset_ms)),
            whole(Some(m.qrs_end_ms)),
            whole(Some(m.t_end_ms)),
            whole(m.p_axis_deg),
            whole(Some(m.qrs_axis_deg)),
            whole(Some(m.t_axis_deg)),
        ]);
        o.line(
            &mut self.measurements,
            "machine_measurements.csv",
            &fields.join(","),
        )?;
        Ok(study.to_string())
    }

    fn finish(&mut self, o: &Out) -> Result<(), SynthError> {
        self.record_list
            .flush()
            .map_err(o.io(&o.root.join("record_list.csv")))?;
        self.measurements
            .flush()
            .map_err(o.io(&o.root.join("machine_measurements.csv")))
    }
}

/// The recording with its rows in `order` (leads it lacks are zero).
fn reorder(r: &Recording, order: &[Lead]) -> Recording {
    let n = r.samples_uv.ncols();
    let mut samples = Array2::<f32>::zeros((order.len(), n));
    for (row, lead) in order.iter().enumerate() {
        if let Some(src) = r.leads.position(*lead) {
            samples.row_mut(row).assign(&r.samples_uv.row(src));
        }
    }
    Recording {
        sample_rate_hz: r.sample_rate_hz,
        leads: LeadSet(order.to_vec()),
        samples_uv: samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv("a"), "a");
        assert_eq!(csv("a, b"), "\"a, b\"");
        assert_eq!(csv("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn axis_categories_follow_ptbxl() {
        assert_eq!(ptbxl_heart_axis(45.0), "MID");
        assert_eq!(ptbxl_heart_axis(-40.0), "LAD");
        assert_eq!(ptbxl_heart_axis(-60.0), "ALAD");
        assert_eq!(ptbxl_heart_axis(110.0), "RAD");
    }

    #[test]
    fn decimation_averages_blocks() {
        let r = Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet(vec![Lead::I]),
            samples_uv: Array2::from_shape_fn((1, 10), |(_, t)| t as f32),
        };
        let d = decimate(&r, 5);
        assert_eq!(d.sample_rate_hz, 100.0);
        assert_eq!(d.samples_uv.row(0).to_vec(), vec![2.0, 7.0]);
    }
}
