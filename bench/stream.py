"""``python -m bench stream``: the clickstream pipeline measured on this machine, real components:
the server's producer (recops_serve.eventlog) -> Kafka 4.1 (KRaft) -> the PyFlink job (embedded
mini-cluster, parallelism 1) -> Redis features + the exactly-once archive (Parquet after compaction).

Reported, not asserted (targets: >= 20,000 events/s, event-to-feature p99 <= 1 s):
- producer rate (events/s accepted by the local buffer, then acknowledged);
- end-to-end events/s: produced events / time until the last one's feature hash is in Redis;
  ``RECOPS_BENCH_STREAM_RATE`` offers a fixed rate instead of "as fast as possible" (latency below
  saturation; at saturation it is queueing time);
- event-to-feature p50/p99: probe events (one in ``RECOPS_BENCH_STREAM_PROBE_EVERY``) each in a fresh
  session, from publish to its hash being visible in Redis (polled every 2 ms);
- archive completeness: distinct event_ids archived / produced, duplicates;
- checkpoint size: the newest completed checkpoint's full state and the bytes it wrote (Flink's REST
  API), one row per state backend (``RECOPS_BENCH_STREAM_BACKENDS``, default ``rocksdb,hashmap``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import redis

from recops_serve.eventlog import EventLog
from recops_stream import archive
from recops_stream import features as f
from recops_stream.runner import StreamJob
from tests.support.kafka_broker import KafkaBroker
from tests.support.redis_server import RedisServer, free_port

N = int(os.environ.get("RECOPS_BENCH_STREAM_EVENTS", "60000"))
PROBE_EVERY = int(os.environ.get("RECOPS_BENCH_STREAM_PROBE_EVERY", "200"))
#: job settings to run, ``bundle size/bundle time ms/mini-batch ms`` (python.fn-execution.bundle.*,
#: table.exec.mini-batch.allow-latency): throughput vs latency
CONFIGS = os.environ.get("RECOPS_BENCH_STREAM_CONFIGS", "5000/100/100")
#: offered load in events/s (0 = as fast as the producer goes): latency below saturation
RATE = float(os.environ.get("RECOPS_BENCH_STREAM_RATE", "0"))
#: state backends, one row each: rocksdb is what the operator renders (recops_contracts.stream) and the
#: job's default, hashmap the heap alternative
BACKENDS = os.environ.get("RECOPS_BENCH_STREAM_BACKENDS", "rocksdb,hashmap")
TOPIC = "recops.events"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def checkpoint_sizes(rest_port: int) -> tuple[int, int]:
    """(full state size, bytes the newest completed checkpoint wrote) as Flink reports them: the
    directory of an incremental RocksDB checkpoint holds only its metadata, the state lies in shared/."""
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/jobs", timeout=5) as resp:
        jobs = [j["id"] for j in json.loads(resp.read())["jobs"] if j["status"] == "RUNNING"]
    with urllib.request.urlopen(
        f"http://127.0.0.1:{rest_port}/jobs/{jobs[0]}/checkpoints", timeout=5
    ) as resp:
        done = json.loads(resp.read())["latest"]["completed"] or {}
    return int(done.get("state_size", 0)), int(done.get("checkpointed_size", 0))


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def group(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def run_one(root: Path, backend: str, bundle_size: int, bundle_time_ms: int, mini_batch_ms: int) -> list:
    with KafkaBroker(root / "kafka", partitions=4) as kafka, RedisServer(root / "redis") as rs:
        kafka.create_topic(TOPIC)
        r = redis.Redis.from_url(rs.url)
        job = StreamJob(
            root / "job",
            kafka.bootstrap,
            TOPIC,
            rs.url,
            root / "archive",
            bundle_size=bundle_size,
            bundle_time_ms=bundle_time_ms,
            mini_batch_ms=mini_batch_ms,
            state_backend=backend,
            rest_port=free_port(),
        ).start()
        log = EventLog(kafka.bootstrap, TOPIC, buffer_messages=max(100_000, 2 * N))
        try:
            log.publish(
                [{"session_id": "warm", "item_id": 1, "type": "view", "ts": time.time()}], time.time()
            )
            log.producer.flush(30)
            t_wait = time.monotonic()
            while not r.exists(f.FEATURE_PREFIX + "s:warm"):
                if not job.alive() or time.monotonic() - t_wait > 180:
                    raise RuntimeError(f"stream job not ready; log {job.log}")
                time.sleep(0.2)
            rng = random.Random(7)
            sent: dict[str, float] = {}
            seen: dict[str, float] = {}
            done = threading.Event()

            def poll() -> None:
                while not done.is_set():
                    pending = [k for k in list(sent) if k not in seen]
                    if pending:
                        pipe = r.pipeline(transaction=False)
                        for k in pending:
                            pipe.exists(k)
                        now = time.perf_counter()
                        for k, ok in zip(pending, pipe.execute(), strict=True):
                            if ok:
                                seen[k] = now
                    time.sleep(0.002)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            job_pids = group(job.proc.pid)
            # the embedded mini-cluster runs the Python UDF in loopback mode: inside the client process
            workers = [p for p in job_pids if b"java" not in Path(f"/proc/{p}/cmdline").read_bytes()]
            jvm = [p for p in job_pids if b"java" in Path(f"/proc/{p}/cmdline").read_bytes()]
            comps = {"kafka": [kafka.proc.pid], "redis": [rs.proc.pid], "flink jvm": jvm,
                     "python (client + udf)": workers, "producer+bench": [os.getpid()]}  # fmt: skip
            cpu0 = {k: cpu_seconds(v) for k, v in comps.items()}
            t0 = time.perf_counter()
            batch: list[dict] = []
            for i in range(N):
                probe = i % PROBE_EVERY == 0 or i == N - 1
                s = f"probe-{i}" if probe else f"s-{rng.randrange(5000)}"
                ev = {
                    "event_id": f"e-{i}",
                    "session_id": s,
                    "user_id": None if probe else f"u-{rng.randrange(2000)}",
                    "item_id": rng.randrange(20000),
                    "category": rng.randrange(100),
                    "type": rng.choices(f.CLICK_TYPES, (7, 2, 1))[0],
                    "ts": time.time(),
                }
                batch.append(ev)
                if probe or len(batch) >= 100:
                    if probe:
                        sent[f"{f.FEATURE_PREFIX}s:{s}"] = time.perf_counter()
                    log.publish(batch, time.time())
                    batch = []
                    if RATE:
                        time.sleep(max(0.0, t0 + (i + 1) / RATE - time.perf_counter()))
            t_queued = time.perf_counter()
            log.producer.flush(120)
            t_acked = time.perf_counter()
            last = f"{f.FEATURE_PREFIX}s:probe-{N - 1}"
            while last not in seen:
                if not job.alive() or time.perf_counter() - t_acked > 600:
                    raise RuntimeError(f"stream job did not finish; log {job.log}")
                time.sleep(0.05)
            t_features = seen[last]
            cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in comps.items()}
            done.set()
            # the archive: committed by the next checkpoints, then published as Parquet
            events_dir = root / "archive" / "events"
            t_arch = time.monotonic()
            ids: list = []
            while time.monotonic() - t_arch < 120:
                archive.compact(events_dir)
                ids = archive.read_archive(events_dir).column("event_id").to_pylist()
                if len(set(ids)) >= N + 1:
                    break
                time.sleep(1)
            lat = [seen[k] - sent[k] for k in sent if k in seen]
            full, written = checkpoint_sizes(job.rest_port)
            span = t_features - t0
            where = ", ".join(f"{k} {v / span:.2f}" for k, v in cpu.items())
            return [
                backend,
                f"{bundle_size}/{bundle_time_ms}/{mini_batch_ms} ms",
                f"{RATE:,.0f}/s" if RATE else "max",
                N,
                f"{N / (t_queued - t0):,.0f}",
                f"{N / (t_acked - t0):,.0f}",
                f"{N / (t_features - t0):,.0f}",
                f"{pct(lat, 0.5) * 1000:.0f}",
                f"{pct(lat, 0.99) * 1000:.0f}",
                f"{len(set(ids))}/{N + 1}",
                len(ids) - len(set(ids)),
                f"{full / 1e6:.1f} / {written / 1e6:.1f} MB",
                where,
                os.getloadavg()[0],
            ]
        finally:
            job.kill()
            log.close(1)


def run(table) -> None:
    root = Path(tempfile.mkdtemp(prefix="recops-bench-stream-"))
    rows = []
    try:
        for backend in BACKENDS.split(","):
            for spec in CONFIGS.split(","):
                size, time_ms, mini_batch = (int(x) for x in spec.split("/"))
                rows.append(
                    run_one(root / f"{backend}-{size}-{mini_batch}", backend, size, time_ms, mini_batch)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table(
        "stream: producer -> Kafka -> Flink SQL (embedded, parallelism 1) -> Python UDF -> Redis + archive "
        "(targets: >= 20,000 events/s, event-to-feature p99 <= 1000 ms; reported, not asserted)",
        [
            "state",
            "bundle/time/mini-batch",
            "offered",
            "events",
            "queued/s",
            "acked/s",
            "end-to-end/s",
            "e2f p50 ms",
            "e2f p99 ms",
            "archived (distinct)",
            "duplicates",
            "checkpoint full / written",
            "cores used (CPU s / s)",
            "load 1m",
        ],
        rows,
    )
