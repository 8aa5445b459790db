//! The evaluation suite of a trained model on the held-out synthetic test set: text metrics,
//! clinical correctness, the shuffled-ECG control, robustness (the MEIT noise protocol and
//! realistic artefacts), reduced lead sets and transfer (other report phrasing, other device
//! rate). Every condition runs the *same* test records, changing one thing, so the rows compare
//! like with like: each row is also scored against `clean` on only the records both rows judged
//! (the quality gate refuses different records in different rows), with the change its
//! perturbation made to the model's input (after the preprocessing's band-pass) measured, and a
//! row whose reports equal another row's on every record is named as such. Every row counts the
//! daemon's consistency flag ([`meit::report::contradictions`]). The result is JSON (for CI and
//! benchmarks) and a Markdown table.

use meit::dsp::ModelInput;
use meit::dsp::leads::LeadStatus;
use meit::ecg::Lead;
use meit::report::contradictions;
use meit::synth::Acquisition;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::clinical::{ClinicalCase, ClinicalScores, Interval, macro_f1_interval, score_cases};
use super::compare::ScoredRecord;
use super::external::{ExternalResult, measure};
use crate::codec::RecordCodec;
use crate::data::synth::{Forced, LeadProfile, ReportStyle, SynthData};
use crate::data::{LabelledRecord, Split};
use crate::generate::{Reporter, device_preprocessor};
use crate::metrics::{self, Evaluation, Sample, Tokenization};
use crate::model::ModelError;
use crate::train::TrainError;
use crate::train::config::RunConfig;

/// How the test records are changed for one row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variant {
    /// Short name (a table row).
    pub name: String,
    /// What changes.
    pub description: String,
    /// Properties forced on every record.
    #[serde(skip)]
    pub forced: Forced,
    /// Reference phrasing.
    #[serde(skip)]
    pub style: Option<ReportStyle>,
    /// ECG inputs permuted across records (the control).
    pub shuffled: bool,
}

impl Variant {
    fn new(name: &str, description: &str, forced: Forced) -> Variant {
        Variant {
            name: name.into(),
            description: description.into(),
            forced,
            style: None,
            shuffled: false,
        }
    }
}

/// The artefact rows: (artefact, severity on `meit::synth::Acquisition`'s scale: wander 1 =
/// ~0.6 mV, EMG 1 = ~35 uV rms per electrode, motion 1 = one 1-2 mV transient every ~3 s, mains
/// 1 = ~0.15 mV).
pub const ARTEFACT_ROWS: [(&str, f32); 7] = [
    ("wander", 1.0),
    ("wander", 2.0),
    ("emg", 0.5),
    ("emg", 1.0),
    ("motion", 0.3),
    ("motion", 1.0),
    ("mains", 1.0),
];

/// Which rows to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Suite {
    /// The test set and the shuffled control only.
    Quick,
    /// Every row: control, MEIT protocol, artefacts, lead sets, transfer.
    Full,
}

