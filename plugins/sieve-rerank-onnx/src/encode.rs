//! Turning a query and documents into the (query, window) token sequences a cross-encoder is fed:
//! shared by single-graph and segmented (Matryoshka) models.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use sieve_core::{RerankDoc, RerankError};
use tokenizers::{Encoding, PostProcessor, Token, Tokenizer};

use crate::{DEFAULT_MAX_LENGTH, EncodedWindow, load_err, plan_windows, run_err};

/// A (query, window) pair waiting for the model.
pub(crate) struct Pair {
    /// Index of the document (in the caller's list) the window belongs to.
    pub doc: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// Every window of a list of documents, grouped by document (windows in order).
pub(crate) struct EncodedDocs {
    pub pairs: Vec<Pair>,
    /// Per document, the range of its windows in `pairs`.
    pub windows: Vec<Range<usize>>,
}

/// The tokenizer and the rules that cut pairs into windows.
pub(crate) struct PairEncoder {
    pub tokenizer: Tokenizer,
    pub pad_id: u32,
    pub pair_special_tokens: usize,
    pub max_length: usize,
    pub query_max_tokens: usize,
    pub window_stride: Option<usize>,
    pub max_windows: usize,
}

/// The tokenizer of a model, with padding and truncation switched off (truncation is done on
/// token ids), how many special tokens its pair template adds, and its pad id.
pub(crate) fn load_pair_tokenizer(
    tokenizer_path: &Path,
) -> Result<(Tokenizer, usize, u32), RerankError> {
    // load_tokenizer switches padding off; truncation is done here on token ids, so it is
    // switched off too.
    let mut tokenizer = sieve_embed::load_tokenizer(tokenizer_path, DEFAULT_MAX_LENGTH)
        .map_err(|e| load_err(e.to_string()))?;
    tokenizer.with_truncation(None).map_err(|e| {
        load_err(format!(
            "tokenizer {}: cannot disable truncation: {e}",
            tokenizer_path.display()
        ))
    })?;
    let pair_special_tokens = tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(true));
    // Padding is masked out by attention_mask; the pad id only matters to graphs that look at ids
    // without the mask, so use the tokenizer's own pad token where it has one.
    let pad_id = ["[PAD]", "<pad>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .unwrap_or(0);
    Ok((tokenizer, pair_special_tokens, pad_id))
}

/// Refuses a `max_length` that leaves no room for the document.
pub(crate) fn check_room(
    max_length: usize,
    pair_special_tokens: usize,
    query_max_tokens: usize,
) -> Result<(), RerankError> {
    if max_length <= pair_special_tokens + query_max_tokens {
        return Err(load_err(format!(
            "max_length {max_length} leaves no room for the document ({pair_special_tokens} \
             special tokens + up to {query_max_tokens} query tokens)"
        )));
    }
    Ok(())
}

impl PairEncoder {
    /// The query's tokens (no special tokens), cut to `query_max_tokens`.
    pub fn query_tokens(&self, query: &str) -> Result<Vec<Token>, RerankError> {
        if query.trim().is_empty() {
            return Err(RerankError::Invalid("the query is empty".into()));
        }
        let encoding = self
            .tokenizer
            .encode(query, false)
            .map_err(|e| run_err(format!("tokenizing the query failed: {e}")))?;
        let n = encoding.len().min(self.query_max_tokens);
        if n == 0 {
            return Err(RerankError::Invalid(format!(
                "the query {query:?} has no tokens for this model"
            )));
        }
        Ok(tokens_of(&encoding, 0..n))
    }

