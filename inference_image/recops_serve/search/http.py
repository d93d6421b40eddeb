"""``GET /v1/search``, ``POST /v1/retrieve`` and ``POST /v1/visual-search``: the HTTP side of catalogue search.

``GET /v1/search?q=&k=&category=&include_unavailable=``: ``q`` 1..1000 characters (blank-only is
empty), ``k`` 1..100 (default 10), ``category`` a catalogue category string (exact; unknown -> 400),
unavailable products only with ``include_unavailable=true``. ``POST /v1/retrieve`` with
``{"query", "budget_tokens"? (1..8192, default 1000), "k"? (1..50 chunks, default 20), "category"?}``
(body at most 64 KiB): the best chunks with product id, title, category and text, while their
token count fits the budget. The model reads at most 64 query word pieces (the rest is ignored).
``POST /v1/answer`` with ``{"question", "k"?, "category"?}``: those chunks (under the configured
``assistant_budget_tokens``) answered by the configured chat model, its citations checked
(``assistant.py``); 503 when no model API is configured, 502/504 (with the chunks) when it fails.
Answers are not mirrored while shadowing: each costs a model call.

``POST /v1/visual-search?k=&category=&include_unavailable=`` with the image bytes as the body (JPEG,
PNG, WebP or GIF; at most 8 MiB, larger -> 413 naming the limit, refused on Content-Length before
reading; at most 40 Mpx declared, larger -> 413 as a decompression bomb; not an image, truncated or
corrupt -> 400): the ``k`` (1..100, default 10) most similar available products by image
(``visual.py``). A bundle without an image index is a 503 saying so.

The query embedding (an onnxruntime forward pass, milliseconds of CPU) runs on one dedicated thread,
so the event loop keeps serving recommendations and events meanwhile (onnxruntime and numpy release
the GIL while they compute); searches queue for that thread in arrival order. A missing search bundle
is a 503 with the reason; bad input a 400 naming the field, never a 5xx.

While shadowing (``shadow_url``), an answered search, retrieve or visual search is mirrored to the
candidate, which serves its own search bundle, after our answer is sent (``shadow.py``: bounded, off
the request path; an image over ``shadow.MAX_BODY`` is not mirrored, counted ``dropped``); the
overlap of the product ids is ``recops_shadow_topk_overlap_ratio{endpoint}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
from prometheus_client import Counter, Gauge, Histogram

from recops_serve import metrics as m
from recops_serve import shadow
from recops_serve.search import assistant
from recops_serve.search.image_decode import MAX_IMAGE_BYTES, ImageInputError, decode
from recops_serve.search.service import MAX_QUERY_CHARS, SearchInputError, SearchService

JSON = [("content-type", "application/json")]
MAX_K = 100
MAX_RETRIEVE_K = 50
MAX_BUDGET = 8192
MAX_RETRIEVE_BODY = 64 << 10
ROUTES = ("search", "retrieve", "visual_search", "answer")
PATHS = {
    "/v1/search": "search",
    "/v1/retrieve": "retrieve",
    "/v1/visual-search": "visual_search",
    "/v1/answer": "answer",
}
CODES = ("200", "400", "405", "413", "500", "502", "503", "504")

search_latency = {r: m.request_duration.labels(r, "model") for r in ROUTES}
search_requests = {(r, c): m.requests_total.labels(r, "model", c) for r in ROUTES for c in CODES}
embed_seconds = Histogram(
    "recops_search_query_embed_seconds",
    "Query embedding time (tokenize + forward pass) on the search thread",
    buckets=(0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25),
    registry=m.REGISTRY,
)
image_embed_seconds = Histogram(
    "recops_search_image_embed_seconds",
    "Query image decode + resize + EfficientNet-Lite0 forward pass on the search thread",
    buckets=(0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5),
    registry=m.REGISTRY,
)
search_results = Histogram(
    "recops_search_results",
    "Products (search) or chunks (retrieve) returned per request",
    ["route"],
    buckets=(0, 1, 5, 10, 20, 50, 100),
    registry=m.REGISTRY,
)
empty_results = Counter(
    "recops_search_empty_results_total", "Searches that found nothing", ["route"], registry=m.REGISTRY
)
search_bundle_info = Gauge(
    "recops_search_bundle_info", "Loaded search bundle version", ["version"], registry=m.REGISTRY
)
for _c in search_requests.values():
    _c.inc(0)
for _r in ROUTES:
    empty_results.labels(_r).inc(0)


class BadSearch(ValueError):
    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="recops-search")


def _int(raw: Any, name: str, lo: int, hi: int, text: bool = False) -> int:
    """An integer in [lo, hi]: from a query string (``text``: ASCII digits) or a JSON number."""
    if text:
        if not isinstance(raw, str):
            raise BadSearch(f"{name} must be an integer between {lo} and {hi}, got {raw!r}")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            raise BadSearch(f"{name} must be an integer between {lo} and {hi}, got {raw!r}")
        raw = int(raw)
    if type(raw) is not int or not lo <= raw <= hi:
        raise BadSearch(f"{name} must be an integer between {lo} and {hi}, got {raw!r}")
    return raw


def _query(raw: Any, name: str) -> str:
    if not isinstance(raw, str):
        raise BadSearch(f"{name} is required: a non-empty string of at most {MAX_QUERY_CHARS} characters")
    if len(raw) > 4 * MAX_QUERY_CHARS:
        raise BadSearch(f"{name} is {len(raw)} characters, longer than the {MAX_QUERY_CHARS} limit")
    q = " ".join(raw.split())
    if not q:
        raise BadSearch(f"{name} must not be empty")
    if len(q) > MAX_QUERY_CHARS:
        raise BadSearch(f"{name} is {len(q)} characters, longer than the {MAX_QUERY_CHARS} limit")
    return q


def _category(svc: SearchService, raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str) or len(raw) > 512:
        raise BadSearch("category must be a catalogue category string")
    try:
        return svc.category_code(raw)
    except SearchInputError as e:
        raise BadSearch(str(e)) from None


def _no_search(why: str | None) -> dict:
    """The 503 answer of every search route while no search bundle is loaded, with the reason."""
    return {"error": f"search not available: {why or 'no search bundle configured'}"}


def _flag(raw: str | None, name: str) -> bool:
    if raw in (None, "", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise BadSearch(f"{name} must be true or false, got {raw!r}")


async def _run(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn, *args)


def _timed_search(svc: SearchService, q: str, k: int, cat: int | None, avail: bool) -> list[dict]:
    t0 = time.perf_counter()
    cached = svc.embed_query.cache_info().hits
    svc.embed_query(q)
    if svc.embed_query.cache_info().hits == cached:
        embed_seconds.observe(time.perf_counter() - t0)
    return svc.search(q, k, cat, avail)


def _timed_retrieve(svc: SearchService, q: str, budget: int, k: int, cat: int | None):
    t0 = time.perf_counter()
    cached = svc.embed_query.cache_info().hits
    svc.embed_query(q)
    if svc.embed_query.cache_info().hits == cached:
        embed_seconds.observe(time.perf_counter() - t0)
    return svc.retrieve(q, budget, k, cat)


async def search(svc: SearchService | None, query_string: str, why_not: str | None) -> tuple[int, dict]:
    try:
        q = dict(parse_qsl(query_string, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise BadSearch("query string is not valid UTF-8") from None
    if svc is None:
        return 503, _no_search(why_not)
    text = _query(q.get("q"), "q")
    k = _int(q["k"], "k", 1, MAX_K, text=True) if "k" in q else 10
    cat = _category(svc, q.get("category"))
    avail = not _flag(q.get("include_unavailable"), "include_unavailable")
    items = await _run(_timed_search, svc, text, k, cat, avail)
    search_results.labels("search").observe(len(items))
    if not items:
        empty_results.labels("search").inc()
    return 200, {"search_version": svc.bundle.version, "query": text, "items": items}


def _object(body: bytes, fields: tuple[str, ...], shape: str) -> dict:
    """The JSON object of a POST body, with no field outside ``fields``; BadSearch saying what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadSearch(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadSearch(f"body must be an object: {shape}")
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise BadSearch(f"unknown field {unknown[0]!r} ({', '.join(fields)})")
    return doc


async def retrieve(svc: SearchService | None, body: bytes, why_not: str | None) -> tuple[int, dict]:
    doc = _object(
        body,
        ("query", "budget_tokens", "k", "category"),
        '{"query": "...", "budget_tokens"?: int, "k"?: int}',
    )
    if svc is None:
        return 503, _no_search(why_not)
    text = _query(doc.get("query"), "query")
    budget = _int(doc.get("budget_tokens", 1000), "budget_tokens", 1, MAX_BUDGET)
    k = _int(doc.get("k", 20), "k", 1, MAX_RETRIEVE_K)
    cat = _category(svc, doc.get("category"))
    chunks, used = await _run(_timed_retrieve, svc, text, budget, k, cat)
    search_results.labels("retrieve").observe(len(chunks))
    if not chunks:
        empty_results.labels("retrieve").inc()
    return 200, {
        "search_version": svc.bundle.version,
        "query": text,
        "budget_tokens": budget,
        "tokens": used,
        "tokenizer": svc.bundle.manifest["model"]["name"],
        "chunks": chunks,
    }


def _model_api(server) -> assistant.ModelApi | None:
    """The configured model API client, rebuilt when its config changed; the old one is closed once
    its answers in flight have had their whole deadline."""
    cfg = server.config
    current = server.assistant
    if cfg.assistant_url is None or cfg.assistant_model is None:
        wanted = None
    else:
        wanted = (
            cfg.assistant_url,
            cfg.assistant_model,
            cfg.assistant_timeout_seconds,
            cfg.assistant_max_answer_tokens,
        )
    if current is not None and current.settings == wanted:
        return current
    if current is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(current.timeout + 1, lambda: loop.create_task(current.close()))
    server.assistant = assistant.ModelApi(*wanted) if wanted else None
    return server.assistant


async def answer(server, body: bytes) -> tuple[int, dict]:
    """Retrieve the chunks for the question, have the model answer from them, check its citations."""
    doc = _object(body, ("question", "k", "category"), '{"question": "...", "k"?: int, "category"?: str}')
    svc = server.search
    if svc is None:
        return 503, _no_search(server.search_error)
    question = _query(doc.get("question"), "question")
    k = _int(doc.get("k", 20), "k", 1, MAX_RETRIEVE_K)
    cat = _category(svc, doc.get("category"))
    api = _model_api(server)
    if api is None:
        return 503, {"error": "answer synthesis is not configured (spec.search.assistant)"}
    budget = server.config.assistant_budget_tokens
    chunks, _ = await _run(_timed_retrieve, svc, question, budget, k, cat)
    base = {"search_version": svc.bundle.version, "question": question, "model": api.model}
    if not chunks:  # nothing to ground an answer in: the model is not asked
        assistant.answers_total.labels("no_context").inc()
        reason = "no catalogue text matched the question"
        return 200, {
            **base,
            "answer": None,
            "grounded": False,
            "reason": reason,
            "citations": [],
            "chunks": [],
        }
    try:
        key = server.settings.assistant_key()
    except ValueError as e:
        return 503, {**base, "error": f"assistant key unavailable: {e}", "chunks": chunks}
    t0 = time.perf_counter()
    try:
        done = await api.complete(assistant.messages(question, chunks), key)
    except assistant.AssistantError as e:
        assistant.answers_total.labels(e.outcome).inc()
        return e.status, {**base, "error": str(e), "chunks": chunks}
    assistant.observe(done, time.perf_counter() - t0)
    titles = {c["item_id"]: c["title"] for c in chunks}
    checked = assistant.check_citations(done.text, set(titles))
    assistant.removed_total.inc(len(checked.removed))
    assistant.answers_total.labels("grounded" if checked.grounded else "ungrounded").inc()
    return 200, {
        **base,
        "model": done.model,
        "answer": checked.text,
        "grounded": checked.grounded,
        "citations": [{"item_id": i, "title": titles[i]} for i in checked.cited],
        "removed_citations": checked.removed,
        "finish_reason": done.finish_reason,
        "usage": done.usage,
        "chunks": chunks,
    }


def _timed_visual(svc, data: bytes, k: int, cat: int | None, avail: bool) -> list[dict]:
    t0 = time.perf_counter()
    try:
        rgb = decode(data)
    except ImageInputError as e:
        raise BadSearch(str(e), e.status) from None
    qv = svc.embed(rgb)
    image_embed_seconds.observe(time.perf_counter() - t0)
    return svc.search(qv, k, cat, avail)


async def visual_search(server, scope, proto, read_body) -> tuple[int, dict, bytes]:
    """(status, answer, the image read: mirrored while shadowing)."""
    try:
        q = dict(parse_qsl(scope.query_string, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise BadSearch("query string is not valid UTF-8") from None
    unknown = sorted(set(q) - {"k", "category", "include_unavailable"})
    if unknown:
        raise BadSearch(f"unknown parameter {unknown[0]!r} (k, category, include_unavailable)")
    k = _int(q["k"], "k", 1, MAX_K, text=True) if "k" in q else 10
    avail = not _flag(q.get("include_unavailable"), "include_unavailable")
    svc, vis = server.search, server.visual
    if svc is None:
        return 503, _no_search(server.search_error), b""
    if vis is None:
        return (
            503,
            {"error": f"search bundle {svc.bundle.version} has no image index (vectorize --visual)"},
            b"",
        )
    cat = _category(svc, q.get("category"))
    try:
        data = await read_body(scope, proto, MAX_IMAGE_BYTES)
    except ValueError as e:  # TooLarge (413) names the limit
        raise BadSearch(f"image {e}", getattr(e, "status", 400)) from None
    except Exception as e:  # the client sent less than it announced, bad chunking
        raise BadSearch(f"incomplete request body: {type(e).__name__}") from None
    items = await _run(_timed_visual, vis, data, k, cat, avail)
    search_results.labels("visual_search").observe(len(items))
    if not items:
        empty_results.labels("visual_search").inc()
    answer = {"search_version": svc.bundle.version, "model": vis.bundle.manifest["visual"]["model"]["name"]}
    return 200, {**answer, "items": items}, data


async def handle(server, scope, proto, read_body) -> None:
    """Route one request to /v1/search, /v1/retrieve, /v1/visual-search or /v1/answer (``server``
    is the app's Server)."""
    route = PATHS[scope.path]
    t0, body = time.perf_counter(), b""
    want = "GET" if route == "search" else "POST"
    if scope.method != want and not (route == "search" and scope.method == "HEAD"):
        status, payload = 405, {"error": f"method not allowed: use {want}"}
        headers = [*JSON, ("allow", "GET, HEAD" if route == "search" else "POST")]
    else:
        headers = JSON
        svc, why_not = server.search, server.search_error
        try:
            if route == "search":
                status, payload = await search(svc, scope.query_string, why_not)
            elif route == "visual_search":
                status, payload, body = await visual_search(server, scope, proto, read_body)
            else:
                try:
                    body = await read_body(scope, proto, MAX_RETRIEVE_BODY)
                except ValueError:
                    raise
                except Exception as e:  # the client sent less than it announced, bad chunking
                    raise BadSearch(f"incomplete request body: {type(e).__name__}") from None
                if route == "answer":
                    status, payload = await answer(server, body)
                else:
                    status, payload = await retrieve(svc, body, why_not)
        except BadSearch as e:
            status, payload = e.status, {"error": str(e)}
        except ValueError as e:  # the app's BadRequest / TooLarge (body limit): status on the class
            status, payload = getattr(e, "status", 400), {"error": str(e)}
        except Exception as e:  # pragma: no cover - last resort, still a JSON answer
            status, payload = 500, {"error": f"internal error: {type(e).__name__}"}
    proto.response_bytes(status, headers, orjson.dumps(payload))
    search_requests[(route, str(status))].inc()
    search_latency[route].observe(time.perf_counter() - t0)
    if status == 200 and scope.method != "HEAD" and route in MIRRORED:
        _mirror(server, route, scope, body, payload)


#: what the candidate is asked again while shadowing, and how its answer's product ids are read
MIRRORED = {"search": shadow.item_ids, "retrieve": shadow.chunk_products, "visual_search": shadow.item_ids}


def _mirror(server, route: str, scope, body: bytes, payload: dict) -> None:
    """After our answer is sent: the same request (query string, body and its content type as the
    client sent them) to the shadow target, at the configured percent."""
    ids = MIRRORED[route]
    if route == "search":
        request = ("GET", f"/v1/search?{scope.query_string}", b"", "")
    elif route == "retrieve":
        request = ("POST", "/v1/retrieve", body, "application/json")
    else:
        kind = _content_type(scope.headers.get("content-type"))
        request = ("POST", f"/v1/visual-search?{scope.query_string}", body, kind)
    server.mirror.maybe(server.config, route, request, ids(payload), ids)


def _content_type(raw: str | None) -> str:
    """The client's content type, if it is a printable header value (it is written into a request)."""
    if raw and raw.isascii() and raw.isprintable() and len(raw) <= 200:
        return raw
    return "application/octet-stream"
