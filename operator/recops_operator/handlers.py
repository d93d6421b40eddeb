"""Thin kopf triggers of the serving controller: each one calls ``reconcile.reconcile``.

Triggers: spec changes (create/update/resume, retried with backoff on failure),
events on a child we own that can matter (a pod becoming ready changes the
Deployment's status; someone edits or deletes a child; bursts are coalesced and
the echoes of our own applies skipped), and a slow timer as a safety net.
Deletion needs no handler: every child carries a controller ownerReference, so
the garbage collector removes them, and object storage is never touched.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from recops_contracts import storage
from recops_operator import metrics
from recops_operator.api.models import GROUP, PLURAL, VERSION
from recops_operator.apply import FIELD_MANAGER
from recops_operator.controller import CHILD_WATCHES, CONTROLLER
from recops_operator.reconcile import reconcile
from recops_operator.render.serving import MANAGED_BY
from recops_operator.status import deployment_view

log = logging.getLogger(__name__)
RESYNC_SECONDS = float(os.environ.get("RECOPS_RESYNC_SECONDS", "120"))


def on_spec(namespace: str, name: str, retry: int = 0, **_: Any) -> None:
    reconcile(namespace, name, raise_errors=True, retry=retry)


def on_service_event(type: str | None, namespace: str, name: str, **_: Any) -> None:
    """Deletion needs no cleanup (owner references); only this service's gauges are dropped."""
    if type == "DELETED":
        metrics.forget(namespace, name)


def on_resync(namespace: str, name: str, **_: Any) -> None:
    reconcile(namespace, name, fresh=True)  # the safety net does not trust the cache


WINDOW_SECONDS = float(os.environ.get("RECOPS_WINDOW_SECONDS", "20"))


def _has_schedules(spec: Any, **_: Any) -> bool:
    return bool(((spec or {}).get("serving") or {}).get("autoscaling", {}).get("schedules"))


def on_sale_window_tick(namespace: str, name: str, **_: Any) -> None:
    """Sale windows open and close on the clock: re-render (the plain HPA's floor, PreScaled)."""
    reconcile(namespace, name)


_CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _owner_of(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "RecommenderService" and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return ref.get("name")
    return None


_queued: set[tuple[str, str]] = set()
_queued_lock = threading.Lock()


_deployment_seen: dict[tuple[str | None, str, str | None], tuple[Any, ...]] = {}


def _relevant(event_type: str | None, body: kopf.Body) -> bool:
    """Whether a child event can change what reconcile would do: a deletion, a change in the
    Deployment fields our status is computed from, or a write by someone else (drift). The echo
    of our own apply and status updates that change nothing we read (a Deployment's
    availableReplicas, HPA and PDB status) are skipped; ties count as relevant."""
    meta = body.get("metadata", {})
    key = (meta.get("namespace"), meta.get("name", ""), body.get("kind"))
    if event_type == "DELETED":
        _deployment_seen.pop(key, None)
        return True
    if body.get("kind") == "Deployment":
        view = deployment_view(body)
        if _deployment_seen.get(key) != view:
            _deployment_seen[key] = view
            return True
    if body.get("kind") == "FlinkDeployment":  # the Flink operator reports the job in status
        view = _flink_view(body)
        if _deployment_seen.get(key) != view:
            _deployment_seen[key] = view
            return True
    entries = meta.get("managedFields") or []
    if not entries:
        return True
    latest = max(e.get("time") or "" for e in entries)
    last = [e for e in entries if (e.get("time") or "") == latest]
    return not all(e.get("manager") == FIELD_MANAGER or e.get("subresource") == "status" for e in last)


def _flink_view(body: kopf.Body) -> tuple[Any, ...]:
    """The FlinkDeployment status fields the StreamJobReady condition is computed from."""
    st = body.get("status") or {}
    return (st.get("lifecycleState"), (st.get("jobStatus") or {}).get("state"), st.get("error"))


def _on_child(body: kopf.Body, namespace: str | None, type: str | None = None, **_: Any) -> None:
    """Child events come in bursts (a new Deployment changes status several times in a second):
    while one reconcile of the owner is already waiting for its lock, another adds nothing,
    since the waiting one reads the latest state when it runs. At most one runs and one waits."""
    CONTROLLER.applier().observe(dict(body), deleted=type == "DELETED")  # keeps reconcile's reads current
    owner = _owner_of(body)
    if not (owner and namespace) or not _relevant(type, body):
        return
    key = (namespace, owner)
    with _queued_lock:
        if key in _queued:
            metrics.COALESCED.inc()
            return
        _queued.add(key)
    try:
        with CONTROLLER.lock(*key):
            with _queued_lock:
                _queued.discard(key)
            reconcile(namespace, owner)
    except ApiException as e:  # the resync timer retries
        log.warning("child-triggered reconcile of %s/%s failed: %s", namespace, owner, e.reason)


def _is_bucket_claim(name: str | None, **_: Any) -> bool:
    return bool(name) and name.startswith(storage.CLAIM_PREFIX)


def on_bucket_claim(body: kopf.Body, namespace: str, name: str, type: str | None = None, **_: Any) -> None:
    """A bucket claim appeared, bound or went: keep the applier's copy current (reconcile reads
    it instead of the API) and reconcile the namespace's services whose StorageReady names it, so
    the condition follows at once (a claim only training pods use changes nothing else watched)."""
    CONTROLLER.applier().observe(dict(body), deleted=type == "DELETED")
    items = client.CustomObjectsApi(CONTROLLER.api()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    for body in items:
        conds = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "StorageReady" and name in (c.get("message") or "") for c in conds):
            try:
                reconcile(namespace, body["metadata"]["name"])
            except ApiException as e:  # the resync timer retries
                log.warning(
                    "claim-triggered reconcile of %s/%s failed: %s",
                    namespace,
                    body["metadata"]["name"],
                    e.reason,
                )


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the serving controller's triggers in ``registry``."""
    for on, id_ in ((kopf.on.resume, "serving-resume"), (kopf.on.create, "serving-create")):
        on(GROUP, VERSION, PLURAL, id=id_, registry=registry)(on_spec)
    kopf.on.update(GROUP, VERSION, PLURAL, id="serving-update", field="spec", registry=registry)(on_spec)
    kopf.on.event(GROUP, VERSION, PLURAL, id="serving-forget", registry=registry)(on_service_event)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="serving-resync",
        interval=RESYNC_SECONDS,
        idle=RESYNC_SECONDS,
        registry=registry,
    )(on_resync)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="serving-sale-windows",
        interval=WINDOW_SECONDS,
        when=_has_schedules,
        registry=registry,
    )(on_sale_window_tick)
    # bucket claims are the platform's (the chart's ossVolumes), not our children: watched by name
    kopf.on.event(
        "", "v1", "persistentvolumeclaims", when=_is_bucket_claim, id="bucket-claims", registry=registry
    )(on_bucket_claim)
    for resource, _ in CHILD_WATCHES:
        kopf.on.event(*resource, labels=_CHILD_LABELS, id=f"child-{resource[-1]}", registry=registry)(
            _on_child
        )
