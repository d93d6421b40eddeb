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
from recops_operator.api.status import (
    RunData,
    RunDataWindow,
    RunRetrieval,
    RunTuned,
    TrainingRun,
    TrainingStatus,
    drop_none,
    merge_patch,
)
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
) -> tuple[TrainingStatus | None, dict[str, Any] | None]:
    """(status.training to write, spec merge patch or None) for ``body``."""
    spec = body.get("spec") or {}
    cfg = training_of(spec)
    if cfg is None:
        return None, None
    meta = body["metadata"]
    namespace, service = meta["namespace"], meta["name"]
    m.touch(namespace, service)
    previous = stored_training(body)
    status = TrainingStatus(last_trigger=previous.last_trigger, preemptions=previous.preemptions)
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
        status.last_trigger = token

    start = runs.next_to_start(jobs)
    if start:
        client.BatchV1Api(api).patch_namespaced_job(start, namespace, {"spec": {"suspend": False}})
        log.info("training %s/%s: starting run %s", namespace, service, start)
        for j in jobs:
            if j["metadata"]["name"] == start:
                j["spec"]["suspend"] = False

    current, last = runs.current_and_last(jobs)
    status.current_run = current
    spec_patch = None
    prev_last = previous.last_run
    if last is not None:
        if prev_last is not None and prev_last.name == last.name and prev_last.gate is not None:
            # keep the closed-loop record made when it finished, under the Job's current facts
            last = prev_last.model_copy(update=last.model_dump(exclude_none=True))
        else:
            last, spec_patch = _finish_run(body, cfg, last)
            if last.phase == "Failed":
                msg = failure_message(api, namespace, last.name)
                if msg:
                    last.message = msg
            status.preemptions += last.preemptions or 0
            m.runs_total.labels(namespace, service, last.phase).inc()
    status.last_run = last
    ckpt_run = current or last
    if ckpt_run is not None:
        ts = artifacts.last_checkpoint_time(naming.checkpoint_uri(cfg.checkpoint.uri, ckpt_run.name))
        status.last_checkpoint_time = ts or previous.last_checkpoint_time
        if ts:
            m.set_last_checkpoint(namespace, service, ts)
    return status, spec_patch


def _finish_run(body: Mapping[str, Any], cfg: Training, run: TrainingRun) -> tuple[TrainingRun, dict | None]:
    """Closed-loop step for a run seen finished for the first time."""
    spec = body.get("spec") or {}
    model = spec.get("model") or {}
    cand = serving = None
    if run.phase == "Succeeded" and model.get("uri"):
        cand_manifest = artifacts.read_manifest(naming.bundle_uri(model["uri"], run.version))
        cand = artifacts.offline_metrics(cand_manifest)
        run = run.model_copy(update=_manifest_lineage(cand_manifest or {}))
        if run.retrieval and run.retrieval.recall_at_k is not None:
            meta = body.get("metadata") or {}
            m.retrieval_recall.labels(meta.get("namespace") or "default", meta.get("name")).set(
                run.retrieval.recall_at_k
            )
        if model.get("version"):
            serving = artifacts.offline_metrics(
                artifacts.read_manifest(naming.bundle_uri(model["uri"], model["version"]))
            )
    decision = loop.decide(spec, run, cand, serving)
    run = decision.record
    meta = body["metadata"]
    log.info(
        "training %s/%s: run %s %s -> %s",
        meta["namespace"],
        meta["name"],
        run.name,
        run.phase,
        run.action,
    )
    if decision.candidate_version:
        return run, loop.candidate_patch(decision.candidate_version)
    return run, None


def _manifest_lineage(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The run-record fields a bundle manifest provides: data window, data report, retrieval, tuned serving."""
    fields: dict[str, Any] = {}
    if manifest.get("data_window"):
        fields["data_window"] = RunDataWindow.model_validate(manifest["data_window"])
    if manifest.get("data_report"):
        fields["data"] = RunData.model_validate(manifest["data_report"])
    if manifest.get("retrieval"):
        ret = manifest["retrieval"]
        fields["retrieval"] = RunRetrieval(
            mode=ret.get("mode"),
            recall_at_k=ret.get("recall_at_k"),
            k=ret.get("k"),
            ef_search=ret.get("ef_search"),
        )
    if manifest.get("serving"):
        srv = manifest["serving"]
        fields["tuned"] = RunTuned(exclude=srv.get("exclude"), blend=srv.get("blend"))
    return fields


def stored_training(body: Mapping[str, Any]) -> TrainingStatus:
    """``status.training`` as stored (lenient: a status an older operator wrote still loads)."""
    return TrainingStatus.of((body.get("status") or {}).get("training"))


def trained_conditions(body: Mapping[str, Any], status: TrainingStatus | None) -> list[dict[str, Any]] | None:
    """status.conditions with the training controller's ``Trained`` condition for the last finished run
    (None: nothing to change). Other controllers' conditions are kept as they are."""
    from recops_operator.status import condition, merge_conditions

    last = status.last_run if status is not None else None
    if last is None or not last.phase:
        return None
    old = list((body.get("status") or {}).get("conditions") or [])
    gen = (body.get("metadata") or {}).get("generation")
    if last.phase == "Succeeded":
        why = "; ".join(last.gate.reasons if last.gate else []) or "metrics gate passed"
        new = condition(
            "Trained", True, "RunSucceeded", f"run {last.name}: {last.action or 'done'} ({why})", gen
        )
    else:
        msg = last.message or f"run {last.name} ended {last.phase} ({last.reason or 'no reason given'})"
        new = condition("Trained", False, "RunFailed", f"run {last.name}: {msg}"[:512], gen)
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


def status_changed(body: Mapping[str, Any], status: TrainingStatus | None) -> bool:
    """Whether writing ``status`` would change ``status.training`` as stored (steady state makes no
    writes). Compared with the stored form itself, so keys the type does not know are written away."""
    if status is None:
        return False
    return status.dump() != drop_none((body.get("status") or {}).get("training") or {})


def training_patch(body: Mapping[str, Any], status: TrainingStatus | None) -> dict[str, Any] | None:
    """The merge patch of ``status.training`` that makes the stored value ``status.dump()`` exactly
    (keys of an earlier run are nulled, not merged into the new one); None when nothing changes."""
    if not status_changed(body, status):
        return None
    return merge_patch((body.get("status") or {}).get("training"), status.dump())


def apply_sync(api: client.ApiClient, namespace: str, name: str) -> TrainingStatus | None:
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
        training = training_patch(body, status)
        conditions = trained_conditions(body, status)
        if training or conditions:
            patch: dict[str, Any] = {}
            if training:
                patch["training"] = training
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
