"""The stream job end to end on real components: the server's producer -> real Kafka (KRaft) -> real
Flink (embedded mini-cluster from the PyFlink wheel) -> real Redis + the archive directory.

One job per module (startup is ~25 s on 2 cores). It checks: the feature hashes equal a from-scratch
recomputation and carry a TTL; trending and sold-out keys; a late event is counted and not used; and
the archive holds every produced event exactly once, also after the job's whole process group is
SIGKILLed mid-stream and restarted from its newest retained checkpoint; and the served answer (a real
server on the same Redis) drops the item the job marked sold out and puts its trending item first.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import urllib.request

import numpy as np
import pytest
import redis
from confluent_kafka import Producer

from recops_serve.bundle import load_bundle
from recops_serve.eventlog import EventLog
from recops_stream import archive
from recops_stream import features as f
from recops_stream.runner import StreamJob, flink_home
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.stream, pytest.mark.slow]
TOPIC = "recops.events"


def make_events(rng: random.Random, n: int, base: float, tag: str) -> list[dict]:
    out = []
    for i in range(n):
        s = rng.randrange(30)
        out.append(
            {
                "event_id": f"{tag}-{i}",
                "session_id": f"s-{s}",
                "user_id": f"u-{s % 10}" if s % 3 else None,
                "item_id": rng.randrange(40),
                "category": rng.randrange(5),
                "type": rng.choices(f.CLICK_TYPES, (7, 2, 1))[0],
                "ts": round(base + rng.uniform(0, 55), 3),  # within the allowed lateness: none is late
            }
        )
    return out


def wait_for(cond, timeout: float, what: str, job: StreamJob, every: float = 0.5, explain=None):
    """Poll ``cond``; on a timeout fail with what Flink says of the job (and ``explain()``: how far
    the state is from the wanted one), so a CI log alone tells a stuck job from a wrong result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not job.alive():
            pytest.fail(f"stream job exited; log {job.log}:\n{job.log.read_text()[-3000:]}")
        if got := cond():
            return got
        time.sleep(every)
    detail = explain() if explain else ""
    pytest.fail(f"timed out waiting for {what}; {detail}\n{job_report(job)}")


def job_report(job: StreamJob) -> str:
    """The job's state from Flink's REST API and the warnings of its JobManager/TaskManager log."""
    out = [f"job log {job.log}"]
    if job.rest_port:
        rest = f"http://127.0.0.1:{job.rest_port}"
        try:
            for j in get_json(f"{rest}/jobs")["jobs"]:
                ck = get_json(f"{rest}/jobs/{j['id']}/checkpoints")["counts"]
                hist = get_json(f"{rest}/jobs/{j['id']}/exceptions").get("exceptionHistory", {})
                names = [e.get("exceptionName", "")[:160] for e in hist.get("entries", [])]
                out.append(f"flink job {j['id']} {j['status']}: checkpoints {ck}; failures {names[:5]}")
        except OSError as e:
            out.append(f"REST API: {e}")
    for log in job.flink_logs()[-1:]:
        noise = "kafka.clients.NetworkClient"  # the broker kills of the fault tests, once a second
        lines = [
            ln
            for ln in log.read_text(errors="replace").splitlines()
            if (" WARN " in ln or " ERROR " in ln) and noise not in ln
        ]
        out += [f"{log} (its last warnings):", *(ln[:300] for ln in lines[-25:])]
    return "\n".join(out)


def wait_features(r: redis.Redis, events: list[dict], timeout: float, what: str, job: StreamJob) -> None:
    """Until Redis holds exactly the from-scratch recomputation of ``events``."""
    want = f.recompute(events)
    wait_for(lambda: features_in_redis(r) == want, timeout, what, job, explain=lambda: features_diff(r, want))


def features_diff(r: redis.Redis, want: dict[str, dict[str, str]]) -> str:
    got = features_in_redis(r)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    example = f"; e.g. {wrong[0]}: got {got[wrong[0]]}, want {want[wrong[0]]}" if wrong else ""
    return f"feature keys: {len(missing)} missing {missing[:3]}, {len(extra)} extra, {len(wrong)} differ{example}"


def features_in_redis(r: redis.Redis) -> dict[str, dict[str, str]]:
    out = {}
    for k in r.scan_iter(match=f"{f.FEATURE_PREFIX}*", count=1000):
        out[k.decode()] = {a.decode(): b.decode() for a, b in r.hgetall(k).items()}
    return out


