"""Faults of the stream's neighbours, real components (the server's producer, a Kafka 4.1 broker, the
PyFlink job in its embedded mini-cluster, redis-server with its append-only file):

- the Kafka broker is SIGKILLed mid-stream and started again on its ports and data: the producer
  buffers, Flink's source reconnects; the archive then holds every produced event exactly once and
  the features equal a from-scratch recomputation;
- Redis stops mid-stream for longer than the writer retries: the job's task fails and restarts
  from its last checkpoint (Flink counts the restarts), replays, and after Redis is back the
  features equal the recomputation: absolute values rewritten, nothing counted twice.

One job per module, as test_stream_job (startup is the cost).
"""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest
import redis

from recops_serve.eventlog import EventLog
from recops_stream.runner import StreamJob, flink_home
from tests.stream.test_stream_job import archived_ids, get_json, make_events, wait_features, wait_for
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.stream, pytest.mark.slow]
TOPIC = "recops.events.faults"
REDIS_RETRY_S = 2.0


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    try:
        flink_home()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    root = tmp_path_factory.mktemp("faults")
    kafka.create_topic(TOPIC)
    rs = RedisServer(root / "redis", persist=True).start()
    job = StreamJob(
        root / "job",
        kafka.bootstrap,
        TOPIC,
        rs.url,
        root / "archive",
        checkpoint_interval_ms=1000,
        redis_retry_s=REDIS_RETRY_S,
        rest_port=free_port(),
    )
    job.start()
    state = {"redis": rs, "produced": []}
    try:
        yield job, state, EventLog(kafka.bootstrap, TOPIC), root
    finally:
        job.kill()
        state["redis"].stop()


def feed(log: EventLog, events: list[dict], every: float = 0.1) -> threading.Thread:
    def run() -> None:
        for i in range(0, len(events), 100):
            log.publish(events[i : i + 100], time.time())
            time.sleep(every)

    t = threading.Thread(target=run)
    t.start()
    return t


def failures(job: StreamJob) -> list[str]:
    """The job's failures Flink recorded (each one a restart from the last checkpoint)."""
    rest = f"http://127.0.0.1:{job.rest_port}"
    out = []
    for j in get_json(f"{rest}/jobs")["jobs"]:
        hist = get_json(f"{rest}/jobs/{j['id']}/exceptions").get("exceptionHistory", {})
        out += [e.get("exceptionName", "") + ": " + e.get("stacktrace", "") for e in hist.get("entries", [])]
    return out


def test_kafka_broker_killed_and_restarted_loses_and_duplicates_nothing(stack, kafka):
    job, state, log, root = stack
    r = redis.Redis.from_url(state["redis"].url)
    rng = random.Random(41)
    base = time.time() - 120
    first = make_events(rng, 1000, base, "k1")
    log.publish(first, time.time())
    assert log.producer.flush(30) == 0
    wait_features(r, first, 120, "features before the fault", job)

    second = make_events(rng, 2000, base, "k2")
    feeder = feed(log, second)
    time.sleep(0.5)
    kafka.kill()  # SIGKILL mid-stream: the producer keeps its buffer, the Flink source loses its broker
    time.sleep(3)
    kafka.start()
    feeder.join()
    assert log.producer.flush(60) == 0, "events still in the producer's buffer"
    produced = first + second
    state["produced"] = produced
    want = collections.Counter(ev["event_id"] for ev in produced)
    wait_for(lambda: archived_ids(root / "archive" / "events") == want, 180, "archive == produced", job, 1)
    wait_features(r, produced, 60, "features after the fault", job)


def test_redis_stopped_and_started_resumes_without_double_counting(stack):
    job, state, log, root = stack
    rs = state["redis"]
    r = redis.Redis.from_url(rs.url)
    rng = random.Random(43)
    base = time.time() - 120
    produced = list(state["produced"])  # after the Kafka test: its events
    if not produced:  # alone: some features first (the job is up and writing)
        produced = make_events(rng, 500, base, "r0")
        log.publish(produced, time.time())
        assert log.producer.flush(30) == 0
    wait_features(r, produced, 120, "features before", job)
    before = len(failures(job))
    third = make_events(rng, 2000, base, "r1")
    feeder = feed(log, third)
    time.sleep(0.5)
    rs.stop()  # longer down than the writer retries: the task fails, restores, replays
    time.sleep(REDIS_RETRY_S + 6)
    state["redis"] = rs = RedisServer(rs.workdir, port=rs.port, persist=True).start()
    feeder.join()
    assert log.producer.flush(30) == 0
    produced += third
    r = redis.Redis.from_url(rs.url)
    wait_features(r, produced, 180, "features after Redis is back", job)
    failed = failures(job)[before:]
    assert any("redis.exceptions.ConnectionError" in f for f in failed), (
        f"the writer never failed the task: {[f[:300] for f in failed]}"
    )
    want = collections.Counter(ev["event_id"] for ev in produced)
    wait_for(lambda: archived_ids(root / "archive" / "events") == want, 120, "archive == produced", job, 1)
