"""One level-based training reconcile of a RecommenderService (thin I/O over the pure parts).

``sync_training`` reads the service's training Jobs, then: turns a pending on-demand
trigger into a queued Job; starts the oldest queued run when none is active; computes
``status.training``; and, the first time it sees a run finished, runs the closed loop
(metrics gate -> maybe ``spec.rollout.candidate``). Every step is idempotent, so it can
run from a timer, a Job event or a spec change, after an operator restart or twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from recops_operator.api.models import GROUP, PLURAL, VERSION, Training
from recops_operator.controller import CONTROLLER
from recops_operator.training import artifacts, loop, naming, preemption, runs
from recops_operator.training import config as c
from recops_operator.training import metrics as m
from recops_operator.training.config import training_of
from recops_operator.training.render import pending_trigger, render_on_demand_job, training_selector

log = logging.getLogger(__name__)


def list_training_jobs(api: client.ApiClient, namespace: str, service: str) -> list[dict[str, Any]]:
    batch = client.BatchV1Api(api)
    resp = batch.list_namespaced_job(
        namespace, label_selector=training_selector(service), _preload_content=False
    )
    return json.loads(resp.data)["items"]


def _create_job(api: client.ApiClient, job: dict[str, Any]) -> dict[str, Any] | None:
    try:
        client.BatchV1Api(api).create_namespaced_job(job["metadata"]["namespace"], job)
    except ApiException as exc:
        if exc.status != 409:  # AlreadyExists: this trigger was turned into a run before
            raise
        return None
    return job


def sync_training(
    api: client.ApiClient, body: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(status.training to write, spec merge patch or None) for ``body``."""
    spec = body.get("spec") or {}
    cfg = training_of(spec)
    if cfg is None:
        return None, None
    meta = body["metadata"]
    namespace, service = meta["namespace"], meta["name"]
    m.touch(namespace, service)
    previous = (body.get("status") or {}).get("training") or {}
    status: dict[str, Any] = {
        "lastTrigger": previous.get("lastTrigger"),
        "preemptions": previous.get("preemptions", 0),
    }
    jobs = list_training_jobs(api, namespace, service)

    token = pending_trigger(body)
    if token:
        job = render_on_demand_job(body, token)
        if _create_job(api, job):
            log.info(
                "training %s/%s: on-demand run %s queued (trigger %r)",
                namespace,
                service,
                job["metadata"]["name"],
                token,
            )
            jobs.append({**job, "metadata": {**job["metadata"], "creationTimestamp": "9999"}, "status": {}})
        status["lastTrigger"] = token

    start = runs.next_to_start(jobs)
    if start:
        client.BatchV1Api(api).patch_namespaced_job(start, namespace, {"spec": {"suspend": False}})
        log.info("training %s/%s: starting run %s", namespace, service, start)
        for j in jobs:
            if j["metadata"]["name"] == start:
                j["spec"]["suspend"] = False

    current, last = runs.current_and_last(jobs)
    status["currentRun"] = current
    spec_patch = None
    prev_last = previous.get("lastRun") or {}
    if last is not None:
        if prev_last.get("name") == last["name"] and "gate" in prev_last:
            last = {**prev_last, **last}  # keep the closed-loop record made when it finished
        else:
            last, spec_patch = _finish_run(body, cfg, last)
            if last["phase"] == "Failed":
                msg = failure_message(api, namespace, last["name"])
                if msg:
                    last["message"] = msg
            status["preemptions"] = int(status["preemptions"] or 0) + int(last.get("preemptions", 0))
            m.runs_total.labels(namespace, service, last["phase"]).inc()
    status["lastRun"] = last or None
    ckpt_run = (current or last or {}).get("name")
    if ckpt_run:
        ts = artifacts.last_checkpoint_time(naming.checkpoint_uri(cfg.checkpoint.uri, ckpt_run))
        status["lastCheckpointTime"] = ts or previous.get("lastCheckpointTime")
        if ts:
            m.set_last_checkpoint(namespace, service, ts)
    return status, spec_patch


def _finish_run(
    body: Mapping[str, Any], cfg: Training, run: dict[str, Any]
) -> tuple[dict[str, Any], dict | None]:
    """Closed-loop step for a run seen finished for the first time."""
    spec = body.get("spec") or {}
    model = spec.get("model") or {}
    cand = serving = None
    if run["phase"] == "Succeeded" and model.get("uri"):
        cand_manifest = artifacts.read_manifest(naming.bundle_uri(model["uri"], run["version"]))
        cand = artifacts.offline_metrics(cand_manifest)
        if cand_manifest and cand_manifest.get("data_window"):
            run["dataWindow"] = cand_manifest["data_window"]
        if cand_manifest and cand_manifest.get("data_report"):
            rep = cand_manifest["data_report"]
            run["data"] = {k: rep.get(k) for k in ("rows", "rejected", "reasons", "items_without_catalog")}
        if cand_manifest and cand_manifest.get("retrieval"):
            ret = cand_manifest["retrieval"]
            run["retrieval"] = {
                "mode": ret.get("mode"),
                "recallAtK": ret.get("recall_at_k"),
                "k": ret.get("k"),
                "efSearch": ret.get("ef_search"),
            }
            if isinstance(ret.get("recall_at_k"), int | float):
                meta = body.get("metadata") or {}
                m.retrieval_recall.labels(meta.get("namespace") or "default", meta.get("name")).set(
                    float(ret["recall_at_k"])
                )
        if cand_manifest and cand_manifest.get("serving"):
            srv = cand_manifest["serving"]
            run["tuned"] = {"exclude": srv.get("exclude"), "blend": srv.get("blend")}
        if model.get("version"):
            serving = artifacts.offline_metrics(
                artifacts.read_manifest(naming.bundle_uri(model["uri"], model["version"]))
            )
    decision = loop.decide(spec, run, cand, serving)
    run = {**run, **{k: v for k, v in decision.record.items() if k not in ("run", "version")}}
    meta = body["metadata"]
    log.info(
        "training %s/%s: run %s %s -> %s",
        meta["namespace"],
        meta["name"],
        run["name"],
        run["phase"],
        run["action"],
    )
    if decision.candidate_version:
        return run, loop.candidate_patch(decision.candidate_version)
    return run, None


