//! The evaluation suite of a trained model on the held-out synthetic test set: text metrics,
//! clinical correctness, the shuffled-ECG control, robustness (the MEIT noise protocol and
//! realistic artefacts), reduced lead sets and transfer (other report phrasing, other device
//! rate). Every condition runs the *same* test records, changing one thing, so the rows compare
//! like with like. The result is JSON (for CI and benchmarks) and a Markdown table.

use meit::dsp::leads::LeadStatus;
use meit::ecg::Lead;
use meit::synth::Acquisition;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::clinical::{ClinicalCase, ClinicalScores, score_cases};
use crate::codec::RecordCodec;
use crate::data::Split;
use crate::data::synth::{Forced, LeadProfile, ReportStyle, SynthData};
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
    for severity in [0.2f32, 0.5] {
        for (name, acquisition) in [
            (
                "wander",
                Acquisition {
                    baseline_wander: severity,
                    ..Acquisition::clean()
                },
            ),
            (
                "emg",
                Acquisition {
                    emg: severity,
                    ..Acquisition::clean()
                },
            ),
            (
                "mains",
                Acquisition {
                    mains: severity,
                    mains_hz: data.mains_hz,
                    ..Acquisition::clean()
                },
            ),
        ] {
            rows.push(Variant::new(
                &format!("{name}-{severity}"),
                "one realistic artefact at this severity",
                Forced {
                    acquisition: Some(acquisition),
                    ..Forced::default()
                },
            ));
        }
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

/// One row's figures.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// The row.
    pub variant: Variant,
    /// Text metrics (corpus and per batch of 32).
    pub text: Evaluation,
    /// Statement codes parsed back from the reports.
    pub clinical: ClinicalScores,
    /// Records whose signal quality blocked a report (their hypothesis is empty).
    pub no_report: usize,
    /// Why: each blocking reason and how many refused records gave it.
    pub no_report_reasons: std::collections::BTreeMap<String, usize>,
    /// A few generated reports beside their references.
    pub examples: Vec<(String, String)>,
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
        )?);
    }
    Ok(EvalReport {
        records,
        generator: reporter.describe(),
        decoding: format!("greedy, at most {} tokens", config.train.max_tokens),
        tokenization,
        results,
    })
}

fn evaluate_variant(
    config: &RunConfig,
    data: &SynthData,
    reporter: &mut dyn Reporter,
    codec: &RecordCodec,
    records: usize,
    variant: &Variant,
    tokenization: Tokenization,
) -> Result<VariantResult, TrainError> {
    let data = SynthData {
        style: variant.style.unwrap_or(data.style),
        ..data.clone()
    };
    let labelled = (0..records as u64)
        .map(|i| data.record_with(Split::Test, i, variant.forced))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = labelled
        .iter()
        .map(|r| {
            // As `generate` does: leads the device lacks are masked, not refused.
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
    let mut no_report = 0;
    let mut no_report_reasons = std::collections::BTreeMap::new();
    let mut cases = Vec::with_capacity(records);
    for (i, record) in labelled.iter().enumerate() {
        let input = &inputs[order[i]];
        let text = if input.quality.is_reportable() {
            generated.next().ok_or_else(|| {
                ModelError::Input(format!("{} gave too few reports", reporter.describe()))
            })?
        } else {
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
    Ok(VariantResult {
        variant: variant.clone(),
        text,
        clinical: score_cases(&cases),
        no_report,
        no_report_reasons,
        examples,
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
        rows
    }

    /// The Markdown table: one row per variant.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Generated by {}. Held-out synthetic test records: {} per row; decoding {}; text \
             metrics corpus-level (per batch of 32 in the JSON), tokenised as the paper \
             (\".\" -> \" .\"); METEOR without WordNet synonyms.\n\n",
            self.generator, self.records, self.decoding
        );
        out.push_str("| row | BLEU-1 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D | macro F1 | exact match | no report | unsupported claims |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            let s = &r.text.corpus;
            let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            out.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
                r.variant.name,
                s.bleu_1,
                s.bleu_4,
                s.meteor,
                s.rouge_l,
                s.cider_d,
                or_dash(r.clinical.macro_f1),
                or_dash(r.clinical.exact_match_rate),
                r.no_report,
                r.clinical.unsupported_claims
            ));
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
