"""Operator-side training metrics (names fixed by the team contract)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

runs_total = Counter(
    "recops_training_runs_total", "Training runs seen finished, by result", ["namespace", "recsvc", "result"]
)
preemptions_total = Counter(
    "recops_training_preemptions_total",
    "Training pods taken away by spot preemption",
    ["namespace", "recsvc"],
)
last_checkpoint = Gauge(
    "recops_training_last_checkpoint_timestamp_seconds",
    "Unix time of the newest checkpoint of the current or last run",
    ["namespace", "recsvc"],
)

retrieval_recall = Gauge(
    "recops_training_retrieval_recall",
    "Recall@K of the last successful run's ANN index against exact search (the training recall gate)",
    ["namespace", "recsvc"],
)


def set_last_checkpoint(namespace: str, service: str, rfc3339: str) -> None:
    ts = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    last_checkpoint.labels(namespace, service).set(ts)


def touch(namespace: str, service: str) -> None:
    """Create this service's counters at 0, so its first failure or preemption is an increase()."""
    for result in ("Succeeded", "Failed"):
        runs_total.labels(namespace, service, result)
    preemptions_total.labels(namespace, service)
