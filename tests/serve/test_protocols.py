"""The protocols' own request examples, errors and limits against a live `sieve serve`, with
plain HTTP (`requests`, raw sockets): field names and types as the originals answer, and the
status code and a clear error body for bad input, never a panic or a hung request."""

import json
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import QUERY, REPO, Server, cli_order, cli_rerank, sieve_binary

T = 120  # seconds: a generous per-request timeout, so that a hung request fails the test


def post(server, path, body, headers=None, raw=False):
    data = body if raw else json.dumps(body)
    return requests.post(server.url + path, data=data, headers=headers or {}, timeout=T)


# --- TEI -----------------------------------------------------------------------------------

def test_tei_rerank_answers_like_tei(server, texts):
    r = post(server, "/rerank", {"query": QUERY, "texts": texts, "return_text": True},
             headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    ranks = r.json()
    assert isinstance(ranks, list) and len(ranks) == len(texts)
    assert set(ranks[0]) == {"index", "text", "score"}
    assert [x["index"] for x in ranks] == cli_order(QUERY, texts)
    assert all(texts[x["index"]] == x["text"] for x in ranks)
    scores = [x["score"] for x in ranks]
    assert scores == sorted(scores, reverse=True)
    raw = post(server, "/rerank", {"query": QUERY, "texts": texts, "raw_scores": True}).json()
    assert set(raw[0]) == {"index", "score"}  # no text unless asked
    expected = {r["input_position"] - 1: r["score"]["raw"] for r in cli_rerank(QUERY, texts)}
    for x in raw:
        assert x["score"] == pytest.approx(expected[x["index"]], abs=1e-5)


def test_tei_info_and_health(server):
    assert requests.get(server.url + "/health", timeout=T).status_code == 200
    info = requests.get(server.url + "/info", timeout=T).json()
    for field in ["model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests",
                  "max_input_length", "max_batch_tokens", "max_client_batch_size",
                  "auto_truncate", "tokenization_workers", "version"]:
        assert field in info, field
    assert "reranker" in info["model_type"]
    assert info["max_input_length"] == 256
    assert info["sieve"]["reads_document_states"] is True


def test_tei_truncation_follows_the_request(guarded_server, key_file):
    auth = {"Authorization": "Bearer " + key_file.read_text().strip()}
    long_text = "cholesterol statins liver " * 200  # 600 words, far over 256 tokens
    refused = post(guarded_server, "/rerank", {"query": QUERY, "texts": [long_text]}, auth)
    assert refused.status_code == 422
    body = refused.json()
    assert body["error_type"] == "Validation" and "256 tokens" in body["error"]
    cut = post(guarded_server, "/rerank",
               {"query": QUERY, "texts": [long_text], "truncate": True, "return_text": True}, auth)
    assert cut.status_code == 200
    assert len(cut.json()[0]["text"]) < len(long_text)
    left = post(guarded_server, "/rerank",
                {"query": QUERY, "texts": ["start " + long_text + " end"], "truncate": True,
                 "truncation_direction": "Left", "return_text": True}, auth)
    assert left.status_code == 200 and left.json()[0]["text"].endswith("end")


@pytest.mark.parametrize(
    "body,status,error_type",
    [
        ("{not json", 400, "Validation"),
        ("", 400, "Validation"),
        (json.dumps({"texts": ["a"]}), 422, "Validation"),          # missing query
        (json.dumps({"query": "q"}), 422, "Validation"),            # missing texts
        (json.dumps({"query": "q", "texts": "a"}), 422, "Validation"),  # wrong type
        (json.dumps({"query": "q", "texts": []}), 400, "Empty"),
        (json.dumps({"query": "", "texts": ["a"]}), 400, "Empty"),
        (json.dumps({"query": "q", "texts": ["a"], "budget": "9:9"}), 422, "Validation"),
    ],
)
def test_tei_bad_requests(server, body, status, error_type):
    r = post(server, "/rerank", body, raw=True)
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == error_type
    assert r.json()["error"]


# --- Cohere --------------------------------------------------------------------------------

def test_cohere_v2_documented_example(server):
    # docs.cohere.com/reference/rerank, curl example (null fields as the SDKs send them).
    body = {
        "model": "rerank-v3.5",
        "query": "What is the capital of the United States?",
        "top_n": 3,
        "max_tokens_per_doc": None,
        "documents": [
            "Carson City is the capital city of the American state of Nevada.",
            "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
            "Washington, D.C. (also known as simply Washington or D.C., and officially as the District of Columbia) is the capital of the United States. It is a federal district.",
            "Capitalization or capitalisation in English grammar is the use of a capital letter at the start of a word.",
            "Capital punishment has existed in the United States since before the United States was a country.",
        ],
    }
    r = post(server, "/v2/rerank", body)
    assert r.status_code == 200
    answer = r.json()
    assert list(answer) == ["id", "results", "meta"]
    assert len(answer["results"]) == 3
    assert set(answer["results"][0]) == {"index", "relevance_score"}
    assert answer["results"][0]["index"] == 2
    assert answer["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    # curl -d sends a form content type: still JSON to us.
    r = requests.post(server.url + "/v2/rerank", data=json.dumps(body),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=T)
    assert r.status_code == 200


def test_cohere_errors_are_messages(server):
    for body in ["{", json.dumps({"query": "q"}), json.dumps({"query": "q", "documents": []}),
                 json.dumps({"query": "q", "documents": ["a"], "top_n": 0}),
                 json.dumps({"query": "q", "documents": [{"title": "no text"}]})]:
        r = post(server, "/v1/rerank", body, raw=True)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["message"].startswith("invalid request: "), r.text


def test_sieve_budget_fields_and_header(server, texts):
    plain = post(server, "/v2/rerank", {"query": QUERY, "documents": texts}).json()
    fast = post(server, "/v2/rerank", {"query": QUERY, "documents": texts, "budget": "fast"}).json()
    header = post(server, "/v2/rerank", {"query": QUERY, "documents": texts},
                  headers={"x-sieve-budget": "6:384"}).json()
    # fast = exit 6 (the towers' cosine); the header picks the same exit.
    assert [r["index"] for r in fast["results"]] == [r["index"] for r in header["results"]]
    assert [r["index"] for r in fast["results"]] == cli_order(QUERY, texts, "--budget", "fast")
    assert [r["index"] for r in plain["results"]] == cli_order(QUERY, texts)
    cascade = post(server, "/rerank", {"query": QUERY, "texts": texts,
                                       "cascade": "10@6,5@7,2@8"})
    assert cascade.status_code == 200
    assert [x["index"] for x in cascade.json()] == cli_order(QUERY, texts, "--cascade", "10@6,5@7,2@8")


# --- Weaviate ------------------------------------------------------------------------------

def test_weaviate_module_protocol(server, texts):
    base = server.url + "/weaviate"
    for probe in ["/.well-known/live", "/.well-known/ready", "//.well-known/ready"]:
        assert requests.get(base + probe, timeout=T).status_code == 204
    meta = requests.get(base + "/meta", timeout=T).json()
    assert "model" in meta
    # Weaviate's Go client: no Content-Type, `property` always "", chunks of up to 32.
    body = json.dumps({"query": QUERY, "documents": texts, "property": ""})
    for path in ["/rerank", "//rerank"]:
        r = requests.post(base + path, data=body, timeout=T)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert set(answer) == {"query", "scores", "property", "score"}
        assert [s["document"] for s in answer["scores"]] == texts  # input order
        by_score = sorted(range(len(texts)), key=lambda i: -answer["scores"][i]["score"])
        assert by_score == cli_order(QUERY, texts)
    single = requests.post(base + "/rerank", data=json.dumps({"query": QUERY, "property": texts[0]}),
                           timeout=T).json()
    assert single["scores"] is None and 0.0 <= single["score"] <= 1.0
    bad = requests.post(base + "/rerank", data="{}", timeout=T)
    assert bad.status_code == 422 and bad.json()["error"]


# --- Limits, keys, overload, metrics, shutdown ---------------------------------------------

def test_limits_give_clear_errors(guarded_server, key_file):
    auth = {"Authorization": "Bearer " + key_file.read_text().strip()}
    big = "x" * (10 * 1024 * 1024)
    r = requests.post(guarded_server.url + "/rerank", data=big, headers=auth, timeout=T)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    many = {"query": "q", "texts": ["a"] * 10_000}
    small_bodies = Server("--max-documents", "1000")
    try:
        r = post(small_bodies, "/rerank", many)
        assert r.status_code == 422
        assert r.json()["error"].startswith("batch size 10000 > maximum allowed batch size 1000")
        r = post(small_bodies, "/v2/rerank", {"query": "q", "documents": ["a"] * 10_000})
        assert r.status_code == 400 and "10000" in r.json()["message"]
    finally:
        small_bodies.stop()
    r = post(guarded_server, "/v2/rerank", {"query": "q", "documents": ["a"] * 51}, auth)
    assert r.status_code == 400 and "maximum allowed batch size 50" in r.json()["message"]


def test_api_key_is_required_and_never_logged(guarded_server, key_file):
    key = key_file.read_text().strip()
    body = {"query": QUERY, "texts": ["statins lower LDL"]}
    assert post(guarded_server, "/rerank", body).status_code == 401
    assert post(guarded_server, "/rerank", body, {"Authorization": "Bearer nope"}).status_code == 401
    assert post(guarded_server, "/rerank", body, {"Authorization": f"Bearer {key}"}).status_code == 200
    # Probes stay open for orchestrators.
    assert requests.get(guarded_server.url + "/health", timeout=T).status_code == 200
    assert requests.get(guarded_server.url + "/metrics", timeout=T).status_code == 401
    assert key not in "".join(guarded_server.log)


def test_a_full_queue_answers_429_and_the_server_survives(guarded_server, key_file, texts):
    auth = {"Authorization": "Bearer " + key_file.read_text().strip()}
    body = {"query": QUERY, "texts": texts * 3, "truncate": True}
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: post(guarded_server, "/rerank", body, auth).status_code,
                              range(12)))
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 1 and codes.count(200) >= 1
    busy = [c for c in codes if c == 429]
    assert guarded_server.metric("sieve_overload_rejections_total", auth) >= len(busy)
    assert post(guarded_server, "/rerank", body, auth).status_code == 200


