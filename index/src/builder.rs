//! Builds an index directory from Parquet files, atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sieve_embed::{BiEncoder, EmbedderConfig, StateCodec};

use crate::bm25::{AnalyzerConfig, Bm25Writer, TANTIVY_BM25};
use crate::dense::{self, HnswParams};
use crate::docstore::{DocStoreWriter, StoredDoc};
use crate::ingest::{self, ColumnMapping};
use crate::manifest::{
    BuildInfo, Counts, DenseInfo, MANIFEST_FILE, Manifest, ModelInfo, Models, Source, SourceFile,
};
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
        staging.commit(out)?;
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

        // Phase 1: read Parquet, check ids, fill the doc store and BM25.
        let phase = Instant::now();
        progress.start("read + BM25", total_rows);
        let bm25_dir = dir.join("bm25");
        std::fs::create_dir(&bm25_dir).map_err(IndexError::io(&bm25_dir))?;
        let mut bm25 = Bm25Writer::create(&bm25_dir, &opts.analyzer, opts.threads)?;
        let mut store = DocStoreWriter::create(dir)?;
        let mut seen: HashMap<String, (usize, u64)> = HashMap::new();
        let mut embed_inputs: Vec<String> = Vec::new();
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
                    let from_column = doc.vector.is_some();
                    if let Some(v) = doc.vector {
                        column_vectors.push(v);
                    }
                    if !from_column || codec.is_some() {
                        embed_inputs.push(sieve_embed::document_text(&doc.title, &doc.text));
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
            let phase = Instant::now();
            progress.start("embed", embed_inputs.len() as u64);
            let mut vectors = Vec::with_capacity(embed_inputs.len());
            // Chunks bound the tokenizer's memory; inside a chunk texts are length-sorted.
            // With rerank states the same pass keeps every token's state (smaller chunks: the
            // states are held until compressed).
            if codec.is_none() {
                for chunk in embed_inputs.chunks(4096) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    vectors.extend(
                        encoder.embed_with_progress(&refs, &mut |n| progress.advance(n as u64))?,
                    );
                }
            }
            progress.finish();
            phases.push(("embed".to_string(), phase.elapsed().as_secs_f64()));
            (vectors, "embedder".to_string())
        };
        let mut vectors = vectors;
        let rerank_states = match &codec {
            Some(codec) => {
                let phase = Instant::now();
                let label = if vectors.is_empty() {
                    "embed + rerank states"
                } else {
                    "rerank states"
                };
                progress.start(label, embed_inputs.len() as u64);
                let keep_vectors = vectors.is_empty();
                let mut writer = StateStoreWriter::create(dir)?;
                for chunk in embed_inputs.chunks(256) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    for states in encoder
                        .embed_token_states(&refs, None, &mut |n| progress.advance(n as u64))?
                    {
                        writer.append(&codec.encode(&states)?)?;
                        if keep_vectors {
                            vectors.push(states.vector);
                        }
                    }
                }
                let (_, tokens, bytes) = writer.finish()?;
                progress.finish();
                phases.push((label.to_string(), phase.elapsed().as_secs_f64()));
                Some(RerankStatesInfo {
                    codec: absolute(codec.path()),
                    codec_sha256: codec.id().to_string(),
                    rank: codec.rank(),
                    tokens,
                    bytes,
                    bytes_per_token: codec.rank() + 4,
                })
            }
            None => None,
        };
        drop(embed_inputs);

        // Phase 3: HNSW.
        let phase = Instant::now();
        progress.start("HNSW", vectors.len() as u64);
        dense::build(dir, &vectors, &opts.hnsw, &mut |n| {
            progress.advance(n as u64)
        })?;
        progress.finish();
        phases.push(("HNSW".to_string(), phase.elapsed().as_secs_f64()));

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
        };
        manifest.save(dir)?;
        Ok(manifest)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn sha256_file(path: &Path) -> Result<String, IndexError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(IndexError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                dir_size(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Refuses to replace anything that is not a sieve index or an empty directory.
fn check_output(out: &Path) -> Result<(), IndexError> {
    if !out.exists() {
        return Ok(());
    }
    if out.is_dir() {
        if out.join(MANIFEST_FILE).is_file() {
            return Ok(());
        }
        let empty = std::fs::read_dir(out)
            .map_err(IndexError::io(out))?
            .next()
            .is_none();
        if empty {
            return Ok(());
        }
    }
    Err(IndexError::OutputNotAnIndex(out.to_path_buf()))
}

/// A hidden directory beside the output that becomes the output on [`commit`](Self::commit) and
/// is removed if dropped before that (an error, a panic). A killed process leaves it behind;
/// the next build for the same output removes such leftovers.
struct Staging {
    path: Option<PathBuf>,
}

const STAGING_MARK: &str = ".sieve-tmp-";
const RETIRED_MARK: &str = ".sieve-old-";

fn sibling(out: &Path, mark: &str) -> Result<PathBuf, IndexError> {
    let name = out
        .file_name()
        .ok_or_else(|| IndexError::InvalidSetting(format!("bad output path {}", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(
        ".{}{mark}{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Removes staging/retired siblings of `out` left by builds whose process no longer runs.
fn remove_leftovers(out: &Path) {
    let (Some(name), Some(parent)) = (out.file_name(), out.parent()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest
            .strip_prefix(STAGING_MARK)
            .or_else(|| rest.strip_prefix(RETIRED_MARK));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Staging {
    fn create(out: &Path) -> Result<Self, IndexError> {
        remove_leftovers(out);
        let path = sibling(out, STAGING_MARK)?;
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(IndexError::io(&path))?;
        }
        std::fs::create_dir_all(&path).map_err(IndexError::io(&path))?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    /// Moves the finished index to `out`. An older index there is first renamed aside and
    /// deleted after the move, so at every instant `out` is the old index, absent, or the new one.
    fn commit(mut self, out: &Path) -> Result<(), IndexError> {
        let Some(staging) = self.path.take() else {
            return Ok(());
        };
        let retired = if out.exists() {
            let retired = sibling(out, RETIRED_MARK)?;
            std::fs::rename(out, &retired).map_err(IndexError::io(out))?;
            Some(retired)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&staging, out) {
            // Put the old index back rather than leave nothing.
            if let Some(retired) = &retired {
                let _ = std::fs::rename(retired, out);
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(IndexError::io(out)(e));
        }
        if let Some(retired) = retired {
            let _ = std::fs::remove_dir_all(retired);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
