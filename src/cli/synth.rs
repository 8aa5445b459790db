//! `meit synth`: one record (report, plot, WFDB), a data set, a gallery of plots, or the
//! throughput benchmark.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use meit::synth::dataset::{DatasetSpec, DatasetStyle, write_dataset};
use meit::synth::plot::render_paper;
use meit::synth::{
    Acquisition, ConditionSet, Overrides, RecordSpec, Variability, generate, generate_with,
};
use meit::wfdb::{SignalFormat, WriteOptions, write_record};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `meit synth [FLAGS]` makes one record; the subcommands make many.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SynthArgs {
    /// A data set, a plot gallery or the benchmark.
    #[command(subcommand)]
    pub command: Option<SynthCommand>,
    /// One record.
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Flags for one record.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Conditions, comma-separated (e.g. `af`, `lbbb,long-qt`); see `--list`.
    #[arg(long, default_value = "normal")]
    pub condition: String,
    /// Duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Sample rate in Hz (100-1000).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Severity (0-1) of every acquisition artefact.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    /// Apply the MEIT perturbation with this maximum window fraction (0.05-0.2).
    #[arg(long)]
    pub meit: Option<f32>,
    /// Render the 12-lead paper layout to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write a WFDB record (format 16, 1000 adu/mV) to this path (`DIR/NAME`, no extension).
    #[arg(long)]
    pub wfdb: Option<PathBuf>,
    /// Heart rate in bpm instead of a random one (the conditions still name the rhythm).
    #[arg(long)]
    pub hr: Option<f32>,
    /// PR interval in ms.
    #[arg(long)]
    pub pr: Option<f32>,
    /// QRS duration in ms.
    #[arg(long)]
    pub qrs: Option<f32>,
    /// Bazett-corrected QT in ms.
    #[arg(long)]
    pub qtc: Option<f32>,
    /// Frontal QRS axis in degrees.
    #[arg(long, allow_hyphen_values = true)]
    pub axis: Option<f32>,
    /// Factor on the QRS amplitude.
    #[arg(long)]
    pub qrs_gain: Option<f32>,
    /// Physiology and electrode variability: `fixed` (the default: every seed draws what it
    /// always drew), `literature` (adult ranges, as `models/configs/tiny-realism.toml` trains
    /// on) or `wide` (literature plus small lead-II QRS beside tall T waves).
    #[arg(long, value_enum, default_value_t = VariabilityArg::Fixed)]
    pub variability: VariabilityArg,
    /// Print the full ground truth as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// List the condition names and exit.
    #[arg(long)]
    pub list: bool,
}

/// `--variability` values ([`Variability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariabilityArg {
    /// [`Variability::Fixed`].
    Fixed,
    /// [`Variability::Literature`].
    Literature,
    /// [`Variability::Wide`].
    Wide,
}

impl From<VariabilityArg> for Variability {
    fn from(v: VariabilityArg) -> Variability {
        match v {
            VariabilityArg::Fixed => Variability::Fixed,
            VariabilityArg::Literature => Variability::Literature,
            VariabilityArg::Wide => Variability::Wide,
        }
    }
}

/// Subcommands of `meit synth`.
#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    /// Write a data set in the PTB-XL or MIMIC-IV-ECG directory layout.
    Dataset {
        /// Number of records.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directory layout.
        #[arg(long, value_enum, default_value_t = Style::Ptbxl)]
        style: Style,
        /// Seed of the whole data set.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Highest artefact severity (each record draws its own, 0 to this).
        #[arg(long, default_value_t = 0.3)]
        max_noise: f32,
    },
    /// Render one plot per condition into a directory (the gallery under docs/synth).
    Gallery {
        /// Output directory.
        #[arg(long, default_value = "docs/synth")]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = 3)]
        seed: u64,
    },
    /// Time the generation of N 10 s 12-lead 500 Hz records (random condition mix) on one thread.
    Bench {
        /// Number of records.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Artefact severity (0 = clean).
        #[arg(long, default_value_t = 0.0)]
        noise: f32,
    },
}

/// Data-set layouts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Style {
    /// `ptbxl_database.csv` + `records500/` + `records100/`.
    Ptbxl,
    /// `record_list.csv` + `machine_measurements.csv` + `files/`.
    Mimic,
}

/// Runs `meit synth`.
pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => one_record(&args.record),
        Some(SynthCommand::Dataset {
            n,
            out,
            style,
            seed,
            max_noise,
        }) => {
            let spec = DatasetSpec {
                n,
                style: match style {
                    Style::Ptbxl => DatasetStyle::Ptbxl,
                    Style::Mimic => DatasetStyle::Mimic,
                },
                seed,
                max_noise,
            };
            let started = Instant::now();
            let summary = write_dataset(&out, &spec, |done| {
                if done % 1000 == 0 {
                    eprintln!("{done}/{n} records");
                }
            })?;
            writeln!(
                std::io::stdout(),
                "wrote {} records ({} distinct condition mixes) to {} in {:.1} s",
                summary.records,
                summary.distinct_mixes,
                out.display(),
                started.elapsed().as_secs_f64()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some(SynthCommand::Gallery { out, seed }) => gallery(&out, seed),
        Some(SynthCommand::Bench { n, noise }) => bench(n, noise),
    }
}

