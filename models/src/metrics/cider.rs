//! CIDEr-D as pycocoevalcap computes it (`cider/cider_scorer.py`, sigma = 6): TF-IDF vectors of
//! 1- to 4-grams with document frequencies taken from the references of the scored set itself,
//! the hypothesis weights clipped to the reference weights, a Gaussian penalty on the length
//! difference, the mean over n-gram orders and references, times 10.
//!
//! Two quirks of the reference are kept on purpose, since published numbers include them: the
//! "length" in the penalty counts bigrams (the `if n == 1` test indexes orders from 0), and the
//! IDF uses `ln(number of scored sentences)`, so the same sentence scores differently in sets of
//! different sizes (per-batch scores are not corpus scores).

use std::collections::{HashMap, HashSet};

use super::Sample;
use super::ngrams::{MAX_N, NgramCounts, ngram_counts};

/// Standard deviation of the Gaussian length penalty.
const SIGMA: f64 = 6.0;

/// Document frequencies of the reference n-grams (in how many samples' references each occurs).
struct DocumentFrequency<'a> {
    counts: HashMap<&'a [String], f64>,
    /// `ln(number of samples)`, pycocoevalcap's `ref_len`.
    log_documents: f64,
}

impl<'a> DocumentFrequency<'a> {
    fn new(samples: &'a [Sample]) -> Self {
        let mut counts: HashMap<&'a [String], f64> = HashMap::new();
        for sample in samples {
            let distinct: HashSet<&'a [String]> = sample
                .references
                .iter()
                .flat_map(|r| ngram_counts(r).into_keys())
                .collect();
            for ngram in distinct {
                *counts.entry(ngram).or_insert(0.0) += 1.0;
            }
        }
        DocumentFrequency {
            counts,
            log_documents: (samples.len() as f64).ln(),
        }
    }

    /// TF-IDF vector of one sentence, by n-gram order (pycocoevalcap's `counts2vec`).
    fn vector<'s>(&self, counts: &NgramCounts<'s>) -> TfIdf<'s> {
        let mut weights: [HashMap<&'s [String], f64>; MAX_N] = Default::default();
        let mut norm = [0.0f64; MAX_N];
        let mut bigrams = 0usize;
        for (&ngram, &term_frequency) in counts {
            let df = self.counts.get(ngram).copied().unwrap_or(0.0).max(1.0).ln();
            let order = ngram.len() - 1;
            let weight = term_frequency as f64 * (self.log_documents - df);
            weights[order].insert(ngram, weight);
            norm[order] += weight * weight;
            if order == 1 {
                bigrams += term_frequency;
            }
        }
        TfIdf {
            weights,
            norm: norm.map(f64::sqrt),
            bigrams,
        }
    }
}

/// A sentence's TF-IDF weights by order, their norms, and its bigram count.
struct TfIdf<'s> {
    weights: [HashMap<&'s [String], f64>; MAX_N],
    norm: [f64; MAX_N],
    bigrams: usize,
}

/// Clipped cosine similarity per order with the length penalty (pycocoevalcap's `sim`).
fn similarity(hyp: &TfIdf<'_>, reference: &TfIdf<'_>) -> [f64; MAX_N] {
    let delta = hyp.bigrams as f64 - reference.bigrams as f64;
    let penalty = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
    std::array::from_fn(|n| {
        let mut value: f64 = hyp.weights[n]
            .iter()
            .map(|(ngram, &w)| {
                let r = reference.weights[n].get(ngram).copied().unwrap_or(0.0);
                w.min(r) * r
            })
            .sum();
        if hyp.norm[n] != 0.0 && reference.norm[n] != 0.0 {
            value /= hyp.norm[n] * reference.norm[n];
        }
        value * penalty
    })
}

/// CIDEr-D of every sample, with document frequencies from the references of `samples`.
pub fn cider_d_scores(samples: &[Sample]) -> Vec<f64> {
    let df = DocumentFrequency::new(samples);
    samples
        .iter()
        .map(|sample| {
            let hyp = df.vector(&ngram_counts(&sample.hypothesis));
            let mut per_order = [0.0f64; MAX_N];
            for reference in &sample.references {
                let reference = df.vector(&ngram_counts(reference));
                for (total, value) in per_order.iter_mut().zip(similarity(&hyp, &reference)) {
                    *total += value;
                }
            }
            let mean = per_order.iter().sum::<f64>() / MAX_N as f64;
            mean / sample.references.len().max(1) as f64 * 10.0
        })
        .collect()
}

