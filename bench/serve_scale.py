"""``python -m bench serve-scale``: the served call and the HTTP path at 1 M items with the HNSW index.

No dataset here has a million items, so the bundle is synthetic, for scale only (never for quality): the
item vectors are ``bench.retrieval.synthetic`` (the taobao+diginetica ALS factors' spectrum and norms),
users' vectors are real users' vectors resampled, the rest (neighbours, histories, categories,
popularity) is random with the trainer's shapes (50 neighbours, 100 candidates, 64 factors). The bundle
is made as the trainer makes one in index mode: ``user_top`` with zero columns, ``user_factors``, the
index built with the trainer's settings and its efSearch picked by ``ann.tune_ef`` on 1,000 users'
vectors at the default gate (0.95); it is cached under $RECOPS_BENCH_CACHE
(``RECOPS_BENCH_SCALE_ITEMS`` / ``_USERS`` change the size).

Printed: the build (index seconds on the trainer's 2 threads, recall, peak RSS of the building process),
the server's load time and memory (RSS anonymous / file-backed, i.e. the mapped vectors), the in-process
``ranking.answer`` p50/p99 for a known user (index search for their vector) and for an anonymous session
(fold-in + index search), and over HTTP one worker with Redis: max req/s (wrk -c64) and p50/p99 at
2,000 req/s offered (bench.loadgen, open loop), both kinds of request. Last, bundle size of precomputed
candidates vs the index at 1 M and 10 M users (from the array sizes and the index file measured here).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recops_serve import ann

N_ITEMS = int(os.environ.get("RECOPS_BENCH_SCALE_ITEMS") or 1_000_000)
N_USERS = int(os.environ.get("RECOPS_BENCH_SCALE_USERS") or 1_000_000)
N_CATEGORIES = 4000
NEIGHBOURS = 50
CANDIDATES = 100
HISTORY = 10


def _mb(pid: int | str, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def synthetic_bundle(path: Path, log=print) -> dict:
    """Write (once) the synthetic index-mode bundle at ``path``; returns the build figures."""
    from bench.retrieval import real_factors, synthetic
    from recops_serve import sessionknn
    from recops_serve.bundle import ModelBundle, save_bundle
    from recops_serve.ranking import Blend
    from recops_serve.train import Params

    info_path = path / "bench-build.json"
    if (path / "manifest.json").exists() and info_path.exists():
        return json.loads(info_path.read_text())
    rng = np.random.default_rng(7)
    real_items, real_users = real_factors()
    items = synthetic(real_items, N_ITEMS)
    users = real_users[rng.integers(0, real_users.shape[0], N_USERS)].astype(np.float32)
    queries = ann.sample_queries(users, ann.RECALL_SAMPLE, seed=0)
    log(f"serve-scale: building the HNSW index over {N_ITEMS:,} synthetic items (2 threads)")
    t0 = time.monotonic()
    index, tuned = ann.build_tuned(items, queries, CANDIDATES, 0.95, threads=2)
    built = time.monotonic() - t0
    log(f"serve-scale: built in {built:.0f} s, efSearch {tuned.ef_search}, recall {tuned.recall}")
    n, m = N_ITEMS, N_USERS
    pop = rng.pareto(1.2, n).astype(np.float32)
    order = np.argsort(-pop, kind="stable").astype(np.int32)
    cat = rng.integers(0, N_CATEGORIES, n).astype(np.int32)
    by_cat = order[np.argsort(cat[order], kind="stable")]
    cat_ptr = np.r_[0, np.cumsum(np.bincount(cat, minlength=N_CATEGORIES))].astype(np.int64)
    hist = rng.integers(0, n, m * HISTORY).astype(np.int32)
    arrays = {
        "item_ids": np.arange(1, n + 1, dtype=np.int64),
        "item_category": cat,
        "item_first_seen": np.zeros(n),
        "item_available": np.ones(n, bool),
        "neighbors": rng.integers(0, n, (n, NEIGHBOURS)).astype(np.int32),
        "neighbor_scores": np.sort(rng.random((n, NEIGHBOURS), np.float32), axis=1)[:, ::-1].copy(),
        "item_factors": items,
        "user_ids": np.array([f"u{i}" for i in range(m)]),
        "user_top": np.empty((m, 0), np.int32),
        "user_top_scores": np.empty((m, 0), np.float32),
        "user_hist_ptr": np.arange(0, m * HISTORY + 1, HISTORY, dtype=np.int64),
        "user_hist": hist,
        "user_hist_w": np.ones(hist.size, np.float32),
        "pop_global": order,
        "item_pop": pop,
        "category_names": np.array([f"c{i}" for i in range(N_CATEGORIES)]),
        "cat_ptr": cat_ptr,
        "cat_items": by_cat.astype(np.int32),
        **sessionknn.build(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0), n),
        "user_factors": users,
    }
    blend = Blend(session_knn=0.0, neighbours=0.01, als=1.0, fold_in=1.0, history_neighbours=0.1)
    manifest = {
        "version": "synthetic-scale",
        "dataset": f"synthetic {n} items (scale only)",
        "params": {**Params().__dict__, "ef_ladder": list(ann.EF_LADDER)},
        "retrieval": {
            "mode": "index",
            "candidates": CANDIDATES,
            "index": ann.INDEX_FILE,
            "m": ann.DEFAULT_M,
            "ef_search": tuned.ef_search,
            "k": tuned.k,
            "recall_at_k": tuned.recall,
            "recall_by_ef_search": {str(e): r for e, r in tuned.by_ef.items()},
        },
        "serving": {"blend": blend.as_dict(), "exclude": {"seen": True, "purchased": True}},
        "metrics": {},
    }
    b = ModelBundle(manifest=manifest, arrays=arrays, ann=index)
    t1 = time.monotonic()
    save_bundle(b, str(path))
    info = {
        "items": n,
        "users": m,
        "index_build_s": round(built, 1),
        "ef_search": tuned.ef_search,
        "recall": tuned.recall,
        "recall_by_ef": tuned.by_ef,
        "save_s": round(time.monotonic() - t1, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": round(os.getloadavg()[0], 1),
    }
    info_path.write_text(json.dumps(info))
    return info


def _pcts(ts: list[float]) -> tuple[float, float]:
    ts = sorted(ts)
    return 1000 * ts[len(ts) // 2], 1000 * ts[int(0.99 * (len(ts) - 1))]


def in_process(path: Path) -> list[list]:
    """``ranking.answer`` p50/p99 in this process: a known user (their vector -> the index) and an
    anonymous session of 5 clicks (fold-in -> the index)."""
    from recops_contracts.serving import ServeConfig
    from recops_serve import ranking
    from recops_serve.bundle import load_bundle

    b = load_bundle(str(path))
    ann.set_threads(1)
    cfg = ranking.RankConfig.resolve(b, ServeConfig())
    rng = np.random.default_rng(3)
    rows = []
    for kind in ("known user (index)", "anonymous session, 5 clicks (fold-in + index)"):
        ts = []
        for i in range(2000):
            if kind.startswith("known"):
                uidx, sess = int(rng.integers(0, b.user_ids.shape[0])), []
            else:
                uidx, sess = None, rng.integers(0, b.n_items, 5).tolist()
            t0 = time.perf_counter()
            ranking.answer(b, cfg, uidx, sess, 50)
            if i >= 100:
                ts.append(time.perf_counter() - t0)
        p50, p99 = _pcts(ts)
        rows.append([kind, f"{p50:.2f}", f"{p99:.2f}"])
    return rows


def run(table) -> None:
    from bench.common import BIN, CACHE, SERVE_COLUMNS, loadgen, serve_cells
    from recops_localcluster.procs import wait_http
    from recops_serve.bundle import SCHEMA_HASH
    from tests.support.redis_server import RedisServer, free_port

    path = CACHE / f"bundle-synthetic-{N_ITEMS}x{N_USERS}-{SCHEMA_HASH}"
    info = synthetic_bundle(path)
    table(
        f"serve-scale: synthetic bundle, {info['items']:,} items x {info['users']:,} users (scale only), built "
        f"with load average {info['load_average']}",
        ["measure", "value"],
        [
            ["index build s (M=32, efC=200, 2 threads)", info["index_build_s"]],
            ["efSearch picked / recall@100 (1,000 users)", f"{info['ef_search']} / {info['recall']}"],
            ["recall by efSearch", json.dumps(info["recall_by_ef"])],
            ["bundle save s", info["save_s"]],
            ["peak RSS of the build (MB)", f"{info['peak_rss_mb']:,}"],
        ],
    )
    sizes = {p.name: p.stat().st_size / 2**20 for p in path.iterdir()}
    work = Path(tempfile.mkdtemp(prefix="recops-bench-scale-"))
    with RedisServer(work / "redis") as redis:
        import redis as redis_py

        r = redis_py.Redis.from_url(redis.url)
        pipe = r.pipeline()
        for s in range(200):
            for j in range(5):
                pipe.lpush(
                    f"recops:s:s{s}", f"{1 + (s * 7919 + j * 104729) % N_ITEMS}:view:{time.time():.3f}"
                )
        pipe.execute()
        port = free_port()
        t0 = time.monotonic()
        server = subprocess.Popen(
            [
                str(BIN / "recops-serve"),
                "serve",
                "--bundle",
                str(path),
                "--redis-url",
                redis.url,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", server, timeout=900)
            loaded = time.monotonic() - t0
            worker = _worker(server.pid)
            mem0 = (_mb(worker, "RssAnon"), _mb(worker, "RssFile"))
            rows = []
            for kind, q in (
                ("known user (index)", "user_id=u12345&k=50"),
                ("anonymous session, 5 clicks (fold-in + index)", "session_id=s1&k=50"),
            ):
                url = f"http://127.0.0.1:{port}/v1/recommendations?{q}"
                _wrk(url, 3)
                w = _wrk(url, 10, pid=server.pid)
                at = loadgen(url, 2000, 10)
                rows.append([kind, *serve_cells(w, at)])
            mem1 = (_mb(worker, "RssAnon"), _mb(worker, "RssFile"), _mb(worker, "VmHWM"))
        finally:
            server.terminate()
            server.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    table(
        f"serve-scale: one worker, top-50, {N_ITEMS:,} items, Redis session features (load average {load:.1f})",
        ["request", *SERVE_COLUMNS],
        rows,
    )
    table(
        "serve-scale: in-process ranking.answer (one thread), top-50",
        ["request", "p50 ms", "p99 ms"],
        in_process(path),
    )
    per_m = 1e6 / N_ITEMS
    table(
        f"serve-scale: server memory at {N_ITEMS:,} items x {N_USERS:,} users (the worker process)",
        ["measure", "value"],
        [
            ["load to ready (s)", f"{loaded:.0f}"],
            ["bundle files (MB)", ", ".join(f"{k} {v:,.0f}" for k, v in sorted(sizes.items()))],
            ["RSS anon / file-backed after load (MB)", f"{mem0[0]:,.0f} / {mem0[1]:,.0f}"],
            ["RSS anon / file-backed after traffic (MB)", f"{mem1[0]:,.0f} / {mem1[1]:,.0f}"],
            ["peak RSS (VmHWM, MB)", f"{mem1[2]:,.0f}"],
            ["RSS per 1 M items (MB, all arrays + index)", f"{(mem1[0] + mem1[1]) * per_m:,.0f}"],
        ],
    )
    index_mb = sizes.get(ann.INDEX_FILE, 0.0)
    rows = []
    for users in (1_000_000, 10_000_000):
        pre = users * CANDIDATES * 8 / 2**20  # user_top int32 + user_top_scores float32
        idx = users * 64 * 4 / 2**20  # user_factors float32[users, 64]
        rows.append([f"{users:,}", f"{pre:,.0f}", f"{idx:,.0f} + index {index_mb:,.0f}"])
    table(
        f"serve-scale: per-user bundle arrays, precomputed candidates vs index ({N_ITEMS:,} items; "
        "computed from the array sizes, the index file measured)",
        ["users", "precomputed user_top + scores (MB)", "index mode user_factors + ann.faiss (MB)"],
        rows,
    )


def _wrk(url: str, seconds: int, conns: int = 64, pid: int | None = None) -> dict[str, float]:
    """req/s and, with ``pid``, the server's CPU microseconds per request (its process tree), as bench
    serve measures them (bench.__main__ imports this module, so not from there)."""
    from bench.common import tree_cpu_seconds

    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    cpu = (tree_cpu_seconds(pid) - cpu0) if pid else 0.0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "cpu_us": 1e6 * cpu / max(1, n),
    }


def _worker(pid: int) -> int:
    """granian's worker process (the child that holds the bundle), else the server itself."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return int(kids[0]) if kids else pid