def trained_conditions(
    body: Mapping[str, Any], status: Mapping[str, Any] | None
) -> list[dict[str, Any]] | None:
    """status.conditions with the training controller's ``Trained`` condition for the last finished run
    (None: nothing to change). Other controllers' conditions are kept as they are."""
    from recops_operator.status import condition, merge_conditions

    last = (status or {}).get("lastRun") or {}
    if not last.get("phase"):
        return None
    old = list((body.get("status") or {}).get("conditions") or [])
    gen = (body.get("metadata") or {}).get("generation")
    if last["phase"] == "Succeeded":
        gate = last.get("gate") or {}
        why = "; ".join(gate.get("reasons") or []) or "metrics gate passed"
        new = condition(
            "Trained", True, "RunSucceeded", f"run {last['name']}: {last.get('action', 'done')} ({why})", gen
        )
    else:
        msg = (
            last.get("message")
            or f"run {last['name']} ended {last['phase']} ({last.get('reason', 'no reason given')})"
        )
        new = condition("Trained", False, "RunFailed", f"run {last['name']}: {msg}"[:512], gen)
    current = next((c for c in old if c.get("type") == "Trained"), None)
    if current and all(current.get(k) == new[k] for k in ("status", "reason", "message")):
        return None
    return merge_conditions(old, [new])


def failure_message(api: client.ApiClient, namespace: str, job: str) -> str | None:
    """The trainer's one-line reason (its termination message, e.g. a data error naming the file)."""
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    except ApiException:
        return None
    for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0, reverse=True):
        for cs in pod.status.container_statuses or []:
            term = (cs.state and cs.state.terminated) or (cs.last_state and cs.last_state.terminated)
            if cs.name == c.CONTAINER_NAME and term and term.exit_code and term.message:
                line = term.message.strip().splitlines()[0]
                return f"exit {term.exit_code}: {line[:300]}"
    return None


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def status_changed(body: Mapping[str, Any], status: Mapping[str, Any] | None) -> bool:
    """Whether writing ``status`` would change ``status.training`` (steady state makes no writes)."""
    if status is None:
        return False
    current = (body.get("status") or {}).get("training") or {}
    return _strip_none(dict(status)) != _strip_none(dict(current))


def apply_sync(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """Fetch the service, sync, and write status/spec (for callers outside a kopf handler)."""
    custom = client.CustomObjectsApi(api)
    with CONTROLLER.lock(namespace, name):
        try:
            body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        status, spec_patch = sync_training(api, body)
        if spec_patch:
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, spec_patch)
        conditions = trained_conditions(body, status)
        if status_changed(body, status) or conditions:
            patch: dict[str, Any] = {"training": status}
            if conditions:
                patch["conditions"] = conditions
            CONTROLLER.write_status(namespace, name, patch, api)
        return status


def preempted_job_annotation(pod: Mapping[str, Any], reason: str) -> tuple[str, dict[str, Any]] | None:
    """(job name, merge patch) that records ``pod`` as preempted on its Job."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if not job:
        return None
    key = runs.preempted_pod_key(pod["metadata"]["name"])
    return job, {"metadata": {"annotations": {key: reason}}}


def record_preemption(api: client.ApiClient, pod: Mapping[str, Any], reason: str) -> bool:
    """Count ``pod`` as a preemption of its run (once). True when newly recorded."""
    found = preempted_job_annotation(pod, reason)
    if not found:
        return False
    job_name, patch = found
    batch = client.BatchV1Api(api)
    namespace = pod["metadata"]["namespace"]
    try:
        job = batch.read_namespaced_job(job_name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    (key,) = patch["metadata"]["annotations"]
    if key in (job.metadata.annotations or {}):
        return False
    batch.patch_namespaced_job(job_name, namespace, patch)
    service = (pod["metadata"].get("labels") or {}).get(c.SERVICE_LABEL, "")
    m.preemptions_total.labels(namespace, service).inc()
    return True


def request_checkpoint(api: client.ApiClient, pod: Mapping[str, Any], why: str) -> bool:
    """Ask a training pod to checkpoint and exit inside the spot notice window.

    Eviction (API server adds DisruptionTarget; the kubelet sends SIGTERM and waits the
    pod's grace period, which the renderer keeps below the notice). If a PDB refuses the
    eviction, fall back to marking DisruptionTarget ourselves and deleting with the same
    grace period, so the Job still ignores the failure. Returns True when asked now.
    """
    meta = pod["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    if not preemption.should_request_checkpoint(pod):
        return False
    core = client.CoreV1Api(api)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    grace = int((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or c.MAX_GRACE_SECONDS)
    grace = min(grace, c.MAX_GRACE_SECONDS)
    try:
        core.create_namespaced_pod_eviction(name, namespace, preemption.eviction_body(name, namespace, grace))
    except ApiException as exc:
        if exc.status == 404:
            return False
        if exc.status != 429:
            raise
        cond = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "SpotToBeReleased",
            "message": "spot instance is about to be released; checkpointing",
            "lastTransitionTime": now,
        }
        core.patch_namespaced_pod_status(name, namespace, {"status": {"conditions": [cond]}})
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace)
    log.info("training pod %s/%s: asked to checkpoint and exit (%s, grace %ss)", namespace, name, why, grace)
    return True
