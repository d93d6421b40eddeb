"""Pure render of spot-only training workloads: spec.training -> CronJob / on-demand Job.

Everything here is a function of the RecommenderService body (plus, for an on-demand run,
the trigger token), so the operator can diff and server-side apply the result and tests
can check it without a cluster.

How a run survives preemption, in the Job itself:
* ``podFailurePolicy`` ignores pods that carry ``DisruptionTarget`` (eviction, preemption,
  taint eviction) or ECI's ``ContainerInstanceExpired`` (set before a spot release that
  ends in ``BidFailed``), and exit code 143 (SIGTERM: the trainer checkpointed and left
  on request), so preemptions never consume ``backoffLimit``; it fails the Job at once on
  a configuration error exit code (retrying cannot help).
* every pod of the Job gets the same run id (the Job name, via the downward API), the
  per-run checkpoint URI and ``--resume``, so a replacement pod continues from the last
  checkpoint instead of starting over.
* ``terminationGracePeriodSeconds`` stays below the spot notice window, so SIGTERM ->
  checkpoint -> exit fits before the instance disappears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recops_contracts import topology
from recops_contracts.training import CONFIG_ERROR_EXIT_CODES, EXIT_PREEMPTED
from recops_operator import pods
from recops_operator.api.models import Training
from recops_operator.api.status import TrainingStatus
from recops_operator.oss import oss_volumes
from recops_operator.training import config as c
from recops_operator.training import naming
from recops_operator.training.config import TrainingConfigError, training_of

API_GROUP_VERSION = "recops.io/v1alpha1"
KIND = "RecommenderService"
#: Finished on-demand Jobs are kept this long for inspection (lineage lives in status).
ON_DEMAND_TTL_SECONDS = 7 * 24 * 3600
#: A scheduled run that could not start within this window (e.g. an on-demand run held
#: the CronJob) is skipped rather than started late.
STARTING_DEADLINE_SECONDS = 1800


def _meta(body: Mapping[str, Any]) -> tuple[str, str, str | None]:
    meta = body.get("metadata") or {}
    return meta["name"], meta.get("namespace") or "default", meta.get("uid")


def _owner_refs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    name, _, uid = _meta(body)
    if not uid:
        return []
    return [
        {
            "apiVersion": API_GROUP_VERSION,
            "kind": KIND,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def training_labels(service: str) -> dict[str, str]:
    """Labels on every training CronJob, Job and pod of ``service`` (handlers select on them)."""
    return {
        c.SERVICE_LABEL: service,
        c.COMPONENT_LABEL: c.COMPONENT_TRAINING,
        "app.kubernetes.io/name": "recops-train",
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/managed-by": "recops",
    }


def training_selector(service: str) -> str:
    """Label selector for the training Jobs/pods of ``service``."""
    return f"{c.SERVICE_LABEL}={service},{c.COMPONENT_LABEL}={c.COMPONENT_TRAINING}"


def _placement(cfg: Training) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, str]]:
    """(affinity, tolerations, annotations) that put the pod on spot capacity only."""
    if cfg.placement == "eci":
        terms = [
            {"key": topology.ECI_NODE_LABEL_KEY, "operator": "In", "values": [topology.ECI_NODE_LABEL_VALUE]}
        ]
        tolerations = [topology.ECI_TAINT.toleration()]
        annotations = {
            topology.ECI_SPOT_STRATEGY: "SpotAsPriceGo",
            # Spot only: never fall back to pay-as-you-go when spot stock runs out.
            topology.ECI_SPOT_FALLBACK: "false",
            # On SpotToBeReleased, ECI evicts through the Eviction API: DisruptionTarget +
            # our grace period, i.e. SIGTERM -> checkpoint -> exit.
            topology.ECI_SPOT_RELEASE_STRATEGY: "api-evict",
        }
    elif cfg.placement == "nodes":
        terms = topology.spot_only_node_affinity_terms()
        tolerations = [topology.SPOT_TAINT.toleration()]
        annotations = {}
    else:
        raise TrainingConfigError(f"spec.training.placement={cfg.placement!r}: expected 'eci' or 'nodes'")
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": terms}]
            }
        }
    }
    return affinity, tolerations, annotations


def trainer_args(cfg: Training) -> list[str]:
    """``recops-serve train`` arguments; ``$(VAR)`` is expanded by the kubelet from the env."""
    data = ["--events", cfg.data.events, *(["--catalog", cfg.data.catalog] if cfg.data.catalog else [])]
    if cfg.data.max_bad_fraction != 0.1:
        data += ["--max-bad-fraction", str(cfg.data.max_bad_fraction)]
    if cfg.data.type_map:
        data += ["--type-map", ",".join(f"{k}={v}" for k, v in sorted(cfg.data.type_map.items()))]
    if cfg.retrieval.min_recall != 0.95:
        data += ["--min-recall", str(cfg.retrieval.min_recall)]
    if cfg.retrieval.mode != "auto":
        data += ["--retrieval", cfg.retrieval.mode]
    return [
        "train",
        *data,
        "--out",
        "$(RECOPS_OUTPUT_URI)",
        "--checkpoint",
        "$(RECOPS_CHECKPOINT_URI)",
        "--checkpoint-interval",
        str(cfg.checkpoint.interval_seconds),
        # Always resume: the first pod finds no checkpoint and starts fresh; a replacement
        # pod after preemption continues from the last one.
        "--resume",
        "--version",
        "$(RECOPS_MODEL_VERSION)",
    ]


def _env(cfg: Training, service: str, model_uri: str, trigger: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": "RECOPS_RUN_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
        },
        {"name": "RECOPS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RECOPS_SERVICE", "value": service},
        {"name": "RECOPS_TRAINING_TRIGGER", "value": trigger},
        {"name": "RECOPS_MODEL_VERSION", "value": "$(RECOPS_RUN_ID)"},
        {
            "name": "RECOPS_CHECKPOINT_URI",
            "value": naming.checkpoint_uri(cfg.checkpoint.uri, "$(RECOPS_RUN_ID)"),
        },
        {"name": "RECOPS_OUTPUT_URI", "value": naming.bundle_uri(model_uri, "$(RECOPS_RUN_ID)")},
        # the trainer's thread count = the CPUs this container may use (limits.cpu, rounded up), not the
        # node's core count (which would oversubscribe a CPU-limited container)
        {
            "name": "RECOPS_TRAIN_THREADS",
            "valueFrom": {"resourceFieldRef": {"containerName": c.CONTAINER_NAME, "resource": "limits.cpu"}},
        },
    ]
    if cfg.data_window is not None:
        env.append({"name": "RECOPS_DATA_WINDOW_DAYS", "value": str(cfg.data_window.days)})
    return env


def render_pod_template(body: Mapping[str, Any], cfg: Training, trigger: str) -> dict[str, Any]:
    """Hardened, spot-only pod template of one training run."""
    service, _, _ = _meta(body)
    spec = body.get("spec") or {}
    model_uri = (spec.get("model") or {}).get("uri")
    image = cfg.image or (spec.get("serving") or {}).get("image")
    if not model_uri:
        raise TrainingConfigError("spec.model.uri is required: trained bundles are written under it")
    if not image:
        raise TrainingConfigError("spec.training.image (or spec.serving.image) is required")
    affinity, tolerations, annotations = _placement(cfg)
    resources = {"cpu": cfg.resources.cpu, "memory": cfg.resources.memory}
    # the shop's data read-only; the bundle and checkpoint buckets written
    oss = oss_volumes([cfg.data.events, cfg.data.catalog], [model_uri, cfg.checkpoint.uri])
    return {
        "metadata": {
            "labels": {**training_labels(service), c.TRIGGER_LABEL: trigger},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": cfg.termination_grace_period_seconds,
            **pods.hardened_pod_fields(),
            "securityContext": pods.pod_security_context(),
            "affinity": affinity,
            "tolerations": tolerations,
            "containers": [
                {
                    "name": c.CONTAINER_NAME,
                    "image": image,
                    "command": ["recops-serve"],
                    "args": trainer_args(cfg),
                    "env": _env(cfg, service, model_uri, trigger) + oss.env,
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                    # the trainer writes its one-line failure reason there; else the log's tail
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "securityContext": pods.container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *oss.mounts],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}, *oss.volumes],
        },
    }


def pod_failure_policy() -> dict[str, Any]:
    """Preemption is not failure; a configuration error fails the Job at once."""
    return {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [
                    {"type": "DisruptionTarget", "status": "True"},
                    {"type": c.ECI_EXPIRED_CONDITION, "status": "True"},
                ],
            },
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": c.CONTAINER_NAME,
                    "operator": "In",
                    "values": [EXIT_PREEMPTED],
                },
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": c.CONTAINER_NAME,
                    "operator": "In",
                    "values": list(CONFIG_ERROR_EXIT_CODES),
                },
            },
        ]
    }


def render_job_spec(body: Mapping[str, Any], cfg: Training, trigger: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Every run is created queued; the operator starts the oldest queued run only when
        # no other run of the service is active (runs.next_to_start). That is what makes
        # "never two runs at once" hold across scheduled and on-demand runs, which
        # concurrencyPolicy: Forbid alone cannot (it only sees the CronJob's own Jobs).
        "suspend": True,
        "backoffLimit": cfg.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": pod_failure_policy(),
        "template": render_pod_template(body, cfg, trigger),
    }
    if cfg.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = int(cfg.active_deadline_seconds)
    return spec


def render_cronjob(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CronJob of scheduled runs, or None when spec.training has no schedule."""
    cfg = training_of(body.get("spec") or {})
    if cfg is None or not cfg.schedule:
        return None
    service, namespace, _ = _meta(body)
    labels = training_labels(service)
    cron_spec: dict[str, Any] = {
        "schedule": cfg.schedule,
        "concurrencyPolicy": "Forbid",
        "suspend": cfg.suspend,
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": cfg.history.successful,
        "failedJobsHistoryLimit": cfg.history.failed,
        "jobTemplate": {
            "metadata": {"labels": {**labels, c.TRIGGER_LABEL: c.TRIGGER_SCHEDULED}},
            "spec": render_job_spec(body, cfg, c.TRIGGER_SCHEDULED),
        },
    }
    if cfg.time_zone:
        cron_spec["timeZone"] = cfg.time_zone
    meta: dict[str, Any] = {
        "name": naming.training_base_name(service),
        "namespace": namespace,
        "labels": labels,
    }
    if refs := _owner_refs(body):
        meta["ownerReferences"] = refs
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": cron_spec}