/// The rows of `suite` for a model trained on `data`.
pub fn variants(suite: Suite, data: &SynthData) -> Vec<Variant> {
    let clean = || Forced {
        acquisition: Some(Acquisition::clean()),
        ..Forced::default()
    };
    let mut rows = vec![
        Variant::new(
            "test",
            "held-out records as drawn (12 leads, a share with artefacts)",
            Forced::default(),
        ),
        Variant::new(
            "clean",
            "the same records without artefacts (an amplifier noise floor, if the data has one, stays)",
            clean(),
        ),
        Variant {
            shuffled: true,
            ..Variant::new(
                "shuffled-ecg",
                "control: each report generated from another record's ECG",
                Forced::default(),
            )
        },
    ];
    if suite == Suite::Quick {
        return rows;
    }
    for p in [0.05f32, 0.10, 0.15, 0.20] {
        rows.push(Variant::new(
            &format!("meit-{:.0}%", p * 100.0),
            "MEIT protocol: N(0, s), s ~ U(0, 0.1) of the range, in a window of U(0, p) of the record",
            Forced {
                meit_max_fraction: Some(p),
                ..clean()
            },
        ));
    }
    // Severities the preprocessing does not filter away (0.5-40 Hz band-pass, mains notch,
    // 100 Hz): each row's `input change` column shows what reached the model. Mains is kept at
    // one severity to show that the notch removes it.
    for (name, severity) in ARTEFACT_ROWS {
        let mut acquisition = Acquisition::clean();
        match name {
            "wander" => acquisition.baseline_wander = severity,
            "emg" => acquisition.emg = severity,
            "motion" => acquisition.motion = severity,
            _ => {
                acquisition.mains = severity;
                acquisition.mains_hz = data.mains_hz;
            }
        }
        rows.push(Variant::new(
            &format!("{name}-{severity}"),
            "one realistic artefact at this severity",
            Forced {
                acquisition: Some(acquisition),
                ..Forced::default()
            },
        ));
    }
    rows.push(Variant::new(
        "monitor-3-lead",
        "I, II, III only (augmented leads derived, chest leads masked)",
        Forced {
            leads: Some(LeadProfile::Monitor),
            ..clean()
        },
    ));
    rows.push(Variant::new(
        "strap-1-lead",
        "lead I only (the Polar H10 strap's lead)",
        Forced {
            leads: Some(LeadProfile::Single),
            ..clean()
        },
    ));
    let other_style = match data.style {
        ReportStyle::Mimic => ReportStyle::Ptbxl,
        ReportStyle::Ptbxl => ReportStyle::Mimic,
    };
    rows.push(Variant {
        style: Some(other_style),
        ..Variant::new(
            "transfer-phrasing",
            "references in the other data set's phrasing (zero-shot)",
            clean(),
        )
    });
    let trained_rates = &data.sample_rates_hz;
    let other_rate = [360.0, 250.0, 1000.0]
        .into_iter()
        .find(|r| !trained_rates.contains(r))
        .unwrap_or(360.0);
    rows.push(Variant::new(
        &format!("transfer-{other_rate:.0}hz"),
        "another device sample rate than in training",
        Forced {
            sample_rate_hz: Some(other_rate),
            ..clean()
        },
    ));
    rows
}

/// Resamples behind each row's macro F1 interval.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// One row's figures.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// The row.
    pub variant: Variant,
    /// Text metrics (corpus and per batch of 32).
    pub text: Evaluation,
    /// Statement codes parsed back from the reports.
    pub clinical: ClinicalScores,
    /// The 95 % bootstrap interval of `clinical.macro_f1` over this row's records
    /// ([`BOOTSTRAP_RESAMPLES`] draws seeded by the run's seed).
    pub macro_f1_interval: Option<Interval>,
    /// Records whose signal quality blocked a report (their hypothesis is empty).
    pub no_report: usize,
    /// Why: each blocking reason and how many refused records gave it.
    pub no_report_reasons: std::collections::BTreeMap<String, usize>,
    /// A few generated reports beside their references.
    pub examples: Vec<(String, String)>,
    /// Reports the daemon's consistency flag marks: the text's rhythm or rate disagrees with the
    /// beats measured on the ECG the report was generated from ([`contradictions`]).
    pub flagged: usize,
    /// How much this row's perturbation changed the model's input against `clean` (none for
    /// `clean` itself and for the shuffled control).
    pub input_change: Option<InputChange>,
    /// Per record: the report, or none when the gate refused it (for the paired comparisons).
    #[serde(skip)]
    reports: Vec<Option<String>>,
    /// Per record: what its report is scored against.
    #[serde(skip)]
    cases: Vec<ClinicalCase>,
    /// Per record: the reference text.
    #[serde(skip)]
    references: Vec<String>,
}

/// The change a row's perturbation makes to the model's input (after the preprocessing's
/// band-pass, notch and resampling), against the same records' `clean` input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InputChange {
    /// RMS of (row input - clean input) over every record, lead and sample, in model input
    /// units (mV for a millivolt model).
    pub rms: f64,
    /// RMS of the clean input, same units.
    pub clean_rms: f64,
}

