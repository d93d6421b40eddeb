"""/v1/search and /v1/retrieve on a real recops-serve process (real Redis, a real model bundle and a
search bundle vectorized from a dirty catalogue by the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recops_localcluster.cluster import free_port
from tests.search.catalog import FORBIDDEN, write_catalog
from tests.support.chat_model import MODEL_NAME, ChatModel
from tests.support.redis_server import RedisServer
from tests.support.serving import ServerProc, train

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    rows = write_catalog(root / "catalog.parquet", copies=3)
    subprocess.run(
        [
            str(BIN / "recops-serve"),
            "vectorize",
            "--catalog",
            str(root / "catalog.parquet"),
            "--out",
            str(root / "s1"),
            "--version",
            "s1",
        ],
        check=True,
        capture_output=True,
    )
    train(root / "m1", "m1", 20_000, "--no-tune")
    with RedisServer(root / "redis") as redis:
        config = root / "config.json"
        config.write_text(
            json.dumps({"model_uri": str(root / "m1"), "search_uri": str(root / "s1"), "reload_seconds": 0.5})
        )
        server = ServerProc(config, redis.url, root / "server.log")
        try:
            yield server, rows
        finally:
            server.stop()


def test_search_ranks_filters_and_hides_unavailable(stack):
    server, rows = stack
    r = server.get("/v1/search", q="espresso beans for my coffee machine", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["search_version"] == "s1" and len(body["items"]) == 5
    assert body["items"][0]["title"].startswith("Espresso Coffee Beans")
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # a paraphrase with no shared keyword still finds the product (the vector half)
    r = server.get("/v1/search", q="frying pan", k=3)
    assert r.json()["items"][0]["title"].startswith("Cast Iron Skillet")
    # category filter: every result in the category, however many are asked for
    r = server.get("/v1/search", q="milk", k=50, category="Bakery > Cookies")
    items = r.json()["items"]
    assert items and all(i["category"] == "Bakery > Cookies" for i in items)
    # unavailable products never come back unless asked for
    unavailable = {i for i, row in rows.items() if not row["available"]}
    got = {i["item_id"] for i in server.get("/v1/search", q="kettle socks bread", k=100).json()["items"]}
    assert got and not got & unavailable and len(got) == len(rows) - len(unavailable)
    got = {
        i["item_id"]
        for i in server.get("/v1/search", q="kettle socks bread", k=100, include_unavailable="true").json()[
            "items"
        ]
    }
    assert unavailable <= got


def test_retrieve_fits_the_token_budget(stack):
    server, _ = stack
    r = server.post("/v1/retrieve", {"query": "what milk do you have", "budget_tokens": 300, "k": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokenizer"] == "all-MiniLM-L6-v2" and body["chunks"]
    assert body["tokens"] == sum(c["tokens"] for c in body["chunks"]) <= 300
    assert body["chunks"][0]["title"].startswith("Organic Whole Milk")
    for c in body["chunks"]:
        assert set(c) == {"item_id", "title", "category", "text", "tokens", "score"}
        assert not any(bad in c["text"] for bad in FORBIDDEN)
    small = server.post("/v1/retrieve", {"query": "milk", "budget_tokens": 40}).json()
    assert small["tokens"] <= 40


@pytest.mark.parametrize(
    ("path", "kw", "status", "needle"),
    [
        ("/v1/search", {}, 400, "q is required"),
        ("/v1/search", {"q": ""}, 400, "q must not be empty"),
        ("/v1/search", {"q": " \t "}, 400, "q must not be empty"),
        ("/v1/search", {"q": "milk " * 400}, 400, "longer than the 1000 limit"),
        ("/v1/search", {"q": "milk", "k": "0"}, 400, "k must be an integer between 1 and 100"),
        ("/v1/search", {"q": "milk", "k": "-1"}, 400, "k must be"),
        ("/v1/search", {"q": "milk", "k": "1e3"}, 400, "k must be"),
        ("/v1/search", {"q": "milk", "category": "Fuel"}, 400, "category 'Fuel' is not a category"),
        ("/v1/search", {"q": "milk", "include_unavailable": "maybe"}, 400, "include_unavailable"),
    ],
)
def test_search_bad_input(stack, path, kw, status, needle):
    r = stack[0].get(path, **kw)
    assert r.status_code == status and needle in r.json()["error"], r.text


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "body must be an object"),
        ({"budget_tokens": 10}, 400, "query is required"),
        ({"query": ""}, 400, "query must not be empty"),
        ({"query": "x" * 5000}, 400, "longer than the 1000 limit"),
        ({"query": "milk", "budget_tokens": 0}, 400, "budget_tokens must be an integer between 1 and 8192"),
        ({"query": "milk", "budget_tokens": "5"}, 400, "budget_tokens must be"),
        ({"query": "milk", "k": 51}, 400, "k must be an integer between 1 and 50"),
        ({"query": "milk", "top": 5}, 400, "unknown field 'top'"),
        ({"query": "milk " * 20_000}, 413, "larger than the 65536 byte limit"),
    ],
)
def test_retrieve_bad_input(stack, body, status, needle):
    r = stack[0].post("/v1/retrieve", body)
    assert r.status_code == status and needle in r.json()["error"], r.text


def test_methods_metrics_and_readiness(stack):
    server, _ = stack
    r = httpx.post(f"{server.url}/v1/search", content=b"{}", timeout=5)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = server.get("/v1/retrieve")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    ready = server.get("/readyz").json()
    assert ready["ready"] and ready["search"] == {"version": "s1", "error": None}
    server.get("/v1/search", q="green tea")
    metrics = server.get("/metrics").text
    assert 'recops_http_requests_total{arm="model",code="200",route="search"}' in metrics
    assert 'recops_http_requests_total{arm="model",code="400",route="retrieve"}' in metrics
    assert 'recops_search_bundle_info{version="s1"} 1.0' in metrics
    count = [ln for ln in metrics.splitlines() if ln.startswith("recops_search_query_embed_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 1
    # recommendations still answer beside search
    assert server.get("/v1/recommendations", user_id="u1").status_code == 200


def test_without_search_bundle_503_with_reason(stack, tmp_path):
    server, _ = stack
    config = tmp_path / "config.json"
    model = json.loads((Path(server.proc.args[3])).read_text())["model_uri"]
    config.write_text(json.dumps({"model_uri": model, "search_uri": str(tmp_path / "missing")}))
    other = ServerProc(config, None, tmp_path / "server.log")
    try:
        r = other.get("/v1/search", q="milk")
        assert r.status_code == 503, r.text
        assert r.json()["error"].startswith(
            "search not available: SearchBundleError: cannot load search bundle at"
        )
        assert other.get("/readyz").json()["search"]["error"].startswith("SearchBundleError")
        assert other.get("/v1/recommendations", user_id="u1").status_code == 200  # search never gates serving
    finally:
        other.stop()


def test_answer_is_503_until_a_model_api_is_configured(stack):
    server, _ = stack
    r = server.post("/v1/answer", {"question": "which milk do you have?"})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "answer synthesis is not configured (spec.search.assistant)"
    r = server.get("/v1/answer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"query": "milk"}, "unknown field 'query' (question, k, category)"),
        ({"question": ""}, "question must not be empty"),
        ({"question": "milk", "k": 0}, "k must be an integer between 1 and 50"),
        ({"question": "milk", "category": "Fuel"}, "category 'Fuel' is not a category"),
    ],
)
def test_answer_bad_input(stack, body, needle):
    r = stack[0].post("/v1/answer", body)
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_an_unreachable_model_api_is_a_502_that_still_carries_the_products(stack, tmp_path):
    """The model API's port is closed (nothing listens): the answer is a 502 naming the failure, with
    the retrieved chunks, and the outcome is counted; recommendations are untouched."""
    server, _ = stack
    key = tmp_path / "api-key"
    key.write_text("sk-test\n")
    config = json.loads(Path(server.proc.args[3]).read_text())
    config |= {
        "assistant_url": f"http://127.0.0.1:{free_port()}/v1",
        "assistant_model": "m",
        "assistant_timeout_seconds": 5,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    other = ServerProc(
        tmp_path / "config.json", None, tmp_path / "server.log", extra=["--assistant-key-file", str(key)]
    )
    try:
        r = other.post("/v1/answer", {"question": "what milk do you have", "k": 5})
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["error"] == "cannot reach the assistant model API: ConnectError"
        assert body["chunks"] and body["chunks"][0]["title"].startswith("Organic Whole Milk")
        assert body["model"] == "m" and body["search_version"] == "s1"
        metrics = other.get("/metrics").text
        assert 'recops_assistant_answers_total{outcome="upstream_error"} 1.0' in metrics
        assert 'recops_http_requests_total{arm="model",code="502",route="answer"} 1.0' in metrics
        key.write_text("")  # an emptied Secret: a 503 naming the file, never a crash
        r = other.post("/v1/answer", {"question": "what milk do you have"})
        assert (
            r.status_code == 503
            and r.json()["error"] == f"assistant key unavailable: assistant_key_file {key} is empty"
        )
        assert other.get("/v1/recommendations", user_id="u1").status_code == 200
    finally:
        other.stop()


def test_a_real_chat_model_answers_from_the_retrieved_products_only(stack, tmp_path):
    """llama.cpp's OpenAI-compatible server over Qwen2.5-Coder-1.5B-Instruct (make llm): the answer
    names a retrieved product with its citation, and nothing it cites was not retrieved."""
    server, _ = stack
    model = ChatModel(tmp_path)
    config = json.loads(Path(server.proc.args[3]).read_text())
    config |= {
        "assistant_url": model.url,
        "assistant_model": MODEL_NAME,
        "assistant_budget_tokens": 300,
        "assistant_max_answer_tokens": 80,
        "assistant_timeout_seconds": 240,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    other = ServerProc(tmp_path / "config.json", None, tmp_path / "server.log")
    try:
        r = httpx.post(
            f"{other.url}/v1/answer",
            json={"question": "Do you sell espresso coffee beans?", "k": 5},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        retrieved = {c["item_id"] for c in body["chunks"]}
        assert body["answer"] and body["usage"]["prompt_tokens"] > 50, body
        assert {c["item_id"] for c in body["citations"]} <= retrieved
        assert all(f"item {i}" not in body["answer"] for i in body["removed_citations"])
        assert body["grounded"], body  # a retrieved product, cited, and nothing else
        cited_titles = " ".join(c["title"] for c in body["citations"]).lower()
        assert "espresso" in cited_titles or "coffee" in cited_titles, body
        metrics = other.get("/metrics").text
        assert 'recops_assistant_answers_total{outcome="grounded"} 1.0' in metrics
    finally:
        other.stop()
        model.stop()
