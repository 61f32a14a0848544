//! Builds an index directory from Parquet files, atomically.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sieve_embed::{BiEncoder, EmbedderConfig, StateCodec};

use crate::bm25::{AnalyzerConfig, Bm25Writer, TANTIVY_BM25};
use crate::dense::{self, HnswParams};
use crate::docstore::{DocStore, DocStoreWriter, StoredDoc};
use crate::ingest::{self, ColumnMapping};
use crate::manifest::{
    BuildInfo, Counts, DenseInfo, Generation, Manifest, ModelInfo, Models, Source, SourceFile,
};
use crate::staging::{Staging, absolute, check_output, dir_size, sha256_file};
use crate::states::{RerankStatesInfo, StateStoreWriter};
use crate::{FORMAT_VERSION, IndexError};

/// Receives progress of a long build; the CLI draws bars with it, libraries can ignore it.
pub trait Progress: Sync {
    /// A phase starts; `total` is its amount of work (rows, texts, vectors).
    fn start(&self, phase: &str, total: u64);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// The current phase is done.
    fn finish(&self);
    /// A one-line note for the person watching (an index reused, a file converted); ignored
    /// unless the reporter shows notes.
    fn note(&self, _message: &str) {}
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// How to build an index.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Which columns hold id, text, title, vectors.
    pub mapping: ColumnMapping,
    /// The bi-encoder model directory (HF layout) used for documents and, later, queries.
    pub embedder_model: PathBuf,
    /// How the bi-encoder runs.
    pub embedder: EmbedderConfig,
    /// BM25 analysis.
    pub analyzer: AnalyzerConfig,
    /// HNSW parameters.
    pub hnsw: HnswParams,
    /// Threads for tantivy (the embedder and hnsw_rs use their own settings/all cores).
    pub threads: usize,
    /// Parquet rows per record batch.
    pub batch_rows: usize,
    /// A late-joined reranker's state codec (`state_codec.bin`): when set, every document's
    /// token states are compressed with it and stored ([`crate::states`]), so reranking never
    /// runs the document tower at query time. The codec must fit the embedder's dimension.
    pub rerank_codec: Option<PathBuf>,
}