/// One row scored against `clean` on only the records both judged (the quality gate refuses
/// different records in different rows; scoring a refused record as an empty report would
/// make a drop out of the gate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedComparison {
    /// The row.
    pub row: String,
    /// The row it is compared with (`clean`).
    pub baseline: String,
    /// Records both rows reported on.
    pub records: usize,
    /// ROUGE-L of the baseline on those records (corpus level; none without records).
    pub baseline_rouge_l: Option<f64>,
    /// ROUGE-L of the row on those records.
    pub rouge_l: Option<f64>,
    /// Macro F1 of the baseline on those records.
    pub baseline_macro_f1: Option<f64>,
    /// Macro F1 of the row on those records.
    pub macro_f1: Option<f64>,
    /// Of those records, how many got the same report text in both rows.
    pub same_reports: usize,
    /// An earlier row whose reports (and refusals) equal this row's on every record: the row
    /// measures nothing the other does not.
    pub identical_to: Option<String>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Test records per row.
    pub records: usize,
    /// What generated the reports (the candle model or a bundle).
    pub generator: String,
    /// Decoding.
    pub decoding: String,
    /// How text is tokenised for the metrics.
    pub tokenization: Tokenization,
    /// The rows.
    pub results: Vec<VariantResult>,
    /// Every row but the control and the phrasing transfer against `clean`, on the records both
    /// judged.
    pub paired: Vec<PairedComparison>,
    /// The external set, when one was given.
    pub external: Option<ExternalResult>,
    /// The `test` row record by record (empty without that row), for `meit-models compare`.
    pub test_records: Vec<ScoredRecord>,
}

/// Runs `variants` on the first `records` test records.
pub fn evaluate(
    config: &RunConfig,
    reporter: &mut dyn Reporter,
    codec: &RecordCodec,
    records: usize,
    variants: &[Variant],
    mut progress: impl FnMut(&str),
) -> Result<EvalReport, TrainError> {
    let Some(data) = &config.data.synth else {
        return Err(ModelError::Config("evaluation needs a [data.synth] source".into()).into());
    };
    let tokenization = Tokenization::Paper;
    let clean = Forced {
        acquisition: Some(Acquisition::clean()),
        ..Forced::default()
    };
    let (_, clean_inputs) = test_inputs(data, codec, records, clean)?;
    let mut results = Vec::new();
    for variant in variants {
        progress(&variant.name);
        results.push(evaluate_variant(
            config,
            data,
            reporter,
            codec,
            records,
            variant,
            tokenization,
            &clean_inputs,
        )?);
    }
    let paired = paired_comparisons(&results, tokenization)?;
    let test_records = results
        .iter()
        .find(|r| r.variant.name == "test")
        .map(|r| r.cases.iter().map(ScoredRecord::of).collect())
        .unwrap_or_default();
    Ok(EvalReport {
        records,
        generator: reporter.describe(),
        decoding: format!("greedy, at most {} tokens", config.train.max_tokens),
        tokenization,
        results,
        paired,
        external: None,
        test_records,
    })
}

