"""Thin kopf handlers: every trigger calls ``reconcile``, which renders and applies.

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
from collections import defaultdict
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from recops_operator import events, metrics, rejections
from recops_operator.api.models import GROUP, PLURAL, VERSION, RecommenderServiceSpec
from recops_operator.apply import FIELD_MANAGER, Applier
from recops_operator.rejections import ChildRejected
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.render.serving import MANAGED_BY, deployment_name
from recops_operator.status import changed, compute_status, deployment_view, merge_conditions

log = logging.getLogger(__name__)
RESYNC_SECONDS = float(os.environ.get("RECOPS_RESYNC_SECONDS", "120"))

_api: client.ApiClient | None = None
_locks: defaultdict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)


# children whose events trigger a reconcile and keep the applier's read cache current
CHILD_WATCHES: tuple[tuple[tuple[str, ...], tuple[str, str]], ...] = (
    (("apps", "v1", "deployments"), ("apps/v1", "Deployment")),
    (("v1", "services"), ("v1", "Service")),
    (("v1", "configmaps"), ("v1", "ConfigMap")),
    (("autoscaling", "v2", "horizontalpodautoscalers"), ("autoscaling/v2", "HorizontalPodAutoscaler")),
    (("policy", "v1", "poddisruptionbudgets"), ("policy/v1", "PodDisruptionBudget")),
    (("batch", "v1", "cronjobs"), ("batch/v1", "CronJob")),
    (("networking.k8s.io", "v1", "ingresses"), ("networking.k8s.io/v1", "Ingress")),
    (("networking.k8s.io", "v1", "networkpolicies"), ("networking.k8s.io/v1", "NetworkPolicy")),
)

_client_lock = threading.RLock()  # handlers run in a thread pool: build shared clients once


def api() -> client.ApiClient:
    global _api
    with _client_lock:
        return _make_api()


def _make_api() -> client.ApiClient:
    global _api
    if _api is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _api = client.ApiClient()
    return _api


_applier: Applier | None = None


def applier() -> Applier:
    global _applier
    with _client_lock:
        if _applier is None:
            _applier = Applier(api())
            _applier.watched = {kind for _, kind in CHILD_WATCHES}
    return _applier


def _get_service(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api()).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def reconcile(
    namespace: str,
    name: str,
    *,
    raise_errors: bool = False,
    rollout: dict[str, Any] | None = None,
    fresh: bool = False,
    retry: int = 0,
) -> dict[str, Any] | None:
    """Converge the children of one RecommenderService and refresh its status. Idempotent.

    ``rollout`` is a new ``status.rollout`` from the rollout timer: children are rendered for it
    and it is persisted only after they applied, so the status never shows a canary weight that
    the router does not have yet (and a failed apply leaves the old step to be retried).
    ``fresh`` reads every child from the API server instead of the watch-fed cache (resync).
    """
    with _locks[(namespace, name)]:
        body = _get_service(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        generation = body["metadata"].get("generation")
        try:
            spec = RecommenderServiceSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:  # the webhook normally rejects this earlier
            msg = rejections.shorten(f"invalid spec: {e}")  # one line; the full error is logged
            log.warning("invalid spec of %s/%s: %s", namespace, name, e)
            _patch_status(body, {"observedGeneration": generation, "phase": "Failed"}, msg)
            return body
        owner = Owner(name=name, namespace=namespace, uid=body["metadata"]["uid"])
        ap = applier()
        monitoring = ap.has_kind("monitoring.coreos.com/v1", "ServiceMonitor")
        stored_rollout = (body.get("status") or {}).get("rollout")
        rollout_status = rollout if rollout is not None else stored_rollout
        ctx = RenderContext(
            monitoring_available=monitoring,
            mesh_available=ap.has_kind("networking.istio.io/v1", "VirtualService"),
            rollout=rollout_status,
        )
        error: str | None = None
        failure: ApiException | None = None
        try:
            desired = desired_objects(owner, spec, ctx)
            ap.apply_all(desired, fresh)
            if stored_rollout or rollout:  # candidate objects exist only once a rollout has started
                prune_canary(ap, owner, desired, fresh)
            metrics.RECONCILES.labels(result="ok").inc()
        except ApiException as e:
            failure = e
            error = _failure_message(e, body.get("spec"))
            log.warning("reconcile of %s/%s failed: %s; full response: %s", namespace, name, error, e.body)
            metrics.RECONCILES.labels(result="error").inc()
        dep = ap.get(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": deployment_name(owner), "namespace": namespace},
            },
            fresh,
        )
        metrics.observe_replicas(namespace, name, dep, spec.serving.replicas.min, spec.serving.replicas.max)
        new = compute_status(spec, generation, dep, reconcile_error=error, monitoring_available=monitoring)
        if rollout is not None and error is None:
            # merge patch: keys the state machine dropped are removed with explicit nulls
            new["rollout"] = {**{k: None for k in stored_rollout or {} if k not in rollout}, **rollout}
        else:
            rollout_status = stored_rollout
        new.update(rollout_summary(spec, rollout_status))
        _patch_status(body, new)  # status first: a failed create must show why, not blank columns
        if failure is not None:
            events.record(api(), body, "Warning", "ApplyFailed", error or "")
        if failure is not None and raise_errors:
            raise kopf.TemporaryError(error, delay=backoff(retry)) from failure
        return body


BACKOFF_BASE_SECONDS = float(os.environ.get("RECOPS_BACKOFF_BASE_SECONDS", "2"))
BACKOFF_CAP_SECONDS = float(os.environ.get("RECOPS_BACKOFF_CAP_SECONDS", "60"))  # a fix waits at most this


def backoff(retry: int) -> float:
    """Exponential retry delay, capped: a child the API server refuses is not hammered."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, retry))


