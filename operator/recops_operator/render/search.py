"""spec.search -> the spot-only vectorization CronJob (``recops-serve vectorize``).

The Job is built like a training run's (training/render.py): spot-only placement, the hardened
pod, a ``podFailurePolicy`` that ignores preemption (DisruptionTarget, ECI expiry, exit 143 after
the checkpoint) and fails at once on a data error (exit 78), the run id (the Job name) in the
output and checkpoint URIs, and ``--resume`` so a replacement pod continues. Its pods carry
their own component label (``search``): training's run queue and preemption handling never see
them. The served search bundle is ``spec.search.version`` (render/serving.py puts it in the config).
"""

from __future__ import annotations

from typing import Any

from recops_operator import pods
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.oss import oss_volumes
from recops_operator.render.serving import Owner, RenderContext
from recops_operator.training import config as c
from recops_operator.training.render import _placement, pod_failure_policy

COMPONENT_SEARCH = "search"
STARTING_DEADLINE_SECONDS = 1800


def search_labels(service: str) -> dict[str, str]:
    return {
        c.SERVICE_LABEL: service,
        c.COMPONENT_LABEL: COMPONENT_SEARCH,
        "app.kubernetes.io/name": "recops-vectorize",
        "app.kubernetes.io/component": "search",
        "app.kubernetes.io/managed-by": "recops",
    }


def vectorize_args(spec: RecommenderServiceSpec) -> list[str]:
    s = spec.search
    visual = ["--visual", "--max-failed-images", str(s.visual.max_failed_images)] if s.visual.enabled else []
    return [
        "vectorize",
        "--catalog",
        s.catalog,
        "--out",
        s.uri.rstrip("/") + "/$(RECOPS_RUN_ID)",
        "--checkpoint",
        s.uri.rstrip("/") + "/_checkpoints/$(RECOPS_RUN_ID)",
        "--checkpoint-interval",
        str(s.checkpoint_interval_seconds),
        "--resume",
        "--version",
        "$(RECOPS_RUN_ID)",
        *visual,
    ]


def render_search(owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext | None = None) -> list[dict]:
    s = spec.search
    if s is None or not s.schedule:
        return []
    image = s.image or spec.serving.image
    affinity, tolerations, annotations = _placement(s)
    resources = {"cpu": s.resources.cpu, "memory": s.resources.memory}
    labels = search_labels(owner.name)
    oss = oss_volumes([s.catalog], [s.uri])  # the catalogue read-only; bundles and checkpoints written
    pod: dict[str, Any] = {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": s.termination_grace_period_seconds,
            **pods.hardened_pod_fields(),
            "securityContext": pods.pod_security_context(),
            "affinity": affinity,
            "tolerations": tolerations,
            "containers": [
                {
                    "name": c.CONTAINER_NAME,  # the podFailurePolicy's exit-code rules name it
                    "image": image,
                    "command": ["recops-serve"],
                    "args": vectorize_args(spec),
                    "env": [
                        {
                            "name": "RECOPS_RUN_ID",
                            "valueFrom": {
                                "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
                            },
                        },
                        {"name": "OPENBLAS_NUM_THREADS", "value": "1"},
                        {"name": "OMP_NUM_THREADS", "value": "1"},
                        *oss.env,
                    ],
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "securityContext": pods.container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *oss.mounts],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}, *oss.volumes],
        },
    }
    job_spec = {
        "backoffLimit": s.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": pod_failure_policy(),
        "template": pod,
    }
    cron: dict[str, Any] = {
        "schedule": s.schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": labels}, "spec": job_spec},
    }
    if s.time_zone:
        cron["timeZone"] = s.time_zone
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": f"{owner.name}-vectorize",
                "namespace": owner.namespace,
                "labels": labels,
                "ownerReferences": [owner.reference()],
            },
            "spec": cron,
        }
    ]
