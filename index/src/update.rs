//! Updating an index without a rebuild: append, replace and delete documents.
//!
//! An update publishes the next *generation* of the index: a complete index directory, written
//! into a hidden staging directory beside the index and renamed into place only when complete
//! (the build's atomic commit, [`crate::staging`]). What makes it cheap is what it reuses: every
//! document it keeps brings its stored embedding (`vectors.f32`) and rerank states along, so only
//! new documents go through the bi-encoder, which is nearly all of a build's time. BM25 and the
//! HNSW graph are rebuilt from the stored text and vectors (seconds for 10^4 documents), so each
//! generation is as compact as a fresh build and answers as one would: there are no tombstones
//! to filter and nothing to compact later.
//!
//! A reader that opened the previous generation keeps its open files (and its graph in memory)
//! and goes on answering from it; a killed update leaves the previous generation in place, and
//! its staging directory is removed by the next build or update of the same index.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sieve_embed::{BiEncoder, StateCodec};

use crate::bm25::Bm25Writer;
use crate::builder::{BuildOptions, IndexBuilder, Progress, embed_phase, open_models};
use crate::dense::{self, VECTORS_FILE};
use crate::docstore::{DocStoreWriter, StoredDoc};
use crate::ingest::{self, ColumnMapping, SourceDoc};
use crate::manifest::{BuildInfo, Generation, Manifest, SourceFile};
use crate::staging::{Staging, absolute, dir_size, sha256_file};
use crate::states::StateStoreWriter;
use crate::{IndexError, SieveIndex};

/// What to do when an appended document's id is already in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// Refuse the whole update, naming the file, row and id (nothing changes).
    #[default]
    Error,
    /// The appended document replaces the indexed one.
    Replace,
}

/// One update of an index.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Parquet files (or directories of them) whose documents are added.
    pub append: Vec<PathBuf>,
    /// Ids of documents to remove (applied before the appends).
    pub delete: Vec<String>,
    /// What an appended id that is already indexed does.
    pub on_duplicate: OnDuplicate,
}

/// What an update did.
#[derive(Debug, Clone)]
pub struct UpdateReport {
    /// The manifest of the generation now in place.
    pub manifest: Manifest,
    /// The index directory.
    pub path: PathBuf,
    /// Total bytes of the index directory.
    pub bytes: u64,
    /// Documents added under new ids.
    pub added: usize,
    /// Documents replaced (their ids were indexed).
    pub replaced: usize,
    /// Documents deleted.
    pub deleted: usize,
    /// Ids asked to be deleted that the index did not hold.
    pub not_found: Vec<String>,
    /// Whether a new generation was published (false when the update changed nothing).
    pub published: bool,
}

/// The appended documents, read and checked before anything is written.
struct Incoming {
    files: Vec<PathBuf>,
    rows_per_file: Vec<u64>,
    docs: Vec<SourceDoc>,
    file_of: Vec<usize>,
}

impl IndexBuilder {
    /// Adds the documents of `inputs` (Parquet files or directories) to the index in `index`:
    /// [`update`](Self::update) with appends only.
    pub fn append(
        &self,
        index: &Path,
        inputs: &[PathBuf],
        on_duplicate: OnDuplicate,
        progress: &dyn Progress,
    ) -> Result<UpdateReport, IndexError> {
        let update = Update {
            append: inputs.to_vec(),
            delete: Vec::new(),
            on_duplicate,
        };
        self.update(index, &update, progress)
    }

    /// Removes the documents with these ids from the index in `index`: [`update`](Self::update)
    /// with deletes only.
    pub fn delete(
        &self,
        index: &Path,
        ids: &[String],
        progress: &dyn Progress,
    ) -> Result<UpdateReport, IndexError> {
        let update = Update {
            delete: ids.to_vec(),
            ..Update::default()
        };
        self.update(index, &update, progress)
    }

