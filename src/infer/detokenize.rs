//! Token ids -> report text for byte-level BPE tokenizers (GPT-2 style: the tiny model's
//! report tokenizer and SmolLM2's), read from a Hugging Face `tokenizer.json`.
//!
//! The daemon never encodes text (the prompt's ids are in the bundle manifest), so it needs
//! only the decode direction: each token's characters map back to bytes through GPT-2's
//! byte-to-unicode table, the bytes are UTF-8. This keeps the `tokenizers` crate (and its regex
//! engines) out of the daemon; `meit-models` tests that this decoder agrees with `tokenizers`
//! on the bundle's vocabulary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a tokenizer file cannot be used for decoding.
#[derive(Debug, thiserror::Error)]
pub enum DetokenizeError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a byte-level BPE `tokenizer.json`.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is missing or unsupported.
        reason: String,
    },
}

/// A decode-only byte-level BPE vocabulary.
#[derive(Debug, Clone)]
pub struct Detokenizer {
    /// Per id: the bytes it stands for, and whether it is a special token.
    tokens: Vec<Option<(Vec<u8>, bool)>>,
}

/// GPT-2's `bytes_to_unicode` inverse: the character each byte is written as -> the byte.
fn char_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for byte in 0u32..256 {
        let c = if printable.contains(&byte) {
            byte
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, byte as u8);
        }
    }
    map
}

impl Detokenizer {
    /// Reads `tokenizer.json` (model type BPE, decoder ByteLevel).
    pub fn from_file(path: &Path) -> Result<Detokenizer, DetokenizeError> {
        let bytes = std::fs::read(path).map_err(|source| DetokenizeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Detokenizer::from_bytes(path, &bytes)
    }

    /// [`Detokenizer::from_file`] of the file's contents already read (`path` names it in
    /// errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Detokenizer, DetokenizeError> {
        let format = |reason: String| DetokenizeError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format(format!("not JSON: {e}")))?;
        let decoder = json["decoder"]["type"].as_str().unwrap_or("none");
        if decoder != "ByteLevel" {
            return Err(format(format!(
                "decoder `{decoder}` is not supported (only ByteLevel)"
            )));
        }
        let vocab = json["model"]["vocab"]
            .as_object()
            .ok_or_else(|| format("no model.vocab object".into()))?;
        let bytes = char_to_byte();
        let added = json["added_tokens"].as_array();
        // Ids are dense: none reaches the number of entries the file lists (an id of millions
        // in a small file would size the table by it).
        let entries = vocab.len() + added.map_or(0, Vec::len);
        let mut tokens: Vec<Option<(Vec<u8>, bool)>> = Vec::new();
        let mut put = |id: u64, value: (Vec<u8>, bool)| -> Result<(), DetokenizeError> {
            let id = usize::try_from(id)
                .ok()
                .filter(|&i| i < entries)
                .ok_or_else(|| {
                    format(format!(
                        "token id {id} out of range: the file lists {entries} tokens"
                    ))
                })?;
            if tokens.len() <= id {
                tokens.resize(id + 1, None);
            }
            tokens[id] = Some(value);
            Ok(())
        };
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| format(format!("token `{token}` has no numeric id")))?;
            let decoded: Option<Vec<u8>> = token.chars().map(|c| bytes.get(&c).copied()).collect();
            // A vocabulary entry outside the byte alphabet (special tokens listed in the
            // vocabulary too) is kept as its UTF-8 text.
            put(
                id,
                (decoded.unwrap_or_else(|| token.as_bytes().to_vec()), false),
            )?;
        }
        if let Some(added) = added {
            for token in added {
                let (Some(id), Some(content)) = (token["id"].as_u64(), token["content"].as_str())
                else {
                    return Err(format("an added token without id or content".into()));
                };
                let special = token["special"].as_bool().unwrap_or(false);
                put(id, (content.as_bytes().to_vec(), special))?;
            }
        }
        Ok(Detokenizer { tokens })
    }

    /// Tokens known (the largest id + 1).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The text of `ids`; special tokens are left out when `skip_special`. Unknown ids and
    /// invalid UTF-8 become U+FFFD, never a panic.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.tokens.get(id as usize).and_then(Option::as_ref) {
                Some((_, true)) if skip_special => {}
                Some((token, _)) => bytes.extend_from_slice(token),
                None => bytes.extend_from_slice("\u{FFFD}".as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_covers_every_byte_once() {
        let map = char_to_byte();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'a'], b'a');
        let mut seen: Vec<u8> = map.values().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn decodes_byte_level_tokens_and_skips_specials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(
            &path,
            r#"{"decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"sin":0,"us":1,"Ġrhythm":3,".":4,"Ã©":5}},
               "added_tokens":[{"id":2,"content":"</s>","special":true}]}"#,
        )
        .unwrap();
        let d = Detokenizer::from_file(&path).unwrap();
        assert_eq!(d.decode(&[0, 1, 3, 4, 2], true), "sinus rhythm.");
        assert_eq!(d.decode(&[0, 1, 2], false), "sinus</s>");
        assert_eq!(d.decode(&[5], true), "é");
        assert_eq!(d.decode(&[0, 999], true), "sin\u{FFFD}");
    }

    /// An id far beyond the entries a file lists is refused, not a table sized by it (id
    /// 16,000,000 in a two-token file would have taken ~512 MiB).
    #[test]
    fn an_id_beyond_the_files_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        for (vocab, bad) in [
            (r#"{"a":0,"b":16000000}"#, 16_000_000u64),
            (r#"{"a":0,"b":2}"#, 2),
        ] {
            std::fs::write(
                &path,
                format!(r#"{{"decoder":{{"type":"ByteLevel"}},"model":{{"vocab":{vocab}}}}}"#),
            )
            .unwrap();
            let e = Detokenizer::from_file(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!("token id {bad} out of range")) && e.contains("2 tokens"),
                "{e}"
            );
        }
    }

    #[test]
    fn other_decoders_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(
            &path,
            r#"{"decoder":{"type":"WordPiece"},"model":{"vocab":{}}}"#,
        )
        .unwrap();
        let e = Detokenizer::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("WordPiece"),
            "{e}"
        );
    }
}
