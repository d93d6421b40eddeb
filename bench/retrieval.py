"""``python -m bench retrieval``: HNSW candidate retrieval (recops_serve.ann) vs exact numpy, one thread.

Real: the ALS item factors of taobao+diginetica (127,890 items; the trainer's settings, cached under
$RECOPS_BENCH_CACHE), queried with real users' vectors. Scale: 1 M (and more with
``RECOPS_BENCH_RETRIEVAL_SIZES=1000000,5000000``) synthetic item vectors drawn to match the real
factors' norms (resampled) and spectrum (the real covariance), queried with the same real user vectors:
for scale only, never for quality. Per row: build time (the trainer's threads), recall@100 vs exact and
queries/s on one thread, plain and filtered (10% of items unavailable + 20 excluded per query, inside the
search), with the exact baseline (one matrix-vector product + top-k per query) measured side by side.
Targets (issue #14): recall@100 >= 0.95 and >= 20x exact's throughput at 1 M.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recops_serve import ann

CACHE = Path(os.environ.get("RECOPS_BENCH_CACHE", Path.home() / ".cache" / "recops" / "bench"))
DATASET = "taobao+diginetica"
K = 100


def real_factors(dataset: str = DATASET) -> tuple[np.ndarray, np.ndarray]:
    """(item factors, user factors) of ALS with the trainer's settings on ``dataset`` (cached)."""
    path = CACHE / f"als-factors-{dataset}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["item_factors"], z["user_factors"]
    from recops_serve.data import load
    from recops_serve.train import fitted_als

    model = fitted_als(load(dataset))
    items, users = np.asarray(model.item_factors, np.float32), np.asarray(model.user_factors, np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, item_factors=items, user_factors=users)
    return items, users