def render_on_demand_job(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The Job of the on-demand run requested with ``token`` (deterministic name)."""
    cfg = training_of(body.get("spec") or {})
    if cfg is None:
        raise TrainingConfigError("on-demand training requested but spec.training is not set")
    service, namespace, _ = _meta(body)
    meta: dict[str, Any] = {
        "name": naming.on_demand_job_name(service, token),
        "namespace": namespace,
        "labels": {**training_labels(service), c.TRIGGER_LABEL: c.TRIGGER_ON_DEMAND},
        "annotations": {c.TRIGGER_TOKEN_ANNOTATION: token},
    }
    if refs := _owner_refs(body):
        meta["ownerReferences"] = refs
    spec = render_job_spec(body, cfg, c.TRIGGER_ON_DEMAND)
    spec["ttlSecondsAfterFinished"] = ON_DEMAND_TTL_SECONDS
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def requested_trigger(body: Mapping[str, Any]) -> str | None:
    """The on-demand trigger token currently requested (annotation wins over the field)."""
    ann = (body.get("metadata") or {}).get("annotations") or {}
    if ann.get(c.TRIGGER_ANNOTATION):
        return str(ann[c.TRIGGER_ANNOTATION])
    training = (body.get("spec") or {}).get("training") or {}
    return training.get("trigger") or None


def pending_trigger(body: Mapping[str, Any]) -> str | None:
    """A requested trigger that has not been turned into a run yet (status records handled ones)."""
    token = requested_trigger(body)
    handled = TrainingStatus.of((body.get("status") or {}).get("training")).last_trigger
    return token if token and token != handled else None


def render_training(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The declarative training objects of a service (the render-pipeline hook).

    Only the CronJob is steady state; on-demand Jobs are one-shot actions created by the
    training handler (a re-render must not re-create a finished, TTL-deleted run).
    """
    cron = render_cronjob(body)
    return [cron] if cron else []


def render_training_objects(owner: Any, spec: Any, ctx: Any = None) -> list[dict[str, Any]]:
    """The render-pipeline hook: ``(Owner, RecommenderServiceSpec, RenderContext) -> objects``."""
    body = {
        "metadata": {"name": owner.name, "namespace": owner.namespace, "uid": owner.uid},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    return render_training(body)


def training_admission_objects(owner: Any, spec: Any) -> list[dict[str, Any]]:
    """What admission must check for training besides the pipeline's objects.

    The pipeline renders a CronJob only when there is a schedule; on-demand runs are
    created later by the handler. Their Job template is rendered here so the webhook's
    capacity check sees the training pod template in every case.
    """
    if getattr(spec, "training", None) is None:
        return []
    body = {
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    return [render_on_demand_job(body, "admission")]
