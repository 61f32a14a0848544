//! The data set's documents: its corpus as Parquet (converted once from BEIR's `corpus.jsonl`),
//! the cached index built from it, and the candidates of a given TREC run with their texts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_eval::Run;
use sieve_index::docstore::StoredDoc;
use sieve_index::{BuildOptions, IndexBuilder, Manifest, Progress};

use crate::dataset::DatasetEval;
use crate::error::{HarnessError, Result};
use crate::rerank_stage::QueryCandidates;

/// The data set's corpus as Parquet: `corpus.parquet`, or `corpus.jsonl` converted once into
/// `<cache_dir>/<name>-corpus.parquet` (redone when the JSONL is newer).
pub(crate) fn corpus_parquet(job: &DatasetEval, progress: &dyn Progress) -> Result<PathBuf> {
    let parquet = job.dataset.join("corpus.parquet");
    if parquet.is_file() {
        return Ok(parquet);
    }
    let jsonl = job.dataset.join("corpus.jsonl");
    if !jsonl.is_file() {
        return Err(HarnessError::Invalid(format!(
            "{} has neither corpus.parquet nor corpus.jsonl (BEIR layout)",
            job.dataset.display()
        )));
    }
    let converted = job.cache_dir.join(format!("{}-corpus.parquet", job.name()));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = matches!((modified(&converted), modified(&jsonl)), (Some(c), Some(j)) if c >= j);
    if !fresh {
        std::fs::create_dir_all(&job.cache_dir)
            .map_err(HarnessError::io("create", &job.cache_dir))?;
        let docs = sieve_index::jsonl::beir_jsonl_to_parquet(&jsonl, &converted)?;
        progress.note(&format!(
            "converted {} ({docs} documents) to {}",
            jsonl.display(),
            converted.display()
        ));
    }
    Ok(converted)
}

/// Identifies the corpus and embedder an index was built from, to decide whether a cached
/// index can be reused.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CacheStamp {
    corpus: PathBuf,
    corpus_bytes: u64,
    corpus_modified_unix: u64,
    embedder: PathBuf,
    /// The state codec the index stores rerank states with (its file), if any.
    #[serde(default)]
    rerank_codec: Option<PathBuf>,
}

impl CacheStamp {
    fn of(corpus: &Path, embedder: &Path, codec: Option<&Path>) -> Result<CacheStamp> {
        let meta = std::fs::metadata(corpus).map_err(HarnessError::io("read", corpus))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let absolute = |p: &Path| std::path::absolute(p).map_err(HarnessError::io("resolve", p));
        Ok(CacheStamp {
            corpus: absolute(corpus)?,
            corpus_bytes: meta.len(),
            corpus_modified_unix: modified,
            embedder: absolute(embedder)?,
            rerank_codec: codec.map(absolute).transpose()?,
        })
    }
}

/// Whether the ONNX file of the embedder model directory `model` is still the one an index
/// recorded (`recorded_sha256`); false when it cannot be found or read.
fn embedder_unchanged(model: &Path, recorded_sha256: &str) -> bool {
    sieve_embed::find_onnx_model(model)
        .ok()
        .and_then(|file| sieve_embed::sha256_file(&file).ok())
        .is_some_and(|sha| sha == recorded_sha256)
}

