"""The 1 MiB-batch row of ``bench serve`` on its own (``python -m bench serve-batch``): p50/p99 of
normal GETs at 2,000 req/s offered without and with a 1 MiB event batch posted every second, the
batch's wall time, and the server's and Redis's CPU per batch (five batches posted on an idle
server). ``RECOPS_BENCH_BASELINE_TREE=<checkout>`` adds a server from that checkout's
``inference_image``/``operator`` (the code before a change), alternated round by round with ours on
one Redis, so the two are compared in the same minutes; ``RECOPS_BENCH_BATCH_ROUNDS`` (default 2);
``RECOPS_BENCH_BATCH_RATE`` the GETs offered per second (default 2,000; on a loaded machine pick a
rate it sustains without batches, else the p99 is queueing, not the batch's).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import cpu_seconds, load, loadgen, serve_processes, tree_cpu_seconds, tree_env

PATH = "/v1/recommendations?session_id=s1&k=50"
RATE = int(os.environ.get("RECOPS_BENCH_BATCH_RATE", "2000"))


def batch_body(item: int) -> tuple[bytes, int]:
    """As many view events (1,000 sessions) as fit in the 1 MiB body limit, and their count."""
    n = 18_500
    while True:
        events = [{"session_id": f"b{i % 1000}", "item_id": item, "type": "view"} for i in range(n)]
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        if len(body) <= 1 << 20:
            return body, n
        n -= 250


def batch_beside_traffic(port: int, item: int, rate: int = 2000, seconds: int = 10) -> dict:
    """Normal GETs at ``rate`` (open loop) while 1 MiB event batches (18,000 events) are posted one
    after another, one a second; returns the GETs' latency and the batches' outcome."""
    body, n = batch_body(item)
    stop = threading.Event()
    posted: list[float] = []

    def post() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                assert c.post("/v1/events", content=body).json()["stored"] == n
                posted.append(time.perf_counter() - t0)
                stop.wait(max(0.0, 1.0 - (time.perf_counter() - t0)))

    t = threading.Thread(target=post)
    t.start()
    try:
        at = loadgen(f"http://127.0.0.1:{port}{PATH}", rate, seconds)
    finally:
        stop.set()
        t.join()
    return {
        **at,
        "load": load(),
        "batches": len(posted),
        "batch_s": max(posted) if posted else 0.0,
        "bytes": len(body),
        "events": n,
    }


def cost_per_batch(port: int, pid: int, redis_pid: int, item: int, batches: int = 5) -> dict:
    """Median wall time, and mean server / Redis CPU, of one batch posted on an otherwise idle server."""
    body, n = batch_body(item)
    walls = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        assert c.post("/v1/events", content=body).json()["stored"] == n  # warm
        cpu0, rcpu0 = tree_cpu_seconds(pid), cpu_seconds(redis_pid)
        for _ in range(batches):
            t0 = time.perf_counter()
            assert c.post("/v1/events", content=body).json()["stored"] == n
            walls.append(time.perf_counter() - t0)
        cpu, rcpu = tree_cpu_seconds(pid) - cpu0, cpu_seconds(redis_pid) - rcpu0
    return {
        "wall_ms": 1000 * sorted(walls)[len(walls) // 2],
        "cpu_ms": 1000 * cpu / batches,
        "redis_ms": 1000 * rcpu / batches,
    }


def row(port: int, pid: int, redis_pid: int, item: int) -> dict:
    """One round on one server: the control (no batch), the batch row, the idle cost of a batch."""
    alone = loadgen(f"http://127.0.0.1:{port}{PATH}", RATE, 10)
    alone_load = load()
    side = batch_beside_traffic(port, item, RATE)
    return {
        "alone": alone,
        "alone_load": alone_load,
        "side": side,
        **cost_per_batch(port, pid, redis_pid, item),
    }


def run(table, bundle_path: Path) -> None:
    from recops_serve.bundle import load_bundle
    from tests.support.redis_server import RedisServer

    b = load_bundle(str(bundle_path))
    ids = b.item_ids[b.pop_global[:2000]].tolist()
    work = Path(tempfile.mkdtemp(prefix="recops-bench-batch-"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    variants = [("ours", [], env)]
    if tree := os.environ.get("RECOPS_BENCH_BASELINE_TREE"):
        variants.insert(0, ("baseline tree", [], tree_env(env, tree)))
    rounds = int(os.environ.get("RECOPS_BENCH_BATCH_ROUNDS", "2"))
    with RedisServer(work / "redis") as rs:
        import redis as redis_py

        r = redis_py.Redis.from_url(rs.url)
        pipe = r.pipeline()
        for s in range(200):
            for j in range(10):
                pipe.lpush(f"recops:s:s{s}", f"{ids[(s * 7 + j) % len(ids)]}:view:{time.time():.3f}")
        pipe.execute()
        with serve_processes(bundle_path, rs.url, variants) as servers:
            for port, _ in servers.values():
                httpx.get(f"http://127.0.0.1:{port}{PATH}")
            rows = []
            for n in range(rounds):
                for name, (port, proc) in servers.items():
                    x = row(port, proc.pid, rs.proc.pid, ids[0])
                    a, s = x["alone"], x["side"]
                    rows.append([
                        f"{name} #{n + 1}", f"{a['p50_ms']} / {a['p99_ms']}", f"{s['p50_ms']} / {s['p99_ms']}",
                        f"{a['achieved_rps']} / {s['achieved_rps']}", a["errors"] + s["errors"], s["batches"],
                        f"{s['batch_s']:.2f}", f"{x['wall_ms']:.0f}", f"{x['cpu_ms']:.0f}", f"{x['redis_ms']:.0f}",
                        f"{x['alone_load']} / {s['load']}",
                    ])  # fmt: skip
            body, events = batch_body(ids[0])
            table(
                f"serve-batch: normal GETs at {RATE:,} req/s offered, without / with a 1 MiB batch ({events:,} events, "
                f"{len(body):,} bytes) posted every second (target p99 <= 5 ms); idle cost of one batch",
                ["server", "p50 / p99 ms alone", "p50 / p99 ms with batches", "achieved/s", "GET errors",
                 "batches", "slowest batch s", "idle batch ms", "server CPU ms/batch", "Redis CPU ms/batch",
                 "load avg"],
                rows,
            )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
