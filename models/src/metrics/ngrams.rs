//! N-gram counting shared by BLEU and CIDEr-D (pycocoevalcap's `precook`).

use std::collections::HashMap;

/// The longest n-gram BLEU and CIDEr-D look at.
pub const MAX_N: usize = 4;

/// How often each n-gram (1..=[`MAX_N`] tokens, borrowed from the sentence) occurs.
pub type NgramCounts<'a> = HashMap<&'a [String], usize>;

/// Counts every n-gram of 1..=[`MAX_N`] tokens in `tokens`.
pub fn ngram_counts(tokens: &[String]) -> NgramCounts<'_> {
    let mut counts = NgramCounts::new();
    for n in 1..=MAX_N {
        for ngram in tokens.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tokens;

    #[test]
    fn counts_every_order_up_to_four() {
        // "a b a b a": unigrams a:3 b:2, bigrams "a b":2 "b a":2, trigrams "a b a":2 "b a b":1,
        // 4-grams "a b a b":1 "b a b a":1 -> 8 distinct n-grams.
        let s = tokens("a b a b a");
        let counts = ngram_counts(&s);
        assert_eq!(counts.len(), 8);
        assert_eq!(counts[&s[0..1]], 3);
        assert_eq!(counts[&s[1..2]], 2);
        assert_eq!(counts[&s[0..2]], 2);
        assert_eq!(counts[&s[0..3]], 2);
        assert_eq!(counts[&s[1..4]], 1);
        assert_eq!(counts[&s[0..4]], 1);
    }
}
