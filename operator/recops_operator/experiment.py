"""Holdout lift, measured the way canaries are judged: "is personalisation helping?" with error bars.

Every ``LIFT_SECONDS`` a timer on each service with a holdout compares the personalised arm with
the holdout arm (attributed ``spec.experiment.holdout.metric`` per recommendation, all tracks)
through ``rollout.sequential.lift``: totals since the assignment took effect (``since``, reset
when the holdout percent or salt changes, since the groups change then), so the always-valid
interval stays valid however long it is watched. The result goes to ``status.experiment.holdout``
and the ``recops_holdout_lift`` gauges the lift panel draws (estimate, low, high).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf
from prometheus_client import Gauge

from recops_operator.api.models import GROUP, PLURAL, VERSION, RecommenderServiceSpec
from recops_operator.rollout import analysis, sequential

log = logging.getLogger(__name__)
LIFT_SECONDS = float(os.environ.get("RECOPS_LIFT_SECONDS", "60"))

lift_gauge = Gauge(
    "recops_holdout_lift",
    "Relative lift of the personalised arm over the holdout (bound: estimate, low, high of the always-valid interval)",
    ["namespace", "recsvc", "bound"],
)


def measure(
    spec: RecommenderServiceSpec,
    namespace: str,
    service: str,
    query: analysis.Query,
    previous: dict[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    """The next ``status.experiment.holdout`` (pure apart from ``query``)."""
    h = spec.experiment.holdout
    assignment = f"{h.percent:g}/{h.salt}"
    prev = previous or {}
    since = float(prev["since"]) if prev.get("assignment") == assignment and prev.get("since") else now
    window = f"{max(15, int(now - since))}s"
    model, holdout = (
        analysis.arm_totals(query, analysis.business_queries(namespace, service, h.metric, window, arm=arm))
        for arm in ("model", "holdout")
    )
    c = sequential.lift(model, holdout, confidence=h.confidence)
    r = analysis.numbers
    return {
        "assignment": assignment,
        "since": since,
        "metric": h.metric,
        "confidence": h.confidence,
        "model": {
            "recommendations": r(model.recommendations),
            "value": r(model.value),
            "rate": r(c.rate_candidate),
        },
        "holdout": {
            "recommendations": r(holdout.recommendations),
            "value": r(holdout.value),
            "rate": r(c.rate_baseline),
        },
        "lift": r(c.lift),
        "liftLow": r(c.lift_low),
        "liftHigh": r(c.lift_high),
        "verdict": c.verdict,
        "message": c.reason,
        "measuredAt": now,
    }


def on_lift(namespace: str, name: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    spec = RecommenderServiceSpec.model_validate(body.get("spec") or {})
    if spec.experiment.holdout.percent <= 0:
        return
    url = analysis.default_url(spec.rollout)
    if not url:
        return
    previous = ((body.get("status") or {}).get("experiment") or {}).get("holdout")
    try:
        result = measure(spec, namespace, name, analysis.prometheus_query(url), previous, time.time())
    except Exception as e:  # Prometheus down: keep the last measurement, say why in the log
        log.warning("holdout lift of %s/%s not measured: %s", namespace, name, e)
        return
    patch.status["experiment"] = {"holdout": result}
    for bound, key in (("estimate", "lift"), ("low", "liftLow"), ("high", "liftHigh")):
        if result[key] is not None:
            lift_gauge.labels(namespace, name, bound).set(result[key])


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the holdout-lift timer in ``registry``."""
    kopf.timer(
        GROUP, VERSION, PLURAL, id="holdout-lift", interval=LIFT_SECONDS, idle=LIFT_SECONDS, registry=registry
    )(on_lift)
