//! Report-text metrics of the MEIT paper: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.
//!
//! Each metric lives in its own file and follows one reference implementation closely enough to
//! be read beside it: [`bleu`], [`rouge`] and [`cider`] follow pycocoevalcap 1.2, [`meteor`]
//! follows NLTK's `meteor_score` (without WordNet synonyms, see [`meteor::MATCHING`]).
//! [`tokenize`] turns report text into tokens. [`evaluate`] scores a set of hypotheses either at
//! corpus level or, as the paper reports, per batch of 32 and averaged over the batches.
//!
//! Input: one hypothesis per line and, line-aligned, one or more references per line separated
//! by [`REFERENCE_SEPARATOR`].

pub mod bleu;
pub mod cider;
pub mod meteor;
pub mod ngrams;
pub mod porter;
pub mod rouge;
pub mod tokenize;

pub use tokenize::Tokenization;

/// Separates several references of one hypothesis on a reference line.
pub const REFERENCE_SEPARATOR: &str = "|||";

/// The batch size the paper averages over.
pub const PAPER_BATCH_SIZE: usize = 32;

/// One tokenised hypothesis with its tokenised references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The generated report.
    pub hypothesis: Vec<String>,
    /// The ground-truth reports (at least one).
    pub references: Vec<Vec<String>>,
}

impl Sample {
    /// Tokenises one generated report and its reference reports.
    pub fn from_text<R: AsRef<str>>(
        tokenization: Tokenization,
        hypothesis: &str,
        references: &[R],
    ) -> Sample {
        Sample {
            hypothesis: tokenization.tokens(hypothesis),
            references: references
                .iter()
                .map(|r| tokenization.tokens(r.as_ref()))
                .collect(),
        }
    }
}

/// The text metrics of one scored set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// BLEU-1 (pycocoevalcap, corpus counts).
    pub bleu_1: f64,
    /// BLEU-2.
    pub bleu_2: f64,
    /// BLEU-3.
    pub bleu_3: f64,
    /// BLEU-4.
    pub bleu_4: f64,
    /// METEOR (NLTK, mean over sentences; no WordNet synonyms).
    pub meteor: f64,
    /// ROUGE-L (pycocoevalcap, mean over sentences).
    pub rouge_l: f64,
    /// CIDEr-D (pycocoevalcap, document frequencies from the scored set's references).
    pub cider_d: f64,
}

impl Scores {
    /// The scores as (name, value) pairs in output order.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("bleu_1", self.bleu_1),
            ("bleu_2", self.bleu_2),
            ("bleu_3", self.bleu_3),
            ("bleu_4", self.bleu_4),
            ("meteor", self.meteor),
            ("rouge_l", self.rouge_l),
            ("cider_d", self.cider_d),
        ]
    }

    fn mean_of(all: &[Scores]) -> Scores {
        let of = |f: fn(&Scores) -> f64| mean(&all.iter().map(f).collect::<Vec<_>>());
        Scores {
            bleu_1: of(|s| s.bleu_1),
            bleu_2: of(|s| s.bleu_2),
            bleu_3: of(|s| s.bleu_3),
            bleu_4: of(|s| s.bleu_4),
            meteor: of(|s| s.meteor),
            rouge_l: of(|s| s.rouge_l),
            cider_d: of(|s| s.cider_d),
        }
    }
}

/// Scores per batch, averaged over the batches (the paper's way of reporting).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchAverage {
    /// Consecutive samples per batch (the last batch may be smaller and counts as one batch).
    pub batch_size: usize,
    /// Number of batches.
    pub batches: usize,
    /// Unweighted mean over batches of each batch's scores (CIDEr-D document frequencies from
    /// that batch's references, BLEU counts summed within the batch).
    pub mean: Scores,
}

/// The result of scoring a set of reports, as `meit-models score` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Number of hypothesis/reference pairs.
    pub pairs: usize,
    /// How text was tokenised.
    pub tokenization: Tokenization,
    /// How METEOR matches words ("METEOR: no WordNet synonyms").
    pub meteor_matching: String,
    /// Scores over the whole set.
    pub corpus: Scores,
    /// Scores per batch averaged over batches, when asked for.
    pub per_batch: Option<BatchAverage>,
}