fn one_record(a: &RecordArgs) -> anyhow::Result<ExitCode> {
    if a.list {
        for c in meit::synth::Condition::ALL {
            writeln!(std::io::stdout(), "{c}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let conditions = ConditionSet::parse_list(&a.condition)?;
    let spec = RecordSpec {
        conditions,
        sample_rate_hz: a.rate,
        seconds: a.seconds,
        acquisition: if a.noise > 0.0 {
            Acquisition::uniform(a.noise)
        } else {
            Acquisition::clean()
        },
        meit_max_fraction: a.meit,
        overrides: Overrides {
            heart_rate_bpm: a.hr,
            pr_ms: a.pr,
            qrs_ms: a.qrs,
            qtc_ms: a.qtc,
            qrs_axis_deg: a.axis,
            qrs_gain: a.qrs_gain,
        },
    };
    let rec = generate_with(&spec, a.variability.into(), a.seed)?;
    if let Some(path) = &a.plot {
        render_paper(&rec.recording, &plot_title(&rec, &a.condition), path)?;
    }
    if let Some(base) = &a.wfdb {
        let dir = base
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = base
            .file_name()
            .and_then(|n| n.to_str())
            .context("--wfdb needs a record name")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_record(
            dir,
            name,
            &rec.recording,
            WriteOptions {
                format: SignalFormat::Format16,
                adc_gain_per_mv: 1000.0,
            },
            std::slice::from_ref(&rec.truth.report_mimic),
        )?;
    }
    if a.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&rec.truth)?
        )?;
    } else {
        let m = &rec.truth.measurements;
        writeln!(std::io::stdout(), "MIMIC : {}", rec.truth.report_mimic)?;
        writeln!(std::io::stdout(), "PTB-XL: {}", rec.truth.report_ptbxl)?;
        writeln!(std::io::stdout(), "codes : {}", rec.truth.codes.join(" "))?;
        writeln!(
            std::io::stdout(),
            "rate {:.0} bpm, RR {:.0} ms, PR {}, QRS {:.0} ms, QT/QTc {:.0}/{:.0} ms, axes P/QRS/T {}/{:.0}/{:.0}",
            m.ventricular_rate_bpm,
            m.rr_ms,
            m.pr_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
            m.qrs_ms,
            m.qt_ms,
            m.qtc_ms,
            m.p_axis_deg.map_or("-".into(), |v| format!("{v:.0}")),
            m.qrs_axis_deg,
            m.t_axis_deg
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn plot_title(rec: &meit::synth::SynthRecord, conditions: &str) -> Vec<String> {
    let m = &rec.truth.measurements;
    vec![
        format!(
            "MEIT SYNTH  {}  SEED {}  25 mm/s  10 mm/mV  {:.0} BPM  QRS {:.0} ms  AXIS {:.0}",
            conditions.to_uppercase(),
            rec.truth.seed,
            m.ventricular_rate_bpm,
            m.qrs_ms,
            m.qrs_axis_deg
        ),
        rec.truth.report_mimic.to_uppercase(),
    ]
}

/// The conditions shown in the committed gallery.
const GALLERY: [&str; 12] = [
    "normal",
    "af",
    "flutter",
    "lbbb",
    "rbbb",
    "pvc",
    "ste-inferior",
    "ste-anterior",
    "lvh",
    "paced",
    "lafb,avb1",
    "old-mi-inferior,t-inversion",
];

fn gallery(out: &Path, seed: u64) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for list in GALLERY {
        let spec = RecordSpec::ten_seconds(ConditionSet::parse_list(list)?);
        let rec = generate(&spec, seed)?;
        let path = out.join(format!("{}.png", list.replace(',', "+")));
        render_paper(&rec.recording, &plot_title(&rec, list), &path)?;
        writeln!(
            std::io::stdout(),
            "{}: {}",
            path.display(),
            rec.truth.report_mimic
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(n: usize, noise: f32) -> anyhow::Result<ExitCode> {
    let mut rng = StdRng::seed_from_u64(1);
    let specs: Vec<RecordSpec> = (0..n.min(1000))
        .map(|_| RecordSpec {
            acquisition: if noise > 0.0 {
                Acquisition::uniform(noise)
            } else {
                Acquisition::clean()
            },
            ..RecordSpec::ten_seconds(ConditionSet::random(&mut rng))
        })
        .collect();
    let started = Instant::now();
    let mut checksum = 0.0f64;
    for i in 0..n {
        let spec = &specs[i % specs.len().max(1)];
        let rec = generate(spec, i as u64)?;
        checksum += f64::from(rec.recording.samples_uv[[1, 100]]);
    }
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        std::io::stdout(),
        "{n} records of 12 x 5000 samples (500 Hz, 10 s, noise {noise}) on one thread: {secs:.2} s \
         ({:.0} records/s, {:.1} ns per lead-sample) [checksum {checksum:.0}]",
        n as f64 / secs,
        secs * 1e9 / (n as f64 * 60_000.0)
    )?;
    Ok(ExitCode::SUCCESS)
}
