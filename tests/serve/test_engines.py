"""Requests exactly as the engines that cannot run here send them (their sources, read for the
shapes: Milvus's TEI rerank provider, Elasticsearch's Cohere V2 rerank request, OpenSearch's
Cohere connector blueprint, LiteLLM's Cohere and Jina transformations, LlamaIndex's TEI
postprocessor), and what each reads back from the answer."""

import json

import requests

from conftest import QUERY, cli_order

T = 120


def test_milvus_tei_rerank_function(server, texts):
    # internal/util/function/rerank/tei_rerank_provider.go: POST {endpoint}/rerank with the
    # query and a chunk of texts, truncate options only when set; it sorts the answer by index
    # and assigns scores by position, so every index must come back.
    chunk = texts[:4]
    r = requests.post(server.url + "/rerank", timeout=T,
                      headers={"Content-Type": "application/json"},
                      data=json.dumps({"query": QUERY, "texts": chunk, "truncate": True,
                                       "truncation_direction": "Right"}))
    assert r.status_code == 200
    answer = r.json()
    assert sorted(x["index"] for x in answer) == list(range(len(chunk)))
    assert all(isinstance(x["score"], float) for x in answer)


def test_elasticsearch_cohere_v2_rerank(server, texts):
    # CohereV2RerankRequest: model, query, documents, return_documents, top_n.
    body = {"model": "sieve", "query": QUERY, "documents": texts, "return_documents": False,
            "top_n": 3}
    r = requests.post(server.url + "/v2/rerank", json=body, timeout=T,
                      headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["index"] for x in results] == cli_order(QUERY, texts)[:3]
    assert all("document" not in x for x in results)


def test_opensearch_cohere_connector_blueprint(server, texts):
    # docs/remote_inference_blueprints/cohere_connector_rerank_blueprint.md request_body.
    body = ('{ "model": "rerank-english-v2.0", "query" : "%s", "documents" : %s, "top_n" : 3, '
            '"return_documents" : true }') % (QUERY, json.dumps(texts))
    r = requests.post(server.url + "/v1/rerank", data=body, timeout=T,
                      headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["document"]["text"] for x in results] == [texts[i] for i in cli_order(QUERY, texts)[:3]]


def test_litellm_cohere_and_jina_shapes(server, texts):
    # LiteLLM drops None values and posts {model, query, documents, top_n} to {api_base}/v2/rerank.
    r = requests.post(server.url + "/v2/rerank", timeout=T,
                      json={"model": "sieve", "query": QUERY, "documents": texts, "top_n": 2},
                      headers={"Authorization": "Bearer x", "accept": "application/json"})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    # Jina's request: documents as {text} objects, return_documents; Jina's readers take
    # results[].index and results[].relevance_score (and document.text).
    r = requests.post(server.url + "/v1/rerank", timeout=T,
                      json={"model": "jina-reranker-v2-base-multilingual", "query": QUERY,
                            "documents": [{"text": t} for t in texts], "top_n": 2,
                            "return_documents": True})
    assert r.status_code == 200
    first = r.json()["results"][0]
    assert set(first) == {"index", "relevance_score", "document"}
    assert first["document"]["text"] == texts[first["index"]]


def test_llamaindex_tei_postprocessor_shape(server, texts):
    # llama-index-postprocessor-tei-rerank: only {query, texts}; asserts one answer per text.
    r = requests.post(server.url + "/rerank", json={"query": QUERY, "texts": texts}, timeout=T)
    assert r.status_code == 200 and len(r.json()) == len(texts)