def late_dropped(job: StreamJob) -> int:
    """Flink's own count of events behind the watermark (the window operators' numLateRecordsDropped)."""
    rest = f"http://127.0.0.1:{job.rest_port}"
    total = 0
    for j in get_json(f"{rest}/jobs")["jobs"]:
        if j["status"] != "RUNNING":
            continue
        for v in get_json(f"{rest}/jobs/{j['id']}")["vertices"]:
            names = [m["id"] for m in get_json(f"{rest}/jobs/{j['id']}/vertices/{v['id']}/metrics")]
            late = [n for n in names if n.endswith("numLateRecordsDropped")]
            if late:
                q = ",".join(late)
                vals = get_json(f"{rest}/jobs/{j['id']}/vertices/{v['id']}/metrics?get={q}")
                total += sum(int(float(m["value"])) for m in vals)
    return total


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def archived_ids(events_dir) -> collections.Counter:
    archive.compact(events_dir)
    return collections.Counter(archive.read_archive(events_dir).column("event_id").to_pylist())


@pytest.fixture(scope="module")
def pipeline(kafka, tmp_path_factory):
    try:
        flink_home()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    root = tmp_path_factory.mktemp("stream")
    kafka.create_topic(TOPIC)
    with RedisServer(root / "redis") as rs:
        job = StreamJob(
            root / "job",
            kafka.bootstrap,
            TOPIC,
            rs.url,
            root / "archive",
            checkpoint_interval_ms=1000,
            rest_port=free_port(),
        )
        job.start()
        try:
            yield (
                job,
                redis.Redis.from_url(rs.url),
                EventLog(kafka.bootstrap, TOPIC),
                root / "archive" / "events",
            )
        finally:
            job.kill()


def test_features_trending_soldout_late_and_exactly_once_archive_across_a_crash(pipeline, kafka):
    job, r, log, events_dir = pipeline
    rng = random.Random(13)
    base = time.time() - 120
    # stock first (keyed by item, as a catalogue service would): item 1000 has 2 left, 1001 has 5
    inv = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for item, stock in ((1000, 2), (1001, 5)):
        value = {"event_id": f"inv-{item}", "item_id": item, "type": "inventory", "stock": stock, "ts": base}
        inv.produce(TOPIC, json.dumps(value).encode(), str(item).encode(), timestamp=int(base * 1000))
    assert inv.flush(30) == 0
    wait_for(lambda: r.exists(f"{f.ITEM_PREFIX}1000", f"{f.ITEM_PREFIX}1001") == 2, 120, "stock", job)

    first = make_events(rng, 1500, base, "a")
    buys = [
        {"event_id": f"buy-{i}", "session_id": "s-buy", "user_id": "u-buyer", "item_id": it, "category": 9,
         "type": "purchase", "quantity": 1, "ts": base + 50 + i}
        for i, it in enumerate((1000, 1000, 1001))
    ]  # fmt: skip
    produced = first + buys
    log.publish(produced, time.time())
    assert log.producer.flush(30) == 0
    wait_features(r, produced, 120, "features == recomputation", job)
    # stock comes out of its own join and aggregation, not the count windows: its write may land a
    # batch later than the features' (CI34 saw the features equal while the sold-out set was still empty)
    wait_for(lambda: r.smembers(f.SOLDOUT_KEY) == {b"1000"}, 60, "item 1000 sold out", job)
    wait_for(lambda: r.hget(f"{f.ITEM_PREFIX}1001", "stock") == b"4", 60, "1001's stock 5 - 1", job)
    for key in list(features_in_redis(r))[:20]:
        assert 0 < r.ttl(key) <= 1800
    trend = wait_for(lambda: r.zrevrange(f"{f.TREND_PREFIX}2", 0, 4, withscores=True), 60, "trending", job)
    by_item: dict[int, float] = collections.defaultdict(float)
    for ev in produced:
        if ev["category"] == 2:
            by_item[ev["item_id"]] += f.TREND_WEIGHTS[ev["type"]]
    # a slide's top list counts the events up to its timer: never more than all of them
    assert all(0 < s <= by_item[int(i)] for i, s in trend)

    # mid-stream crash: 3000 more events while the job's process group is SIGKILLed and restored
    second = make_events(rng, 3000, base, "b")
    feeder = threading.Thread(
        target=lambda: [
            (log.publish(second[i : i + 100], time.time()), time.sleep(0.1)) for i in range(0, 3000, 100)
        ]
    )
    feeder.start()
    time.sleep(1.5)
    ckpt = job.restart_from_checkpoint()
    feeder.join()
    assert log.producer.flush(30) == 0
    assert ckpt is not None, "no retained checkpoint to restart from"
    produced += second
    want = collections.Counter(ev["event_id"] for ev in produced)
    wait_for(lambda: archived_ids(events_dir) == want, 180, "archive == produced", job, every=1)
    wait_features(r, produced, 60, "features after the crash", job)

    # a late event (40 min behind the watermark): archived, dropped by the event-time windows (Flink's
    # numLateRecordsDropped counts it), its own minute bucket in the absolute entity counts
    dropped_before = late_dropped(job)  # the feeds' own out-of-order events (ts spread over 55 s) count too
    late = {
        "event_id": "late-1",
        "session_id": "s-late",
        "item_id": 39,
        "category": 1,
        "type": "purchase",
        "ts": base - 2400,
    }
    trend_before = r.zscore(f"{f.TREND_PREFIX}1", "39")
    log.publish([late], time.time())
    assert log.producer.flush(30) == 0
    wait_for(lambda: late_dropped(job) > dropped_before, 120, "late event counted", job, every=2)
    want["late-1"] = 1
    wait_for(lambda: archived_ids(events_dir) == want, 120, "late event archived", job, every=1)
    produced.append(late)
    wait_features(r, produced, 60, "late event's bucket", job)
    assert r.zscore(f"{f.TREND_PREFIX}1", "39") == trend_before
    days = {p.name for p in events_dir.glob("dt=*")}
    assert days == {time.strftime("dt=%Y-%m-%d", time.gmtime(t)) for t in (base - 2400, base, base + 60)}


