"""The training harness on the real control plane, shared by the training and chart tests.

KWOK's ``recops-job-pod-succeeded`` stage completes every Running Job pod after ~1 s; a pod
carrying ``HOLD`` in its *rendered* template stays Running (to preempt it or hold the run slot).
A preemption is simulated the way the kubelet reports one (``fail_pod``: Failed with
``DisruptionTarget=True``) or through the real Eviction API.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from recops_contracts import storage
from recops_operator.api.status import TrainingStatus
from recops_operator.training import config as c
from recops_operator.training import naming, runs
from recops_operator.training.render import render_on_demand_job
from recops_operator.training.sync import sync_training

HOLD = "recops.io/kwok-hold"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hold(template: dict[str, Any]) -> None:
    template["metadata"].setdefault("annotations", {})[HOLD] = "true"


def ssa_apply(cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=recops.io/training-test", "-f", "-", input=json.dumps(obj)
    )


def list_pods(api, ns: str, selector: str) -> list[dict[str, Any]]:
    resp = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector, _preload_content=False)
    return sorted(json.loads(resp.data)["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def read_job(api, ns: str, name: str) -> dict[str, Any]:
    resp = client.BatchV1Api(api).read_namespaced_job(name, ns, _preload_content=False)
    return json.loads(resp.data)


def node_labels(api) -> dict[str, dict[str, str]]:
    return {n.metadata.name: n.metadata.labels for n in client.CoreV1Api(api).list_node().items}


def body_for(svc, ns: str, **training) -> dict[str, Any]:
    """The training fixture's body in namespace ``ns`` (its URIs stay ``oss://``, as the API
    requires; ``local_oss`` maps them to a local directory)."""
    body = svc(**training)
    body["metadata"]["namespace"] = ns
    del body["metadata"]["uid"]  # not stored in this cluster: no owner reference
    return body


def local_oss(monkeypatch, root: Path) -> Path:
    """``oss://bucket/key`` -> ``root/bucket/key`` for this process (``RECOPS_OSS_LOCAL_ROOT``, the
    same mapping the trainer and the operator use for a mounted OSS volume)."""
    monkeypatch.setenv("RECOPS_OSS_LOCAL_ROOT", str(root))
    return root


def bundle_dir(body: dict[str, Any], version: str) -> Path:
    """Where ``version``'s bundle lives locally under the body's ``spec.model.uri``."""
    return storage.local_path(naming.bundle_uri(body["spec"]["model"]["uri"], version))


def checkpoint_dir(body: dict[str, Any], run: str) -> Path:
    """Where run ``run``'s checkpoints live locally under ``spec.training.checkpoint.uri``."""
    return storage.local_path(naming.checkpoint_uri(body["spec"]["training"]["checkpoint"]["uri"], run))


def running_pods(api, ns, selector, n=1):
    def ready():
        pods = [p for p in list_pods(api, ns, selector) if p["status"].get("phase") == "Running"]
        return pods if len(pods) >= n else None

    return ready


