"""Operator metrics (names fixed by the team contract), served by ``recops-operator run``."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("recops_operator_reconcile_total", "Serving reconciles, by result", ["result"])
