"""The local Kafka broker is real: messages produced idempotently are consumed back in order per
key, and survive a broker restart on the same storage (the "restart Kafka" fault)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = [pytest.mark.integration, pytest.mark.stream]


def consume_all(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    c.close()
    return got


def test_idempotent_produce_consume_and_restart(kafka):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(200):
        p.produce(topic, key=f"s-{i % 7}".encode(), value=str(i).encode())
    assert p.flush(30) == 0
    got = consume_all(kafka.bootstrap, topic, 200)
    assert sorted(int(v) for _, v in got) == list(range(200))
    for key in {k for k, _ in got}:  # per key (one partition) the order is the produce order
        values = [int(v) for k, v in got if k == key]
        assert values == sorted(values)
    kafka.stop()
    kafka.start()
    assert len(consume_all(kafka.bootstrap, topic, 200)) == 200
