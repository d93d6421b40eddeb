"""``python -m bench [serve|serve-stream|serve-batch|ranking|train|train-scale|retrieval|serve-scale|operator|rollout|business|stream|search|visual-search|scaling|all]`` (``make bench``): measured on this machine, printed as tables.

serve: one recops-serve worker vs the textbook baseline (FastAPI + redis-py + numpy brute force,
bench/baseline_server.py), same bundle (all items of taobao+diginetica, 127,890, where ../shared/data
is present, else completejourney; RECOPS_BENCH_DATASET picks another), same Redis, run side by side:
max requests/s (wrk, 64 connections), p50/p99 at 2,000 req/s offered (open-loop generator in a
separate process), event-to-visible p99, batch event ingest with a count check; then ours alone at 64,
256 and 1,024 connections with a healthy Redis (share of answers with features "on", "down" count, 503s with
Retry-After past max_inflight; targets: on >= 99.9% of 200s, never "down") and p50/p99 of normal requests at
2,000 req/s while a 1 MiB event batch is posted every second (target p99 <= 5 ms).
serve-batch: that last row alone, with the server's and Redis's CPU per batch; with
RECOPS_BENCH_BASELINE_TREE=<checkout> the code of that checkout alternated with ours (bench/serve_batch.py).
ranking: in-process p50/p99 of the served ranking call per dataset, longest sessions included (bench/ranking.py).
train: wall time and peak RSS of ``recops-serve train`` per dataset.
retrieval: HNSW (recops_serve.ann) vs exact numpy, one thread: recall@100 and queries/s at the 127,890
real items of taobao+diginetica and 1 M synthetic ones matched to them (bench/retrieval.py).
serve-scale: the served call and the HTTP path (one worker, Redis) at 1 M synthetic items x 1 M users
with the HNSW index answering (scale only): build, load, RSS per million items, req/s and p50/p99.
train-scale: time and peak RSS per 10 M events at 1x, 10x and 50x a real dataset (bench/train_scale.py).
operator: apply -> Ready for 1 and N RecommenderServices, API writes in idle time, operator peak RSS.
rollout: decision latency (breach visible in Prometheus -> 0% candidate traffic) and operator CPU per
active rollout (bench/rollout.py), after the business check's simulation table.
business: the business check's decisions over many simulated canaries (bench/business.py).
stream: producer -> Kafka -> Flink -> Redis + archive: events/s, event-to-feature p50/p99, archive
completeness, checkpoint size (bench/stream.py).
search: query embedding per backend in process, vectorization items per CPU-second, /v1/search and /v1/retrieve p50/p99 on one worker with
query embedding, HNSW build time for 100k vectors (bench/search.py).
visual-search: vectorize --visual images/s, /v1/visual-search p50/p99 for 512 px JPEGs on one worker
next to the same decode + embed + search in process (bench/visual_search.py).
scaling: flash sale on the real control plane with KEDA: load x10 -> Prometheus -> KEDA -> HPA -> KWOK pods
on ECI; time to first decision and to desired Ready, modelled 503 share, 50/500 replicas, with/without a
pre-scale window, where the time goes (bench/scaling.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.common import (
    BIN,
    ROOT,
    SERVE_COLUMNS,
    bundle,
    cpu_seconds,
    load,
    loadgen,
    peak_rss_mb,
    serve_cells,
    table,
    tree_cpu_seconds,
)

sys.path.insert(0, str(ROOT))

from recops_localcluster.procs import wait_http
from tests.support.redis_server import RedisServer, free_port


def api_requests(cluster) -> dict[str, float]:
    """kube-apiserver's request counters by verb and resource (its own /metrics)."""
    out: dict[str, float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = f"{labels.get('verb')} {labels.get('resource')}"
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def wrk(url: str, seconds: int = 10, conns: int = 64, script: str | None = None) -> float:
    return wrk_run(url, seconds, conns, script)["rps"]


def wrk_run(
    url: str, seconds: int = 10, conns: int = 64, script: str | None = None, pid: int | None = None
) -> dict[str, float]:
    """req/s, requests and, with ``pid``, the server's CPU microseconds per request (its process
    tree): CPU per request moves far less than req/s when other jobs share the cores."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk not installed (scripts/system-deps.sh installs it)")
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        args += ["-s", script]
    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    cpu = (tree_cpu_seconds(pid) - cpu0) if pid else 0.0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": n,
        "cpu_us": 1e6 * cpu / max(1, n),
    }


# Counts what each answer said (wrk -t1: one thread's globals, read back in done()).
_COUNT_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) on, down, off, s503, retry, other = 0, 0, 0, 0, 0, 0 end
function response(status, headers, body)
  if status == 200 then
    if string.find(body, '"feature_store":"on"', 1, true) then on = on + 1
    elseif string.find(body, '"feature_store":"down"', 1, true) then down = down + 1
    else off = off + 1 end
  elseif status == 503 then
    s503 = s503 + 1
    if headers["retry-after"] or headers["Retry-After"] then retry = retry + 1 end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t = {on = 0, down = 0, off = 0, s503 = 0, retry = 0, other = 0}
  for _, th in ipairs(threads) do for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end end
  io.write(string.format("COUNTS on=%d down=%d off=%d s503=%d retry=%d other=%d\n",
    t.on, t.down, t.off, t.s503, t.retry, t.other))
end
"""


def wrk_counts(url: str, conns: int, script: Path, seconds: int = 10) -> dict[str, float]:
    """req/s, p99 and what the answers said (features on/down, 503 with Retry-After) at ``conns``."""
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out.split("COUNTS", 1)[1])}
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p99_ms": float(p99.group(1)) * scale,
        **counts,
    }


