"""Operator metrics (names fixed by the team contract), served by ``recops-operator run``."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

RECONCILES = Counter("recops_operator_reconcile_total", "Serving reconciles, by result", ["result"])
# both series exist from the start: the errors alert sees 0, not nothing
for _result in ("ok", "error"):
    RECONCILES.labels(result=_result)
COALESCED = Counter(
    "recops_operator_child_events_coalesced_total",
    "Child events that needed no reconcile of their own (one for the same owner was already waiting)",
)
REPLICAS = Gauge(
    "recops_serving_replicas",
    "Stable inference Deployment replicas: desired (set by the HPA), ready, and the spec's min/max bounds",
    ["namespace", "recsvc", "state"],
)
REPLICA_STATES = ("desired", "ready", "min", "max")


def observe_replicas(namespace: str, name: str, deployment: dict | None, minimum: int, maximum: int) -> None:
    """From the Deployment the reconcile already read: the replica panel needs no kube-state-metrics."""
    spec, status = (deployment or {}).get("spec") or {}, (deployment or {}).get("status") or {}
    values = {
        "desired": spec.get("replicas") or 0,
        "ready": status.get("readyReplicas") or 0,
        "min": minimum,
        "max": maximum,
    }
    for state, value in values.items():
        REPLICAS.labels(namespace, name, state).set(float(value))


def forget(namespace: str, name: str) -> None:
    for state in REPLICA_STATES:
        with contextlib.suppress(KeyError):
            REPLICAS.remove(namespace, name, state)
