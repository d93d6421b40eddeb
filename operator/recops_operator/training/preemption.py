"""Recognising spot preemption of training pods (pure; the kopf glue acts on the verdicts).

Signals, from the ECI/ACK docs (notes/alicloud-pulumi.md §4.2-4.3):
* a ``SpotToBeReleased`` Event on the pod ~3 min before release, and the pod condition
  ``ContainerInstanceExpired=True``: the notice. We answer with an eviction carrying the
  pod's grace period, so SIGTERM reaches the trainer, which checkpoints and exits.
* after release the pod is ``Failed`` with reason ``BidFailed``.
* any eviction/preemption adds ``DisruptionTarget=True`` (what the Job's podFailurePolicy
  ignores).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recops_operator.training import config as c


def _condition_true(pod: Mapping[str, Any], ctype: str) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return True
    return False


def release_notice(pod: Mapping[str, Any]) -> bool:
    """ECI has announced the release of this pod's spot instance."""
    return _condition_true(pod, c.ECI_EXPIRED_CONDITION)


def preemption_reason(pod: Mapping[str, Any]) -> str | None:
    """Why this pod was (or is being) taken away by the platform, or None if it was not."""
    status = pod.get("status") or {}
    if status.get("reason") == c.ECI_BID_FAILED_REASON:
        return c.ECI_BID_FAILED_REASON
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "DisruptionTarget":
            return cond.get("reason") or "DisruptionTarget"
        if cond.get("type") == c.ECI_EXPIRED_CONDITION:
            return c.ECI_EXPIRED_CONDITION
    return None


def should_request_checkpoint(pod: Mapping[str, Any]) -> bool:
    """The pod has a release notice and we have not asked it to checkpoint and exit yet."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    # An accepted eviction sets deletionTimestamp and DisruptionTarget: asked already.
    return not _condition_true(pod, "DisruptionTarget")


def is_spot_release_event(event: Mapping[str, Any]) -> bool:
    """A ``SpotToBeReleased`` Event about a pod."""
    involved = event.get("involvedObject") or event.get("regarding") or {}
    return event.get("reason") == c.SPOT_TO_BE_RELEASED_REASON and involved.get("kind") == "Pod"


def eviction_body(pod_name: str, namespace: str, grace_seconds: int) -> dict[str, Any]:
    """policy/v1 Eviction: the API server adds DisruptionTarget, the kubelet sends SIGTERM."""
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod_name, "namespace": namespace},
        "deleteOptions": {"gracePeriodSeconds": int(grace_seconds)},
    }
