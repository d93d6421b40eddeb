"""Real components for the clickstream pipeline: one Kafka broker (KRaft) per test module, Redis
per test. Missing jars fail with the command that builds them (``make test`` runs it first)."""

from __future__ import annotations

import pytest

from tests.support.kafka_broker import KafkaBroker, kafka_home
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    try:
        kafka_home()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as r:
        yield r