    /// Applies `update` to the index in `index`, publishing its next generation atomically.
    ///
    /// The index's own settings are kept: its bi-encoder (whose ONNX file must still have the
    /// sha256 the manifest recorded, else the update is refused rather than mixing two models'
    /// vectors), analyzer, HNSW parameters, vector column and rerank state codec. Of the builder's
    /// options only the id/text/title columns, threads and batch size apply; the embedder model
    /// directory is used when the one recorded in the manifest has moved.
    pub fn update(
        &self,
        index: &Path,
        update: &Update,
        progress: &dyn Progress,
    ) -> Result<UpdateReport, IndexError> {
        let started = Instant::now();
        let old = SieveIndex::open(index)?;
        let base = old.manifest.clone();
        let mapping = self.update_mapping(&base);
        let incoming = read_incoming(&update.append, &mapping, self.options().batch_rows)?;

        // Which indexed documents go: deleted ids, then ids the appended documents replace.
        let mut ordinal_of: HashMap<String, u32> = HashMap::with_capacity(old.len());
        for ordinal in 0..old.len() as u32 {
            ordinal_of.insert(old.docs.get(ordinal)?.id, ordinal);
        }
        let mut dropped: HashSet<u32> = HashSet::new();
        let mut not_found = Vec::new();
        let mut asked: HashSet<&str> = HashSet::new();
        for id in &update.delete {
            if !asked.insert(id) {
                continue;
            }
            match ordinal_of.remove(id) {
                Some(ordinal) => {
                    dropped.insert(ordinal);
                }
                None => not_found.push(id.clone()),
            }
        }
        let deleted = dropped.len();
        let mut replaced = 0;
        for (doc, &file) in incoming.docs.iter().zip(&incoming.file_of) {
            if let Some(&ordinal) = ordinal_of.get(&doc.id) {
                if update.on_duplicate == OnDuplicate::Error {
                    return Err(IndexError::AlreadyIndexed {
                        file: incoming.files[file].clone(),
                        row: doc.row,
                        column: mapping.id.clone(),
                        id: doc.id.clone(),
                    });
                }
                dropped.insert(ordinal);
                replaced += 1;
            }
        }
        let added = incoming.docs.len() - replaced;
        let documents = old.len() - dropped.len() + incoming.docs.len();
        let report = |manifest: Manifest, published: bool| UpdateReport {
            bytes: dir_size(index),
            manifest,
            path: index.to_path_buf(),
            added,
            replaced,
            deleted,
            not_found: not_found.clone(),
            published,
        };
        if dropped.is_empty() && incoming.docs.is_empty() {
            return Ok(report(base, false));
        }
        if documents == 0 {
            return Err(IndexError::InvalidSetting(format!(
                "the update would delete every document of {}; build a new index instead",
                index.display()
            )));
        }

        let needs_model =
            !incoming.docs.is_empty() && (mapping.vector.is_none() || base.rerank_states.is_some());
        let models = if needs_model {
            Some(self.open_index_models(&base)?)
        } else {
            None
        };

        let staging = Staging::create(index)?;
        let dir = staging.path();
        let mut phases = Vec::new();
        let threads = self.options().threads;

        // Phase 1: the documents kept, with their stored vectors and states.
        let phase = Instant::now();
        let kept = old.len() - dropped.len();
        progress.start("copy kept documents", kept as u64);
        let bm25_dir = dir.join("bm25");
        std::fs::create_dir(&bm25_dir).map_err(IndexError::io(&bm25_dir))?;
        let mut bm25 = Bm25Writer::create(&bm25_dir, &base.analyzer, threads)?;
        let mut store = DocStoreWriter::create(dir)?;
        let mut states = match &base.rerank_states {
            Some(_) => Some(StateStoreWriter::create(dir)?),
            None => None,
        };
        let dim = base.counts.vector_dim;
        let stored_vectors = dense::read_vectors(&index.join(VECTORS_FILE), old.len(), dim)?;
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(documents);
        let mut next: u32 = 0;
        for ordinal in 0..old.len() as u32 {
            if dropped.contains(&ordinal) {
                continue;
            }
            let doc = old.docs.get(ordinal)?;
            bm25.add(next, &doc.title, &doc.text)?;
            store.append(&doc)?;
            let at = ordinal as usize * dim;
            vectors.push(stored_vectors[at..at + dim].to_vec());
            if let (Some(writer), Some(stored)) = (states.as_mut(), old.states.as_ref()) {
                writer.append(&stored.get(ordinal)?)?;
            }
            next += 1;
            if next.is_multiple_of(1024) {
                progress.advance(1024);
            }
        }
        progress.advance(u64::from(next % 1024));
        progress.finish();
        phases.push((
            "copy kept documents".to_string(),
            phase.elapsed().as_secs_f64(),
        ));
        drop(stored_vectors);
        let old_states_info = base.rerank_states.clone();
        drop(old);

        // Phase 2: the new documents: BM25 and store, then embeddings (and states).
        let mut texts = Vec::new();
        let mut new_vectors = Vec::new();
        for doc in incoming.docs {
            bm25.add(next, &doc.title, &doc.text)?;
            next += 1;
            if let Some(mut v) = doc.vector {
                if v.len() != dim {
                    return Err(IndexError::InvalidSetting(format!(
                        "vector column `{}` has {} dimensions, the index {dim}",
                        mapping.vector.as_deref().unwrap_or_default(),
                        v.len()
                    )));
                }
                sieve_embed::l2_normalise(&mut v);
                new_vectors.push(v);
            }
            if models.is_some() {
                texts.push(sieve_embed::document_text(&doc.title, &doc.text));
            }
            store.append(&StoredDoc {
                id: doc.id,
                title: doc.title,
                text: doc.text,
            })?;
        }
        store.finish()?;
        bm25.finish()?;
        if let Some((encoder, codec)) = &models {
            embed_phase(
                encoder,
                codec.as_ref().zip(states.as_mut()),
                texts.len(),
                &|range| Ok(texts[range].to_vec()),
                &mut new_vectors,
                progress,
                &mut phases,
            )?;
        }
        vectors.extend(new_vectors);
        let rerank_states = match (states, old_states_info) {
            (Some(writer), Some(info)) => {
                let (_, tokens, bytes) = writer.finish()?;
                Some(crate::states::RerankStatesInfo {
                    tokens,
                    bytes,
                    ..info
                })
            }
            _ => None,
        };

        // Phase 3: HNSW over every vector.
        let phase = Instant::now();
        progress.start("HNSW", vectors.len() as u64);
        dense::build(dir, &vectors, &base.dense.hnsw, &mut |n| {
            progress.advance(n as u64)
        })?;
        progress.finish();
        phases.push(("HNSW".to_string(), phase.elapsed().as_secs_f64()));

        let finished_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let seconds = started.elapsed().as_secs_f64();
        let mut manifest = base.clone();
        manifest.counts.documents = documents;
        manifest
            .source
            .files
            .extend(
                incoming
                    .files
                    .iter()
                    .zip(&incoming.rows_per_file)
                    .map(|(f, &rows)| SourceFile {
                        path: absolute(f),
                        rows,
                    }),
            );
        manifest.build = BuildInfo {
            finished_unix,
            seconds,
            phases,
            threads,
        };
        manifest.rerank_states = rerank_states;
        manifest.checked_files = crate::integrity::checked_files(dir)?;
        if manifest.history.is_empty() {
            manifest.history.push(Generation {
                generation: 1,
                kind: "build".into(),
                finished_unix: base.build.finished_unix,
                seconds: base.build.seconds,
                documents: base.counts.documents,
                added: base.counts.documents,
                replaced: 0,
                deleted: 0,
                inputs: base.source.files.iter().map(|f| f.path.clone()).collect(),
            });
        }
        manifest.history.push(Generation {
            generation: base.generation() + 1,
            kind: if incoming.files.is_empty() {
                "delete"
            } else {
                "append"
            }
            .into(),
            finished_unix,
            seconds,
            documents,
            added,
            replaced,
            deleted,
            inputs: incoming.files.iter().map(|f| absolute(f)).collect(),
        });
        manifest.save(dir)?;

        // Publish only over the generation this update started from.
        let now = Manifest::load(index)?;
        if now.generation() != base.generation() || now.build != base.build {
            return Err(IndexError::ConcurrentUpdate {
                path: index.to_path_buf(),
                expected: base.generation(),
                found: now.generation(),
            });
        }
        staging.commit(index)?;
        Ok(report(manifest, true))
    }