/// What can go wrong when scoring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// Hypothesis and reference files are not line-aligned.
    #[error(
        "{hypotheses} hypothesis lines but {references} reference lines: files must be line-aligned"
    )]
    LineCountMismatch {
        /// Lines of hypotheses.
        hypotheses: usize,
        /// Lines of references.
        references: usize,
    },
    /// Nothing to score.
    #[error("no hypotheses to score")]
    Empty,
    /// A sample without any reference.
    #[error("sample {index} has no reference")]
    NoReference {
        /// Position of the sample (0-based).
        index: usize,
    },
    /// A batch size of zero.
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
}

/// Builds samples from line-aligned hypothesis and reference texts (one report per line, the
/// references of one line separated by [`REFERENCE_SEPARATOR`]). A final newline is ignored;
/// an empty line is an empty report.
pub fn samples_from_text(
    hypotheses: &str,
    references: &str,
    tokenization: Tokenization,
) -> Result<Vec<Sample>, MetricsError> {
    let hyp_lines: Vec<&str> = hypotheses.lines().collect();
    let ref_lines: Vec<&str> = references.lines().collect();
    if hyp_lines.len() != ref_lines.len() {
        return Err(MetricsError::LineCountMismatch {
            hypotheses: hyp_lines.len(),
            references: ref_lines.len(),
        });
    }
    Ok(hyp_lines
        .iter()
        .zip(&ref_lines)
        .map(|(hyp, refs)| {
            let refs: Vec<&str> = refs.split(REFERENCE_SEPARATOR).collect();
            Sample::from_text(tokenization, hyp, &refs)
        })
        .collect())
}

fn check(samples: &[Sample]) -> Result<(), MetricsError> {
    if samples.is_empty() {
        return Err(MetricsError::Empty);
    }
    match samples.iter().position(|s| s.references.is_empty()) {
        Some(index) => Err(MetricsError::NoReference { index }),
        None => Ok(()),
    }
}

/// All metrics over `samples` as one set.
pub fn score(samples: &[Sample]) -> Result<Scores, MetricsError> {
    check(samples)?;
    let [bleu_1, bleu_2, bleu_3, bleu_4] = bleu::corpus_bleu(samples);
    let per_sentence = |f: fn(&[String], &[Vec<String>]) -> f64| {
        mean(
            &samples
                .iter()
                .map(|s| f(&s.hypothesis, &s.references))
                .collect::<Vec<_>>(),
        )
    };
    Ok(Scores {
        bleu_1,
        bleu_2,
        bleu_3,
        bleu_4,
        meteor: per_sentence(meteor::meteor),
        rouge_l: per_sentence(rouge::rouge_l),
        cider_d: cider::cider_d(samples),
    })
}

/// All metrics per batch of `batch_size` consecutive samples, averaged over the batches.
pub fn score_batches(samples: &[Sample], batch_size: usize) -> Result<BatchAverage, MetricsError> {
    if batch_size == 0 {
        return Err(MetricsError::ZeroBatchSize);
    }
    check(samples)?;
    let per_batch = samples
        .chunks(batch_size)
        .map(score)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BatchAverage {
        batch_size,
        batches: per_batch.len(),
        mean: Scores::mean_of(&per_batch),
    })
}

/// Scores `samples` at corpus level and, with `batch_size`, per batch.
pub fn evaluate(
    samples: &[Sample],
    tokenization: Tokenization,
    batch_size: Option<usize>,
) -> Result<Evaluation, MetricsError> {
    Ok(Evaluation {
        pairs: samples.len(),
        tokenization,
        meteor_matching: meteor::MATCHING.to_string(),
        corpus: score(samples)?,
        per_batch: batch_size.map(|b| score_batches(samples, b)).transpose()?,
    })
}

/// Arithmetic mean (0 for no values).
pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Test helper: white-space tokens.
#[cfg(test)]
pub(crate) fn tokens(text: &str) -> Vec<String> {
    Tokenization::Whitespace.tokens(text)
}