impl BuildOptions {
    /// Defaults for the given embedding model.
    pub fn new(embedder_model: impl Into<PathBuf>) -> Self {
        Self {
            mapping: ColumnMapping::default(),
            embedder_model: embedder_model.into(),
            embedder: EmbedderConfig::default(),
            analyzer: AnalyzerConfig::default(),
            hnsw: HnswParams::default(),
            threads: sieve_onnx::available_cores(),
            batch_rows: 1024,
            rerank_codec: None,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The manifest that was written.
    pub manifest: Manifest,
    /// Where the index now is.
    pub path: PathBuf,
    /// Total bytes of the index directory.
    pub bytes: u64,
}

/// Builds sieve indexes.
pub struct IndexBuilder {
    options: BuildOptions,
}

impl IndexBuilder {
    /// A builder with these options.
    pub fn new(options: BuildOptions) -> Self {
        Self { options }
    }

    /// The options this builder builds (and updates) with.
    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// Reads `inputs` (files or directories of `*.parquet`), builds the index in a hidden
    /// temporary directory beside `out`, then moves it to `out`, replacing an older index there.
    /// `out` must not exist, be empty, or be a sieve index (anything else is refused).
    pub fn build(
        &self,
        inputs: &[PathBuf],
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<BuildReport, IndexError> {
        check_output(out)?;
        let files = ingest::expand_inputs(inputs)?;
        let staging = Staging::create(out)?;
        let manifest = self.build_into(&files, staging.path(), progress)?;
        progress.start("publish", 1);
        staging.commit(out)?;
        progress.finish();
        Ok(BuildReport {
            bytes: dir_size(out),
            manifest,
            path: out.to_path_buf(),
        })
    }

    fn build_into(
        &self,
        files: &[PathBuf],
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, IndexError> {
        let opts = &self.options;
        let started = Instant::now();
        let mut phases = Vec::new();
        let total_rows = ingest::count_rows(files)?;

        // The embedder is loaded first: a bad model fails before any real work.
        let (encoder, codec) = open_models(opts)?;

        // Phase 1: read Parquet, check ids, fill the doc store and BM25.
        let phase = Instant::now();
        progress.start("read + BM25", total_rows);
        let bm25_dir = dir.join("bm25");
        std::fs::create_dir(&bm25_dir).map_err(IndexError::io(&bm25_dir))?;
        let mut bm25 = Bm25Writer::create(&bm25_dir, &opts.analyzer, opts.threads)?;
        let mut store = DocStoreWriter::create(dir)?;
        let mut seen: HashMap<String, (usize, u64)> = HashMap::new();
        let mut column_vectors: Vec<Vec<f32>> = Vec::new();
        let mut rows_per_file = vec![0u64; files.len()];
        let mut ordinal: u32 = 0;
        ingest::read_documents(
            files,
            &opts.mapping,
            opts.batch_rows,
            &mut |file_index, docs| {
                let batch_len = docs.len() as u64;
                for doc in docs {
                    if let Some(&(first_file, first_row)) = seen.get(&doc.id) {
                        return Err(IndexError::DuplicateId {
                            file: files[file_index].clone(),
                            row: doc.row,
                            column: opts.mapping.id.clone(),
                            id: doc.id,
                            first_file: files[first_file].clone(),
                            first_row,
                        });
                    }
                    seen.insert(doc.id.clone(), (file_index, doc.row));
                    bm25.add(ordinal, &doc.title, &doc.text)?;
                    if let Some(v) = doc.vector {
                        column_vectors.push(v);
                    }
                    store.append(&StoredDoc {
                        id: doc.id,
                        title: doc.title,
                        text: doc.text,
                    })?;
                    ordinal = ordinal.checked_add(1).ok_or_else(|| {
                        IndexError::InvalidSetting("more than 4,294,967,295 documents".into())
                    })?;
                }
                rows_per_file[file_index] += batch_len;
                progress.advance(batch_len);
                Ok(())
            },
        )?;
        let documents = store.finish()?;
        bm25.finish()?;
        progress.finish();
        phases.push(("read + BM25".to_string(), phase.elapsed().as_secs_f64()));
        if documents == 0 {
            return Err(IndexError::Empty(
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        drop(seen);

        // Phase 2: embeddings (unless they came from a column).
        let (vectors, vectors_from) = if opts.mapping.vector.is_some() {
            let dim = column_vectors.first().map(Vec::len).unwrap_or(0);
            if dim != encoder.dim() {
                return Err(IndexError::InvalidSetting(format!(
                    "vector column `{}` has {dim} dimensions but the query embedder {} produces {}; \
                     pass the model that made the vectors",
                    opts.mapping.vector.as_deref().unwrap_or_default(),
                    opts.embedder_model.display(),
                    encoder.dim()
                )));
            }
            let mut vectors = column_vectors;
            vectors
                .iter_mut()
                .for_each(|v| sieve_embed::l2_normalise(v));
            let from = format!(
                "column:{}",
                opts.mapping.vector.as_deref().unwrap_or_default()
            );
            (vectors, from)
        } else {
            (Vec::new(), "embedder".to_string())
        };
        let mut vectors = vectors;
        let mut states = match &codec {
            Some(_) => Some(StateStoreWriter::create(dir)?),
            None => None,
        };
        // The texts are read back from the document store in chunks rather than held from
        // phase 1, so memory does not grow with the corpus (only the vectors do, for the HNSW).
        let to_embed = if opts.mapping.vector.is_none() || codec.is_some() {
            documents
        } else {
            0
        };
        let stored = DocStore::open(dir)?;
        embed_phase(
            &encoder,
            codec.as_ref().zip(states.as_mut()),
            to_embed,
            &|range| {
                range
                    .map(|i| {
                        let doc = stored.get(i as u32)?;
                        Ok(sieve_embed::document_text(&doc.title, &doc.text))
                    })
                    .collect()
            },
            &mut vectors,
            progress,
            &mut phases,
        )?;
        drop(stored);
        let rerank_states = match (&codec, states) {
            (Some(codec), Some(writer)) => Some(finish_states(codec, writer)?),
            _ => None,
        };

        // Phase 3: HNSW.
        let phase = Instant::now();
        progress.start("HNSW", vectors.len() as u64);
        dense::build(dir, &vectors, &opts.hnsw, &mut |n| {
            progress.advance(n as u64)
        })?;
        progress.finish();
        phases.push(("HNSW".to_string(), phase.elapsed().as_secs_f64()));

        progress.start("checksums + manifest", 1);
        let onnx = encoder.model_path().to_path_buf();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            sieve_version: env!("CARGO_PKG_VERSION").to_string(),
            counts: Counts {
                documents,
                vector_dim: encoder.dim(),
            },
            source: Source {
                files: files
                    .iter()
                    .zip(&rows_per_file)
                    .map(|(f, &rows)| SourceFile {
                        path: absolute(f),
                        rows,
                    })
                    .collect(),
                columns: opts.mapping.clone(),
            },
            models: Models {
                embedder: ModelInfo {
                    path: absolute(&opts.embedder_model),
                    sha256: sha256_file(&onnx)?,
                    onnx: absolute(&onnx),
                    max_length: opts.embedder.max_length,
                },
            },
            analyzer: opts.analyzer.clone(),
            bm25: TANTIVY_BM25,
            dense: DenseInfo {
                vectors_from,
                similarity: "cosine (dot product of L2-normalised vectors)".into(),
                hnsw: opts.hnsw,
            },
            build: BuildInfo {
                finished_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                seconds: started.elapsed().as_secs_f64(),
                phases,
                threads: opts.threads,
            },
            rerank_states,
            checked_files: crate::integrity::checked_files(dir)?,
            history: Vec::new(),
        };
        let mut manifest = manifest;
        manifest.history.push(Generation {
            generation: 1,
            kind: "build".into(),
            finished_unix: manifest.build.finished_unix,
            seconds: manifest.build.seconds,
            documents,
            added: documents,
            replaced: 0,
            deleted: 0,
            inputs: files.iter().map(|f| absolute(f)).collect(),
        });
        manifest.save(dir)?;
        progress.finish();
        Ok(manifest)
    }
}

/// Opens the bi-encoder and, when the options ask for rerank states, the state codec, checking
/// that the two fit each other.
pub(crate) fn open_models(
    opts: &BuildOptions,
) -> Result<(Arc<BiEncoder>, Option<StateCodec>), IndexError> {
    let encoder = Arc::new(BiEncoder::open(
        &opts.embedder_model,
        opts.embedder.clone(),
    )?);
    let codec = match &opts.rerank_codec {
        Some(path) => {
            let codec = StateCodec::open(path)?;
            if codec.dim() != encoder.dim() {
                return Err(IndexError::InvalidSetting(format!(
                    "state codec {} is for {}-d states, but the embedder {} gives {}-d ones",
                    path.display(),
                    codec.dim(),
                    opts.embedder_model.display(),
                    encoder.dim()
                )));
            }
            Some(codec)
        }
        None => None,
    };
    Ok((encoder, codec))
}

/// Texts `range` of the ones an embedding phase works through, in order.
pub(crate) type TextSource<'a> = dyn Fn(Range<usize>) -> Result<Vec<String>, IndexError> + 'a;

/// The embedding phase of a build or an update: embeds `count` texts in order, fetched from
/// `texts` a chunk at a time, appending to `vectors` unless they came from a column (`vectors`
/// already holds one per text), and with a codec compresses every text's token states into the
/// store in the same pass.
pub(crate) fn embed_phase(
    encoder: &BiEncoder,
    states: Option<(&StateCodec, &mut StateStoreWriter)>,
    count: usize,
    texts: &TextSource<'_>,
    vectors: &mut Vec<Vec<f32>>,
    progress: &dyn Progress,
    phases: &mut Vec<(String, f64)>,
) -> Result<(), IndexError> {
    if count == 0 {
        return Ok(());
    }
    let phase = Instant::now();
    let keep_vectors = vectors.len() < count;
    let chunks = |size: usize| {
        (0..count)
            .step_by(size)
            .map(move |start| start..(start + size).min(count))
    };
    match states {
        None => {
            progress.start("embed", count as u64);
            // Chunks bound the tokenizer's memory; inside a chunk texts are length-sorted.
            for range in chunks(4096) {
                let chunk = texts(range)?;
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                vectors.extend(
                    encoder.embed_with_progress(&refs, &mut |n| progress.advance(n as u64))?,
                );
            }
            progress.finish();
            phases.push(("embed".to_string(), phase.elapsed().as_secs_f64()));
        }
        Some((codec, writer)) => {
            // The same pass keeps every token's state (smaller chunks: the states are held
            // until compressed).
            let label = if keep_vectors {
                "embed + rerank states"
            } else {
                "rerank states"
            };
            progress.start(label, count as u64);
            for range in chunks(256) {
                let chunk = texts(range)?;
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                for states in
                    encoder.embed_token_states(&refs, None, &mut |n| progress.advance(n as u64))?
                {
                    writer.append(&codec.encode(&states)?)?;
                    if keep_vectors {
                        vectors.push(states.vector);
                    }
                }
            }
            progress.finish();
            phases.push((label.to_string(), phase.elapsed().as_secs_f64()));
        }
    }
    Ok(())
}

/// Closes a state store and describes it for the manifest.
pub(crate) fn finish_states(
    codec: &StateCodec,
    writer: StateStoreWriter,
) -> Result<RerankStatesInfo, IndexError> {
    let (_, tokens, bytes) = writer.finish()?;
    Ok(RerankStatesInfo {
        codec: absolute(codec.path()),
        codec_sha256: codec.id().to_string(),
        rank: codec.rank(),
        tokens,
        bytes,
        bytes_per_token: codec.rank() + 4,
    })
}
