"""Serving status tells the truth about replicas: Ready means spec.serving.replicas.min are ready."""

from __future__ import annotations

import pytest

from recops_operator.status import compute_status
from tests.support.specs import spec


def deployment(asks: int, ready: int) -> dict:
    return {
        "metadata": {"generation": 3},
        "spec": {"replicas": asks},
        "status": {"observedGeneration": 3, "updatedReplicas": asks, "readyReplicas": ready},
    }


def ready_condition(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_a_new_deployment_at_one_replica_is_not_ready_before_the_autoscaler_reaches_min():
    status = compute_status(spec(replicas={"min": 2, "max": 10}), 1, deployment(asks=1, ready=1))
    assert status["phase"] == "Progressing"
    assert status["replicas"] == {"desired": 1, "ready": 1}
    cond = ready_condition(status)
    assert cond["status"] == "False"
    assert (
        cond["message"] == "1/1 replicas ready, need 2 (the autoscaler has not scaled up to replicas.min yet)"
    )


@pytest.mark.parametrize(
    ("asks", "ready", "phase"), [(2, 1, "Progressing"), (2, 2, "Ready"), (5, 2, "Ready")]
)
def test_ready_counts_ready_replicas_against_replicas_min(asks, ready, phase):
    status = compute_status(spec(replicas={"min": 2, "max": 10}), 1, deployment(asks=asks, ready=ready))
    assert status["phase"] == phase
    assert ready_condition(status)["status"] == ("True" if phase == "Ready" else "False")
    assert ready_condition(status)["message"].startswith(f"{ready}/{asks} replicas ready")


def test_a_failed_reconcile_with_children_serving_is_degraded_not_ready():
    status = compute_status(
        spec(replicas={"min": 2, "max": 10}), 1, deployment(asks=2, ready=2), reconcile_error="quota exceeded"
    )
    assert status["phase"] == "Degraded"
    assert ready_condition(status)["status"] == "False"
    assert ready_condition(status)["message"] == "quota exceeded"