/// Test helper: a sample from white-space-tokenised text.
#[cfg(test)]
pub(crate) fn sample(hypothesis: &str, references: &[&str]) -> Sample {
    Sample::from_text(Tokenization::Whitespace, hypothesis, references)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_on_the_separator_and_lines_must_align() {
        let samples =
            samples_from_text("a b\nc\n", "a b ||| a c\nc\n", Tokenization::Whitespace).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].references, vec![tokens("a b"), tokens("a c")]);
        let err = samples_from_text("a\nb\n", "a\n", Tokenization::Whitespace).unwrap_err();
        assert_eq!(
            err,
            MetricsError::LineCountMismatch {
                hypotheses: 2,
                references: 1
            }
        );
    }

    #[test]
    fn empty_sets_and_missing_references_are_errors() {
        assert_eq!(score(&[]), Err(MetricsError::Empty));
        let no_ref = Sample {
            hypothesis: tokens("a"),
            references: vec![],
        };
        assert_eq!(
            score(&[no_ref]),
            Err(MetricsError::NoReference { index: 0 })
        );
        assert_eq!(
            score_batches(&[sample("a", &["a"])], 0),
            Err(MetricsError::ZeroBatchSize)
        );
    }

    #[test]
    fn batch_average_is_the_unweighted_mean_of_batch_scores() {
        // Batches of 2 over 3 samples: [s0, s1] and [s2]. ROUGE-L: s0 = s1 = 1 (identical),
        // s2 = 0 (no overlap) -> batch means 1 and 0 -> average 0.5, whereas the corpus mean is
        // 2/3: the last, smaller batch weighs as much as a full one.
        let samples = [
            sample("a b", &["a b"]),
            sample("c d", &["c d"]),
            sample("e", &["f"]),
        ];
        let batched = score_batches(&samples, 2).unwrap();
        assert_eq!(batched.batches, 2);
        assert!((batched.mean.rouge_l - 0.5).abs() < 1e-12);
        let corpus = score(&samples).unwrap();
        assert!((corpus.rouge_l - 2.0 / 3.0).abs() < 1e-12);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any text in, no panic out; ratios stay in [0, 1] and CIDEr-D is finite and >= 0.
        #[test]
        fn any_text_scores_within_bounds(
            pairs in proptest::collection::vec(("[a-c .,'()-]{0,24}", "[a-c .,'()|-]{0,24}"), 1..6),
        ) {
            for tokenization in Tokenization::ALL {
                let hyps: String = pairs.iter().map(|(h, _)| format!("{h}\n")).collect();
                let refs: String = pairs.iter().map(|(_, r)| format!("{r}\n")).collect();
                let samples = samples_from_text(&hyps, &refs, tokenization).unwrap();
                let scores = score(&samples).unwrap();
                for (name, value) in scores.named() {
                    proptest::prop_assert!(value.is_finite() && value >= 0.0, "{name} = {value}");
                    if name != "cider_d" {
                        proptest::prop_assert!(value <= 1.0 + 1e-9, "{name} = {value}");
                    }
                }
                for sample in &samples {
                    proptest::prop_assert!(sample.hypothesis.iter().all(|t| !t.is_empty()));
                }
            }
        }
    }

    #[test]
    fn evaluation_serialises_to_json_with_every_metric() {
        let samples = [sample("a b c", &["a b c"]), sample("d e", &["d f"])];
        let evaluation = evaluate(&samples, Tokenization::Whitespace, Some(32)).unwrap();
        let json = serde_json::to_value(&evaluation).unwrap();
        for (name, value) in evaluation.corpus.named() {
            assert_eq!(json["corpus"][name].as_f64(), Some(value), "{name}");
        }
        assert_eq!(json["tokenization"], "whitespace");
        assert_eq!(json["per_batch"]["batches"], 1);
        assert!(
            json["meteor_matching"]
                .as_str()
                .unwrap()
                .contains("no WordNet")
        );
    }
}
