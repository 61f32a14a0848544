"""The peers' own clients against a live `sieve serve`: each must parse sieve's answers and see
the order sieve's own CLI gives for the same query and documents."""

import json
import os
import subprocess
import sys
import textwrap

import cohere
import pytest

from conftest import QUERY, REPO, cli_order, cli_rerank

KEY = "not-checked-by-this-server"


def test_cohere_sdk_v2_reranks_in_cli_order(server, texts):
    client = cohere.ClientV2(api_key=KEY, base_url=server.url)
    response = client.rerank(
        model="sieve", query=QUERY, documents=texts, top_n=5,
        request_options={"max_retries": 0},
    )
    expected = cli_rerank(QUERY, texts)
    assert [r.index for r in response.results] == [r["input_position"] - 1 for r in expected][:5]
    for got, want in zip(response.results, expected):
        assert got.relevance_score == pytest.approx(want["score"]["calibrated"], abs=1e-5)
        assert 0.0 <= got.relevance_score <= 1.0
    assert response.id and len(response.id) == 36
    assert response.meta.api_version.version == "2"
    assert response.meta.billed_units.search_units == 1
    # The best document is about statins.
    assert "Statins" in texts[response.results[0].index]


def test_cohere_sdk_v1_returns_documents(server, texts):
    client = cohere.Client(api_key=KEY, base_url=server.url)
    docs = [{"text": t, "source": f"doc-{i}"} for i, t in enumerate(texts)]
    response = client.rerank(
        model="sieve", query=QUERY, documents=docs, top_n=3, return_documents=True,
        request_options={"max_retries": 0},
    )
    order = cli_order(QUERY, texts)
    assert [r.index for r in response.results] == order[:3]
    for r in response.results:
        assert r.document.text == texts[r.index]
    assert response.meta.api_version.version == "1"


def test_cohere_sdk_maps_errors_to_its_exceptions(server, guarded_server, texts):
    client = cohere.ClientV2(api_key=KEY, base_url=server.url)
    with pytest.raises(cohere.errors.BadRequestError) as empty:
        client.rerank(model="sieve", query=QUERY, documents=[],
                      request_options={"max_retries": 0})
    assert "documents" in empty.value.body["message"]
    with pytest.raises(cohere.errors.BadRequestError):
        client.rerank(model="sieve", query="   ", documents=texts,
                      request_options={"max_retries": 0})
    wrong_key = cohere.ClientV2(api_key="wrong", base_url=guarded_server.url)
    with pytest.raises(cohere.errors.UnauthorizedError):
        wrong_key.rerank(model="sieve", query=QUERY, documents=texts[:2],
                         request_options={"max_retries": 0})


def test_llamaindex_cohere_rerank_compresses_nodes(server, texts):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0)
             for i, t in enumerate(texts)]
    rerank = CohereRerank(top_n=3, model="sieve", api_key=KEY, base_url=server.url)
    kept = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert [int(n.node.id_) for n in kept] == cli_order(QUERY, texts)[:3]
    assert all(0.0 <= n.score <= 1.0 for n in kept)


def test_haystack_tei_ranker(server, texts):
    from haystack import Document
    from haystack.components.rankers import HuggingFaceTEIRanker

    ranker = HuggingFaceTEIRanker(url=server.url, top_k=4, max_retries=0)
    documents = [Document(content=t, id=str(i)) for i, t in enumerate(texts)]
    ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    assert [int(d.id) for d in ranked] == cli_order(QUERY, texts)[:4]
    # raw_scores=False: TEI's scores are probabilities.
    assert all(0.0 <= d.score <= 1.0 for d in ranked)


def test_lancedb_hybrid_search_with_cohere_reranker(server, sample_docs, tmp_path):
    """LanceDB embedded, hybrid search (vector + its full-text index), reranked by its own
    CohereReranker, which reaches sieve through the Cohere SDK's base-URL setting (CO_API_URL,
    read when cohere is imported, hence a fresh interpreter)."""
    script = textwrap.dedent(
        """
        import hashlib, json, sys
        import lancedb, numpy as np
        from lancedb.rerankers import CohereReranker

        docs, query, path = json.loads(sys.stdin.read())
        def embed(text):  # a fixed bag-of-words hash embedding: only the first stage
            v = np.zeros(64, dtype=np.float32)
            for w in text.lower().split():
                v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
            return (v / (np.linalg.norm(v) or 1.0)).tolist()
        db = lancedb.connect(path)
        table = db.create_table("docs", [{"id": d["id"], "text": d["text"], "vector": embed(d["text"])} for d in docs])
        table.create_fts_index("text")
        reranker = CohereReranker(model_name="sieve", api_key="k")
        result = (table.search(query_type="hybrid").vector(embed(query)).text(query)
                  .rerank(reranker=reranker).limit(len(docs)).to_list())
        print(json.dumps([[r["id"], r["text"], r["_relevance_score"]] for r in result]))
        """
    )
    docs = [{"id": d["id"], "text": d["text"]} for d in sample_docs[:12]]
    env = dict(os.environ, CO_API_URL=server.url)
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([docs, QUERY, str(tmp_path / "lance")]),
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) >= 3
    returned = [text for _, text, _ in rows]
    # The documents LanceDB sent, in sieve's CLI order, are the order LanceDB returned.
    order = cli_order(QUERY, returned)
    assert order == list(range(len(returned)))
    scores = [s for _, _, s in rows]
    assert scores == sorted(scores, reverse=True)
    assert rows[0][0] == "doc-001"
