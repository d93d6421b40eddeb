"""The clickstream producer: every accepted event also goes, with an ``event_id``, to a Kafka topic
(Flink computes the windowed features from it and archives it as training data).

Library: confluent-kafka (librdkafka). Why: its ``produce()`` only appends to a bounded in-process
queue and returns (delivery happens on librdkafka's own threads), so the request path never waits
for the network; it has the idempotent producer (``enable.idempotence``: retries never duplicate or
reorder a partition) and it is the client Alibaba Cloud's Kafka documents. aiokafka awaits the
broker per batch on the event loop; kafka-python has no idempotence.

Contract (docs/stream.md): the message key is the session id (all of a session's events on one
partition, in order); the value is one JSON object per event. Never a 5xx, never a blocked request:
a full local buffer drops the message and counts it (``recops_event_log_dropped_total``), broker
errors are counted (``recops_event_log_errors_total``) and surfaced in ``/readyz`` (``event_log``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer
from prometheus_client import Counter, Gauge

from recops_serve.metrics import REGISTRY

produced = Counter("recops_event_log_produced_total", "Events acknowledged by Kafka", registry=REGISTRY)
dropped = Counter(
    "recops_event_log_dropped_total",
    "Events not sent to Kafka (buffer_full: local queue full; delivery_failed: undeliverable)",
    ["reason"],
    registry=REGISTRY,
)
errors = Counter(
    "recops_event_log_errors_total",
    "Kafka client errors (e.g. all brokers down)",
    ["code"],
    registry=REGISTRY,
)
up = Gauge("recops_event_log_up", "1 while the last word from Kafka was a success", registry=REGISTRY)
queued = Gauge("recops_event_log_queued", "Events waiting in the local buffer", registry=REGISTRY)
DROPPED = {r: dropped.labels(r) for r in ("buffer_full", "delivery_failed")}

#: Fields of the topic's message, in order (docs/stream.md); optional ones are omitted when absent.
OPTIONAL = ("attribution_token", "quantity", "price", "category")


def message(ev: dict[str, Any], now: float) -> tuple[bytes, dict[str, Any]]:
    """(key, value) for one validated event: an ``event_id`` is generated when the client gave none."""
    eid = ev.get("event_id")
    if isinstance(eid, bool) or not isinstance(eid, str | int) or not str(eid) or len(str(eid)) > 128:
        eid = uuid.uuid4().hex
    user = ev.get("user_id") or None
    session = ev.get("session_id") or user
    out: dict[str, Any] = {
        "event_id": str(eid),
        "user_id": user,
        "session_id": session,
        "item_id": ev["item_id"],
        "type": ev.get("type", "view"),
        "ts": float(ev.get("ts", now)),
    }
    for k in OPTIONAL:
        if ev.get(k) is not None:
            out[k] = ev[k]
    return str(session).encode(), out


class EventLog:
    """An idempotent producer with a bounded buffer, polled from the server's event loop."""

    def __init__(self, bootstrap: str, topic: str, buffer_messages: int = 100_000, linger_ms: int = 5):
        self.topic = topic
        self.last_error: str | None = None
        self.down_since: float | None = None
        # events produced and not yet reported delivered or failed: len(producer) also counts
        # librdkafka's own protocol requests (a metadata request while the broker is down)
        self.pending = 0
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # implies acks=all, in-order retries without duplicates
                "linger.ms": linger_ms,
                "compression.type": "lz4",
                "queue.buffering.max.messages": buffer_messages,
                "queue.buffering.max.kbytes": 65536,
                "message.timeout.ms": 120_000,  # after this an event is given up and counted
                "socket.connection.setup.timeout.ms": 3000,
                "error_cb": self._on_error,
            }
        )
        up.set(1)  # optimistic until the client reports otherwise (it connects at once)

    def _on_error(self, err: KafkaError) -> None:
        errors.labels(err.name()).inc()
        self.last_error = f"{err.name()}: {err.str()}"
        if self.down_since is None:
            self.down_since = time.time()
        up.set(0)

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        self.pending -= 1
        if err is None:
            produced.inc()
            self.down_since = None
            up.set(1)
        else:
            DROPPED["delivery_failed"].inc()
            self._on_error(err)

    def publish(self, events: list[dict[str, Any]], now: float) -> int:
        """Queue the events (never blocks); returns how many were queued, the rest are counted drops."""
        n = 0
        for ev in events:
            key, value = message(ev, now)
            try:
                self.producer.produce(
                    self.topic,
                    orjson.dumps(value),
                    key,
                    on_delivery=self._on_delivery,
                    timestamp=int(value["ts"] * 1000),  # event time for Flink's per-partition watermarks
                )
                n += 1
                self.pending += 1
            except BufferError:
                DROPPED["buffer_full"].inc()
        self.producer.poll(0)
        return n

    def status(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "up": self.down_since is None,
            "down_since": self.down_since,
            "queued": self.pending,
            "last_error": self.last_error,
        }

    async def run(self, interval: float = 0.05) -> None:
        """Serve delivery reports and errors from the loop (poll(0) never blocks)."""
        while True:
            self.producer.poll(0)
            queued.set(self.pending)
            await asyncio.sleep(interval)

    def close(self, timeout: float = 5.0) -> None:
        self.producer.flush(timeout)