def _failure_message(e: ApiException, spec: dict[str, Any] | None) -> str:
    """One line: which child, which field, what the API server said."""
    if isinstance(e, ChildRejected):
        return rejections.describe(e.kind, e.name, e, spec)
    return rejections.shorten(f"apply failed: {e.status} {e.reason}: {rejections.causes(e)[0][1]}")


CANARY_KINDS = (
    ("apps/v1", "Deployment", "{name}-canary"),
    ("v1", "Service", "{name}-canary"),
    ("v1", "ConfigMap", "{name}-serving-canary"),
    ("networking.k8s.io/v1", "Ingress", "{name}-canary"),
)


def prune_canary(ap: Applier, owner: Owner, desired: list[dict[str, Any]], fresh: bool = False) -> None:
    """Remove candidate-track objects once a rollout no longer renders them (rollback, promotion)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for api_version, kind, pattern in CANARY_KINDS:
        name = pattern.format(name=owner.name)
        if (kind, name) in wanted:
            continue
        live = ap.get(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": owner.namespace},
            },
            fresh,
        )
        if live and any(r.get("uid") == owner.uid for r in live["metadata"].get("ownerReferences") or []):
            ap.delete(api_version, kind, name, owner.namespace)


def rollout_summary(spec: RecommenderServiceSpec, st: dict[str, Any] | None) -> dict[str, Any]:
    """Top-level status fields that the printer columns show."""
    from recops_operator.rollout.machine import LIVE, stable_version

    st = st or {}
    live = st.get("phase") in LIVE or st.get("phase") == "Paused"
    return {
        "stableVersion": stable_version(spec.model.version, spec.rollout, st),
        "candidateVersion": st.get("candidate") if live else None,
        "canaryWeight": int(st.get("weight", 0)) if live else 0,
    }


def _patch_status(body: dict[str, Any], new: dict[str, Any], error: str | None = None) -> None:
    live = body.get("status") or {}
    if error:
        new["conditions"] = [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": error}]
    if not changed(live, new):
        return
    new["conditions"] = merge_conditions(live.get("conditions") or [], new.get("conditions") or [])
    meta = body["metadata"]
    client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": new}
    )
    applier().writes += 1
    if live.get("phase") != new.get("phase"):
        phase = new.get("phase") or "Unknown"
        kind = "Warning" if phase in ("Failed", "Degraded") else "Normal"
        events.record(api(), body, kind, phase, new["conditions"][0].get("message", ""))


# ------------------------------------------------------------------ kopf triggers
@kopf.on.resume(GROUP, VERSION, PLURAL, id="serving-resume")
@kopf.on.create(GROUP, VERSION, PLURAL, id="serving-create")
@kopf.on.update(GROUP, VERSION, PLURAL, id="serving-update", field="spec")
def on_spec(namespace: str, name: str, retry: int = 0, **_: Any) -> None:
    reconcile(namespace, name, raise_errors=True, retry=retry)


@kopf.on.event(GROUP, VERSION, PLURAL, id="serving-forget")
def on_service_event(type: str | None, namespace: str, name: str, **_: Any) -> None:
    """Deletion needs no cleanup (owner references); only this service's gauges are dropped."""
    if type == "DELETED":
        metrics.forget(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, id="serving-resync", interval=RESYNC_SECONDS, idle=RESYNC_SECONDS)
def on_resync(namespace: str, name: str, **_: Any) -> None:
    reconcile(namespace, name, fresh=True)  # the safety net does not trust the cache


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
    entries = meta.get("managedFields") or []
    if not entries:
        return True
    latest = max(e.get("time") or "" for e in entries)
    last = [e for e in entries if (e.get("time") or "") == latest]
    return not all(e.get("manager") == FIELD_MANAGER or e.get("subresource") == "status" for e in last)


def _on_child(body: kopf.Body, namespace: str | None, type: str | None = None, **_: Any) -> None:
    """Child events come in bursts (a new Deployment changes status several times in a second):
    while one reconcile of the owner is already waiting for its lock, another adds nothing,
    since the waiting one reads the latest state when it runs. At most one runs and one waits."""
    applier().observe(dict(body), deleted=type == "DELETED")  # keeps reconcile's reads current
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
        with _locks[key]:
            with _queued_lock:
                _queued.discard(key)
            reconcile(namespace, owner)
    except ApiException as e:  # the resync timer retries
        log.warning("child-triggered reconcile of %s/%s failed: %s", namespace, owner, e.reason)


for _resource, _ in CHILD_WATCHES:
    kopf.on.event(*_resource, labels=_CHILD_LABELS, id=f"child-{_resource[-1]}")(_on_child)
