//! BLEU-1..4 as pycocoevalcap computes it (`bleu/bleu_scorer.py`, `compute_score(option=
//! "closest")`): clipped n-gram counts summed over the corpus, the reference length closest to
//! each hypothesis (ties to the shorter), a brevity penalty on the summed lengths, and the
//! constants `tiny = 1e-15` added to the matches and `small = 1e-9` to the guesses, so a corpus
//! without any 4-gram match scores a tiny positive number rather than zero.

use std::collections::HashMap;

use super::Sample;
use super::ngrams::{MAX_N, NgramCounts, ngram_counts};

/// Added to the clipped match counts (pycocoevalcap's `tiny`).
const TINY: f64 = 1e-15;
/// Added to the hypothesis n-gram counts (pycocoevalcap's `small`).
const SMALL: f64 = 1e-9;

/// What BLEU needs from one hypothesis (pycocoevalcap's `cook_test` result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentenceCounts {
    /// Hypothesis length in tokens.
    pub hyp_len: usize,
    /// Length of the reference closest in length to the hypothesis (ties: the shorter).
    pub ref_len: usize,
    /// Number of hypothesis n-grams of each order (1..=4).
    pub guess: [usize; MAX_N],
    /// Hypothesis n-grams of each order also found in a reference, clipped to the largest
    /// count in any single reference.
    pub correct: [usize; MAX_N],
}

impl SentenceCounts {
    /// Counts one hypothesis against its references.
    pub fn new(hypothesis: &[String], references: &[Vec<String>]) -> Self {
        let mut max_ref_counts: HashMap<&[String], usize> = HashMap::new();
        for reference in references {
            for (ngram, count) in ngram_counts(reference) {
                let best = max_ref_counts.entry(ngram).or_insert(0);
                *best = (*best).max(count);
            }
        }
        let hyp_len = hypothesis.len();
        let ref_len = references
            .iter()
            .map(Vec::len)
            .min_by_key(|&len| (len.abs_diff(hyp_len), len))
            .unwrap_or(0);
        let hyp_counts: NgramCounts<'_> = ngram_counts(hypothesis);
        let mut correct = [0; MAX_N];
        for (ngram, count) in hyp_counts {
            let clipped = count.min(max_ref_counts.get(ngram).copied().unwrap_or(0));
            correct[ngram.len() - 1] += clipped;
        }
        let guess = std::array::from_fn(|k| (hyp_len + 1).saturating_sub(k + 1));
        SentenceCounts {
            hyp_len,
            ref_len,
            guess,
            correct,
        }
    }

    fn add(mut self, other: SentenceCounts) -> Self {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for k in 0..MAX_N {
            self.guess[k] += other.guess[k];
            self.correct[k] += other.correct[k];
        }
        self
    }

    /// BLEU-1..4 from these counts: geometric means of the smoothed precisions times the
    /// brevity penalty `exp(1 - ref/hyp)` when the hypothesis is shorter.
    pub fn bleu(&self) -> [f64; MAX_N] {
        let mut product = 1.0;
        let mut scores = [0.0; MAX_N];
        for (k, score) in scores.iter_mut().enumerate() {
            product *= (self.correct[k] as f64 + TINY) / (self.guess[k] as f64 + SMALL);
            *score = product.powf(1.0 / (k as f64 + 1.0));
        }
        let ratio = (self.hyp_len as f64 + TINY) / (self.ref_len as f64 + SMALL);
        if ratio < 1.0 {
            for score in &mut scores {
                *score *= (1.0 - 1.0 / ratio).exp();
            }
        }
        scores
    }
}