/// The first `records` test records with `forced`, and their model inputs as `generate` makes
/// them (leads the device lacks masked, not refused).
fn test_inputs(
    data: &SynthData,
    codec: &RecordCodec,
    records: usize,
    forced: Forced,
) -> Result<(Vec<LabelledRecord>, Vec<ModelInput>), TrainError> {
    let labelled = (0..records as u64)
        .map(|i| data.record_with(Split::Test, i, forced))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = labelled
        .iter()
        .map(|r| {
            device_preprocessor(codec, &r.recording.leads)?
                .process_recording(&r.recording)
                .map_err(|source| {
                    TrainError::from(crate::data::DataError::Preprocess {
                        id: r.id.clone(),
                        source,
                    })
                })
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    Ok((labelled, inputs))
}

/// RMS of `inputs - clean` and of `clean` over every record, lead and sample (none when the
/// shapes differ or nothing is finite).
fn input_change(inputs: &[ModelInput], clean: &[ModelInput]) -> Option<InputChange> {
    let (mut diff, mut base, mut n) = (0.0f64, 0.0f64, 0usize);
    for (a, b) in inputs.iter().zip(clean) {
        if a.samples.dim() != b.samples.dim() {
            return None;
        }
        for (&x, &y) in a.samples.iter().zip(b.samples.iter()) {
            if x.is_finite() && y.is_finite() {
                diff += f64::from(x - y).powi(2);
                base += f64::from(y).powi(2);
                n += 1;
            }
        }
    }
    (n > 0).then(|| InputChange {
        rms: (diff / n as f64).sqrt(),
        clean_rms: (base / n as f64).sqrt(),
    })
}

/// Each row (but the shuffled control and the phrasing transfer, whose references or inputs
/// are not the same records') against `clean` on the records both judged; and which earlier
/// row, if any, gave the same reports on every record.
fn paired_comparisons(
    results: &[VariantResult],
    tokenization: Tokenization,
) -> Result<Vec<PairedComparison>, TrainError> {
    let Some(clean) = results.iter().find(|r| r.variant.name == "clean") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, row) in results.iter().enumerate() {
        if row.variant.name == "clean" || row.variant.shuffled || row.variant.style.is_some() {
            continue;
        }
        let both: Vec<usize> = (0..row.reports.len())
            .filter(|&i| row.reports[i].is_some() && clean.reports[i].is_some())
            .collect();
        let scores = |r: &VariantResult| -> Result<(Option<f64>, Option<f64>), TrainError> {
            if both.is_empty() {
                return Ok((None, None));
            }
            let samples: Vec<Sample> = both
                .iter()
                .map(|&i| {
                    Sample::from_text(
                        tokenization,
                        r.reports[i].as_deref().unwrap_or_default(),
                        &[r.references[i].as_str()],
                    )
                })
                .collect();
            let text = metrics::evaluate(&samples, tokenization, None)
                .map_err(|e| ModelError::Input(format!("metrics: {e}")))?;
            let cases: Vec<ClinicalCase> = both.iter().map(|&i| r.cases[i].clone()).collect();
            Ok((Some(text.corpus.rouge_l), score_cases(&cases).macro_f1))
        };
        let (baseline_rouge_l, baseline_macro_f1) = scores(clean)?;
        let (rouge_l, macro_f1) = scores(row)?;
        let identical_to = results[..k]
            .iter()
            .find(|other| {
                !other.variant.shuffled
                    && other.variant.style.is_none()
                    && other.reports == row.reports
            })
            .map(|other| other.variant.name.clone());
        out.push(PairedComparison {
            row: row.variant.name.clone(),
            baseline: clean.variant.name.clone(),
            records: both.len(),
            baseline_rouge_l,
            rouge_l,
            baseline_macro_f1,
            macro_f1,
            same_reports: both
                .iter()
                .filter(|&&i| row.reports[i] == clean.reports[i])
                .count(),
            identical_to,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_variant(
    config: &RunConfig,
    data: &SynthData,
    reporter: &mut dyn Reporter,
    codec: &RecordCodec,
    records: usize,
    variant: &Variant,
    tokenization: Tokenization,
    clean_inputs: &[ModelInput],
) -> Result<VariantResult, TrainError> {
    let data = SynthData {
        style: variant.style.unwrap_or(data.style),
        ..data.clone()
    };
    let (labelled, inputs) = test_inputs(&data, codec, records, variant.forced)?;
    // The control: a seeded permutation with no fixed point (a rotation of a shuffle).
    let mut order: Vec<usize> = (0..records).collect();
    if variant.shuffled && records > 1 {
        order.shuffle(&mut StdRng::seed_from_u64(config.train.seed));
        let mut rotated = order.clone();
        rotated.rotate_left(1);
        let mut source = vec![0; records];
        for (a, b) in order.iter().zip(&rotated) {
            source[*a] = *b;
        }
        order = source;
    }
    // Every reportable record's report, generated together (record i with phrasing i).
    let reportable: Vec<usize> = (0..labelled.len())
        .filter(|&i| inputs[order[i]].quality.is_reportable())
        .collect();
    let batch: Vec<_> = reportable.iter().map(|&i| &inputs[order[i]]).collect();
    let mut generated = reporter.reports(&batch, &reportable)?.into_iter();
    let mut hypotheses = Vec::with_capacity(records);
    let mut reports = Vec::with_capacity(records);
    let mut flagged = 0;
    let mut no_report = 0;
    let mut no_report_reasons = std::collections::BTreeMap::new();
    let mut cases = Vec::with_capacity(records);
    for (i, record) in labelled.iter().enumerate() {
        let input = &inputs[order[i]];
        let text = if input.quality.is_reportable() {
            let text = generated.next().ok_or_else(|| {
                ModelError::Input(format!("{} gave too few reports", reporter.describe()))
            })?;
            // The daemon's check: the text against the beats measured on the ECG it came from.
            let measured = measure(&labelled[order[i]].recording);
            if measured.is_some_and(|m| !contradictions(&text, &m).is_empty()) {
                flagged += 1;
            }
            reports.push(Some(text.clone()));
            text
        } else {
            reports.push(None);
            no_report += 1;
            for reason in input.quality.blocking_reasons() {
                *no_report_reasons.entry(reason).or_insert(0) += 1;
            }
            String::new()
        };
        let available: Vec<Lead> = input
            .lead_mask
            .leads
            .0
            .iter()
            .zip(&input.lead_mask.status)
            .filter(|(_, s)| **s != LeadStatus::Missing)
            .map(|(l, _)| *l)
            .collect();
        cases.push(ClinicalCase {
            reference_codes: record.codes.clone(),
            generated: text.clone(),
            available,
            reference_rate_bpm: record.rate_bpm,
        });
        hypotheses.push(text);
    }
    let samples: Vec<Sample> = hypotheses
        .iter()
        .zip(&labelled)
        .map(|(h, r)| Sample::from_text(tokenization, h, &[r.report.as_str()]))
        .collect();
    let text = metrics::evaluate(&samples, tokenization, Some(32))
        .map_err(|e| ModelError::Input(format!("metrics: {e}")))?;
    let examples = hypotheses
        .iter()
        .zip(&labelled)
        .take(3)
        .map(|(h, r)| (h.clone(), r.report.clone()))
        .collect();
    let input_change = (!variant.shuffled && variant.name != "clean")
        .then(|| input_change(&inputs, clean_inputs))
        .flatten();
    Ok(VariantResult {
        variant: variant.clone(),
        text,
        clinical: score_cases(&cases),
        macro_f1_interval: macro_f1_interval(&cases, 0.95, BOOTSTRAP_RESAMPLES, config.train.seed),
        no_report,
        no_report_reasons,
        examples,
        flagged,
        input_change,
        reports,
        cases,
        references: labelled.iter().map(|r| r.report.clone()).collect(),
    })
}

impl EvalReport {
    /// The headline figures a bundle manifest records: per row (`test`, `clean`, `shuffled-ecg`: the control),
    /// macro F1, BLEU-4, ROUGE-L and the share of records without a report; and the record count.
    pub fn headline(&self) -> std::collections::BTreeMap<String, f64> {
        let mut rows = std::collections::BTreeMap::new();
        rows.insert("records".to_string(), self.records as f64);
        for result in &self.results {
            let name = &result.variant.name;
            if !["test", "clean", "shuffled-ecg"].contains(&name.as_str()) {
                continue;
            }
            if let Some(f1) = result.clinical.macro_f1 {
                rows.insert(format!("{name}.macro_f1"), f1);
            }
            rows.insert(format!("{name}.bleu_4"), result.text.corpus.bleu_4);
            rows.insert(format!("{name}.rouge_l"), result.text.corpus.rouge_l);
            rows.insert(
                format!("{name}.no_report_fraction"),
                result.no_report as f64 / self.records.max(1) as f64,
            );
        }
        if let Some(external) = &self.external {
            let t = &external.total;
            rows.insert("external.windows".to_string(), t.windows as f64);
            let fraction = |n: usize| n as f64 / t.windows.max(1) as f64;
            rows.insert(
                "external.rhythm_right_fraction".to_string(),
                fraction(t.rhythm_right),
            );
            rows.insert(
                "external.rate_class_right_fraction".to_string(),
                fraction(t.rate_class_right),
            );
            rows.insert(
                "external.unsupported_claims".to_string(),
                t.unsupported_claims as f64,
            );
        }
        rows
    }

    /// The Markdown table: one row per variant.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Generated by {}. Held-out synthetic test records: {} per row; decoding {}; text \
             metrics corpus-level (per batch of 32 in the JSON), tokenised as the paper \
             (\".\" -> \" .\"); METEOR without WordNet synonyms; macro F1 with its 95 % \
             bootstrap interval over the row's records ({} resamples).\n\n",
            self.generator, self.records, self.decoding, BOOTSTRAP_RESAMPLES
        );
        out.push_str("| row | BLEU-1 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D | macro F1 (95 % interval) | exact match | no report | unsupported claims | flagged |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            let s = &r.text.corpus;
            let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            let same = self
                .paired
                .iter()
                .find(|p| p.row == r.variant.name)
                .and_then(|p| p.identical_to.as_ref())
                .map(|other| format!(" (same reports as `{other}`: not a result of its own)"))
                .unwrap_or_default();
            out.push_str(&format!(
                "| {}{same} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |\n",
                r.variant.name,
                s.bleu_1,
                s.bleu_4,
                s.meteor,
                s.rouge_l,
                s.cider_d,
                or_dash(r.clinical.macro_f1)
                    + &r.macro_f1_interval
                        .map_or(String::new(), |i| format!(" ({:.3}-{:.3})", i.low, i.high)),
                or_dash(r.clinical.exact_match_rate),
                r.no_report,
                r.clinical.unsupported_claims,
                r.flagged
            ));
        }
        out.push_str(
            "\n`flagged`: reports the daemon's consistency flag marks (`meit::report::contradictions`: \
             the text's rhythm or rate disagrees with the beats `meit::dsp::beats` measures on the \
             ECG the report came from). `unsupported claims`: statements the model wrote that \
             need leads the row lacks (scored as written); the daemon withholds those sentences \
             (`meit::report::withhold_unsupported`), so they never reach a subscriber.\n",
        );
        if !self.paired.is_empty() {
            out.push_str(
                "\nEach row against `clean` on only the records both rows judged (the gate refuses \
                 different records in different rows); input change: RMS of (row - clean) model \
                 input after the preprocessing (band-pass, notch, resampling), over every record, \
                 lead and sample, beside the clean input's RMS:\n\n\
                 | row | records both judged | ROUGE-L clean | ROUGE-L row | drop | macro F1 clean | macro F1 row | drop | same report as clean | input change (clean RMS) |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
            );
            let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            for p in &self.paired {
                let change = self
                    .results
                    .iter()
                    .find(|r| r.variant.name == p.row)
                    .and_then(|r| r.input_change)
                    .map_or("-".to_string(), |c| {
                        format!("{:.4} ({:.4})", c.rms, c.clean_rms)
                    });
                let decrease = |a: Option<f64>, b: Option<f64>| {
                    a.zip(b)
                        .map_or_else(|| "-".to_string(), |(a, b)| format!("{:.3}", a - b))
                };
                let name = match &p.identical_to {
                    Some(other) => format!("{} (same reports as `{other}`)", p.row),
                    None => p.row.clone(),
                };
                out.push_str(&format!(
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {change} |\n",
                    p.records,
                    or_dash(p.baseline_rouge_l),
                    or_dash(p.rouge_l),
                    decrease(p.baseline_rouge_l, p.rouge_l),
                    or_dash(p.baseline_macro_f1),
                    or_dash(p.macro_f1),
                    decrease(p.baseline_macro_f1, p.macro_f1),
                    p.same_reports,
                ));
            }
        }
        out.push_str("\nRows:\n\n");
        for r in &self.results {
            out.push_str(&format!(
                "- `{}`: {}\n",
                r.variant.name, r.variant.description
            ));
        }
        let refused: Vec<&VariantResult> = self
            .results
            .iter()
            .filter(|r| !r.no_report_reasons.is_empty())
            .collect();
        if !refused.is_empty() {
            out.push_str(
                "\nWhy the quality gate refused records (a record may give several reasons):\n\n",
            );
            for r in refused {
                let reasons: Vec<String> = r
                    .no_report_reasons
                    .iter()
                    .map(|(reason, n)| format!("{reason} ({n})"))
                    .collect();
                out.push_str(&format!("- `{}`: {}\n", r.variant.name, reasons.join(", ")));
            }
        }
        if let Some(external) = &self.external {
            out.push('\n');
            out.push_str(&external.to_markdown());
        }
        if let Some(first) = self.results.first() {
            out.push_str(&format!(
                "\nPer-condition scores on `{}`:\n\n",
                first.variant.name
            ));
            out.push_str(&first.clinical.to_markdown());
        }
        out
    }
}
