"""Operator metrics (names fixed by the team contract), served by ``recops-operator run``."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("recops_operator_reconcile_total", "Serving reconciles, by result", ["result"])
COALESCED = Counter(
    "recops_operator_child_events_coalesced_total",
    "Child events that needed no reconcile of their own (one for the same owner was already waiting)",
)
