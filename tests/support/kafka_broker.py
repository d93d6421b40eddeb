"""The real Kafka broker launcher lives with the local stand-ins (the stream bench uses it too)."""

from recops_localcluster.kafka_broker import KafkaBroker, kafka_home

__all__ = ["KafkaBroker", "kafka_home"]