def fail_pod(
    api,
    pod: dict[str, Any],
    *,
    exit_code: int,
    disruption: bool,
    reason: str | None = None,
    eci_expired: bool = False,
    message: str | None = None,
) -> None:
    """What the kubelet (or ECI) writes for a terminated pod, optionally with DisruptionTarget."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conds = []
    if disruption:
        conds.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "TerminationByKubelet",
                "lastTransitionTime": now,
            }
        )
    if eci_expired:
        conds.append({"type": c.ECI_EXPIRED_CONDITION, "status": "True", "lastTransitionTime": now})
    status = {
        "phase": "Failed",
        **({"reason": reason} if reason else {}),
        "conditions": conds,
        "containerStatuses": [
            {
                "name": c.CONTAINER_NAME,
                "image": pod["spec"]["containers"][0]["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error",
                        **({"message": message} if message else {}),
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status}
    )


def job_condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype and cond["status"] == "True":
            return cond
    return None


def sync_once(api, body: dict[str, Any]) -> tuple[TrainingStatus, dict[str, Any] | None]:
    """One reconcile as the operator does it, carrying status forward like the API server would."""
    status, spec_patch = sync_training(api, body)
    body["status"] = {"training": status.dump() if status else None}
    if spec_patch:
        body["spec"]["rollout"] = spec_patch["spec"]["rollout"]
    unsuspended = [
        j["metadata"]["name"]
        for j in runs_of(api, body)
        if not j["spec"].get("suspend") and runs.job_phase(j)[0] in ("Pending", "Running")
    ]
    assert len(unsuspended) <= 1, f"two runs at once: {unsuspended}"
    return status, spec_patch


def runs_of(api, body):
    from recops_operator.training.sync import list_training_jobs

    return list_training_jobs(api, body["metadata"]["namespace"], body["metadata"]["name"])


def training_registry():
    """Only the training handlers (other modules imported in this process register admission
    handlers in the default registry, which would need a webhook server)."""
    import kopf

    from recops_operator.training import handlers

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    handlers.register(registry)
    return registry


def kubelet_env(container: dict, job_name: str, pod_name: str) -> dict[str, str]:
    """Downward API + ``$(VAR)`` expansion, in declaration order, as the kubelet does."""
    env: dict[str, str] = {}
    field_values = {"metadata.labels['batch.kubernetes.io/job-name']": job_name, "metadata.name": pod_name}
    for e in container["env"]:
        if "resourceFieldRef" in e.get("valueFrom", {}):  # limits.cpu with divisor 1: rounded up
            ref = e["valueFrom"]["resourceFieldRef"]
            assert (ref["containerName"], ref["resource"]) == (container["name"], "limits.cpu")
            cpu = str(container["resources"]["limits"]["cpu"])
            env[e["name"]] = str(math.ceil(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)))
        elif "valueFrom" in e:
            env[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def answer_spot_release_notice(k8s_cluster, k8s_namespace: str, svc, signal: str) -> None:
    """With the training handlers running: ECI's spot-release notice (an Event or the pod
    condition) on a running training pod -> the operator evicts it -> a replacement pod runs with
    the same args, and the run counts one preemption without failing."""
    api, ns = k8s_cluster.api_client(), k8s_namespace
    job = render_on_demand_job(body_for(svc, ns, backoffLimit=0, placement="eci"), f"notice-{signal}")
    job["spec"]["suspend"] = False
    hold(job["spec"]["template"])
    ssa_apply(k8s_cluster, job)
    name = job["metadata"]["name"]
    sel = f"batch.kubernetes.io/job-name={name}"
    (pod,) = wait_for("training pod running", running_pods(api, ns, sel))
    core = client.CoreV1Api(api)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if signal == "event":  # what ECI emits ~3 min before the release
        core.create_namespaced_event(
            ns,
            {
                "metadata": {"generateName": "spot-", "namespace": ns},
                "involvedObject": {
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "namespace": ns,
                    "apiVersion": "v1",
                },
                "reason": c.SPOT_TO_BE_RELEASED_REASON,
                "message": "Spot ECI will be released",
                "type": "Warning",
                "source": {"component": "virtual-kubelet"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )
    else:  # and the pod condition it sets
        cond = {"type": c.ECI_EXPIRED_CONDITION, "status": "True", "lastTransitionTime": now}
        core.patch_namespaced_pod_status(
            pod["metadata"]["name"], ns, {"status": {"conditions": [*pod["status"]["conditions"], cond]}}
        )
    t0 = time.monotonic()
    replacement = wait_for(
        "replacement pod after the operator's eviction",
        lambda: [
            p for p in running_pods(api, ns, sel)() or [] if p["metadata"]["name"] != pod["metadata"]["name"]
        ],
        timeout=30,
    )[0]
    reaction = time.monotonic() - t0
    wait_for(
        "preemption counted on the run",
        lambda: runs.job_preemptions(read_job(api, ns, name)) == 1,
        timeout=15,
    )
    status = read_job(api, ns, name)
    assert job_condition(status, "Failed") is None and status["status"].get("failed", 0) == 0
    assert replacement["spec"]["containers"][0]["args"] == pod["spec"]["containers"][0]["args"]
    sys.__stdout__.write(f"\nspot notice ({signal}) -> replacement pod running: {reaction:.2f}s\n")
