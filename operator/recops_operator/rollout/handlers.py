"""kopf glue for rollouts: a short timer that runs analysis when an interval has elapsed (and,
when one more failure means rollback, on every tick, acting only on a failure: fail fast),
advances the pure state machine, applies the render for the new step and then persists
``status.rollout`` (router first, status second: status never runs ahead of traffic).

Status is the only state: after an operator restart the next tick continues from
``status.rollout`` (same step, same counters). Analysis runs in kopf's thread pool.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf

from recops_operator.api.models import GROUP, PLURAL, VERSION, RecommenderServiceSpec
from recops_operator.api.status import Phase, RolloutStatus, Verdict
from recops_operator.controller import CONTROLLER
from recops_operator.reconcile import reconcile
from recops_operator.rollout import metrics
from recops_operator.rollout.analysis import analyse
from recops_operator.rollout.machine import parse_duration, step

log = logging.getLogger(__name__)
TICK_SECONDS = float(os.environ.get("RECOPS_ROLLOUT_TICK_SECONDS", "5"))


def _stable_at(namespace: str, name: str, version: str) -> bool:
    dep = CONTROLLER.applier().get(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace}}
    )
    if not dep:
        return False
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    st = dep.get("status") or {}
    want = int(dep["spec"].get("replicas") or 0)
    return (
        labels.get("recops.io/model-version") == version
        and int(st.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation") or 0)
        and int(st.get("updatedReplicas") or 0) >= want
        and int(st.get("availableReplicas") or 0) >= want
    )


def tick(namespace: str, name: str, body: dict[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """One rollout tick for one service; returns the new status.rollout when it changed.

    The caller applies the children for it and persists it (see ``reconcile.reconcile``).
    """
    now = time.time() if now is None else now
    spec = RecommenderServiceSpec.model_validate(body.get("spec") or {})
    old = RolloutStatus.of((body.get("status") or {}).get("rollout"))
    if spec.rollout.candidate is None and old.phase == Phase.IDLE:
        return None
    live = old.phase in (Phase.SHADOWING, Phase.PROGRESSING)
    shadowing = old.phase == Phase.SHADOWING
    since = old.last_analysis_at or old.step_started_at or 0
    due = live and now - since >= parse_duration(spec.rollout.interval)
    run = lambda: analyse(  # noqa: E731
        spec.rollout, namespace, name, shadowing=shadowing, started_at=old.started_at, now=now
    )
    result = run() if due else None
    if result is None and live and old.failures + 1 >= spec.rollout.failure_limit:
        # fail fast: when one more failed analysis means rollback, check every tick instead of
        # waiting for the interval; only a definite failure counts (a pass or no data waits)
        early = run()
        result = early if early.verdict == Verdict.FAIL else None
    stable_ok = (
        old.phase == Phase.PROMOTING
        and spec.rollout.candidate is not None
        and _stable_at(namespace, name, spec.rollout.candidate.version)
    )
    new, events = step(spec.rollout, old, result, now, stable_at_candidate=stable_ok)
    if new.phase == Phase.SUCCEEDED and old.phase != Phase.SUCCEEDED:
        new.promoted_over = spec.model.version  # stable keeps the promoted model until spec changes
    for kind, reason, message in events:
        kopf.event(body, type=kind, reason=reason, message=message)  # not filtered by posting.level
    if result:
        for c in result.checks:
            metrics.analysis.labels(namespace, name, c["name"], str(c["verdict"])).inc()
    metrics.observe(namespace, name, new, old)
    return None if new == old else new.dump()


def on_tick(namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    spec_rollout = (body.get("spec") or {}).get("rollout") or {}
    status_rollout = (body.get("status") or {}).get("rollout") or {}
    if not spec_rollout.get("candidate") and status_rollout.get("phase", "Idle") == "Idle":
        return
    new = tick(namespace, name, dict(body))
    if new is not None:  # unchanged status renders unchanged children: drift is the child watches' job
        reconcile(namespace, name, rollout=new)


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the rollout controller's timer in ``registry``."""
    kopf.timer(GROUP, VERSION, PLURAL, id="rollout", interval=TICK_SECONDS, registry=registry)(on_tick)
