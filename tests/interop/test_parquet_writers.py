"""Parquet files as the common tools write them, indexed by the real `sieve index`.

Each test writes the first documents of the bundled sample corpus with a real library (pandas,
polars, DuckDB, pyarrow; pinned in tests/serve/requirements.txt), indexes the file, and checks
what a user would: every document is there under its own id, title and text, and BM25 finds a
document by its title. Vector columns of numpy's default float64 (and float16) must give the same
dense answers as the same vectors in float32.
"""

import json
import os
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
N = 12


def sieve_binary() -> Path:
    if os.environ.get("SIEVE_BIN"):
        return Path(os.environ["SIEVE_BIN"])
    built = [p for p in (REPO / "target/release/sieve", REPO / "target/debug/sieve") if p.is_file()]
    if not built:
        pytest.exit("no sieve binary: run `cargo build` first (or set SIEVE_BIN)", 2)
    return max(built, key=lambda b: b.stat().st_mtime)


def sieve(*args: str) -> str:
    done = subprocess.run([str(sieve_binary()), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"sieve {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pq.read_table(REPO / "examples/sample/corpus.parquet").slice(0, N).to_pandas()


def vectors(n: int, dim: int = 384) -> np.ndarray:
    """Deterministic unit vectors (float64, numpy's default), exact in float16 after rounding."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal((n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float16).astype(np.float64)


def index(tmp: Path, inputs, *extra: str) -> dict:
    out = tmp / "idx"
    manifest = json.loads(sieve("index", *map(str, inputs), "--out", str(out), "--json",
                                "--rerank-states", "off", *extra))
    return {"dir": out, "manifest": manifest}


def search(idx: dict, query: str, *extra: str) -> list[dict]:
    return json.loads(sieve("search", str(idx["dir"]), query, "--json", *extra))["hits"]


def assert_complete(idx: dict, sample: pd.DataFrame, ids=None):
    assert idx["manifest"]["counts"]["documents"] == len(sample), idx["manifest"]["counts"]
    ids = ids if ids is not None else list(sample["id"])
    for i in (0, len(sample) // 2, len(sample) - 1):
        hits = search(idx, sample["title"][i], "--mode", "bm25", "-k", "3")
        assert hits[0]["id"] == str(ids[i]), (sample["title"][i], hits)
        assert hits[0]["title"] == sample["title"][i]


def test_pandas_category_columns_and_index_column(tmp_path, sample):
    df = sample.copy()
    df["title"] = df["title"].astype("category")  # Dictionary(Int8, LargeUtf8)
    df = df.set_index("id")  # the id is written as pandas' index column
    file = tmp_path / "pandas.parquet"
    df.to_parquet(file, engine="pyarrow")
    assert pa.types.is_dictionary(pq.read_schema(file).field("title").type)
    assert_complete(index(tmp_path, [file]), sample)


def test_pandas_default_index_and_float64_vectors(tmp_path, sample):
    df = sample.copy()
    df.index = df.index + 1000  # a non-range index: written as __index_level_0__
    v = vectors(len(df))
    df["emb"] = list(v)  # numpy float64 arrays -> list<double>
    f64 = tmp_path / "f64.parquet"
    df.to_parquet(f64)
    assert pq.read_schema(f64).field("emb").type == pa.list_(pa.float64())
    df["emb"] = list(v.astype(np.float32))
    f32 = tmp_path / "f32.parquet"
    df.to_parquet(f32)
    a = index(tmp_path / "a", [f64], "--vector-col", "emb")
    b = index(tmp_path / "b", [f32], "--vector-col", "emb")
    assert_complete(a, sample)
    for q in ("vitamin", "sleep and memory"):
        assert search(a, q, "--mode", "dense") == search(b, q, "--mode", "dense")


def test_polars_categorical_and_float16_array(tmp_path, sample):
    df = pl.from_pandas(sample).with_columns(pl.col("title").cast(pl.Categorical))
    file = tmp_path / "polars.parquet"
    df.write_parquet(file)
    assert_complete(index(tmp_path, [file]), sample)
    # float16 vectors as fixed-size lists, written with pyarrow from polars' table.
    table = df.to_arrow()
    v = vectors(len(sample))
    emb = pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float16).ravel()), 384)
    half = tmp_path / "half.parquet"
    pq.write_table(table.append_column("emb", emb), half)
    full = tmp_path / "full.parquet"
    emb32 = pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float32).ravel()), 384)
    pq.write_table(table.append_column("emb", emb32), full)
    a = index(tmp_path / "a", [half], "--vector-col", "emb")
    b = index(tmp_path / "b", [full], "--vector-col", "emb")
    assert search(a, "vitamin", "--mode", "dense") == search(b, "vitamin", "--mode", "dense")


def test_duckdb_copy_with_integer_ids(tmp_path, sample):
    file = tmp_path / "duck.parquet"
    con = duckdb.connect()
    con.register("sample", sample.assign(num=range(500, 500 + len(sample))))
    con.execute(f"COPY (SELECT num AS id, title, text FROM sample) TO '{file}' (FORMAT parquet)")
    assert pa.types.is_integer(pq.read_schema(file).field("id").type)
    assert_complete(index(tmp_path, [file]), sample, ids=list(range(500, 500 + len(sample))))


def test_pyarrow_hive_partitioned_dataset_with_dictionary_ids(tmp_path, sample):
    table = pa.Table.from_pandas(sample, preserve_index=False)
    table = table.set_column(0, "id", table.column("id").dictionary_encode())
    table = table.append_column("part", pa.array([i % 3 for i in range(len(sample))]))
    out = tmp_path / "dataset"
    ds.write_dataset(table, out, format="parquet", partitioning=["part"],
                     partitioning_flavor="hive")
    assert sorted(p.name for p in out.iterdir()) == ["part=0", "part=1", "part=2"]
    (out / "_SUCCESS").write_text("")
    assert_complete(index(tmp_path, [out]), sample)