/// Corpus-level BLEU-1..4 of `samples` (pycocoevalcap's `Bleu(4).compute_score` first result).
pub fn corpus_bleu(samples: &[Sample]) -> [f64; MAX_N] {
    samples
        .iter()
        .map(|s| SentenceCounts::new(&s.hypothesis, &s.references))
        .fold(SentenceCounts::default(), SentenceCounts::add)
        .bleu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{sample, tokens};

    const EPS: f64 = 1e-12;

    #[test]
    fn identical_sentence_scores_one() {
        // Every precision is (n + 1e-15) / (n + 1e-9) ~ 1 - 1e-9/n; no brevity penalty.
        let s = sample(
            "sinus rhythm with left axis deviation",
            &["sinus rhythm with left axis deviation"],
        );
        for b in corpus_bleu(&[s]) {
            assert!((b - 1.0).abs() < 1e-9, "{b}");
        }
    }

    #[test]
    fn counts_clip_matches_and_pick_the_closest_reference() {
        // hyp "the the the cat" (4 tokens) vs refs "the cat" (2) and "the cat sat on" (4):
        // closest length is 4. Unigrams: the x3 clipped to 1, cat 1 -> correct 2 of 4.
        // Bigrams: "the the" x2 (0), "the cat" 1 -> 1 of 3. Trigrams 0 of 2, 4-grams 0 of 1.
        let hyp = tokens("the the the cat");
        let refs = vec![tokens("the cat"), tokens("the cat sat on")];
        let c = SentenceCounts::new(&hyp, &refs);
        assert_eq!(c.hyp_len, 4);
        assert_eq!(c.ref_len, 4);
        assert_eq!(c.guess, [4, 3, 2, 1]);
        assert_eq!(c.correct, [2, 1, 0, 0]);
    }

    #[test]
    fn closest_reference_length_ties_go_to_the_shorter() {
        // hyp length 3; refs of length 2 and 4 are both 1 away -> 2.
        let c = SentenceCounts::new(&tokens("a b c"), &[tokens("a b c d"), tokens("a b")]);
        assert_eq!(c.ref_len, 2);
    }

    #[test]
    fn bleu_follows_the_smoothed_geometric_mean_and_brevity_penalty() {
        // hyp "sinus rhythm normal" (3) vs ref "sinus rhythm normal ecg here" (5):
        // p1 = 3/3, p2 = 2/2, p3 = 1/1, p4 = (0 + 1e-15)/(0 + 1e-9) = 1e-6.
        // BP = exp(1 - 5/3) = exp(-2/3).
        // BLEU-1 = BP, BLEU-2 = BP, BLEU-3 = BP, BLEU-4 = (1e-6)^(1/4) * BP = 0.031623 * BP.
        let s = sample("sinus rhythm normal", &["sinus rhythm normal ecg here"]);
        let b = corpus_bleu(&[s]);
        let bp = (-2.0f64 / 3.0).exp();
        assert!((b[0] - bp).abs() < 1e-8, "{b:?}");
        assert!((b[2] - bp).abs() < 1e-8, "{b:?}");
        assert!((b[3] - 1e-6f64.powf(0.25) * bp).abs() < 1e-8, "{b:?}");
    }

    #[test]
    fn corpus_bleu_sums_counts_before_dividing() {
        // Two sentences: "a b" vs "a b" (2/2 unigrams, 1/1 bigrams) and "c d" vs "c x"
        // (1/2 unigrams, 0/1 bigrams). Corpus p1 = 3/4, p2 = 1/2 -> BLEU-2 = sqrt(3/8) = 0.612372;
        // the mean of sentence scores would differ (1 and ~3e-8 -> 0.5).
        let samples = [sample("a b", &["a b"]), sample("c d", &["c x"])];
        let b = corpus_bleu(&samples);
        assert!((b[0] - 0.75).abs() < 1e-8, "{b:?}");
        assert!((b[1] - (3.0f64 / 8.0).sqrt()).abs() < 1e-8, "{b:?}");
        assert!(b[1] > EPS);
    }

    #[test]
    fn empty_hypothesis_scores_zero_without_panicking() {
        // guess 0 everywhere: (0 + 1e-15)/(0 + 1e-9) = 1e-6 per order, then BP with
        // ratio 1e-15/3 -> exp(1 - 3e15) = 0.
        let b = corpus_bleu(&[sample("", &["a b c"])]);
        assert!(b.iter().all(|&x| x == 0.0), "{b:?}");
    }
}
