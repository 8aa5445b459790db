//! The report tokenizer: byte-level BPE (GPT-2 style, the family SmolLM2 uses) trained on report
//! text with the `tokenizers` crate, saved and loaded as a Hugging Face `tokenizer.json`.
//!
//! Pre-tokenisation mirrors SmolLM2's: digits split one by one (so "72 bpm" and "172 ms" share
//! tokens), then GPT-2's byte-level split without a prefix space. Byte level means every string
//! encodes (no unknown token) and decodes back exactly. The chat markers and padding are added
//! as special tokens with fixed ids 0..=4 ([`SPECIAL_TOKENS`]): they are never split or merged
//! and never produced by plain text.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::model::instruction::{ASSISTANT_TAG, END_OF_TEXT, USER_TAG};

/// Padding (id 0), begin and end of text, and the chat markers, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["<pad>", "<s>", END_OF_TEXT, USER_TAG, ASSISTANT_TAG];

/// What went wrong with a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Training on the corpus failed.
    #[error("training the tokenizer: {0}")]
    Train(String),
    /// The vocabulary size cannot hold the special tokens and the 256 byte symbols.
    #[error("vocabulary size {0} is below the 261 base symbols (256 bytes + 5 special tokens)")]
    VocabTooSmall(usize),
    /// Reading or parsing tokenizer.json failed.
    #[error("loading tokenizer {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Writing tokenizer.json failed.
    #[error("saving tokenizer {path}: {message}")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A loaded tokenizer lacks one of [`SPECIAL_TOKENS`].
    #[error("tokenizer has no special token {0:?}")]
    MissingSpecial(&'static str),
    /// Encoding or decoding failed.
    #[error("tokenizing: {0}")]
    Encode(String),
}

/// The tokenizer pipeline around a BPE `model`, as SmolLM2's: no normaliser; digits one by
/// one, then GPT-2's byte-level split without a prefix space; byte-level decoding.
type Pipeline =
    tokenizers::TokenizerImpl<BPE, NormalizerWrapper, Sequence, ByteLevel, ByteLevelDecoder>;

fn pipeline(model: BPE) -> tokenizers::Result<Pipeline> {
    let pre_tokenizer = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(None)
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
}

