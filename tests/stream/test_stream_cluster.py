"""The TaskManager fault on a real standalone Flink cluster (JobManager and TaskManager JVMs from the
PyFlink wheel): the TM is SIGKILLed mid-stream and replaced; the JobManager restores the job from its
last checkpoint; the archive then holds every produced event exactly once and the features equal a
from-scratch recomputation."""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest
import redis

from recops_serve.eventlog import EventLog
from recops_stream import features as f
from recops_stream.cluster import FlinkCluster
from recops_stream.runner import flink_home
from tests.stream.test_stream_job import archived_ids, features_in_redis, make_events
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.stream, pytest.mark.slow]
TOPIC = "recops.events.cluster"


def wait(cond, timeout: float, what: str, cluster: FlinkCluster, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}; logs in {cluster.workdir}")


def test_taskmanager_sigkill_mid_stream_loses_and_duplicates_nothing(kafka, tmp_path):
    try:
        home = flink_home()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    kafka.create_topic(TOPIC)
    jars = sorted(str(j) for j in (home / "jars").glob("*.jar"))
    cluster = FlinkCluster(tmp_path / "flink").start()
    with RedisServer(tmp_path / "redis") as rs:
        try:
            r = redis.Redis.from_url(rs.url)
            events_dir = tmp_path / "archive" / "events"
            job_id = cluster.submit(
                ["--bootstrap", kafka.bootstrap, "--topic", TOPIC, "--redis-url", rs.url,
                 "--archive-dir", str(tmp_path / "archive"), "--checkpoints", str(tmp_path / "ckpt"),
                 "--checkpoint-interval-ms", "1000"],
                jars,
            )  # fmt: skip
            wait(lambda: cluster.job_state(job_id) == "RUNNING", 60, "job RUNNING", cluster)
            log = EventLog(kafka.bootstrap, TOPIC)
            rng = random.Random(31)
            base = time.time() - 120
            first = make_events(rng, 1000, base, "a")
            log.publish(first, time.time())
            assert log.producer.flush(30) == 0
            wait(lambda: features_in_redis(r) == f.recompute(first), 120, "features", cluster)

            second = make_events(rng, 2000, base, "b")

            def feed() -> None:
                for i in range(0, len(second), 100):
                    log.publish(second[i : i + 100], time.time())
                    time.sleep(0.1)

            feeder = threading.Thread(target=feed)
            feeder.start()
            time.sleep(1.0)
            cluster.kill_taskmanager()
            cluster.start_taskmanager()  # the replacement pod
            feeder.join()
            assert log.producer.flush(30) == 0
            produced = first + second
            want = collections.Counter(ev["event_id"] for ev in produced)
            wait(lambda: archived_ids(events_dir) == want, 180, "archive == produced", cluster)
            wait(
                lambda: features_in_redis(r) == f.recompute(produced), 60, "features after the fault", cluster
            )
            assert cluster.job_state(job_id) == "RUNNING"
            assert cluster._get(f"/jobs/{job_id}/checkpoints")["counts"]["restored"] >= 1
        finally:
            cluster.stop()