def synthetic(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` vectors with the real factors' spectrum (Gaussian with their covariance) and norms
    (resampled from the real ones): the geometry HNSW sees, at another scale."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
    scale = s / np.sqrt(real.shape[0])
    out = np.empty((n, real.shape[1]), np.float32)
    norms = np.linalg.norm(real, axis=1)
    for lo in range(0, n, 250_000):
        z = rng.standard_normal((min(250_000, n - lo), real.shape[1])).astype(np.float32)
        x = mean + (z * scale) @ vt
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
        out[lo : lo + len(x)] = x * rng.choice(norms, size=len(x))[:, None]
    return out


def _qps(fn, queries: np.ndarray, seconds: float = 2.0) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn(queries[n % len(queries)])
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= 20:
            return n / el


def _filtered(index: ann.AnnIndex, ef: int, allowed: np.ndarray, excl: list[np.ndarray]):
    calls = [0]

    def search(q):
        calls[0] += 1
        index.search(q, K, allowed=allowed, exclude=excl[calls[0] % len(excl)], ef_search=ef)

    return search


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(index: ann.AnnIndex, queries: np.ndarray, n: int, mem: list) -> None:
    """What a server holds for this index: the file, then anonymous memory (the graph, read into RAM) and
    file-backed pages (the vectors, mapped) after loading it memory-mapped and answering queries."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ann.INDEX_FILE
        index.save(path)
        anon, file_ = _status_mb("RssAnon"), _status_mb("RssFile")
        loaded = ann.AnnIndex.load(path, index.ef_search, mmap=True)
        for q in queries:
            loaded.search(q, K)
        da, df = _status_mb("RssAnon") - anon, _status_mb("RssFile") - file_
        size = path.stat().st_size / 2**20
        per_m = 1e6 / n
        mem.append(
            [
                f"{n:,}",
                f"{size:,.0f}",
                f"{da:,.0f}",
                f"{df:,.0f}",
                f"{size * per_m:,.0f}",
                f"{da * per_m:,.0f}",
            ]
        )
        del loaded


def measure(
    name: str, items: np.ndarray, queries: np.ndarray, threads: int, rows: list, ms=(32,), mem=None
) -> None:
    n = items.shape[0]
    rng = np.random.default_rng(1)
    allowed = rng.random(n) >= 0.1
    excl = [rng.choice(n, 20, replace=False) for _ in range(64)]
    t_exact = min(len(queries), 200)
    truth, _ = ann.exact_top(items, queries, K)
    truth_f = np.vstack(
        [
            ann.exact_top(items, q, K, allowed=allowed, exclude=excl[i % 64])[0]
            for i, q in enumerate(queries[:200])
        ]
    )
    exact_qps = _qps(lambda q: ann.exact_top(items, q, K), queries[:t_exact])
    j = [0]

    def exact_filtered(q):
        j[0] += 1
        ann.exact_top(items, q, K, allowed=allowed, exclude=excl[j[0] % 64])

    exact_f_qps = _qps(exact_filtered, queries[:t_exact])
    rows.append(
        [
            name,
            f"{n:,}",
            "exact (numpy)",
            "-",
            "-",
            "1.000",
            f"{exact_qps:,.0f}",
            "1.0x",
            f"{exact_f_qps:,.0f}",
            "-",
        ]
    )
    for m in ms:
        t0 = time.perf_counter()
        index = ann.AnnIndex.build(items, m=m, ef_construction=ann.DEFAULT_EF_CONSTRUCTION, threads=threads)
        built = time.perf_counter() - t0
        if mem is not None:
            memory(index, queries, n, mem)
        for ef in (100, 200, 400):
            found, _ = index.search(queries, K, ef_search=ef)
            rec = ann.recall(found, truth)
            found_f = np.vstack(
                [
                    index.search(q, K, allowed=allowed, exclude=excl[i % 64], ef_search=ef)[0]
                    for i, q in enumerate(queries[:200])
                ]
            )
            rec_f = ann.recall(found_f, truth_f)
            qps = _qps(lambda q, ix=index, ef=ef: ix.search(q, K, ef_search=ef), queries)
            qps_f = _qps(_filtered(index, ef, allowed, excl), queries)
            rows.append(
                [
                    name,
                    f"{n:,}",
                    f"HNSW M={m} efC={ann.DEFAULT_EF_CONSTRUCTION} ef={ef}",
                    f"{built:.0f}",
                    f"{rec_f:.3f}",
                    f"{rec:.3f}",
                    f"{qps:,.0f}",
                    f"{qps / exact_qps:.0f}x",
                    f"{qps_f:,.0f}",
                    f"{qps_f / exact_f_qps:.0f}x",
                ]
            )
            print("  ", rows[-1], flush=True)


def run(table) -> None:
    threads = int(os.environ.get("RECOPS_BENCH_THREADS") or 2)
    sizes = [int(x) for x in (os.environ.get("RECOPS_BENCH_RETRIEVAL_SIZES") or "1000000").split(",") if x]
    ms = tuple(int(x) for x in (os.environ.get("RECOPS_BENCH_RETRIEVAL_M") or "32").split(","))
    items, users = real_factors()
    queries = ann.sample_queries(users, 1000, seed=3)
    ann.set_threads(1)
    norms = np.linalg.norm(items, axis=1)
    print(
        f"retrieval: {DATASET} ALS factors {items.shape}, item norm p5/p50/p95/max "
        f"{np.percentile(norms, 5):.3g}/{np.percentile(norms, 50):.3g}/{np.percentile(norms, 95):.3g}/{norms.max():.3g}; "
        f"{len(queries)} real user vectors as queries; build on {threads} threads, search on one",
        flush=True,
    )
    rows: list[list] = []
    mem: list[list] = []
    measure("real", items, queries, threads, rows, ms, mem)
    for n in sizes:
        measure("synthetic", synthetic(items, n), queries, threads, rows, ms, mem)
    table(
        f"Candidate retrieval, top-{K}, one search thread (load average {os.getloadavg()[0]:.1f} at the end)",
        [
            "items",
            "n",
            "method",
            "build s",
            "recall filtered",
            "recall@100",
            "q/s",
            "vs exact",
            "q/s filtered",
            "vs exact",
        ],
        rows,
    )
    table(
        "Index memory (M=32), loaded memory-mapped as the server does, after 1,000 searches",
        [
            "items",
            "file MB",
            "RSS anon MB (graph)",
            "RSS file MB (mapped)",
            "file MB per 1 M",
            "anon MB per 1 M",
        ],
        mem,
    )
