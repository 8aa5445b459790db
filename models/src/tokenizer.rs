//! The report tokenizer: byte-level BPE (GPT-2 style, the family SmolLM2 uses) trained on report
//! text with the `tokenizers` crate, saved and loaded as a Hugging Face `tokenizer.json`.
//!
//! Pre-tokenisation mirrors SmolLM2's: digits split one by one (so "72 bpm" and "172 ms" share
//! tokens), then GPT-2's byte-level split without a prefix space. Byte level means every string
//! encodes (no unknown token) and decodes back exactly. The chat markers and padding are added
//! as special tokens with fixed ids 0..=4 ([`SPECIAL_TOKENS`]): they are never split or merged
//! and never produced by plain text.
//!
//! Training and generation take any [`TextTokenizer`]: this report tokenizer, or a pretrained
//! model's own ([`PretrainedTokenizer`], e.g. SmolLM2's rebuilt from its GGUF), whose special
//! tokens and begin/end conventions differ.

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
    /// A special id (padding, begin, end) outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {size}")]
    IdOutOfVocabulary {
        /// The id.
        id: u32,
        /// The vocabulary size.
        size: usize,
    },
    /// A marker an instruction style needs is not a single token of this vocabulary.
    #[error(
        "the tokenizer splits {marker:?} into {pieces} tokens; the instruction style `{style}` needs it as one token (chat_ml goes with a ChatML model such as SmolLM2-Instruct, tulu with MEIT's report tokenizer)"
    )]
    NotOneToken {
        /// The marker text, e.g. `<|im_start|>`.
        marker: String,
        /// How many tokens it became.
        pieces: usize,
        /// The style's name.
        style: &'static str,
    },
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

/// What training and generation need from a tokenizer, whichever vocabulary it has.
pub trait TextTokenizer: std::fmt::Debug {
    /// Token ids of `text` (special-token strings in it become their single ids).
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError>;
    /// The text of `ids`; special tokens are dropped when `skip_special`.
    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError>;
    /// Tokens in the vocabulary, special tokens included.
    fn vocab_size(&self) -> usize;
    /// The id right-padding uses (never scored, so any id works; this is the model's own).
    fn pad_id(&self) -> u32;
    /// The id put before every sample, if the model's tokenizer adds one (Llama's `<s>`);
    /// `None` when it adds none (SmolLM2: its chat template starts with `<|im_start|>`).
    fn begin_id(&self) -> Option<u32>;
    /// The tokenizer's end-of-text id (`</s>`; SmolLM2-Instruct's `<|im_end|>`).
    fn end_id(&self) -> u32;
    /// The whole pipeline as Hugging Face `tokenizer.json` text (pretty-printed), as a model
    /// bundle ships it.
    fn to_json(&self) -> Result<String, TokenizerError>;
}

/// `tokenizer.json` text of a `tokenizers` pipeline.
fn pipeline_json(inner: &Tokenizer) -> Result<String, TokenizerError> {
    inner.to_string(true).map_err(|e| TokenizerError::Save {
        path: PathBuf::from("tokenizer.json"),
        message: e.to_string(),
    })
}

/// Encodes with a `tokenizers` pipeline, adding nothing around the text.
fn encode_text(inner: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    inner
        .encode(text, false)
        .map(|encoding| encoding.get_ids().to_vec())
        .map_err(|e| TokenizerError::Encode(e.to_string()))
}

/// Decodes with a `tokenizers` pipeline.
fn decode_ids(
    inner: &Tokenizer,
    ids: &[u32],
    skip_special: bool,
) -> Result<String, TokenizerError> {
    inner
        .decode(ids, skip_special)
        .map_err(|e| TokenizerError::Encode(e.to_string()))
}

/// A pretrained model's own tokenizer with its padding, begin and end conventions.
#[derive(Debug, Clone)]
pub struct PretrainedTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    begin_id: Option<u32>,
    end_id: u32,
}