def connection_rows(port: int, work: Path) -> list[list]:
    """256 and 1,024 connections with a healthy Redis: features on in every 200, 503 + Retry-After
    past the overload point (max_inflight), never "down"."""
    script = work / "count.lua"
    script.write_text(_COUNT_LUA)
    rows = []
    for conns in (64, 256, 1024):
        r = wrk_counts(f"http://127.0.0.1:{port}/v1/recommendations?session_id=s1&k=50", conns, script)
        answered = r["on"] + r["down"] + r["off"]
        rows.append(
            [
                conns,
                f"{r['rps']:,.0f}",
                f"{r['p99_ms']:.1f}",
                f"{100 * r['on'] / max(1, answered):.2f}%",
                r["down"],
                f"{r['s503']} ({r['retry']} with Retry-After)",
                r["other"],
            ]
        )
    return rows


# No single dataset here has 100k items (Taobao sample 85k, completejourney 68k, Diginetica 43k): the
# serving bench runs on one catalogue made of the two click-stream shops (data.union), 127,890 real items.
LARGEST = "taobao+diginetica"


def serve_dataset() -> str:
    dataset = os.environ.get("RECOPS_BENCH_DATASET") or LARGEST
    if "+" in dataset or dataset in ("taobao", "diginetica"):
        from recops_serve.data import data_dir

        if not all((data_dir() / d).is_dir() for d in ("taobao-userbehavior-sample", "diginetica")):
            print(
                f"serve: {dataset} needs the datasets under {data_dir()}; using completejourney (68k items)"
            )
            dataset = "completejourney"
    return dataset


def bench_serve_stream() -> None:
    from bench.serve_stream import run

    dataset = serve_dataset()
    run(table, bundle(dataset), dataset, wrk_run, loadgen)


def bench_serve_batch() -> None:
    from bench.serve_batch import run

    run(table, bundle(serve_dataset()))


