"""Rollout metrics (names fixed by the team contract)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from recops_operator.api.status import Phase, RolloutStatus

weight = Gauge("recops_rollout_weight", "Percent of traffic on the candidate", ["namespace", "recsvc"])
phase = Gauge(
    "recops_rollout_phase", "Current rollout phase (1 for the current one)", ["namespace", "recsvc", "phase"]
)
analysis = Counter(
    "recops_rollout_analysis_total", "Analysis checks by verdict", ["namespace", "recsvc", "check", "verdict"]
)
rollouts = Counter("recops_rollouts_total", "Finished rollouts by result", ["namespace", "recsvc", "result"])

_RESULTS = {Phase.SUCCEEDED: "promoted", Phase.ROLLED_BACK: "rolled_back", Phase.FAILED: "failed"}


def observe(namespace: str, service: str, new: RolloutStatus, old: RolloutStatus) -> None:
    weight.labels(namespace, service).set(new.weight)
    for result in _RESULTS.values():  # exist at 0 first, so the first rollback is an increase() > 0
        rollouts.labels(namespace, service, result)
    for p in Phase:
        phase.labels(namespace, service, p.value).set(1 if new.phase == p else 0)
    if new.phase != old.phase and new.phase in _RESULTS:
        rollouts.labels(namespace, service, _RESULTS[new.phase]).inc()