impl PretrainedTokenizer {
    /// Wraps `inner`; every given id must lie inside its vocabulary.
    pub fn new(
        inner: Tokenizer,
        pad_id: u32,
        begin_id: Option<u32>,
        end_id: u32,
    ) -> Result<PretrainedTokenizer, TokenizerError> {
        let size = inner.get_vocab_size(true);
        for id in [Some(pad_id), begin_id, Some(end_id)].into_iter().flatten() {
            if id as usize >= size {
                return Err(TokenizerError::IdOutOfVocabulary { id, size });
            }
        }
        Ok(PretrainedTokenizer {
            inner,
            pad_id,
            begin_id,
            end_id,
        })
    }

    /// The underlying `tokenizers` pipeline (to save as `tokenizer.json`).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

impl TextTokenizer for PretrainedTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        encode_text(&self.inner, text)
    }

    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        decode_ids(&self.inner, ids, skip_special)
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn begin_id(&self) -> Option<u32> {
        self.begin_id
    }

    fn end_id(&self) -> u32 {
        self.end_id
    }

    fn to_json(&self) -> Result<String, TokenizerError> {
        pipeline_json(&self.inner)
    }
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
        encode_text(&self.inner, text)
    }

    /// The text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        decode_ids(&self.inner, ids, skip_special)
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

/// The report tokenizer through the common interface: its inherent methods, with `<s>` as the
/// begin id of every sample.
impl TextTokenizer for ReportTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        ReportTokenizer::encode(self, text)
    }

    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        ReportTokenizer::decode(self, ids, skip_special)
    }

    fn vocab_size(&self) -> usize {
        ReportTokenizer::vocab_size(self)
    }

    fn pad_id(&self) -> u32 {
        ReportTokenizer::pad_id(self)
    }

    fn begin_id(&self) -> Option<u32> {
        Some(ReportTokenizer::begin_id(self))
    }

    fn end_id(&self) -> u32 {
        ReportTokenizer::end_id(self)
    }

    fn to_json(&self) -> Result<String, TokenizerError> {
        pipeline_json(&self.inner)
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

    /// Calls through the trait only, as training code generic over tokenizers does.
    fn through_trait<T: TextTokenizer + ?Sized>(
        tokenizer: &T,
        text: &str,
    ) -> Result<(Vec<u32>, String), TokenizerError> {
        let ids = tokenizer.encode(text)?;
        let back = tokenizer.decode(&ids, false)?;
        Ok((ids, back))
    }

    #[test]
    fn report_tokenizer_answers_the_same_through_the_trait() -> Result<(), TokenizerError> {
        let tokenizer = trained()?;
        let (ids, back) = through_trait(&tokenizer, REPORTS[1])?;
        assert_eq!(ids, tokenizer.encode(REPORTS[1])?);
        assert_eq!(back, REPORTS[1]);
        let dynamic: &dyn TextTokenizer = &tokenizer;
        assert_eq!(dynamic.begin_id(), Some(1), "<s> begins every sample");
        assert_eq!((dynamic.pad_id(), dynamic.end_id()), (0, 2));
        assert_eq!(dynamic.vocab_size(), tokenizer.vocab_size());
        Ok(())
    }

    #[test]
    fn pretrained_tokenizer_keeps_its_ids_and_refuses_ids_outside_the_vocabulary()
    -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let tokens: Vec<String> = ["<end>", "<start>", "a", "b", "ab"]
            .map(String::from)
            .to_vec();
        let inner = byte_level_bpe(&tokens, &["a b".to_string()], &[0, 1])?;
        let tokenizer = PretrainedTokenizer::new(inner.clone(), 0, None, 0)?;
        let (ids, back) = through_trait(&tokenizer, "<start>ab<end>")?;
        assert_eq!(ids, vec![1, 4, 0]);
        assert_eq!(back, "<start>ab<end>");
        assert_eq!(tokenizer.decode(&ids, true)?, "ab");
        assert_eq!((tokenizer.begin_id(), tokenizer.end_id()), (None, 0));
        assert_eq!(tokenizer.vocab_size(), 5);
        assert!(matches!(
            PretrainedTokenizer::new(inner, 0, Some(5), 0),
            Err(TokenizerError::IdOutOfVocabulary { id: 5, size: 5 })
        ));
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