def test_metrics_count_requests_batches_and_pairs(server, texts):
    post(server, "/rerank", {"query": QUERY, "texts": texts})
    text = requests.get(server.url + "/metrics", timeout=T).text
    assert 'sieve_requests_total{route="/rerank",code="200"}' in text
    assert "sieve_request_duration_seconds_bucket" in text
    assert 'sieve_stage_duration_seconds_count{stage="states"}' in text
    assert server.metric("sieve_pairs_scored_total") >= len(texts)
    assert server.metric("sieve_batch_requests_count") >= 1
    assert "sieve_queue_depth 0" in text


def test_concurrent_requests_share_batches(server, texts):
    before = server.metric("sieve_batch_requests_count")
    bodies = [{"query": q, "texts": texts} for q in
              [QUERY, "eggs and cholesterol", "what is LDL", "plaque in arteries"] * 2]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post(server, "/rerank", b), bodies))
    assert all(a.status_code == 200 for a in answers)
    batches = server.metric("sieve_batch_requests_count") - before
    assert batches < len(bodies), "no two of 8 concurrent requests shared a batch"
    # Batched answers are what the CLI gives alone, within the int8 blocks' quantisation noise
    # (activations are quantised per batch tensor; --max-batch-requests 1 or --precision fp32
    # make every answer independent of its companions).
    alone = {r["input_position"] - 1: r["score"]["calibrated"] for r in cli_rerank(QUERY, texts)}
    batched = answers[0].json()
    assert batched[0]["index"] == cli_order(QUERY, texts)[0]
    assert max(abs(x["score"] - alone[x["index"]]) for x in batched) < 0.02


