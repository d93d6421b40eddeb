"""The serving reconcile: render a RecommenderService's children from its spec, apply them,
and write the status that says how they are doing. Every trigger (``handlers``: spec changes,
child events, the resync timer; ``rollout.handlers``: a new rollout step) ends here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from recops_operator import events, metrics, oss, rejections
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.apply import Applier
from recops_operator.controller import CONTROLLER
from recops_operator.rejections import ChildRejected
from recops_operator.render import Owner, RenderContext, autoscaling, desired_objects
from recops_operator.render import stream as stream_render
from recops_operator.render.serving import deployment_name
from recops_operator.rollout import analysis
from recops_operator.status import changed, compute_status, condition, merge_conditions
from recops_operator.training.config import TRIGGER_SCHEDULED, TrainingConfigError, training_of
from recops_operator.training.render import render_pod_template

log = logging.getLogger(__name__)


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
    with CONTROLLER.lock(namespace, name):
        body = CONTROLLER.get_service(namespace, name)
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
        ap = CONTROLLER.applier()
        monitoring = ap.has_kind("monitoring.coreos.com/v1", "ServiceMonitor")
        wants_stream = bool(spec.features and spec.features.stream)
        # checked per reconcile (memoised by the applier, an absent kind re-checked after a minute)
        flink = ap.has_kind(stream_render.FLINK_API, stream_render.FLINK_KIND)
        stored_rollout = (body.get("status") or {}).get("rollout")
        rollout_status = rollout if rollout is not None else stored_rollout
        ctx = RenderContext(
            monitoring_available=monitoring,
            mesh_available=ap.has_kind("networking.istio.io/v1", "VirtualService"),
            rollout=rollout_status,
            keda_available=ap.has_kind(autoscaling.KEDA_API, autoscaling.SCALED_OBJECT),
            flink_available=flink,
            prometheus_url=os.environ.get("RECOPS_PROMETHEUS_URL"),
            now=dt.datetime.now(dt.UTC),
        )
        error: str | None = None
        failure: ApiException | None = None
        desired: list[dict[str, Any]] = []
        try:
            desired = desired_objects(owner, spec, ctx)
            ap.apply_all(desired, fresh)
            prune_autoscaler(ap, owner, desired, ctx.keda_available, fresh)
            if stored_rollout or rollout:  # candidate objects exist only once a rollout has started
                prune_canary(ap, owner, desired, fresh)
            prune_optional(ap, owner, desired, fresh)
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
        new["conditions"] += autoscaling.autoscaling_conditions(spec, ctx, generation)
        _window_events(body, new["conditions"])
        _storage_status(body, new, ap, namespace, desired, fresh)
        lag_url = autoscaling.prometheus_url(spec, ctx) if fresh else None
        _stream_status(body, spec, new, ap, owner, flink and wants_stream, fresh, lag_url)
        if rollout is not None and error is None:
            # merge patch: keys the state machine dropped are removed with explicit nulls
            new["rollout"] = {**{k: None for k in stored_rollout or {} if k not in rollout}, **rollout}
        else:
            rollout_status = stored_rollout
        new.update(rollout_summary(spec, rollout_status))
        _patch_status(body, new)  # status first: a failed create must show why, not blank columns
        if failure is not None:
            events.record(CONTROLLER.api(), body, "Warning", "ApplyFailed", error or "")
        if failure is not None and raise_errors:
            raise kopf.TemporaryError(error, delay=backoff(retry)) from failure
        return body


def _storage_status(
    body: dict[str, Any], new: dict[str, Any], ap: Applier, namespace: str, desired: list, fresh: bool
) -> None:
    """The StorageReady condition: every bucket claim the service's pods mount (serving, search and
    training pods alike) exists and is Bound; else which one is not, and a Warning Event when the
    condition turns False. Without OSS volumes (local URIs, ``RECOPS_OSS_VOLUMES=none``) no condition."""
    needed = oss.claims(desired + _training_templates(body))
    if not needed:
        return
    missing, unbound = [], []
    for claim in needed:
        live = ap.get({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": claim, "namespace": namespace}}, fresh)  # fmt: skip
        if live is None:
            missing.append(claim)
        elif ((live.get("status") or {}).get("phase")) != "Bound":
            unbound.append(f"{claim} ({(live.get('status') or {}).get('phase') or 'no phase'})")
    if missing:
        ok, reason = False, "ClaimMissing"
        msg = (f"no PersistentVolumeClaim {', '.join(missing)} in {namespace}: pods stay Pending until the "
               "platform creates it (chart value ossVolumes, docs/install.md)")  # fmt: skip
    elif unbound:
        ok, reason = False, "ClaimNotBound"
        msg = f"PersistentVolumeClaim not Bound: {', '.join(unbound)}"
    else:
        ok, reason, msg = True, "ClaimsBound", f"OSS buckets mounted from {', '.join(needed)}"
    new["conditions"].append(condition("StorageReady", ok, reason, msg, new.get("observedGeneration")))
    old = next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "StorageReady"),
        None,
    )
    if not ok and (old or {}).get("reason") != reason:
        events.record(CONTROLLER.api(), body, "Warning", reason, msg)


def _training_templates(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The training pod template, when the spec trains: on-demand runs mount what scheduled ones do."""
    try:
        cfg = training_of(body.get("spec") or {})
        return [render_pod_template(body, cfg, TRIGGER_SCHEDULED)] if cfg else []
    except TrainingConfigError:  # reported by the training controller
        return []


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