def bench_serve() -> None:
    dataset = serve_dataset()
    b = bundle(dataset)
    manifest = json.loads((b / "manifest.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="recops-bench-"))
    with RedisServer(work / "redis") as redis:
        import redis as redis_py

        r = redis_py.Redis.from_url(redis.url)
        from recops_serve.bundle import load_bundle

        bb = load_bundle(str(b))
        ids = bb.item_ids[bb.pop_global[:2000]].tolist()
        pipe = r.pipeline()
        for s in range(200):
            for j in range(10):
                pipe.lpush(f"recops:s:s{s}", f"{ids[(s * 7 + j) % len(ids)]}:view:{time.time():.3f}")
        pipe.execute()
        ours_port, base_port = free_port(), free_port()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        ours = subprocess.Popen(
            [
                str(BIN / "recops-serve"),
                "serve",
                "--bundle",
                str(b),
                "--redis-url",
                redis.url,
                "--port",
                str(ours_port),
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "bench.baseline_server:app",
                "--port",
                str(base_port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env={**env, "RECOPS_BUNDLE": str(b), "RECOPS_REDIS_URL": redis.url},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{ours_port}/readyz")
            wait_http(f"http://127.0.0.1:{base_port}/v1/recommendations?session_id=s1&k=50")
            path = "/v1/recommendations?session_id=s1&k=50"
            rows = []
            results = {}
            for name, port, proc in (
                ("recops-serve (granian RSGI)", ours_port, ours),
                ("baseline (FastAPI+redis-py+numpy)", base_port, base),
            ):
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, 3)  # warm-up
                run = wrk_run(url, 10, pid=proc.pid)
                at = loadgen(url, 2000, 10)
                results[name] = (run["rps"], at)
                rows.append([name, *serve_cells(run, at), load()])
            table(
                f"serve: one worker, top-50, catalogue {manifest['n_items']:,} items ({dataset}), Redis session features; 2 cores shared with the load generator",
                ["server", *SERVE_COLUMNS, "load avg"],
                rows,
            )
            (o_rps, o_at), (b_rps, b_at) = results.values()
            print(
                f"throughput ratio ours/baseline: {o_rps / b_rps:.2f}x; p99 at 2000/s: {o_at['p99_ms']} ms vs {b_at['p99_ms']} ms"
            )

            # many connections, healthy Redis (ours only: the baseline has no overload guard)
            table(
                f"serve: connections (recops-serve, healthy Redis, wrk -t1 10 s; max_inflight 256; load avg {load()})",
                ["connections", "req/s", "p99 ms", "features on (of 200s)", '"down"', "503", "other"],
                connection_rows(ours_port, work),
            )
            # the same normal traffic without the batch, just before: what the machine gives now
            alone = loadgen(f"http://127.0.0.1:{ours_port}{path}", 2000, 10)
            alone_load = load()
            from bench.serve_batch import batch_beside_traffic

            side = batch_beside_traffic(ours_port, ids[0])
            table(
                f"serve: a 1 MiB event batch ({side['events']:,} events, {side['bytes']:,} bytes) posted every second beside normal traffic",
                ["measure", "without batches", "with batches"],
                [
                    [
                        "normal GETs offered / achieved (req/s)",
                        f"2000 / {alone['achieved_rps']}",
                        f"2000 / {side['achieved_rps']}",
                    ],
                    [
                        "normal GETs p50 / p99 (ms; target p99 <= 5)",
                        f"{alone['p50_ms']} / {alone['p99_ms']}",
                        f"{side['p50_ms']} / {side['p99_ms']}",
                    ],
                    ["normal GET errors", alone["errors"], side["errors"]],
                    ["batches stored", "-", side["batches"]],
                    ["slowest batch (s)", "-", f"{side['batch_s']:.2f}"],
                    ["load avg", alone_load, side["load"]],
                ],
            )

            # event -> visible: POST a click, then GET; the GET must already differ from the answer
            # a session without clicks gets (session candidates or, on sparse data, category fill)
            lat = []
            with httpx.Client(base_url=f"http://127.0.0.1:{ours_port}") as c:
                cold = c.get("/v1/recommendations", params={"session_id": "never-clicked", "k": 50}).json()[
                    "items"
                ]
                for n in range(500):
                    sid = f"fresh-{n}"
                    t0 = time.perf_counter()
                    c.post(
                        "/v1/events",
                        content=json.dumps({"session_id": sid, "item_id": ids[n], "type": "view"}),
                    )
                    resp = c.get("/v1/recommendations", params={"session_id": sid, "k": 50}).json()
                    lat.append(time.perf_counter() - t0)
                    assert resp["items"] != cold, f"click on {ids[n]} not visible"
            lat.sort()
            # event ingest: batches of 100 events for 100 distinct sessions; count stored == sent
            lua = work / "post.lua"
            lua.write_text(
                "local n = 0\nrequest = function()\n  n = n + 1\n  local ev = {}\n  for i = 1, 100 do\n"
                '    ev[i] = string.format(\'{"session_id":"ing-%d-%d-%d","item_id":%d,"type":"view"}\', math.random(1e9), n, i, '
                + str(ids[0])
                + ")\n"
                '  end\n  return wrk.format("POST", "/v1/events", {["Content-Type"]="application/json"}, \'{"events":[\' .. table.concat(ev, ",") .. "]}")\nend\n'
            )
            before = _ingested(ours_port)
            ev_rps = wrk(f"http://127.0.0.1:{ours_port}/v1/events", 10, 16, str(lua))
            time.sleep(1)  # wrk abandons its in-flight batches at the deadline; the server still stores them
            after = _ingested(ours_port)
            stored = sum(r.llen(k) for k in r.scan_iter("recops:s:ing-*", count=10000))
            table(
                f"serve: events (load avg {load()})",
                ["measure", "value"],
                [
                    [
                        "event-to-visible p50 / p99 (POST then GET, ms)",
                        f"{1000 * lat[len(lat) // 2]:.2f} / {1000 * lat[int(0.99 * len(lat))]:.2f}",
                    ],
                    ["event ingest (batches of 100, events/s)", f"{ev_rps * 100:,.0f}"],
                    ["events counted by server / stored in Redis", f"{after - before:,.0f} / {stored:,}"],
                ],
            )
        finally:
            for p in (ours, base):
                p.terminate()
                p.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    from bench.serve_stream import run

    run(table, b, dataset, wrk_run, loadgen)


def _ingested(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("recops_events_ingested_total{")
    )


def bench_train() -> None:
    rows = []
    for dataset in ("completejourney", "diginetica", "taobao", LARGEST):
        out = Path(tempfile.mkdtemp(prefix="recops-train-bench-"))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(BIN / "recops-serve"),
                "train",
                "--events",
                f"builtin:{dataset}",
                "--out",
                str(out / "b"),
                "--version",
                "bench",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = 0.0
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                peak = max(peak, peak_rss_mb(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append([dataset, "skipped", proc.stdout.read().strip().splitlines()[-1][:80], ""])
            continue
        n_items = json.loads((out / "b" / "manifest.json").read_text())["n_items"]
        rows.append([dataset, f"{wall:.1f}", f"{peak:.0f}", f"{n_items:,}"])
        shutil.rmtree(out, ignore_errors=True)
    table(
        "train: recops-serve train (item kNN or sequential rules + session index + 12 ALS sweeps + popularity); ALS on one thread, candidate scoring on all CPUs (2 here)",
        ["dataset", "wall s", "peak RSS MB", "items"],
        rows,
    )


def bench_operator(n: int = int(os.environ.get("RECOPS_BENCH_SERVICES", "200"))) -> None:
    import yaml

    from recops_localcluster.cluster import LocalCluster, install_crds

    example = yaml.safe_load((ROOT / "examples" / "home-feed.yaml").read_text())
    with LocalCluster() as cluster:
        install_crds(cluster, ROOT / "crds")
        cluster.kubectl("create", "namespace", "bench")
        cluster.kubectl(
            "-n", "bench", "create", "secret", "generic", "tair-credentials", "--from-literal=url=redis://x"
        )
        env = {**cluster.env, "RECOPS_WEBHOOK_PORT": str(free_port())}
        op = subprocess.Popen(
            [str(BIN / "recops-operator"), "run", "--standalone", "--namespace=bench"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(5)
            rows = []
            for count in (1, n):
                docs = []
                for i in range(count):
                    d = json.loads(json.dumps(example))
                    d["metadata"] = {"name": f"b{count}-{i:03d}"}
                    docs.append(json.dumps(d))
                req0 = api_requests(cluster)
                procs = {"operator": op.pid, **cluster.pids}
                cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
                t0 = time.perf_counter()
                cluster.kubectl("-n", "bench", "apply", "-f", "-", input="\n---\n".join(docs), timeout=600)
                children_at = None
                while True:
                    if children_at is None:
                        deps = json.loads(
                            cluster.kubectl("-n", "bench", "get", "deploy", "-o", "json").stdout
                        )
                        if (
                            sum(d["metadata"]["name"].startswith(f"b{count}-") for d in deps["items"])
                            >= count
                        ):
                            children_at = time.perf_counter() - t0
                    items = json.loads(cluster.kubectl("-n", "bench", "get", "recsvc", "-o", "json").stdout)[
                        "items"
                    ]
                    mine = [i for i in items if i["metadata"]["name"].startswith(f"b{count}-")]
                    if len(mine) == count and all(
                        (i.get("status") or {}).get("phase") == "Ready" for i in mine
                    ):
                        break
                    time.sleep(0.5)
                rows.append([f"apply -> Ready, {count} service(s)", f"{time.perf_counter() - t0:.1f} s"])
                rows.append([f"apply -> all {count} Deployments exist", f"{children_at:.1f} s"])
                if count > 1:
                    req1 = api_requests(cluster)
                    delta = {
                        k: v - req0.get(k, 0) for k, v in req1.items() if v - req0.get(k, 0) >= count / 2
                    }
                    rows.append(
                        [
                            f"API requests per service (all clients, >= 0.5 per service), {count} services",
                            ", ".join(
                                f"{k} {v / count:.1f}"
                                for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
                            ),
                        ]
                    )
                    used = {k: cpu_seconds(p) - cpu0[k] for k, p in procs.items()}
                    rows.append(
                        [
                            f"CPU seconds during apply -> Ready, {count} services",
                            ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1])),
                        ]
                    )
            time.sleep(10)

            def versions():
                out = {}
                for kind in ("recsvc", "deploy", "svc", "hpa", "pdb", "cm", "cronjob"):
                    for it in json.loads(cluster.kubectl("-n", "bench", "get", kind, "-o", "json").stdout)[
                        "items"
                    ]:
                        out[f"{kind}/{it['metadata']['name']}"] = it["metadata"]["resourceVersion"]
                return out

            before, idle0 = versions(), api_requests(cluster)
            time.sleep(60)
            after, idle1 = versions(), api_requests(cluster)
            idle_writes = {
                k: v - idle0.get(k, 0)
                for k, v in idle1.items()
                if k.split()[0] in ("APPLY", "PATCH", "PUT", "POST", "DELETE") and v - idle0.get(k, 0) > 0
            }
            changed = [k for k in before if after.get(k) != before[k]]
            by_kind: dict[str, int] = {}
            for k in changed:
                by_kind[k.split("/")[0]] = by_kind.get(k.split("/")[0], 0) + 1
            detail = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none"
            rows.append(
                [
                    f"objects changed in 60 idle s ({len(before)} objects watched)",
                    f"{len(changed)} ({detail})",
                ]
            )
            rows.append(
                [
                    "API write requests in 60 idle s (all clients)",
                    ", ".join(f"{k} {v:.0f}" for k, v in sorted(idle_writes.items(), key=lambda kv: -kv[1])),
                ]
            )
            rows.append(["operator peak RSS", f"{peak_rss_mb(op.pid):.0f} MB"])
            table(
                f"operator: real control plane + KWOK, operator process, {n + 1} services",
                ["measure", "value"],
                rows,
            )
        finally:
            os.killpg(op.pid, 15)
            op.wait(30)


#: the names main() runs, in the order of the module docstring's first line (tests/serve/test_cli.py)
BENCHES = (
    "serve",
    "serve-stream",
    "serve-batch",
    "ranking",
    "train",
    "train-scale",
    "retrieval",
    "serve-scale",
    "operator",
    "rollout",
    "business",
    "stream",
    "search",
    "visual-search",
    "scaling",
    "all",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "which", nargs="?", default="all", choices=BENCHES, help="the benchmark to run (default: %(default)s)"
    )
    return p


def tabled(module: str, entry: str = "run") -> Callable[[], None]:
    """A benchmark that prints through `table`, imported only when it runs (their imports are heavy)."""

    def bench() -> None:
        getattr(importlib.import_module(f"bench.{module}"), entry)(table)

    return bench


def main(argv: list[str]) -> int:
    which = parser().parse_args(argv).which

    def bench_rollout() -> None:
        from bench.rollout import bench_rollout as run

        tabled("business")()
        run()

    def bench_train_scale() -> None:
        from bench.train_scale import run

        run()

    for name, fn in (
        ("serve", bench_serve),
        ("serve-stream", bench_serve_stream),
        ("serve-batch", bench_serve_batch),
        ("ranking", tabled("ranking", "bench_ranking")),
        ("train", bench_train),
        ("train-scale", bench_train_scale),
        ("retrieval", tabled("retrieval")),
        ("serve-scale", tabled("serve_scale")),
        ("operator", bench_operator),
        ("rollout", bench_rollout),
        ("business", tabled("business")),
        ("stream", tabled("stream")),
        ("search", tabled("search")),
        ("visual-search", tabled("visual_search")),
        ("scaling", tabled("scaling")),
    ):
        if which == "all" and name in ("business", "serve-stream", "serve-batch"):
            continue  # printed by rollout / serve
        if which in (name, "all"):
            fn()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
