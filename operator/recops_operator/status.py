"""Status that tells the truth: computed from what the children report, never assumed.

Pure: ``compute_status`` takes the live stable Deployment (or None) and returns
the serving part of ``.status``; the handler patches it only when it changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from recops_operator.api.models import RecommenderServiceSpec


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    ctype: str, ok: bool | None, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "Unknown" if ok is None else ("True" if ok else "False"),
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime when a condition's status did not change (Kubernetes convention)."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        prev = previous.get(c["type"])
        c = dict(c)
        if prev and prev.get("status") == c["status"] and prev.get("lastTransitionTime"):
            c["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            c["lastTransitionTime"] = now()
        out.append(c)
    # Conditions owned by other controllers (rollout, training) are kept as they are.
    ours = {c["type"] for c in new}
    out.extend(c for c in old or [] if c.get("type") not in ours)
    return out


def compute_status(
    spec: RecommenderServiceSpec,
    generation: int | None,
    deployment: dict[str, Any] | None,
    *,
    reconcile_error: str | None = None,
    monitoring_available: bool = True,
) -> dict[str, Any]:
    """Serving status from the live stable Deployment."""
    desired = ready = 0
    rollout_done = False
    if deployment:
        dep_generation, replicas, observed, updated, ready_replicas = deployment_view(deployment)
        desired, ready = int(replicas or 0), int(ready_replicas or 0)
        rollout_done = int(observed or 0) >= int(dep_generation or 0) and int(updated or 0) >= desired
    # Ready counts against spec.serving.replicas.min, never against what the Deployment asks for:
    # a new Deployment asks for 1 until the HPA first scales it up to the minimum.
    min_ready = max(1, spec.serving.replicas.min)
    is_ready = deployment is not None and rollout_done and ready >= min_ready and reconcile_error is None
    if reconcile_error:  # Failed: nothing serves yet; Degraded: the last good children keep serving
        phase = "Failed" if deployment is None else "Degraded"
        reason, msg = "ReconcileFailed", reconcile_error
    elif deployment is None:
        phase, reason, msg = "Pending", "DeploymentMissing", "the inference Deployment does not exist yet"
    elif is_ready:
        phase, reason, msg = "Ready", "MinimumReplicasReady", f"{ready}/{desired} replicas ready"
    else:
        waiting = " (the autoscaler has not scaled up to replicas.min yet)" if desired < min_ready else ""
        phase, reason, msg = (
            "Progressing",
            "ReplicasNotReady",
            f"{ready}/{desired} replicas ready, need {min_ready}{waiting}",
        )
    conditions = [
        condition("Ready", is_ready, reason, msg, generation),
        condition(
            "Reconciled",
            reconcile_error is None,
            "Applied" if reconcile_error is None else "ApplyFailed",
            "all children match the spec" if reconcile_error is None else reconcile_error,
            generation,
        ),
        condition(
            "Degraded",
            reconcile_error is not None,
            reason if reconcile_error else "AsExpected",
            msg if reconcile_error else "",
            generation,
        ),
    ]
    if spec.monitoring.service_monitor:
        conditions.append(
            condition(
                "MonitoringAvailable",
                monitoring_available,
                "Created" if monitoring_available else "CRDsMissing",
                "ServiceMonitor and PrometheusRule applied"
                if monitoring_available
                else "monitoring.coreos.com CRDs are not installed: ServiceMonitor/PrometheusRule skipped",
                generation,
            )
        )
    return {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": conditions,
        "replicas": {"desired": desired, "ready": ready},
        "stableVersion": spec.model.version,
    }


def deployment_view(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """The only Deployment fields ``compute_status`` (and the replica gauges) read: an update that
    leaves them equal cannot change the status, so the operator skips such events."""
    meta, spec, st = (
        deployment.get("metadata", {}),
        deployment.get("spec") or {},
        deployment.get("status") or {},
    )
    return (
        meta.get("generation"),
        spec.get("replicas"),
        st.get("observedGeneration"),
        st.get("updatedReplicas"),
        st.get("readyReplicas"),
    )


def changed(live_status: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether patching ``new`` would change anything (ignoring transition timestamps)."""
    live_status = live_status or {}

    def strip(conds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds or []),
            key=lambda c: c.get("type", ""),
        )

    for key, value in new.items():
        if key == "conditions":
            if strip(value) != strip(live_status.get("conditions")):
                return True
        elif live_status.get(key) != value:
            return True
    return False
