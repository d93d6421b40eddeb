"""kopf glue for training: spec/timer/Job-event syncs and spot preemption handling.

``register(registry)`` puts the handlers into a registry: the operator's entry module registers
every controller the same way, and tests run the training handlers alone in their own.
Each handler is a thin call into ``sync`` / ``preemption``; all decisions are pure
functions tested without a cluster.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from recops_operator.api.models import GROUP, PLURAL, VERSION
from recops_operator.controller import CONTROLLER
from recops_operator.training import config as c
from recops_operator.training import preemption
from recops_operator.training.sync import (
    apply_sync,
    record_preemption,
    request_checkpoint,
    sync_training,
    trained_conditions,
    training_patch,
)

log = logging.getLogger(__name__)

TRAINING_LABELS = {c.COMPONENT_LABEL: c.COMPONENT_TRAINING}
SYNC_INTERVAL_SECONDS = 20.0

api = CONTROLLER.api


def _sync_into_patch(body: kopf.Body, patch: kopf.Patch) -> None:
    meta = body["metadata"]
    with CONTROLLER.lock(meta["namespace"], meta["name"]):
        status, spec_patch = sync_training(api(), body)
    if spec_patch:
        patch.spec["rollout"] = spec_patch["spec"]["rollout"]
    training = training_patch(body, status)
    if training:
        patch.status["training"] = training
    conditions = trained_conditions(body, status)
    if conditions:
        patch.status["conditions"] = conditions


def on_service_change(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """A spec or trigger-annotation change: queue on-demand runs, refresh status at once."""
    _sync_into_patch(body, patch)


def on_timer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Level-based catch-up: missed events, operator restarts, checkpoint times."""
    _sync_into_patch(body, patch)


def on_job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A run changed (created, started, finished): start the next run, run the closed loop."""
    if type is None:  # initial listing: the timer and resume handler cover it
        return
    service = (body.get("metadata", {}).get("labels") or {}).get(c.SERVICE_LABEL)
    if service:
        apply_sync(api(), body["metadata"]["namespace"], service)


def on_training_pod(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Release notice -> checkpoint request; any preemption -> counted on the run's Job."""
    pod = dict(body)
    if type != "DELETED" and preemption.release_notice(pod):
        request_checkpoint(api(), pod, c.ECI_EXPIRED_CONDITION)
    reason = preemption.preemption_reason(pod)
    if reason and record_preemption(api(), pod, reason):
        log.info(
            "training pod %s/%s preempted: %s",
            body["metadata"]["namespace"],
            body["metadata"]["name"],
            reason,
        )


def on_spot_release_event(body: kopf.Body, **_: Any) -> None:
    """ECI's SpotToBeReleased Event on a training pod -> checkpoint request."""
    if not preemption.is_spot_release_event(body):
        return
    involved = body.get("involvedObject") or {}
    try:
        pod = client.CoreV1Api(api()).read_namespaced_pod(
            involved["name"], involved.get("namespace") or body["metadata"]["namespace"]
        )
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    pod_dict = api().sanitize_for_serialization(pod)
    if (pod_dict["metadata"].get("labels") or {}).get(c.COMPONENT_LABEL) != c.COMPONENT_TRAINING:
        return
    request_checkpoint(api(), pod_dict, c.SPOT_TO_BE_RELEASED_REASON)


def register(registry: kopf.OperatorRegistry) -> None:
    """Register every training handler in ``registry``."""
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(GROUP, VERSION, PLURAL, id="training-sync", registry=registry)(on_service_change)
    kopf.timer(
        GROUP, VERSION, PLURAL, id="training-timer", interval=SYNC_INTERVAL_SECONDS, idle=5, registry=registry
    )(on_timer)
    kopf.on.event("batch", "v1", "jobs", labels=TRAINING_LABELS, registry=registry)(on_job_event)
    kopf.on.event("v1", "pods", labels=TRAINING_LABELS, registry=registry)(on_training_pod)
    kopf.on.event("v1", "events", field="reason", value=c.SPOT_TO_BE_RELEASED_REASON, registry=registry)(
        on_spot_release_event
    )
