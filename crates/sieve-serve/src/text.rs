//! Counting and cutting documents in the model's own tokens, as the protocols' limits need
//! (`max_tokens_per_doc`, TEI's `truncate`), before any model work is queued.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{ApiError, ErrorKind};

/// A document ready for the model: its text (cut if asked) and its length in tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Title (empty for the rerank protocols, which send bare texts).
    pub title: String,
    /// The text the model reads.
    pub text: String,
    /// Tokens of the text, special tokens included, after any cut.
    pub tokens: usize,
}

/// How long documents are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDocuments {
    /// Cut each document to this many tokens (special tokens included), keeping its start.
    Cut(usize),
    /// Cut each document to this many tokens, keeping its end (TEI's `truncation_direction:
    /// "Left"`).
    CutLeft(usize),
    /// Refuse a document longer than this many tokens (TEI with `truncate: false`).
    Refuse(usize),
}

/// The reranker's tokenizer, without the padding or truncation a tokenizer.json may carry.
pub struct TokenCounter {
    tokenizer: Tokenizer,
    specials: usize,
}

impl TokenCounter {
    /// Loads `tokenizer.json`.
    pub fn open(path: &Path) -> Result<Self, String> {
        // tokenizers panics on some damaged files (see sieve_core::contain): an error too.
        let loaded = sieve_core::contain::contained(|| Tokenizer::from_file(path))
            .map_err(|panic| format!("the file is damaged ({panic})"))
            .and_then(|read| read.map_err(|e| e.to_string()));
        let mut tokenizer =
            loaded.map_err(|e| format!("cannot load the tokenizer {}: {e}", path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer {}: {e}", path.display()))?;
        let specials = tokenizer.get_post_processor().map_or(0, |p| {
            use tokenizers::PostProcessor;
            p.added_tokens(false)
        });
        Ok(Self {
            tokenizer,
            specials,
        })
    }

    /// Tokens of `text` with the special tokens of a single sequence.
    pub fn count(&self, text: &str) -> Result<usize, ApiError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ApiError::new(ErrorKind::Validation, format!("tokenizer: {e}")))?;
        Ok(encoding.len() + self.specials)
    }

    /// `texts` as model-ready documents under `policy`. `what` names the field in errors
    /// (`documents`, `texts`).
    pub fn prepare(
        &self,
        texts: Vec<String>,
        policy: LongDocuments,
        what: &str,
    ) -> Result<Vec<Document>, ApiError> {
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.into_iter().enumerate() {
            let encoding = self.tokenizer.encode(text.as_str(), false).map_err(|e| {
                ApiError::new(
                    ErrorKind::Validation,
                    format!("{what}[{i}]: tokenizer: {e}"),
                )
            })?;
            let tokens = encoding.len() + self.specials;
            let document = match policy {
                LongDocuments::Refuse(max) if tokens > max => {
                    return Err(ApiError::new(
                        ErrorKind::TooLong,
                        format!(
                            "`{what}[{i}]` must have less than {max} tokens. Given: {tokens} (send `truncate: true` to cut it)"
                        ),
                    ));
                }
                LongDocuments::Cut(max) if tokens > max => {
                    let keep = max.saturating_sub(self.specials);
                    let end = if keep == 0 {
                        0
                    } else {
                        encoding
                            .get_offsets()
                            .get(keep - 1)
                            .map_or(text.len(), |&(_, end)| end)
                    };
                    Document {
                        title: String::new(),
                        text: cut_at(&text, end).to_string(),
                        tokens: keep + self.specials,
                    }
                }
                LongDocuments::CutLeft(max) if tokens > max => {
                    let keep = max.saturating_sub(self.specials);
                    let offsets = encoding.get_offsets();
                    let start = if keep == 0 {
                        text.len()
                    } else {
                        offsets
                            .get(offsets.len() - keep)
                            .map_or(0, |&(start, _)| start)
                    };
                    Document {
                        title: String::new(),
                        text: from(&text, start).to_string(),
                        tokens: keep + self.specials,
                    }
                }
                _ => Document {
                    title: String::new(),
                    text,
                    tokens,
                },
            };
            out.push(document);
        }
        Ok(out)
    }
}

/// `text` up to byte `end`, moved back to a character boundary.
fn cut_at(text: &str, end: usize) -> &str {
    let mut end = end.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` from byte `start`, moved forward to a character boundary.
fn from(text: &str, start: usize) -> &str {
    let mut start = start.min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_only_on_character_boundaries() {
        assert_eq!(cut_at("héllo", 2), "h");
        assert_eq!(cut_at("héllo", 3), "hé");
        assert_eq!(cut_at("abc", 10), "abc");
        assert_eq!(from("héllo", 2), "llo");
        assert_eq!(from("abc", 9), "");
    }
}