def prune_autoscaler(
    ap: Applier, owner: Owner, desired: list[dict[str, Any]], keda: bool, fresh: bool = False
) -> None:
    """Exactly one autoscaler: the plain HPA goes once KEDA renders (KEDA then owns ``keda-hpa-<name>``),
    the ScaledObject goes when keda.sh disappears (its HPA goes with it, by owner reference)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    kinds = [("autoscaling/v2", "HorizontalPodAutoscaler")]
    if keda:
        kinds.append((autoscaling.KEDA_API, autoscaling.SCALED_OBJECT))
    for api_version, kind in kinds:
        if (kind, owner.name) in wanted:
            continue
        ref = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": owner.name, "namespace": owner.namespace},
        }
        live = ap.get(ref, fresh)
        if live and any(r.get("uid") == owner.uid for r in live["metadata"].get("ownerReferences") or []):
            ap.delete(api_version, kind, owner.name, owner.namespace)


def _window_events(body: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
    """An Event when a sale window opens or closes (the PreScaled condition flips)."""
    new = next((c for c in conditions if c["type"] == "PreScaled"), None)
    old = next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "PreScaled"), None
    )
    if new is None or (old is not None and old.get("status") == new["status"]):
        return
    if old is None and new["status"] != "True":
        return
    reason = "SaleWindowOpened" if new["status"] == "True" else "SaleWindowClosed"
    events.record(CONTROLLER.api(), body, "Normal", reason, new["message"])


def _stream_status(
    body: dict[str, Any],
    spec: RecommenderServiceSpec,
    new: dict[str, Any],
    ap: Applier,
    owner: Owner,
    deployed: bool,
    fresh: bool,
    lag_url: str | None = None,
) -> None:
    """``status.stream`` and the StreamJobReady condition from the live FlinkDeployment and the
    job's lag; a Warning Event when the condition turns to CRDsMissing, JobFailed or FallingBehind
    (once per transition)."""
    flink = deployed or not (spec.features and spec.features.stream)
    live = None
    if deployed:
        ref = {
            "apiVersion": stream_render.FLINK_API,
            "kind": stream_render.FLINK_KIND,
            "metadata": {"name": stream_render.stream_name(owner), "namespace": owner.namespace},
        }
        live = ap.get(ref, fresh)
    lag = _stream_lag(body, owner, lag_url) if deployed else None
    cond = stream_render.stream_condition(spec, flink, live, lag)
    new["stream"] = stream_render.stream_status(live, lag) if deployed else None
    if cond is None:
        return
    kind, ok, reason, message = cond
    new["conditions"].append(condition(kind, ok, reason, message, new.get("observedGeneration")))
    old = next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)
    if reason in STREAM_EVENTS and (old is None or old.get("reason") != reason):
        events.record(CONTROLLER.api(), body, "Warning", STREAM_EVENTS[reason], message)


#: StreamJobReady reasons that raise a Warning Event when the condition turns to them
STREAM_EVENTS = {
    "CRDsMissing": "FlinkCRDsMissing",
    "JobFailed": "StreamJobFailed",
    "FallingBehind": "StreamJobBehind",
}


def _stream_lag(body: dict[str, Any], owner: Owner, url: str | None) -> float | None:
    """The job's lag from Prometheus at a resync (``url`` set), else the last one in status: one
    query per resync period, not one per child event. Unreachable or no series: unknown (None)."""
    if url is None:
        return ((body.get("status") or {}).get("stream") or {}).get("lagRecords")
    try:
        return analysis.prometheus_query(url, timeout=2)(stream_render.lag_query(owner))
    except Exception as e:  # a monitoring outage must not fail the reconcile
        log.warning("stream lag query at %s failed: %s", url, e)
        return None


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


#: children that exist only while a spec section asks for them (spec.search with a schedule)
OPTIONAL_KINDS = (
    ("batch/v1", "CronJob", "{name}-vectorize"),
    ("networking.k8s.io/v1", "NetworkPolicy", "{name}-search"),
    ("flink.apache.org/v1beta1", "FlinkDeployment", "{name}-stream"),
    ("batch/v1", "CronJob", "{name}-archive"),
)


def prune_optional(ap: Applier, owner: Owner, desired: list[dict[str, Any]], fresh: bool = False) -> None:
    """Remove an optional child its spec section no longer renders. Outside a resync only the
    watch-fed cache is read (no API call per reconcile); a resync (``fresh``) reads the API server."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for api_version, kind, pattern in OPTIONAL_KINDS:
        name = pattern.format(name=owner.name)
        if (kind, name) in wanted or not ap.has_kind(api_version, kind):
            continue
        obj = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": owner.namespace},
        }
        live = ap.get(obj, True) if fresh else ap.cached(obj)
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
    CONTROLLER.write_status(meta["namespace"], meta["name"], new)
    if live.get("phase") != new.get("phase"):
        phase = new.get("phase") or "Unknown"
        kind = "Warning" if phase in ("Failed", "Degraded") else "Normal"
        events.record(CONTROLLER.api(), body, kind, phase, new["conditions"][0].get("message", ""))
