//! Opening a finished index.

use std::path::{Path, PathBuf};

use crate::IndexError;
use crate::bm25::Bm25Index;
use crate::dense::DenseIndex;
use crate::docstore::DocStore;
use crate::manifest::Manifest;
use crate::states::StateStore;

/// An opened index: manifest, BM25, dense graph and document store. `Send + Sync`.
pub struct SieveIndex {
    /// What the index holds and how it was built.
    pub manifest: Manifest,
    /// The BM25 index.
    pub bm25: Bm25Index,
    /// The dense index.
    pub dense: DenseIndex,
    /// The document store.
    pub docs: DocStore,
    /// The rerank state store, if the index has one.
    pub states: Option<StateStore>,
    path: PathBuf,
}

impl SieveIndex {
    /// Opens the index in `dir`, checking its parts against the manifest.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let manifest = Manifest::load(dir)?;
        crate::integrity::verify(dir, &manifest.checked_files)?;
        let bm25 = Bm25Index::open(&dir.join("bm25"), &manifest.analyzer)?;
        let docs = DocStore::open(dir)?;
        let documents = manifest.counts.documents;
        if docs.len() != documents || bm25.num_docs() as usize != documents {
            return Err(IndexError::BadManifest {
                path: dir.join(crate::manifest::MANIFEST_FILE),
                message: format!(
                    "manifest says {documents} documents, document store has {}, BM25 index {}",
                    docs.len(),
                    bm25.num_docs()
                ),
            });
        }
        let dense = DenseIndex::open(
            dir,
            manifest.counts.vector_dim,
            documents,
            &manifest.dense.hnsw,
        )?;
        let states = match &manifest.rerank_states {
            Some(info) => Some(StateStore::open(dir, documents, info.clone())?),
            None => None,
        };
        Ok(Self {
            manifest,
            bm25,
            dense,
            docs,
            states,
            path: dir.to_path_buf(),
        })
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of documents.
    pub fn len(&self) -> usize {
        self.manifest.counts.documents
    }

    /// Whether the index has no documents (never true for an index sieve built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