    /// The columns appended files are read with: the builder's id/text/title columns and the
    /// index's own vector column (an index embeds either with its model or from a column).
    fn update_mapping(&self, base: &Manifest) -> ColumnMapping {
        let mut mapping = self.options().mapping.clone();
        mapping.vector = base
            .dense
            .vectors_from
            .strip_prefix("column:")
            .map(str::to_string);
        mapping
    }

    /// Opens the bi-encoder (and state codec) the index was built with, refusing files whose
    /// content changed since.
    fn open_index_models(
        &self,
        base: &Manifest,
    ) -> Result<(Arc<BiEncoder>, Option<StateCodec>), IndexError> {
        let recorded = &base.models.embedder;
        let model_dir = if recorded.path.exists() {
            recorded.path.clone()
        } else {
            self.options().embedder_model.clone()
        };
        let mut opts: BuildOptions = self.options().clone();
        opts.embedder_model = model_dir;
        opts.embedder.max_length = recorded.max_length;
        opts.rerank_codec = base.rerank_states.as_ref().map(|s| s.codec.clone());
        let (encoder, codec) = open_models(&opts)?;
        let sha = sha256_file(encoder.model_path())?;
        if sha != recorded.sha256 {
            return Err(IndexError::InvalidSetting(format!(
                "the bi-encoder {} is not the one this index was built with (sha256 {} now, {} in \
                 the manifest): its vectors would not be comparable; re-index with `sieve index`",
                encoder.model_path().display(),
                short(&sha),
                short(&recorded.sha256)
            )));
        }
        if let (Some(codec), Some(info)) = (&codec, &base.rerank_states)
            && codec.id() != info.codec_sha256
        {
            return Err(IndexError::InvalidSetting(format!(
                "the rerank state codec {} changed since the index was built (sha256 {} now, {} in \
                 the manifest); re-index with `sieve index`",
                info.codec.display(),
                short(codec.id()),
                short(&info.codec_sha256)
            )));
        }
        Ok((encoder, codec))
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Reads the appended files completely, refusing ids repeated among them.
fn read_incoming(
    inputs: &[PathBuf],
    mapping: &ColumnMapping,
    batch_rows: usize,
) -> Result<Incoming, IndexError> {
    if inputs.is_empty() {
        return Ok(Incoming {
            files: Vec::new(),
            rows_per_file: Vec::new(),
            docs: Vec::new(),
            file_of: Vec::new(),
        });
    }
    let files = ingest::expand_inputs(inputs)?;
    let mut rows_per_file = vec![0u64; files.len()];
    let mut docs = Vec::new();
    let mut file_of = Vec::new();
    let mut seen: HashMap<String, (usize, u64)> = HashMap::new();
    ingest::read_documents(&files, mapping, batch_rows, &mut |file, batch| {
        rows_per_file[file] += batch.len() as u64;
        for doc in batch {
            if let Some(&(first_file, first_row)) = seen.get(&doc.id) {
                return Err(IndexError::DuplicateId {
                    file: files[file].clone(),
                    row: doc.row,
                    column: mapping.id.clone(),
                    id: doc.id,
                    first_file: files[first_file].clone(),
                    first_row,
                });
            }
            seen.insert(doc.id.clone(), (file, doc.row));
            docs.push(doc);
            file_of.push(file);
        }
        Ok(())
    })?;
    Ok(Incoming {
        files,
        rows_per_file,
        docs,
        file_of,
    })
}
