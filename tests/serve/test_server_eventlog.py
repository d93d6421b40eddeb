"""POST /v1/events also produces each accepted event to Kafka (real broker, real server, real Redis):
with an event_id, keyed by session; with Kafka down the answer is still 200 on the session path,
the outage is counted and shown in /readyz, and the buffered events reach Kafka once it is back."""

from __future__ import annotations

import re
import time
import uuid

import orjson
import pytest
import redis
from confluent_kafka import Consumer

from tests.support.kafka_broker import KafkaBroker, kafka_home
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.stream]


def consume(bootstrap: str, topic: str, n: int, timeout: float = 40.0) -> list[tuple[bytes, dict]]:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    c.subscribe([topic])
    out: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append((msg.key(), orjson.loads(msg.value())))
    c.close()
    return out


def metric(server, name: str) -> float:
    text = server.get("/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture
def broker(tmp_path):
    try:
        kafka_home()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    b = KafkaBroker(tmp_path / "kafka", partitions=3)
    yield b
    b.stop()


def test_accepted_events_reach_the_topic_with_event_ids_keyed_by_session(
    bundles, make_server, redis_server, broker
):
    broker.start()
    topic = "recops.events.t1"
    broker.create_topic(topic)
    server, _ = make_server(
        {"model_uri": str(bundles["v1"]), "kafka_bootstrap": broker.bootstrap, "kafka_topic": topic},
        redis_server.url,
    )
    ts = round(time.time()) - 10.5  # within the server's event-time window (a day around now)
    body = {
        "events": [
            {"session_id": "s-1", "user_id": "u-1", "item_id": 11, "type": "view", "ts": ts},
            {"session_id": "s-1", "item_id": 12, "type": "add_to_cart", "event_id": "client-7"},
            {"user_id": "u-2", "item_id": 13, "type": "purchase", "quantity": 2, "price": 9.5},
        ]
    }
    assert server.post("/v1/events", body).status_code == 200
    assert server.post("/v1/events", {"session_id": "s-1", "item_id": "bad"}).status_code == 400
    got = consume(broker.bootstrap, topic, 3)
    assert len(got) == 3, got
    by_item = {v["item_id"]: (k, v) for k, v in got}
    k, v = by_item[11]
    assert (k, v["session_id"], v["user_id"], v["type"], v["ts"]) == (
        b"s-1",
        "s-1",
        "u-1",
        "view",
        ts,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", v["event_id"])
    assert by_item[12][1]["event_id"] == "client-7" and by_item[12][1]["user_id"] is None
    k, v = by_item[13]  # no session id: the user is the session
    assert (k, v["session_id"], v["quantity"], v["price"]) == (b"u-2", "u-2", 2, 9.5)
    assert len({v["event_id"] for _, v in got}) == 3
    assert len(consume(broker.bootstrap, topic, 4, timeout=3)) == 3  # the 400 produced nothing
    assert server.get("/readyz").json()["event_log"]["up"] is True
    assert metric(server, "recops_event_log_produced_total") == 3


def test_kafka_down_is_200_counted_surfaced_and_caught_up(bundles, make_server, redis_server, broker):
    topic = "recops.events.t2"
    broker.port = free_port()  # nothing listens there yet: Kafka is down
    server, _ = make_server(
        {"model_uri": str(bundles["v1"]), "kafka_bootstrap": broker.bootstrap, "kafka_topic": topic},
        redis_server.url,
    )
    slowest = 0.0
    for i in range(20):
        t0 = time.perf_counter()
        r = server.post("/v1/events", {"session_id": "s-down", "item_id": 100 + i, "type": "view"})
        slowest = max(slowest, time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    # never blocked on the broker: a request that waited for delivery would hang until Kafka is back
    # (or message.timeout.ms, 120 s); a generous bound, not a speed target, so a loaded CI cannot trip it
    assert slowest < 1.5, slowest
    assert redis.Redis.from_url(redis_server.url).llen("recops:s:s-down") == 20  # the session path
    deadline = time.monotonic() + 20
    while metric(server, "recops_event_log_errors_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "recops_event_log_errors_total") > 0
    ready = server.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["event_log"]["up"] is False and ready.json()["event_log"]["queued"] == 20
    broker.start()  # Kafka comes back on the advertised address: the buffer drains, nothing lost
    broker.create_topic(topic)
    got = consume(broker.bootstrap, topic, 20, timeout=60)
    assert sorted(v["item_id"] for _, v in got) == list(range(100, 120))
    assert [v["item_id"] for _, v in got] == list(range(100, 120))  # one session: one partition, in order
    deadline = time.monotonic() + 10
    while server.get("/readyz").json()["event_log"]["up"] is not True and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.get("/readyz").json()["event_log"]["up"] is True
    assert metric(server, "recops_event_log_dropped_total") == 0
