"""Closed loop from a finished training run to a rollout candidate (pure decisions).

A run's model becomes the rollout candidate only when the run succeeded, every gated
offline metric is present in both bundles, and candidate >= serving - tolerance for each
(fail closed: a metric we cannot compare blocks the candidate), and
``spec.training.autoRollout`` is true. The verdict and the lineage (data window, run,
metrics of both sides) are recorded in status whatever the outcome, so "why was this
model not rolled out" has an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recops_operator.api.models import MetricsGate
from recops_operator.api.status import GateRecord, TrainingRun
from recops_operator.training.config import training_of


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def as_status(self) -> GateRecord:
        return GateRecord(passed=self.passed, reasons=list(self.reasons))


def metrics_gate(
    candidate: Mapping[str, float], serving: Mapping[str, float], gate: MetricsGate
) -> GateResult:
    """candidate >= serving - tolerance for every gated metric; missing values fail."""
    reasons: list[str] = []
    for name in gate.metrics:
        if name not in candidate:
            reasons.append(f"candidate bundle has no offline metric {name!r}")
            continue
        if name not in serving:
            reasons.append(f"serving bundle has no offline metric {name!r} to compare with")
            continue
        cand, base = float(candidate[name]), float(serving[name])
        if cand < base - gate.tolerance:
            reasons.append(f"{name}={cand:.6g} < serving {base:.6g} - tolerance {gate.tolerance:g}")
    return GateResult(passed=not reasons, reasons=tuple(reasons))


@dataclass(frozen=True)
class LoopDecision:
    """What to do about a finished run: the candidate to set (if any) and the run's record,
    lineage and verdict filled in."""

    candidate_version: str | None
    record: TrainingRun


def decide(
    spec: Mapping[str, Any],
    run: TrainingRun,
    candidate_metrics: Mapping[str, float] | None,
    serving_metrics: Mapping[str, float] | None,
) -> LoopDecision:
    """Decide the closed-loop step for ``run`` (a status.training run record that finished)."""
    cfg = training_of(spec)
    model = spec.get("model") or {}
    record = run.model_copy(
        update={
            "data_window_days": cfg.data_window.days if cfg and cfg.data_window else None,
            "serving_version": model.get("version"),
            "metrics": dict(candidate_metrics or {}),
            "serving_metrics": dict(serving_metrics or {}),
        }
    )
    if cfg is None:
        record.gate = GateResult(False, ("no spec.training",)).as_status()
        return LoopDecision(None, record)
    if run.phase != "Succeeded":
        result = GateResult(False, (f"run {run.name} ended {run.phase}",))
    elif candidate_metrics is None:
        result = GateResult(False, ("candidate bundle manifest could not be read",))
    elif serving_metrics is None:
        result = GateResult(False, ("serving bundle manifest could not be read",))
    else:
        result = metrics_gate(candidate_metrics, serving_metrics, cfg.gate)
    record.gate = result.as_status()
    current_candidate = ((spec.get("rollout") or {}).get("candidate") or {}).get("version")
    set_candidate = (
        result.passed
        and cfg.auto_rollout
        and run.version not in (None, model.get("version"), current_candidate)
    )
    record.action = "candidate-set" if set_candidate else ("gate-passed" if result.passed else "gate-failed")
    return LoopDecision(run.version if set_candidate else None, record)


def candidate_patch(version: str) -> dict[str, Any]:
    """Merge patch that starts a rollout of ``version`` (the rollout engine takes it from there)."""
    return {"spec": {"rollout": {"candidate": {"version": version}}}}