def test_served_answer_drops_what_the_job_sold_out_and_boosts_what_it_trends(
    pipeline, kafka, bundles, make_server
):
    """The whole path: storefront events through the server -> Kafka -> Flink -> Redis -> the next
    answer of the same server (stream_features on by default)."""
    job, r, _, _ = pipeline
    b = load_bundle(str(bundles["v1"]))
    cat = int(np.bincount(b.item_category[b.item_category >= 0]).argmax())
    server, _ = make_server(
        {"model_uri": str(bundles["v1"]), "kafka_bootstrap": kafka.bootstrap, "kafka_topic": TOPIC},
        redis_url(r),
    )
    try:
        asked = iter(range(10**6))

        def answer() -> list[tuple[int, str]]:  # a fresh shopper each time: no session of its own
            got = server.get("/v1/recommendations", session_id=f"q-{next(asked)}", category=cat, k=10)
            assert got.status_code == 200, got.text
            return [(x["item_id"], x["reason"]) for x in got.json()["items"]]

        before = answer()
        top = before[0][0]
        hot = next(int(b.item_ids[i]) for i in b.category_popular(cat)[30:] if int(b.item_ids[i]) != top)
        assert hot not in [i for i, _ in before]
        now = time.time()
        inv = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
        value = {"event_id": f"inv-{top}", "item_id": top, "type": "inventory", "stock": 1, "ts": now - 5}
        inv.produce(TOPIC, json.dumps(value).encode(), str(top).encode(), timestamp=int((now - 5) * 1000))
        assert inv.flush(30) == 0
        buy = {"session_id": "buyer", "item_id": top, "type": "purchase", "quantity": 1, "price": 3.5,
               "category": cat}  # fmt: skip
        assert server.post("/v1/events", buy).status_code == 200
        stop = threading.Event()

        def views() -> None:  # shoppers viewing `hot`; event time moves on, so HOP windows fire
            n = 0
            while not stop.is_set():
                evs = [{"session_id": f"v-{n}-{i}", "item_id": hot, "type": "view", "category": cat}
                       for i in range(20)]  # fmt: skip
                server.post("/v1/events", {"events": evs})
                n += 1
                time.sleep(0.5)

        feeder = threading.Thread(target=views, daemon=True)
        feeder.start()
        try:
            wait_for(lambda: top not in [i for i, _ in answer()], 120, "sold-out item gone", job)
            assert r.sismember(f.SOLDOUT_KEY, top) and r.hget(f"{f.ITEM_PREFIX}{top}", "stock") == b"0"
            wait_for(lambda: answer()[0] == (hot, "trending"), 120, "trending item first", job)
            assert r.zscore(f"{f.TREND_PREFIX}{cat}", hot) > 0
        finally:
            stop.set()
            feeder.join()
        assert top not in [i for i, _ in answer()]  # still sold out: nothing restocked it
    finally:
        server.stop()  # before the module's job and Redis go


def redis_url(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"