def test_client_disconnect_cancels_queued_work(texts):
    s = Server("--max-batch-requests", "1")
    try:
        before = s.metric("sieve_cancelled_total")
        # The busy request has 400 documents: seconds of work even with the int8 towers on a
        # fast machine, so the worker is still busy when the last queued client leaves (checked
        # below, not assumed). The queued ones are small so that they reach the queue at once.
        slow = json.dumps({"query": QUERY, "texts": [t + f" variant {i}" for i in range(40) for t in texts]})
        small = json.dumps({"query": QUERY, "texts": texts})
        host, port = s.url.removeprefix("http://").split(":")
        # One request keeps the worker busy; the next ones are queued, then their clients leave.
        busy = threading.Thread(target=post, args=(s, "/rerank", slow, None, True))
        busy.start()
        time.sleep(0.5)
        for _ in range(3):
            conn = socket.create_connection((host, int(port)))
            conn.sendall(
                f"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: {len(small)}\r\n\r\n{small}".encode()
            )
            time.sleep(0.2)
            conn.close()
        still_busy = busy.is_alive()
        busy.join()
        assert still_busy, "the busy request ended before the queued clients left: the test proves nothing"
        deadline = time.time() + 60
        while time.time() < deadline and s.metric("sieve_cancelled_total") - before < 3:
            time.sleep(0.5)
        assert s.metric("sieve_cancelled_total") - before == 3
    finally:
        s.stop()


