"""The clickstream half of ``recops-demo``: a real Kafka broker (KRaft) and the Flink job (recops_stream,
an embedded mini-cluster) beside the demo's ``recops-serve``, so a click posted to the server travels
server -> Kafka -> Flink -> Redis and comes back as a feature and a trending list the next answer uses.

The broker and Flink come from the caches ``make streambin`` builds (~/.cache/recops/kafka-<v>,
flink-<v>); nothing downloads here.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from recops_localcluster.demo_serving import call
from recops_localcluster.kafka_broker import KafkaBroker
from recops_stream import features as f
from recops_stream.runner import StreamJob

TOPIC = "recops-clickstream"
WAIT_S = 240  # the job's first start (JVM, Python workers, Kafka source) takes ~30-90 s here


class DemoStream:
    """Kafka broker + the stream job writing into the demo server's Redis."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.kafka = KafkaBroker(run_dir / "kafka", partitions=1)
        self.job: StreamJob | None = None

    def start_broker(self) -> DemoStream:
        self.kafka.start()
        self.kafka.create_topic(TOPIC)
        return self

    def server_config(self) -> dict[str, str]:
        """The serving config keys that make recops-serve produce every accepted event to the topic."""
        return {"kafka_bootstrap": self.kafka.bootstrap, "kafka_topic": TOPIC}

    def start_job(self, redis_url: str) -> DemoStream:
        self.job = StreamJob(
            self.run_dir / "stream", self.kafka.bootstrap, TOPIC, redis_url, self.run_dir / "archive"
        ).start()
        return self

    def stop(self) -> None:
        if self.job is not None:
            self.job.kill()
        self.kafka.stop()


def _until(what: str, check: Callable[[], Any], job: StreamJob, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if got := check():
            return got
        if not job.alive():
            raise RuntimeError(f"the stream job exited while waiting for {what}; log {job.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s; job log {job.log}")
        time.sleep(0.25)


def show(server_url: str, redis_url: str, bundle_dir: Path, job: StreamJob) -> dict:
    """A click becomes the session's window features, then views make an item trend in its category
    and the served answer for that category puts it first (reason ``trending``)."""
    from recops_serve.bundle import load_bundle

    b = load_bundle(str(bundle_dir))
    r = redis.Redis.from_url(redis_url)
    cat = _busiest_category(b)
    items = [int(b.item_ids[i]) for i in b.category_popular(cat)[:40]]
    shopper, hot = "demo-stream-shopper", items[-1]
    t0 = time.monotonic()
    for item in items[:3]:
        call(
            f"{server_url}/v1/events",
            {"session_id": shopper, "item_id": item, "type": "view", "category": cat},
        )
    key = f"{f.FEATURE_PREFIX}s:{shopper}"
    feats = _until("session features from Flink", lambda: r.hgetall(key), job)
    shown = {k.decode(): v.decode() for k, v in sorted(feats.items())}
    print(f"\nPOST /v1/events x3 (views in category {cat}) -> Kafka -> Flink -> Redis {key}")
    print(f"  after {time.monotonic() - t0:.1f}s: {json.dumps(shown)}  (ttl {r.ttl(key)}s)")

    trend_key = f"{f.TREND_PREFIX}{cat}"
    before = [int(i) for i in r.zrevrange(trend_key, 0, 4)]
    print(f"\ntrending in category {cat} before: {before or '(nothing yet)'}")
    stop = threading.Event()

    def views() -> None:  # shoppers viewing `hot`: event time moves on, so the sliding window fires
        n = 0
        while not stop.is_set():
            evs = [
                {"session_id": f"demo-v-{n}-{i}", "item_id": hot, "type": "view", "category": cat}
                for i in range(20)
            ]
            call(f"{server_url}/v1/events", {"events": evs})
            n += 1
            time.sleep(0.5)

    feeder = threading.Thread(target=views, daemon=True)
    feeder.start()
    try:
        _until(f"item {hot} trending", lambda: r.zrevrange(trend_key, 0, 0) == [str(hot).encode()], job)
    finally:
        stop.set()
        feeder.join()
    after = [int(i) for i in r.zrevrange(trend_key, 0, 4)]
    print(f"trending in category {cat} after 20 views/0.5 s of item {hot}: {after}")
    query = urllib.parse.urlencode({"session_id": "demo-stream-new", "category": cat, "k": 5})
    answer = call(f"{server_url}/v1/recommendations?{query}")
    top = [(i["item_id"], i["reason"]) for i in answer["items"]]
    print(f"GET /v1/recommendations?{query} -> {top}")
    return {"features": shown, "before": before, "after": after, "hot": hot, "answer": top}


def _busiest_category(b) -> int:
    """The category with the most items: its trending list is the demo's."""
    return int(np.bincount(b.item_category[b.item_category >= 0]).argmax())
