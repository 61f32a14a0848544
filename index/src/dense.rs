//! The dense index: an hnsw_rs graph over L2-normalised embeddings, plus the raw vectors.
//!
//! Vectors are unit length, so hnsw_rs's SIMD dot-product distance (`1 − u·v`) equals cosine
//! distance at a third of `DistCosine`'s cost; scores are reported as cosine similarity. The raw
//! vectors are kept in `vectors.f32` for exact (brute-force) search, which tests use to measure
//! the graph's recall, and for rebuilding the graph with other parameters.

use std::io::Write;
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, DistDot, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};
use sieve_core::{Candidate, RankedList};

use crate::IndexError;

/// The basename hnsw_rs files are dumped under (`dense.hnsw.graph`, `dense.hnsw.data`).
pub const GRAPH_BASENAME: &str = "dense";
/// The raw vector file.
pub const VECTORS_FILE: &str = "vectors.f32";
/// The files hnsw_rs writes. Its loader trusts them (on corrupt data it may exit the process,
/// panic or allocate what a length field says), so indexes record their digests and
/// [`crate::SieveIndex::open`] checks them first ([`crate::integrity`]).
pub const GRAPH_FILES: [&str; 2] = ["dense.hnsw.graph", "dense.hnsw.data"];

/// HNSW construction and search parameters, recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node per layer (`M`); at most 256.
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Default candidate list size while searching (raised to `k` when `k` is larger).
    pub ef_search: usize,
    /// Number of layers; hnsw_rs only reloads dumps made with 16.
    pub max_layer: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            max_layer: 16,
        }
    }
}

impl HnswParams {
    /// Checks the ranges hnsw_rs needs (it exits the process on some bad values).
    pub fn validate(&self) -> Result<(), IndexError> {
        if !(2..=256).contains(&self.m) {
            return Err(IndexError::InvalidSetting(format!(
                "HNSW m must be within 2..=256, got {}",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(IndexError::InvalidSetting(
                "HNSW ef_construction and ef_search must be positive".into(),
            ));
        }
        if self.max_layer != 16 {
            return Err(IndexError::InvalidSetting(
                "HNSW max_layer must be 16 (hnsw_rs reloads only such graphs)".into(),
            ));
        }
        Ok(())
    }
}

type Graph<'a> = Hnsw<'a, f32, DistDot>;

/// Builds the graph over `vectors` (row `i` is ordinal `i`), calling `progress(n)` as rows are
/// inserted, and writes the graph and raw vectors into `dir`.
pub fn build(
    dir: &Path,
    vectors: &[Vec<f32>],
    params: &HnswParams,
    progress: &mut dyn FnMut(usize),
) -> Result<(), IndexError> {
    params.validate()?;
    let dense_err = |message: String| IndexError::Dense {
        path: dir.to_path_buf(),
        message,
    };
    let graph: Graph<'_> = Hnsw::new(
        params.m,
        vectors.len().max(1),
        params.max_layer,
        params.ef_construction,
        DistDot {},
    );
    const CHUNK: usize = 2048;
    for (chunk_index, chunk) in vectors.chunks(CHUNK).enumerate() {
        let data: Vec<(&Vec<f32>, usize)> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| (v, chunk_index * CHUNK + i))
            .collect();
        graph.parallel_insert(&data);
        progress(chunk.len());
    }
    let used = graph
        .file_dump(dir, GRAPH_BASENAME)
        .map_err(|e| dense_err(format!("could not save the graph: {e}")))?;
    if used != GRAPH_BASENAME {
        return Err(dense_err(format!(
            "graph saved under unexpected name `{used}` (stale files in the directory?)"
        )));
    }
    write_vectors(&dir.join(VECTORS_FILE), vectors)
}

fn write_vectors(path: &Path, vectors: &[Vec<f32>]) -> Result<(), IndexError> {
    let file = std::fs::File::create(path).map_err(IndexError::io(path))?;
    let mut out = std::io::BufWriter::new(file);
    for v in vectors {
        for x in v {
            out.write_all(&x.to_le_bytes())
                .map_err(IndexError::io(path))?;
        }
    }
    out.flush().map_err(IndexError::io(path))
}

/// Reads `vectors.f32` as `count` rows of `dim` values.
pub fn read_vectors(path: &Path, count: usize, dim: usize) -> Result<Vec<f32>, IndexError> {
    let bytes = std::fs::read(path).map_err(IndexError::io(path))?;
    if bytes.len() != count * dim * 4 {
        return Err(IndexError::Dense {
            path: path.to_path_buf(),
            message: format!(
                "expected {count} × {dim} f32 values ({} bytes), found {} bytes",
                count * dim * 4,
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

self_cell::self_cell!(
    /// A reloaded graph together with the loader it borrows from.
    struct LoadedGraph {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

/// A read-only dense index.
pub struct DenseIndex {
    graph: LoadedGraph,
    dir: PathBuf,
    dim: usize,
    count: usize,
    ef_search: usize,
}

impl DenseIndex {
    /// Loads the graph from `dir`.
    pub fn open(
        dir: &Path,
        dim: usize,
        count: usize,
        params: &HnswParams,
    ) -> Result<Self, IndexError> {
        let loader = HnswIo::new(dir, GRAPH_BASENAME);
        let graph =
            LoadedGraph::try_new(loader, |io| io.load_hnsw_with_dist(DistDot {})).map_err(|e| {
                IndexError::Dense {
                    path: dir.to_path_buf(),
                    message: format!("could not load the graph: {e}"),
                }
            })?;
        let loaded = graph.with_dependent(|_, g| g.get_nb_point());
        if loaded != count {
            return Err(IndexError::Dense {
                path: dir.to_path_buf(),
                message: format!("graph holds {loaded} points, the manifest says {count}"),
            });
        }
        Ok(Self {
            graph,
            dir: dir.to_path_buf(),
            dim,
            count,
            ef_search: params.ef_search,
        })
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Approximate nearest neighbours of a unit-length `query`: the `k` best by cosine.
    pub fn search(&self, query: &[f32], k: usize) -> Result<RankedList, IndexError> {
        self.search_with_ef(query, k, self.ef_search)
    }

    /// Like [`search`](Self::search) with an explicit candidate list size.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Result<RankedList, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::Dense {
                path: self.dir.clone(),
                message: format!(
                    "query vector has {} dimensions, the index {}",
                    query.len(),
                    self.dim
                ),
            });
        }
        if k == 0 || self.count == 0 {
            return Ok(RankedList::new("dense", Vec::new()));
        }
        let neighbours = self
            .graph
            .with_dependent(|_, g| g.search(query, k, ef.max(k)));
        let candidates = neighbours
            .into_iter()
            .map(|n| Candidate {
                doc: n.d_id as u32,
                score: 1.0 - n.distance,
            })
            .collect();
        Ok(RankedList::new("dense", candidates))
    }

    /// Exact search over the raw vectors (brute force); the reference for recall measurements.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<RankedList, IndexError> {
        let vectors = read_vectors(&self.dir.join(VECTORS_FILE), self.count, self.dim)?;
        Ok(exact_top_k(&vectors, self.dim, query, k))
    }
}

/// The `k` rows of `vectors` (row-major, `dim` wide) with the highest dot product with `query`.
pub fn exact_top_k(vectors: &[f32], dim: usize, query: &[f32], k: usize) -> RankedList {
    let mut scored: Vec<Candidate> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, row)| Candidate {
            doc: i as u32,
            score: row.iter().zip(query).map(|(a, b)| a * b).sum(),
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    scored.truncate(k);
    RankedList::new("dense", scored)
}