def test_a_request_past_its_deadline_gets_504(texts):
    s = Server("--request-timeout-ms", "300", "--state-cache-mb", "0", "--max-batch-requests", "1")
    try:
        many = [t + f" copy {i}" for i in range(6) for t in texts]  # 60 new documents: seconds
        r = post(s, "/v2/rerank", {"query": QUERY, "documents": many})
        assert r.status_code == 504
        assert "deadline" in r.json()["message"]
        r = post(s, "/rerank", {"query": QUERY, "texts": many})
        assert r.status_code == 504 and r.json()["error_type"] == "Unhealthy"
        assert s.metric("sieve_timeouts_total") >= 2
        # The server goes on answering what fits in its deadline.
        time.sleep(3)
        ok = post(s, "/rerank", {"query": QUERY, "texts": texts[:1]})
        assert ok.status_code in (200, 504)
    finally:
        s.stop()


def test_sigterm_finishes_in_flight_requests(texts):
    s = Server()
    result = {}

    def call():
        result["r"] = post(s, "/rerank", {"query": QUERY, "texts": texts * 2})

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    code = s.stop(signal.SIGTERM)
    t.join()
    assert result["r"].status_code == 200 and len(result["r"].json()) == 2 * len(texts)
    assert code == 0
    assert "stopped" in "".join(s.log)


# --- /search -------------------------------------------------------------------------------

def test_search_route_matches_the_cli(index_server, sample_index):
    body = {"query": QUERY, "k": 5, "rerank": True, "window": 20, "budget": "balanced"}
    r = post(index_server, "/search", body)
    assert r.status_code == 200, r.text
    served = r.json()
    cli = json.loads(subprocess.run(
        [str(sieve_binary()), "search", str(sample_index), QUERY, "--k", "5", "--rerank",
         "--window", "20", "--budget", "balanced", "--json"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout)
    assert [h["id"] for h in served["hits"]] == [h["id"] for h in cli["hits"]]
    assert served["hits"][0]["id"] == "doc-001"
    assert served["hits"][0]["exits"]["exits"]  # the explanation travels
    assert set(served) == set(cli)
    bad = post(index_server, "/search", {"query": QUERY, "mode": "nope"})
    assert bad.status_code == 422 and "mode" in bad.json()["error"]
    unknown = post(index_server, "/search", {"query": QUERY, "kk": 3})
    assert unknown.status_code == 422 and "kk" in unknown.json()["error"]


def test_search_without_an_index_says_so(server):
    r = post(server, "/search", {"query": QUERY})
    assert r.status_code == 404 and "--index" in r.json()["error"]


def test_search_follows_appends_and_deletes_without_a_restart(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    corpus = pq.read_table(REPO / "examples/sample/corpus.parquet").slice(0, 20)
    base, extra = tmp_path / "base.parquet", tmp_path / "extra.parquet"
    pq.write_table(corpus, base)
    pq.write_table(pa.table({"id": ["new-1"], "title": ["Okapi grazing"],
                             "text": ["The okapi browses leaves in the Ituri rainforest."]}), extra)
    idx = tmp_path / "idx"
    sieve = lambda *a: subprocess.run([str(sieve_binary()), *a], cwd=REPO, check=True,
                                      capture_output=True, text=True)
    sieve("index", str(base), "--out", str(idx))
    s = Server("--index", str(idx))
    try:
        body = {"query": "okapi ituri", "k": 3, "mode": "bm25"}
        assert post(s, "/search", body).json()["hits"] == []
        sieve("index", "--append", str(extra), "--into", str(idx))
        time.sleep(1.5)  # the worker checks the manifest at most once a second
        hits = post(s, "/search", body).json()["hits"]
        assert [h["id"] for h in hits] == ["new-1"]
        sieve("delete", str(idx), "--id", "new-1")
        time.sleep(1.5)
        assert post(s, "/search", body).json()["hits"] == []
        assert s.metric("sieve_index_reloads_total") == 2
    finally:
        s.stop()
