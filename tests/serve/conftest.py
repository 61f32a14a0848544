"""Fixtures for the `sieve serve` tests: real servers on loopback ports, sieve's own CLI as the
reference order, and a few documents of the bundled sample corpus.

The binary is $SIEVE_BIN, else target/release/sieve or target/debug/sieve (whichever is newer).
Run from the repository root: `scripts/test.sh` does, after `cargo test` built the binary.
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
QUERY = "how do statins lower cholesterol"


def sieve_binary() -> Path:
    if os.environ.get("SIEVE_BIN"):
        return Path(os.environ["SIEVE_BIN"])
    built = [REPO / "target" / p / "sieve" for p in ("release", "debug")]
    built = [b for b in built if b.is_file()]
    if not built:
        pytest.exit("no sieve binary: run `cargo build` first (or set SIEVE_BIN)", 2)
    return max(built, key=lambda b: b.stat().st_mtime)


class Server:
    """One `sieve serve` process on a free loopback port."""

    def __init__(self, *args: str, env: dict | None = None):
        self.args = list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(sieve_binary()), "serve", "--port", "0", *self.args],
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        self.log: list[str] = []
        deadline = time.time() + 180
        self.url = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sieve serve exited: {''.join(self.log)}")
                continue
            self.log.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if self.url is None:
            self.proc.kill()
            raise RuntimeError(f"sieve serve did not start: {''.join(self.log)}")
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()
        assert requests.get(self.url + "/health", timeout=30).status_code == 200

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig=signal.SIGTERM, timeout=120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def metric(self, name: str, headers=None) -> float:
        text = requests.get(self.url + "/metrics", headers=headers, timeout=30).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def sample_docs() -> list[dict]:
    rows = pq.read_table(REPO / "examples" / "sample" / "corpus.parquet").to_pylist()
    return rows


@pytest.fixture(scope="session")
def texts(sample_docs) -> list[str]:
    """Ten sample texts: five about cholesterol (the query's topic), five about others."""
    picked = sample_docs[:5] + sample_docs[40:45]
    return [d["text"] for d in picked]


def cli_rerank(query: str, texts: list[str], *extra: str) -> list[dict]:
    """`sieve rerank --json` on the same query and texts: the reference answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
        path = f.name
    try:
        out = subprocess.run(
            [str(sieve_binary()), "rerank", "--query", query, "--docs", path, "--json", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(path)
    return json.loads(out)["results"]


def cli_order(query: str, texts: list[str], *extra: str) -> list[int]:
    return [r["input_position"] - 1 for r in cli_rerank(query, texts, *extra)]


@pytest.fixture(scope="session")
def server():
    """The default server: bundled reranker, no index, no key."""
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "key.txt"
    path.write_text("s3cret-test-key\n")
    return path


@pytest.fixture(scope="session")
def guarded_server(key_file):
    """A server with an API key and small limits (queue 2, 50 documents, 64 KiB bodies)."""
    s = Server(
        "--api-key-file", str(key_file),
        "--max-queue", "2",
        "--max-documents", "50",
        "--max-body-bytes", str(64 * 1024),
        "--max-batch-requests", "1",
        "--no-auto-truncate",
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "sample"
    subprocess.run(
        [str(sieve_binary()), "index", str(REPO / "examples/sample/corpus.parquet"),
         "--out", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def index_server(sample_index):
    s = Server("--index", str(sample_index))
    yield s
    s.stop()
