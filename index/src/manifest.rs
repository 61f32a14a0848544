//! `manifest.json`: what an index contains and how it was built.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bm25::{AnalyzerConfig, Bm25Params};
use crate::dense::HnswParams;
use crate::ingest::ColumnMapping;
use crate::{FORMAT_VERSION, IndexError};

/// The manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything needed to open an index and to explain how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version; [`FORMAT_VERSION`] for indexes this build writes.
    pub format_version: u32,
    /// sieve version that wrote the index.
    pub sieve_version: String,
    /// Counts.
    pub counts: Counts,
    /// The Parquet inputs and how their columns were mapped.
    pub source: Source,
    /// Models used (currently the bi-encoder), each with a content hash.
    pub models: Models,
    /// BM25 text analysis.
    pub analyzer: AnalyzerConfig,
    /// BM25 constants.
    pub bm25: Bm25Params,
    /// Dense index.
    pub dense: DenseInfo,
    /// How the build went.
    pub build: BuildInfo,
    /// The rerank state store, when the index has one (`sieve index --rerank-states`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_states: Option<crate::states::RerankStatesInfo>,
    /// Size and SHA-256 of the files whose readers trust their input (tantivy's, hnsw_rs's),
    /// checked before they are opened ([`crate::integrity`]); absent in indexes written before
    /// the check existed, which open unchecked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked_files: Vec<crate::integrity::FileDigest>,
    /// Every generation the index went through, oldest first: the build, then each update
    /// (`sieve index --append`, `sieve delete`). Empty in indexes written before updates existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Generation>,
}

/// One published state of an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// 1 for the build, then one more per update.
    pub generation: u64,
    /// `build`, `append` or `delete`.
    pub kind: String,
    /// When it was published, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// Wall time it took, seconds.
    pub seconds: f64,
    /// Documents in the index after it.
    pub documents: usize,
    /// Documents it added (new ids).
    pub added: usize,
    /// Documents it replaced (ids already present, new content).
    pub replaced: usize,
    /// Documents it removed.
    pub deleted: usize,
    /// The Parquet files it read (absolute paths), if any.
    pub inputs: Vec<PathBuf>,
}

/// Document and vector counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Number of documents.
    pub documents: usize,
    /// Embedding dimension.
    pub vector_dim: usize,
}

/// The inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Parquet files read, in order, with their row counts.
    pub files: Vec<SourceFile>,
    /// Column mapping.
    pub columns: ColumnMapping,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Path as given (made absolute).
    pub path: PathBuf,
    /// Rows read from it.
    pub rows: u64,
}

/// Models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Models {
    /// The bi-encoder that embeds queries (and documents, unless vectors came from a column).
    pub embedder: ModelInfo,
}

/// One model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model directory or file as given (made absolute).
    pub path: PathBuf,
    /// The ONNX graph file that was loaded.
    pub onnx: PathBuf,
    /// SHA-256 of the ONNX graph file.
    pub sha256: String,
    /// Maximum input length in tokens.
    pub max_length: usize,
}

/// Dense index details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseInfo {
    /// Where document vectors came from: `embedder` or `column:<name>`.
    pub vectors_from: String,
    /// Similarity used: dot product on L2-normalised vectors, i.e. cosine.
    pub similarity: String,
    /// HNSW parameters.
    pub hnsw: HnswParams,
}

/// Build statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// When the build finished, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// Wall time of the whole build, seconds.
    pub seconds: f64,
    /// Seconds per phase: read+bm25, embed, hnsw, write.
    pub phases: Vec<(String, f64)>,
    /// Threads used.
    pub threads: usize,
}

impl Manifest {
    /// The generation this manifest describes (1 for an index that was only built).
    pub fn generation(&self) -> u64 {
        self.history.last().map(|g| g.generation).unwrap_or(1)
    }

    /// Reads and checks the manifest of the index in `dir`.
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(IndexError::NotAnIndex(dir.to_path_buf()));
        }
        let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
        let bad = |message: String| IndexError::BadManifest {
            path: path.clone(),
            message,
        };
        // Check the version before the full schema, so old/new formats get a precise error.
        let probe: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let version = probe.get("format_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(FORMAT_VERSION)) {
            return Err(bad(format!(
                "format version {version:?}, this sieve reads version {FORMAT_VERSION}; rebuild the index"
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }

    /// Writes the manifest into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), IndexError> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| IndexError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, json).map_err(IndexError::io(&path))
    }
}
