//! fastembed-rs as a benchmark peer: loads a model directory's ONNX file and tokenizer files as a
//! user-defined model (no hub access) and times `TextEmbedding::embed` or `TextRerank::rerank`
//! on inputs prepared by `scripts/bench.py`. Prints one JSON object; writes the outputs (vectors
//! or scores) for the agreement check.
//!
//! ```text
//! fastembed-peer embed  MODEL_DIR ONNX TEXTS_JSONL  OUT_JSON MAX_LENGTH BATCH
//! fastembed-peer rerank MODEL_DIR ONNX WINDOWS_JSONL OUT_JSON MAX_LENGTH BATCH
//! ```
//! TEXTS_JSONL: one JSON string per line. WINDOWS_JSONL: `{"query": "...", "docs": ["...", ...]}`
//! per line. ONNX Runtime is loaded from `ORT_DYLIB_PATH`.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fastembed::{
    InitOptionsUserDefined, Pooling, RerankInitOptionsUserDefined, TextEmbedding, TextRerank,
    TokenizerFiles, UserDefinedEmbeddingModel, UserDefinedRerankingModel,
};
use serde_json::{json, Value};

fn tokenizer_files(dir: &Path) -> Result<TokenizerFiles> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| format!("{name} in {}", dir.display()))
    };
    Ok(TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    })
}

fn lines(path: &str) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| path.to_string())?;
    std::io::BufReader::new(file)
        .lines()
        .map(|l| Ok(serde_json::from_str(&l?)?))
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        bail!("usage: fastembed-peer embed|rerank MODEL_DIR ONNX INPUT_JSONL OUT_JSON MAX_LENGTH BATCH");
    }
    let (mode, dir, onnx, input, out) =
        (&args[1], Path::new(&args[2]), &args[3], &args[4], &args[5]);
    let max_length: usize = args[6].parse()?;
    let batch: usize = args[7].parse()?;
    let report = match mode.as_str() {
        "embed" => {
            let texts: Vec<String> = lines(input)?
                .into_iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            let model = UserDefinedEmbeddingModel::new(std::fs::read(onnx)?, tokenizer_files(dir)?)
                .with_pooling(Pooling::Mean);
            let mut embedder = TextEmbedding::try_new_from_user_defined(
                model,
                InitOptionsUserDefined::new().with_max_length(max_length),
            )?;
            embedder.embed(&texts[..texts.len().min(8)], Some(batch))?; // warm-up
            let start = Instant::now();
            let vectors = embedder.embed(&texts, Some(batch))?;
            let seconds = start.elapsed().as_secs_f64();
            std::fs::write(out, serde_json::to_vec(&vectors)?)?;
            json!({"items": texts.len(), "seconds": seconds})
        }
        "rerank" => {
            let windows = lines(input)?;
            let model = UserDefinedRerankingModel::new(
                std::path::PathBuf::from(onnx),
                tokenizer_files(dir)?,
            );
            let mut options = RerankInitOptionsUserDefined::default();
            options.max_length = max_length;
            let mut reranker = TextRerank::try_new_from_user_defined(model, options)?;
            let mut all_scores = Vec::new();
            let mut per_query_ms = Vec::new();
            let mut pairs = 0usize;
            for (i, w) in windows.iter().enumerate() {
                let query = w["query"].as_str().unwrap_or_default().to_string();
                let docs: Vec<String> = w["docs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|d| d.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let start = Instant::now();
                let results = reranker.rerank(query, docs.clone(), false, Some(batch))?;
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if i > 0 {
                    per_query_ms.push(ms); // the first query warms the session up
                    pairs += docs.len();
                }
                let mut scores = vec![0f32; docs.len()];
                for r in results {
                    scores[r.index] = r.score;
                }
                all_scores.push(scores);
            }
            std::fs::write(out, serde_json::to_vec(&all_scores)?)?;
            json!({"items": pairs, "seconds": per_query_ms.iter().sum::<f64>() / 1e3, "per_query_ms": per_query_ms})
        }
        other => bail!("unknown mode {other}"),
    };
    println!("{report}");
    Ok(())
}
