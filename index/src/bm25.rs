//! BM25 over `title + text` with tantivy.
//!
//! One indexed text field, `body`, holds the title and the text joined by a newline (as BEIR's
//! Pyserini baselines index `title + text` as one field); an `ord` fast field maps hits back to
//! document ordinals. The analyzer (lower-casing, optional stop words and stemming) is recorded in
//! the manifest and re-registered when the index is opened, so queries are analysed exactly as
//! documents were. tantivy's BM25 uses k1 = 1.2, b = 0.75.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_core::{Candidate, RankedList};
use tantivy::collector::TopDocs;
use tantivy::columnar::Column;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::IndexError;

const ANALYZER_NAME: &str = "sieve";
const BODY: &str = "body";
const ORD: &str = "ord";

/// Text analysis for BM25; stored in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzerConfig {
    /// Snowball stemmer language (`english`, `french`, ...), or `None` for no stemming.
    pub stemmer: Option<String>,
    /// Stop-word list language, or `None` to keep every word.
    pub stopwords: Option<String>,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            stemmer: Some("english".into()),
            stopwords: Some("english".into()),
        }
    }
}

/// BM25 parameters as tantivy applies them (recorded for the manifest; tantivy fixes them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation.
    pub b: f32,
}

/// tantivy's constants.
pub const TANTIVY_BM25: Bm25Params = Bm25Params { k1: 1.2, b: 0.75 };

fn language(name: &str) -> Option<Language> {
    Some(match name.to_ascii_lowercase().as_str() {
        "arabic" => Language::Arabic,
        "danish" => Language::Danish,
        "dutch" => Language::Dutch,
        "english" => Language::English,
        "finnish" => Language::Finnish,
        "french" => Language::French,
        "german" => Language::German,
        "greek" => Language::Greek,
        "hungarian" => Language::Hungarian,
        "italian" => Language::Italian,
        "norwegian" => Language::Norwegian,
        "portuguese" => Language::Portuguese,
        "romanian" => Language::Romanian,
        "russian" => Language::Russian,
        "spanish" => Language::Spanish,
        "swedish" => Language::Swedish,
        "tamil" => Language::Tamil,
        "turkish" => Language::Turkish,
        _ => return None,
    })
}

impl AnalyzerConfig {
    /// Builds the tantivy analyzer; errors on an unknown language.
    pub fn build(&self) -> Result<TextAnalyzer, IndexError> {
        let mut builder = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter_dynamic(RemoveLongFilter::limit(40))
            .filter_dynamic(LowerCaser);
        if let Some(name) = &self.stopwords {
            let filter = language(name)
                .and_then(StopWordFilter::new)
                .ok_or_else(|| {
                    IndexError::InvalidSetting(format!("no stop-word list for language `{name}`"))
                })?;
            builder = builder.filter_dynamic(filter);
        }
        if let Some(name) = &self.stemmer {
            let lang = language(name).ok_or_else(|| {
                IndexError::InvalidSetting(format!("no stemmer for language `{name}`"))
            })?;
            builder = builder.filter_dynamic(Stemmer::new(lang));
        }
        Ok(builder.build())
    }
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER_NAME)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let body = builder.add_text_field(BODY, TextOptions::default().set_indexing_options(indexing));
    let ord = builder.add_u64_field(ORD, FAST);
    (builder.build(), body, ord)
}