/// Builds (or reuses) the data set's index and returns its directory: the cached one when its
/// stamp matches the corpus, embedder and state codec (any codec when the job needs none); an index the user named when it was
/// built from this corpus; else a fresh build.
pub(crate) fn ensure_index(job: &DatasetEval, progress: &dyn Progress) -> Result<PathBuf> {
    let corpus = corpus_parquet(job, progress)?;
    let index_dir = job
        .index_dir
        .clone()
        .unwrap_or_else(|| job.cache_dir.join(job.name()));
    let stamp = CacheStamp::of(&corpus, &job.embedder_model, job.rerank_codec.as_deref())?;
    let stamp_path = index_dir.join("eval-stamp.json");
    // An index that stores rerank states serves a job that needs none just as well. The stamp
    // names the embedder by path, so its recorded sha256 must also still be the file's: an
    // updated graph at the same path means a rebuild, not a refusal at search time.
    let cached = Manifest::load(&index_dir).is_ok_and(|manifest| {
        embedder_unchanged(&job.embedder_model, &manifest.models.embedder.sha256)
    }) && std::fs::read(&stamp_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<CacheStamp>(&b).ok())
        .is_some_and(|cached| {
            cached == stamp
                || (stamp.rerank_codec.is_none()
                    && CacheStamp {
                        rerank_codec: None,
                        ..cached
                    } == stamp)
        });
    // An index the user points at explicitly is reused if it was built from this corpus.
    if !cached
        && job.index_dir.is_some()
        && let Ok(manifest) = Manifest::load(&index_dir)
    {
        let sources: Vec<PathBuf> = manifest
            .source
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect();
        if sources == [stamp.corpus.clone()] {
            progress.note(&format!(
                "using index {} (built from {})",
                index_dir.display(),
                corpus.display()
            ));
            return Ok(index_dir);
        }
        return Err(HarnessError::Invalid(format!(
            "{} holds an index of {:?}, not of {}; choose another index directory",
            index_dir.display(),
            sources,
            corpus.display()
        )));
    }
    if cached {
        progress.note(&format!("using cached index {}", index_dir.display()));
        return Ok(index_dir);
    }
    progress.note(&format!(
        "indexing {} into {}",
        corpus.display(),
        index_dir.display()
    ));
    if let Some(parent) = index_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(HarnessError::io("create", parent))?;
    }
    let mut options = BuildOptions::new(job.embedder_model.clone());
    options.mapping.title = Some("title".into());
    options.rerank_codec = job.rerank_codec.clone();
    IndexBuilder::new(options).build(&[corpus], &index_dir, progress)?;
    std::fs::write(&stamp_path, serde_json::to_vec_pretty(&stamp)?)
        .map_err(HarnessError::io("write", &stamp_path))?;
    Ok(index_dir)
}

/// The candidates of a given TREC run (its top `depth` per query, trec_eval's order: score
/// desc, then doc id desc), with their texts from the data set's corpus. Returns the lists (in
/// query order; queries absent from the run get an empty list), the corpus path and how many
/// documents were loaded.
pub(crate) fn given_run_candidates(
    job: &DatasetEval,
    queries: &[(String, String)],
    run: &Run,
    run_path: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<QueryCandidates>, PathBuf, usize)> {
    let mut wanted: HashMap<String, Option<StoredDoc>> = HashMap::new();
    let mut ranked: Vec<Vec<(String, f32)>> = Vec::with_capacity(queries.len());
    for (qid, _) in queries {
        let mut results: Vec<(String, f64)> = run.get(qid).map(<[_]>::to_vec).unwrap_or_default();
        results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        results.truncate(job.depth);
        for (doc, _) in &results {
            wanted.entry(doc.clone()).or_insert(None);
        }
        ranked.push(results.into_iter().map(|(d, s)| (d, s as f32)).collect());
    }
    let corpus = corpus_parquet(job, progress)?;
    let mapping = sieve_index::ColumnMapping {
        title: Some("title".into()),
        ..Default::default()
    };
    sieve_index::ingest::read_documents(
        std::slice::from_ref(&corpus),
        &mapping,
        4096,
        &mut |_, docs| {
            for doc in docs {
                if let Some(slot) = wanted.get_mut(&doc.id) {
                    *slot = Some(StoredDoc {
                        id: doc.id,
                        title: doc.title,
                        text: doc.text,
                    });
                }
            }
            Ok(())
        },
    )?;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(id, _)| id)
        .collect();
    if let Some(example) = missing.first() {
        return Err(HarnessError::Invalid(format!(
            "{} documents of {} are not in {} (e.g. {example})",
            missing.len(),
            run_path.display(),
            corpus.display(),
        )));
    }
    let lists = queries
        .iter()
        .zip(ranked)
        .map(|((qid, query), results)| QueryCandidates {
            qid: qid.clone(),
            query: query.clone(),
            candidates: results
                .into_iter()
                .filter_map(|(id, score)| Some((wanted.get(&id)?.clone()?, score)))
                .collect(),
            states: Vec::new(),
            first_stage_ms: 0.0,
        })
        .collect();
    Ok((lists, corpus, wanted.len()))
}

#[cfg(test)]
mod tests {
    use super::embedder_unchanged;

    #[test]
    fn a_cached_index_is_stale_once_the_embedder_file_changes() {
        let dir =
            std::env::temp_dir().join(format!("sieve-harness-embedder-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        let file = dir.join("onnx/model.onnx");
        std::fs::write(&file, b"graph one").unwrap();
        let recorded = sieve_embed::sha256_file(&file).unwrap();
        assert!(embedder_unchanged(&dir, &recorded));
        std::fs::write(&file, b"graph two").unwrap();
        assert!(!embedder_unchanged(&dir, &recorded));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!embedder_unchanged(&dir, &recorded));
    }
}
