//! ROUGE-L as pycocoevalcap computes it (`rouge/rouge.py`): the longest common subsequence of
//! hypothesis and each reference, the best precision and the best recall over the references
//! (each maximised on its own), combined with beta = 1.2; the corpus score is the mean of the
//! sentence scores.
//!
//! pycocoevalcap splits on a single space, so an empty sentence is one empty token: two empty
//! sentences score 1 and an empty hypothesis against words scores 0. Reproduced here.

/// The recall weight of pycocoevalcap's F-measure.
const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two token sequences.
pub fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The tokens `" ".join(tokens).split(" ")` gives in Python: an empty sentence is `[""]`.
fn space_split(tokens: &[String]) -> Vec<&str> {
    if tokens.is_empty() {
        vec![""]
    } else {
        tokens.iter().map(String::as_str).collect()
    }
}

/// ROUGE-L of one hypothesis against its references (pycocoevalcap's `Rouge.calc_score`).
pub fn rouge_l(hypothesis: &[String], references: &[Vec<String>]) -> f64 {
    let hyp = space_split(hypothesis);
    let mut best_precision = 0.0f64;
    let mut best_recall = 0.0f64;
    for reference in references {
        let reference = space_split(reference);
        let lcs = lcs_len(&reference, &hyp) as f64;
        best_precision = best_precision.max(lcs / hyp.len() as f64);
        best_recall = best_recall.max(lcs / reference.len() as f64);
    }
    if best_precision != 0.0 && best_recall != 0.0 {
        ((1.0 + BETA * BETA) * best_precision * best_recall)
            / (best_recall + BETA * BETA * best_precision)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tokens;

    #[test]
    fn lcs_of_hand_examples() {
        // "a b c d e" vs "a c e f": a, c, e -> 3.
        assert_eq!(
            lcs_len(&["a", "b", "c", "d", "e"], &["a", "c", "e", "f"]),
            3
        );
        assert_eq!(lcs_len(&["a"], &[]), 0);
        assert_eq!(lcs_len(&["x", "y"], &["y", "x"]), 1);
    }

    #[test]
    fn rouge_l_combines_precision_and_recall_with_beta_1_2() {
        // hyp "sinus rhythm left axis" (4) vs ref "sinus rhythm with left axis deviation" (6):
        // LCS 4 -> P = 1, R = 4/6. F = (1 + 1.44) * 1 * 2/3 / (2/3 + 1.44 * 1)
        //   = 1.626667 / 2.106667 = 0.772152.
        let score = rouge_l(
            &tokens("sinus rhythm left axis"),
            &[tokens("sinus rhythm with left axis deviation")],
        );
        let expected = (2.44 * (2.0 / 3.0)) / (2.0 / 3.0 + 1.44);
        assert!((score - expected).abs() < 1e-12, "{score}");
    }

    #[test]
    fn best_precision_and_recall_come_from_different_references() {
        // hyp "a b" vs refs "a b c d" (P 1, R 1/2) and "a" (P 1/2, R 1): P_max = 1, R_max = 1
        // -> F = 2.44 / 2.44 = 1 even though no single reference matches exactly.
        let score = rouge_l(&tokens("a b"), &[tokens("a b c d"), tokens("a")]);
        assert!((score - 1.0).abs() < 1e-12, "{score}");
    }

    #[test]
    fn empty_sentences_follow_pycocoevalcap() {
        assert_eq!(rouge_l(&tokens(""), &[tokens("a b")]), 0.0);
        assert_eq!(rouge_l(&tokens(""), &[tokens("")]), 1.0);
        assert_eq!(rouge_l(&tokens("a b"), &[tokens("c")]), 0.0);
    }
}