/// Corpus CIDEr-D: the mean of [`cider_d_scores`] (0 for no samples).
pub fn cider_d(samples: &[Sample]) -> f64 {
    super::mean(&cider_d_scores(samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sample;

    #[test]
    fn a_single_sample_scores_zero_because_every_idf_is_zero() {
        // One sample: ln(1) = 0 and every reference n-gram has df 1 -> ln(1) = 0, so all
        // weights are 0 and every similarity is 0.
        assert_eq!(cider_d(&[sample("a b c", &["a b c"])]), 0.0);
    }

    #[test]
    fn two_sample_hand_computation() {
        // Samples: ("a b", ref "a b") and ("c d", ref "c e"). N = 2, ln N = ln 2 = L.
        // Every reference n-gram occurs in one sample only -> df 1 -> idf L; hypothesis n-grams
        // missing from all references ("d", "c d") also get idf ln(max(1, 0)) = 0 -> weight L.
        // Sample 1: hyp = ref, so unigram and bigram cosines are 1, the 3- and 4-gram vectors
        // are empty (norm 0, value 0); bigram counts equal -> no penalty.
        //   score = (1 + 1 + 0 + 0) / 4 * 10 = 5.
        // Sample 2: unigrams hyp {c: L, d: L}, ref {c: L, e: L}: clipped dot = L^2, norms
        //   sqrt(2) L each -> 1/2. Bigrams "c d" vs "c e": 0.
        //   score = (0.5 + 0) / 4 * 10 = 1.25. Mean = 3.125.
        let samples = [sample("a b", &["a b"]), sample("c d", &["c e"])];
        let scores = cider_d_scores(&samples);
        assert!((scores[0] - 5.0).abs() < 1e-12, "{scores:?}");
        assert!((scores[1] - 1.25).abs() < 1e-12, "{scores:?}");
        assert!((cider_d(&samples) - 3.125).abs() < 1e-12);
    }

    #[test]
    fn length_penalty_counts_bigrams_and_references_are_averaged() {
        // Samples: ("a b c", refs "a b c" and "x") and ("y", ref "z"). N = 2, L = ln 2.
        // Reference n-grams each occur in one sample -> idf L for all, so within sample 1 the
        // hypothesis "a b c" equals reference 1 exactly: unigram, bigram, trigram cosines 1,
        // 4-grams empty -> (3/4) per reference; bigram count 2 vs 2 -> no penalty.
        // Against reference "x": no overlap -> 0 (penalty irrelevant).
        // Sample 1 = (0.75 + 0) / 2 refs * 10 = 3.75. Sample 2 ("y" vs "z") = 0.
        let samples = [sample("a b c", &["a b c", "x"]), sample("y", &["z"])];
        let scores = cider_d_scores(&samples);
        assert!((scores[0] - 3.75).abs() < 1e-12, "{scores:?}");
        assert_eq!(scores[1], 0.0);
    }

    #[test]
    fn gaussian_penalty_uses_the_bigram_count_difference() {
        // Samples: ("a b c d e f g h", ref "a b c") and ("q", ref "r"). L = ln 2, all idf L.
        // Sample 1: hyp unigrams 8 (weights L), ref 3 -> clipped dot 3 L^2, norms sqrt(8) L
        // and sqrt(3) L -> 3 / sqrt(24). Bigrams: hyp 7, ref 2, dot 2 -> 2 / sqrt(14).
        // Trigrams: hyp 6, ref 1 -> 1 / sqrt(6). 4-grams: ref none -> 0.
        // delta = 7 - 2 = 5 bigrams -> penalty exp(-25 / 72).
        let samples = [sample("a b c d e f g h", &["a b c"]), sample("q", &["r"])];
        let expected = (3.0 / 24f64.sqrt() + 2.0 / 14f64.sqrt() + 1.0 / 6f64.sqrt())
            * (-25.0f64 / 72.0).exp()
            / 4.0
            * 10.0;
        let scores = cider_d_scores(&samples);
        assert!(
            (scores[0] - expected).abs() < 1e-12,
            "{scores:?} vs {expected}"
        );
    }
}