fn tantivy_err(path: &Path) -> impl Fn(tantivy::TantivyError) -> IndexError + '_ {
    move |e| IndexError::Bm25 {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes the BM25 index of a new sieve index.
pub struct Bm25Writer {
    path: PathBuf,
    writer: IndexWriter,
    body: Field,
    ord: Field,
}

impl Bm25Writer {
    /// Creates an empty BM25 index in `path` (which must exist and be empty).
    pub fn create(
        path: &Path,
        analyzer: &AnalyzerConfig,
        threads: usize,
    ) -> Result<Self, IndexError> {
        let (schema, body, ord) = schema();
        let index = Index::create_in_dir(path, schema).map_err(tantivy_err(path))?;
        index
            .tokenizers()
            .register(ANALYZER_NAME, analyzer.build()?);
        let threads = threads.clamp(1, 8);
        let writer = index
            .writer_with_num_threads(threads, threads * 64 * 1024 * 1024)
            .map_err(tantivy_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            body,
            ord,
        })
    }

    /// Adds one document.
    pub fn add(&mut self, ordinal: u32, title: &str, text: &str) -> Result<(), IndexError> {
        let mut doc = TantivyDocument::default();
        let body = if title.is_empty() {
            text.to_string()
        } else {
            format!("{title}\n{text}")
        };
        doc.add_text(self.body, body);
        doc.add_u64(self.ord, u64::from(ordinal));
        self.writer
            .add_document(doc)
            .map(|_| ())
            .map_err(tantivy_err(&self.path))
    }

    /// Commits and waits for background merges, so the index on disk is complete.
    pub fn finish(mut self) -> Result<(), IndexError> {
        self.writer.commit().map_err(tantivy_err(&self.path))?;
        self.writer
            .wait_merging_threads()
            .map_err(tantivy_err(&self.path))
    }
}

/// A read-only BM25 index.
pub struct Bm25Index {
    searcher: Searcher,
    // Kept so the searcher's files stay open.
    _reader: IndexReader,
    analyzer: TextAnalyzer,
    body: Field,
    ordinals: Vec<Column<u64>>,
    path: PathBuf,
}

impl Bm25Index {
    /// Opens the BM25 index in `path` with the analyzer it was built with.
    pub fn open(path: &Path, analyzer: &AnalyzerConfig) -> Result<Self, IndexError> {
        let err = tantivy_err(path);
        let index = Index::open_in_dir(path).map_err(&err)?;
        index
            .tokenizers()
            .register(ANALYZER_NAME, analyzer.build()?);
        let body = index.schema().get_field(BODY).map_err(&err)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(&err)?;
        let searcher = reader.searcher();
        let ordinals = searcher
            .segment_readers()
            .iter()
            .map(|segment| segment.fast_fields().u64(ORD))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        Ok(Self {
            searcher,
            _reader: reader,
            analyzer: analyzer.build()?,
            body,
            ordinals,
            path: path.to_path_buf(),
        })
    }

    /// The number of indexed documents.
    pub fn num_docs(&self) -> u64 {
        self.searcher.num_docs()
    }

    /// Returns the `k` best documents for `query` by BM25.
    ///
    /// The query is a bag of words: it is analysed like the documents and every resulting term
    /// is an optional clause (a repeated term counts repeatedly), as in Pyserini's BM25. There is
    /// no query syntax to get wrong; a query with no searchable term (only stop words or
    /// punctuation) returns an empty list.
    pub fn search(&self, query: &str, k: usize) -> Result<RankedList, IndexError> {
        if k == 0 {
            return Ok(RankedList::new("bm25", Vec::new()));
        }
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(self.body, &token.text);
            clauses.push((
                Occur::Should,
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
            ));
        }
        if clauses.is_empty() {
            return Ok(RankedList::new("bm25", Vec::new()));
        }
        let parsed = BooleanQuery::new(clauses);
        let hits = self
            .searcher
            .search(&parsed, &TopDocs::with_limit(k).order_by_score())
            .map_err(tantivy_err(&self.path))?;
        let mut candidates = Vec::with_capacity(hits.len());
        for (score, address) in hits {
            let ord = self
                .ordinals
                .get(address.segment_ord as usize)
                .and_then(|column| column.first(address.doc_id))
                .ok_or_else(|| IndexError::Bm25 {
                    path: self.path.clone(),
                    message: format!("document {address:?} has no ordinal"),
                })?;
            candidates.push(Candidate {
                doc: ord as u32,
                score,
            });
        }
        Ok(RankedList::new("bm25", candidates))
    }
}
