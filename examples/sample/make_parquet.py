#!/usr/bin/env python3
"""Convert sample.jsonl into corpus.parquet.

Reads sample.jsonl (one {"id", "title", "text"} object per line) from this
directory and writes corpus.parquet next to it, with three utf8 columns
(id, title, text) in file order, zstd compression and row groups of 32 rows.

Needs pyarrow, for example:
    python3 -m pip install --target /tmp/pa pyarrow
    PYTHONPATH=/tmp/pa python3 examples/sample/make_parquet.py
"""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SRC = HERE / "sample.jsonl"
DST = HERE / "corpus.parquet"
ROW_GROUP_SIZE = 32

rows = [json.loads(line) for line in SRC.read_text(encoding="utf-8").splitlines() if line.strip()]
schema = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
table = pa.table({name: [r[name] for r in rows] for name in schema.names}, schema=schema)
pq.write_table(table, DST, compression="zstd", row_group_size=ROW_GROUP_SIZE)
print(f"wrote {DST.name}: {table.num_rows} rows, {pq.ParquetFile(DST).num_row_groups} row groups")