    /// The part of a document's text that is tokenized: at most `max_windows × max_length`
    /// tokens' worth of characters. Windows are spread over the whole tokenized document, so a
    /// document longer than that (hundreds of kilobytes at the defaults) is scored over its
    /// beginning instead of costing gigabytes of tokenizer memory (a 50 MB document did).
    pub fn scored_part<'t>(&self, text: &'t str) -> &'t str {
        sieve_embed::text_within_tokens(text, self.max_windows.max(1) * self.max_length)
    }

    /// Window ranges over a document of `doc_len` tokens, given the query's length.
    pub fn window_ranges(&self, doc_len: usize, query_len: usize) -> Vec<Range<usize>> {
        // Loading checked max_length > specials + query_max_tokens >= specials + query_len.
        let budget = self
            .max_length
            .saturating_sub(self.pair_special_tokens + query_len)
            .max(1);
        let stride = self.window_stride.unwrap_or(budget / 2);
        plan_windows(doc_len, budget, stride, self.max_windows)
    }

    /// The windows of one document as they are fed to the model.
    pub fn encode_windows(
        &self,
        query: &str,
        doc: RerankDoc<'_>,
    ) -> Result<Vec<EncodedWindow>, RerankError> {
        let query_tokens = self.query_tokens(query)?;
        let text = doc_text(&doc);
        let encoding = self
            .tokenizer
            .encode(self.scored_part(&text), false)
            .map_err(|e| run_err(format!("tokenizing the document failed: {e}")))?;
        self.window_ranges(encoding.len(), query_tokens.len())
            .into_iter()
            .map(|range| {
                let (ids, type_ids) =
                    encode_pair(&self.tokenizer, &query_tokens, &encoding, range.clone())?;
                Ok(EncodedWindow {
                    ids,
                    type_ids,
                    doc_tokens: range,
                })
            })
            .collect()
    }

    /// Every window of every document, grouped by document.
    pub fn encode_docs(
        &self,
        query_tokens: &[Token],
        docs: &[RerankDoc<'_>],
    ) -> Result<EncodedDocs, RerankError> {
        let texts: Vec<String> = docs
            .iter()
            .map(|d| self.scored_part(&doc_text(d)).to_owned())
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(texts, false)
            .map_err(|e| run_err(format!("tokenizing the documents failed: {e}")))?;
        let mut pairs = Vec::new();
        let mut windows = Vec::with_capacity(docs.len());
        for (doc, encoding) in encodings.iter().enumerate() {
            let start = pairs.len();
            for range in self.window_ranges(encoding.len(), query_tokens.len()) {
                let (ids, type_ids) = encode_pair(&self.tokenizer, query_tokens, encoding, range)?;
                pairs.push(Pair { doc, ids, type_ids });
            }
            windows.push(start..pairs.len());
        }
        Ok(EncodedDocs { pairs, windows })
    }

    /// A short probe pair, for test runs at load time.
    pub fn probe_pair(&self) -> Result<Pair, String> {
        let encode = |text: &str| {
            self.tokenizer
                .encode(text, false)
                .map_err(|e| format!("tokenizer error: {e}"))
        };
        let query = encode("probe query")?;
        let doc = encode("probe document")?;
        let (ids, type_ids) = encode_pair(
            &self.tokenizer,
            &tokens_of(&query, 0..query.len()),
            &doc,
            0..doc.len(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Pair {
            doc: 0,
            ids,
            type_ids,
        })
    }
}

/// The text a document is scored by: `title + " " + text` (either alone when the other is empty),
/// the usual way cross-encoders were trained on titled passages.
pub(crate) fn doc_text<'a>(doc: &RerankDoc<'a>) -> Cow<'a, str> {
    let title = doc.title.trim();
    if title.is_empty() {
        Cow::Borrowed(doc.text)
    } else if doc.text.trim().is_empty() {
        Cow::Borrowed(doc.title)
    } else {
        Cow::Owned(format!("{title} {}", doc.text))
    }
}

/// The tokens `range` of an encoding.
pub(crate) fn tokens_of(encoding: &Encoding, range: Range<usize>) -> Vec<Token> {
    let ids = encoding.get_ids();
    let values = encoding.get_tokens();
    let offsets = encoding.get_offsets();
    range
        .map(|i| Token::new(ids[i], values[i].clone(), offsets[i]))
        .collect()
}

/// Assembles `query + doc[range]` with the tokenizer's pair post-processor (its special tokens
/// and token types), returning `(ids, type_ids)`.
pub(crate) fn encode_pair(
    tokenizer: &Tokenizer,
    query: &[Token],
    doc: &Encoding,
    range: Range<usize>,
) -> Result<(Vec<u32>, Vec<u32>), RerankError> {
    let first = Encoding::from_tokens(query.to_vec(), 0);
    let second = Encoding::from_tokens(tokens_of(doc, range), 1);
    let pair = tokenizer
        .post_process(first, Some(second), true)
        .map_err(|e| run_err(format!("assembling a (query, document) pair failed: {e}")))?;
    Ok((pair.get_ids().to_vec(), pair.get_type_ids().to_vec()))
}