/// A byte-level BPE tokenizer rebuilt from a vocabulary (`tokens[id]`), its merges
/// (`"Ġ t"`: two symbols separated by a space, in merge order) and the ids of its special
/// tokens, with the same pre-tokenisation as [`ReportTokenizer`]: how SmolLM2's tokenizer is
/// recovered from the metadata of its GGUF.
pub fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    special_ids: &[u32],
) -> Result<Tokenizer, TokenizerError> {
    let build_error = |e: tokenizers::Error| TokenizerError::Load {
        path: PathBuf::from("<vocabulary>"),
        message: e.to_string(),
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Load {
                    path: PathBuf::from("<vocabulary>"),
                    message: format!("merge {m:?} is not two symbols"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(build_error)?;
    let mut tokenizer = pipeline(model).map_err(build_error)?;
    let special: Vec<AddedToken> = special_ids
        .iter()
        .filter_map(|&id| tokens.get(id as usize))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tokenizer.add_special_tokens(special).map_err(build_error)?;
    Ok(Tokenizer::from(tokenizer))
}

/// A byte-level BPE tokenizer with MEIT's special tokens.
#[derive(Debug, Clone)]
pub struct ReportTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    begin_id: u32,
    end_id: u32,
}

impl ReportTokenizer {
    /// Trains byte-level BPE with at most `vocab_size` tokens (special tokens and the 256 byte
    /// symbols included) on `reports`. Pairs seen fewer than `min_frequency` times are not merged.
    pub fn train<I, S>(
        reports: I,
        vocab_size: usize,
        min_frequency: u64,
    ) -> Result<ReportTokenizer, TokenizerError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        if vocab_size < 256 + SPECIAL_TOKENS.len() {
            return Err(TokenizerError::VocabTooSmall(vocab_size));
        }
        let train_error = |e: tokenizers::Error| TokenizerError::Train(e.to_string());
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
            .build();
        let mut builder = pipeline(BPE::default()).map_err(train_error)?;
        builder.train(&mut trainer, reports).map_err(train_error)?;
        builder
            .add_special_tokens(SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)))
            .map_err(train_error)?;
        Self::from_tokenizer(Tokenizer::from(builder))
    }

    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<ReportTokenizer, TokenizerError> {
        let load_error = |message: String| TokenizerError::Load {
            path: path.to_path_buf(),
            message,
        };
        let json = std::fs::read_to_string(path).map_err(|e| load_error(e.to_string()))?;
        let inner = Tokenizer::from_str(&json).map_err(|e| load_error(e.to_string()))?;
        Self::from_tokenizer(inner)
    }

    /// Writes `tokenizer.json` (pretty-printed, to diff in review).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner
            .save(path, true)
            .map_err(|e| TokenizerError::Save {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<ReportTokenizer, TokenizerError> {
        for token in SPECIAL_TOKENS {
            inner
                .token_to_id(token)
                .ok_or(TokenizerError::MissingSpecial(token))?;
        }
        let id = |token: &'static str| {
            inner
                .token_to_id(token)
                .ok_or(TokenizerError::MissingSpecial(token))
        };
        Ok(ReportTokenizer {
            pad_id: id(SPECIAL_TOKENS[0])?,
            begin_id: id(SPECIAL_TOKENS[1])?,
            end_id: id(END_OF_TEXT)?,
            inner,
        })
    }

    /// Token ids of `text` (special-token strings in it become their single ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The begin-of-text id (`<s>`): every sample starts with it, as Llama's tokenizer adds it.
    pub fn begin_id(&self) -> u32 {
        self.begin_id
    }

    /// The end-of-text id (`</s>`): generation stops here.
    pub fn end_id(&self) -> u32 {
        self.end_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORTS: [&str; 6] = [
        "sinus rhythm. normal ecg",
        "sinus bradycardia. left ventricular hypertrophy. abnormal ecg",
        "sinus tachycardia. st-t changes may be due to hypertrophy and/or ischemia. abnormal ecg",
        "atrial fibrillation with rapid ventricular response. abnormal ecg",
        "sinus rhythm. left axis deviation. borderline ecg",
        "sinus rhythm with 1st degree a-v block, pr 224 ms. abnormal ecg",
    ];

    fn trained() -> Result<ReportTokenizer, TokenizerError> {
        ReportTokenizer::train(REPORTS.iter().cycle().take(60), 400, 2)
    }

    #[test]
    fn special_tokens_have_fixed_ids_and_stay_whole() -> Result<(), TokenizerError> {
        let tokenizer = trained()?;
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tokenizer.encode(token)?, vec![id as u32], "{token}");
        }
        assert_eq!(tokenizer.pad_id(), 0);
        assert_eq!(tokenizer.begin_id(), 1);
        assert_eq!(tokenizer.end_id(), 2);
        let chat = tokenizer.encode("<|user|>\nhi\n<|assistant|>\nnormal ecg</s>")?;
        assert_eq!(chat.first(), Some(&3));
        assert_eq!(chat.last(), Some(&2));
        assert!(chat.contains(&4));
        Ok(())
    }

    #[test]
    fn training_learns_merges_for_frequent_report_words() -> Result<(), TokenizerError> {
        let tokenizer = trained()?;
        assert!(tokenizer.vocab_size() > 261, "merges were learned");
        let ids = tokenizer.encode("sinus rhythm. abnormal ecg")?;
        assert!(
            ids.len() < "sinus rhythm. abnormal ecg".len() / 2,
            "{ids:?} is barely compressed"
        );
        Ok(())
    }

    #[test]
    fn text_round_trips_including_unseen_characters_and_digits() -> Result<(), TokenizerError> {
        let tokenizer = trained()?;
        for text in [
            REPORTS[5],
            "qrs 98 ms, qt/qtc 380/412 ms",
            "Vorhofflimmern — ÄÖÜ ß",
            "  two  spaces\n",
        ] {
            let ids = tokenizer.encode(text)?;
            assert_eq!(tokenizer.decode(&ids, false)?, text);
        }
        let digits = tokenizer.encode("224")?;
        assert_eq!(digits.len(), 3, "digits are split one by one");
        Ok(())
    }

    #[test]
    fn save_then_load_gives_the_same_ids() -> Result<(), Box<dyn std::error::Error>> {
        let tokenizer = trained()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.json");
        tokenizer.save(&path)?;
        let loaded = ReportTokenizer::load(&path)?;
        for text in REPORTS {
            assert_eq!(loaded.encode(text)?, tokenizer.encode(text)?);
        }
        assert_eq!(loaded.vocab_size(), tokenizer.vocab_size());
        Ok(())
    }

    #[test]
    fn rebuilt_bpe_applies_the_given_merges_and_special_tokens()
    -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let tokens: Vec<String> = ["<x>", "a", "b", "Ġ", "ab", "Ġab"]
            .map(String::from)
            .to_vec();
        let merges = ["a b", "Ġ ab"].map(String::from);
        let tokenizer = byte_level_bpe(&tokens, &merges, &[0])?;
        let ids = tokenizer.encode("ab ab<x>", false)?.get_ids().to_vec();
        assert_eq!(ids, vec![4, 5, 0]);
        assert_eq!(tokenizer.decode(&ids, false)?, "ab ab<x>");
        let unmerged = byte_level_bpe(&tokens, &merges[..1], &[0])?;
        assert_eq!(unmerged.encode("ab ab", false)?.get_ids(), &[4, 3, 4]);
        assert!(
            byte_level_bpe(&tokens, &["ab".to_string()], &[]).is_err(),
            "a merge needs two symbols"
        );
        Ok(())
    }

    #[test]
    fn too_small_vocabulary_and_missing_file_are_errors() {
        assert!(matches!(
            ReportTokenizer::train(REPORTS.iter(), 100, 1),
            Err(TokenizerError::VocabTooSmall(100))
        ));
        assert!(matches!(
            ReportTokenizer::load(Path::new("/nonexistent/tokenizer.json")),
            Err(TokenizerError::Load { .. })
        ));
    }
}
