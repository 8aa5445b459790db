//! METEOR as NLTK computes it (`nltk/translate/meteor_score.py`, alpha 0.9, beta 3, gamma 0.5),
//! **without WordNet synonyms**: words are lower-cased, aligned by exact match, then the
//! leftovers by Porter stem; the third NLTK stage (WordNet synonyms) is left out because no
//! WordNet can be had offline here. For text whose words have WordNet synonyms among the
//! references, NLTK with WordNet can score higher; [`MATCHING`] says so in every output.
//!
//! Alignment follows NLTK exactly: hypothesis words from last to first each take the latest
//! still-unused reference word of the same form; chunks are counted over the matches sorted by
//! hypothesis position. With several references the best sentence score wins; the corpus score
//! is the mean over sentences.

use std::collections::HashMap;

use super::porter;

/// How METEOR matches words in this implementation (carried into every JSON output).
pub const MATCHING: &str = "exact + Porter stem (NLTK_EXTENSIONS); METEOR: no WordNet synonyms";

/// Weight of precision against recall in the F-mean.
const ALPHA: f64 = 0.9;
/// Shape of the fragmentation penalty.
const BETA: f64 = 3.0;
/// Maximum fragmentation penalty.
const GAMMA: f64 = 0.5;

/// A word with its position in the sentence (NLTK's enumerated word lists).
type Positioned = (usize, String);

/// Matches equal words (NLTK's `_match_enums`): returns the matched (hypothesis, reference)
/// positions and the unmatched words of each side, in their original order.
fn match_words(
    hyp: Vec<Positioned>,
    reference: Vec<Positioned>,
) -> (Vec<(usize, usize)>, Vec<Positioned>, Vec<Positioned>) {
    let mut free_positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, word)) in reference.iter().enumerate() {
        free_positions.entry(word.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_matched = vec![false; hyp.len()];
    let mut ref_matched = vec![false; reference.len()];
    for (i, (hyp_pos, word)) in hyp.iter().enumerate().rev() {
        if let Some(j) = free_positions.get_mut(word.as_str()).and_then(Vec::pop) {
            hyp_matched[i] = true;
            ref_matched[j] = true;
            matches.push((*hyp_pos, reference[j].0));
        }
    }
    let unmatched = |words: Vec<Positioned>, matched: &[bool]| -> Vec<Positioned> {
        words
            .into_iter()
            .zip(matched)
            .filter(|(_, m)| !**m)
            .map(|(w, _)| w)
            .collect()
    };
    let hyp_left = unmatched(hyp, &hyp_matched);
    let ref_left = unmatched(reference, &ref_matched);
    (matches, hyp_left, ref_left)
}

fn stemmed(words: Vec<Positioned>) -> Vec<Positioned> {
    words
        .into_iter()
        .map(|(pos, w)| (pos, porter::stem(&w)))
        .collect()
}

/// Aligns hypothesis and reference: exact matches, then stem matches on the leftovers; sorted by
/// hypothesis position (NLTK's `_enum_align_words` without its WordNet stage).
pub fn align(hypothesis: &[String], reference: &[String]) -> Vec<(usize, usize)> {
    let lower = |words: &[String]| -> Vec<Positioned> {
        words.iter().map(|w| w.to_lowercase()).enumerate().collect()
    };
    let (mut matches, hyp_left, ref_left) = match_words(lower(hypothesis), lower(reference));
    let (stem_matches, _, _) = match_words(stemmed(hyp_left), stemmed(ref_left));
    matches.extend(stem_matches);
    matches.sort_by_key(|&(hyp_pos, _)| hyp_pos);
    matches
}

/// The fewest chunks of adjacent matches (NLTK's `_count_chunks`, 1 for no matches).
pub fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches
        .windows(2)
        .filter(|pair| !(pair[1].0 == pair[0].0 + 1 && pair[1].1 == pair[0].1 + 1))
        .count()
}

/// METEOR of one hypothesis against one reference (NLTK's `single_meteor_score`).
pub fn single_meteor(hypothesis: &[String], reference: &[String]) -> f64 {
    let matches = align(hypothesis, reference);
    if matches.is_empty() || hypothesis.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let m = matches.len() as f64;
    let precision = m / hypothesis.len() as f64;
    let recall = m / reference.len() as f64;
    let fmean = (precision * recall) / (ALPHA * precision + (1.0 - ALPHA) * recall);
    let fragmentation = count_chunks(&matches) as f64 / m;
    let penalty = GAMMA * fragmentation.powf(BETA);
    (1.0 - penalty) * fmean
}

/// METEOR against several references: the best single score (NLTK's `meteor_score`).
pub fn meteor(hypothesis: &[String], references: &[Vec<String>]) -> f64 {
    references
        .iter()
        .map(|r| single_meteor(hypothesis, r))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tokens;

    #[test]
    fn exact_alignment_takes_the_latest_free_reference_word() {
        // hyp "a b a" vs ref "a a b": hyp[2]=a -> ref 1 (latest a), hyp[1]=b -> ref 2,
        // hyp[0]=a -> ref 0. Sorted by hypothesis position: (0,0) (1,2) (2,1).
        let m = align(&tokens("a b a"), &tokens("a a b"));
        assert_eq!(m, vec![(0, 0), (1, 2), (2, 1)]);
        // (0,0)->(1,2) not adjacent in the reference, (1,2)->(2,1) not either -> 3 chunks.
        assert_eq!(count_chunks(&m), 3);
    }

    #[test]
    fn stems_match_after_exact_words() {
        // "changes" and "changed" both stem to "chang"; "T" is lower-cased to match "t".
        let m = align(&tokens("T changes"), &tokens("t changed"));
        assert_eq!(m, vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn perfect_match_loses_only_the_fragmentation_penalty() {
        // 4 words, 4 matches in 1 chunk: P = R = 1, Fmean = 1,
        // penalty = 0.5 * (1/4)^3 = 0.0078125 -> 0.9921875.
        let s = single_meteor(
            &tokens("sinus rhythm normal ecg"),
            &tokens("sinus rhythm normal ecg"),
        );
        assert!((s - 0.9921875).abs() < 1e-12, "{s}");
    }

    #[test]
    fn hand_computed_partial_match() {
        // hyp "sinus rhythm abnormal ecg" (4), ref "sinus bradycardia abnormal ecg here" (5).
        // Matches: sinus(0,0), abnormal(2,2), ecg(3,3) -> m = 3; chunks: [sinus] [abnormal ecg] = 2.
        // P = 3/4, R = 3/5, Fmean = PR / (0.9 P + 0.1 R) = 0.45 / (0.675 + 0.06) = 0.612245.
        // penalty = 0.5 * (2/3)^3 = 0.148148; score = 0.851852 * 0.612245 = 0.521542.
        let s = single_meteor(
            &tokens("sinus rhythm abnormal ecg"),
            &tokens("sinus bradycardia abnormal ecg here"),
        );
        let fmean = 0.45 / (0.675 + 0.06);
        let expected = (1.0 - 0.5 * (2.0f64 / 3.0).powi(3)) * fmean;
        assert!((s - expected).abs() < 1e-12, "{s} vs {expected}");
    }

    #[test]
    fn best_reference_wins_and_no_match_scores_zero() {
        let hyp = tokens("left axis deviation");
        let refs = vec![tokens("right bundle"), tokens("left axis deviation")];
        assert!((meteor(&hyp, &refs) - single_meteor(&hyp, &refs[1])).abs() < 1e-15);
        assert_eq!(meteor(&hyp, &refs[..1]), 0.0);
        assert_eq!(meteor(&tokens(""), &[tokens("a")]), 0.0);
    }
}
