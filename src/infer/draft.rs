//! Draft tokens for greedy decoding by lookup: the engine guesses the next few tokens from
//! n-grams it has already seen, then checks all of them in one decoder call.
//!
//! Reports are formulaic ("Sinus rhythm. Left axis deviation. Abnormal ECG."), so the words
//! after the last few tokens have usually been written before, in this report or an earlier
//! one. [`LookupDrafts::propose`] finds the most recent earlier occurrence of the context's last
//! n tokens (n from [`MAX_NGRAM`] down to 1), first in the context itself (the prompt and the
//! tokens generated so far) and then in the last [`REMEMBERED_OUTPUTS`] outputs, and proposes
//! the tokens that followed it. The engine feeds the last token and the drafts in one call and
//! keeps the drafts up to the first one greedy decoding would not have chosen, plus greedy's own
//! token there (prompt lookup decoding; Saxena 2023, after Leviathan et al. 2023's speculative
//! decoding). With exact arithmetic the text is greedy decoding's and drafts change only how
//! many calls it takes. ONNX Runtime's int4 products round a call of several tokens differently
//! from a call of one (SmolLM2 int4 logits moved by up to 0.8), so where greedy decoding's top
//! two tokens are that close the drafted text can part from the one-token text; the tests hold
//! the committed model's reports equal on fp32, int4 and GroupQueryAttention bundles.

use std::collections::VecDeque;

/// The longest n-gram looked up: the context's last tokens that must match.
pub const MAX_NGRAM: usize = 3;

/// How many earlier outputs are searched after the current context.
pub const REMEMBERED_OUTPUTS: usize = 32;

/// Guesses of the next tokens from n-grams seen before.
#[derive(Debug, Clone, Default)]
pub struct LookupDrafts {
    max_tokens: usize,
    outputs: VecDeque<Vec<u32>>,
}

impl LookupDrafts {
    /// Up to `max_tokens` drafts a call (0: none).
    pub fn new(max_tokens: usize) -> LookupDrafts {
        LookupDrafts {
            max_tokens,
            outputs: VecDeque::new(),
        }
    }

    /// The most drafts a call proposes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Up to `limit` (and [`LookupDrafts::max_tokens`]) tokens that followed the latest earlier
    /// occurrence of `context`'s last n tokens, the longest n that has one; empty when none has.
    pub fn propose(&self, context: &[u32], limit: usize) -> Vec<u32> {
        let k = self.max_tokens.min(limit);
        if k == 0 {
            return Vec::new();
        }
        for n in (1..=MAX_NGRAM.min(context.len())).rev() {
            let key = &context[context.len() - n..];
            // The context's own earlier occurrences (not the key itself), then earlier outputs.
            let own = follower(context, key);
            let found = own.or_else(|| {
                self.outputs
                    .iter()
                    .rev()
                    .find_map(|output| follower(output, key))
            });
            if let Some(next) = found {
                return next.iter().take(k).copied().collect();
            }
        }
        Vec::new()
    }

    /// Keeps `output` (a finished generation) to draft from, forgetting the oldest beyond
    /// [`REMEMBERED_OUTPUTS`].
    pub fn remember(&mut self, output: &[u32]) {
        if self.max_tokens == 0 || output.is_empty() {
            return;
        }
        if self.outputs.len() == REMEMBERED_OUTPUTS {
            self.outputs.pop_front();
        }
        self.outputs.push_back(output.to_vec());
    }
}

/// The tokens after the latest occurrence of `key` in `tokens` that has at least one token
/// after it (so `key` as the suffix of `tokens` is no occurrence).
fn follower<'a>(tokens: &'a [u32], key: &[u32]) -> Option<&'a [u32]> {
    let n = key.len();
    if tokens.len() <= n {
        return None;
    }
    (0..tokens.len() - n)
        .rev()
        .find(|&start| &tokens[start..start + n] == key)
        .map(|start| &tokens[start + n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_ngram_wins_and_the_latest_occurrence_of_it() {
        let drafts = LookupDrafts::new(3);
        // "7 8" occurs twice; the later one is followed by 9 1 2.
        let context = [7, 8, 5, 5, 7, 8, 9, 1, 2, 3, 7, 8];
        assert_eq!(drafts.propose(&context, 10), vec![9, 1, 2]);
        // Only the last token occurred before.
        let context = [3, 4, 6, 5, 3];
        assert_eq!(drafts.propose(&context, 10), vec![4, 6, 5]);
    }

    #[test]
    fn the_key_itself_is_no_match_and_nothing_seen_proposes_nothing() {
        let drafts = LookupDrafts::new(4);
        assert!(drafts.propose(&[1, 2, 3], 4).is_empty());
        assert!(drafts.propose(&[], 4).is_empty());
        assert!(drafts.propose(&[5], 4).is_empty());
    }

    #[test]
    fn earlier_outputs_draft_when_the_context_has_no_match_most_recent_first() {
        let mut drafts = LookupDrafts::new(4);
        drafts.remember(&[10, 11, 12, 13]);
        drafts.remember(&[10, 11, 20, 21]);
        assert_eq!(drafts.propose(&[1, 10, 11], 8), vec![20, 21]);
        // A longer n-gram in an output beats a shorter one in the context.
        assert_eq!(drafts.propose(&[11, 30, 31, 10, 11], 8), vec![20, 21]);
        // The context's own occurrence of the same n-gram comes before any output's.
        assert_eq!(
            drafts.propose(&[10, 11, 40, 41, 10, 11], 8),
            vec![40, 41, 10, 11]
        );
    }

    #[test]
    fn drafts_respect_the_limit_and_the_maximum_and_memory_is_bounded() {
        let mut drafts = LookupDrafts::new(2);
        drafts.remember(&[1, 2, 3, 4, 5]);
        assert_eq!(drafts.propose(&[1], 8), vec![2, 3]);
        assert_eq!(drafts.propose(&[1], 1), vec![2]);
        assert!(drafts.propose(&[1], 0).is_empty());
        for i in 0..(REMEMBERED_OUTPUTS as u32 + 5) {
            drafts.remember(&[100 + i, 7]);
        }
        assert_eq!(drafts.outputs.len(), REMEMBERED_OUTPUTS);
        assert!(
            drafts.propose(&[1], 8).is_empty(),
            "the oldest output was forgotten"
        );
        let off = LookupDrafts::new(0);
        assert!(off.propose(&[1, 1, 1], 8).is_empty());
    }
}
