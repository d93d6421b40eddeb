"""Pure render of the clickstream job: spec.features.stream -> one FlinkDeployment (Apache Flink
Kubernetes Operator, flink.apache.org/v1beta1), and its status -> our condition.

Why a FlinkDeployment and not our own Deployments: the Flink operator owns what a stream job's
lifecycle needs (savepoint on upgrade, restore on restart, JobManager HA); we declare it.
Application mode, ``upgradeMode: savepoint``, RocksDB state with checkpoints and savepoints under
``checkpointURI``; the job is a Python entry (flink-python's ``PythonDriver`` running
recops_stream/job.py) whose args come from ``recops_contracts.stream.job_args``, the one spelling
the job's parser also reads. Credentials reach the job only as Secret-backed env.
"""

from __future__ import annotations

import json
import re
from typing import Any

from recops_contracts import stream as contract
from recops_contracts import topology as topo
from recops_operator import pods
from recops_operator.api.models import RecommenderServiceSpec, StreamFeatures, duration_seconds
from recops_operator.oss import oss_volumes
from recops_operator.render.serving import MANAGED_BY, Owner, RenderContext

FLINK_API = "flink.apache.org/v1beta1"
FLINK_KIND = "FlinkDeployment"
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
#: the container the Flink operator runs Flink in; our pod template hardens it by this name
MAIN_CONTAINER = "flink-main-container"
#: the ``flink`` user (uid/gid 9999) of the apache/flink images the stream image is built on
FLINK_UID = 9999
#: writable directories of a read-only root filesystem (each an emptyDir)
SCRATCH = {"tmp": "/tmp", "flink-log": "/opt/flink/log", "flink-data": "/flink-data"}
#: lifecycle states of a healthy job (FlinkDeployment status.lifecycleState)
HEALTHY = {"DEPLOYED", "STABLE"}
METRICS_PORT = 9249
PENDING_METRIC = "flink_taskmanager_job_task_operator_pendingRecords"
FAILED_STATES = {"FAILED"}


def stream_name(owner: Owner) -> str:
    return f"{owner.name}-stream"


def python_jar(version: str) -> str:
    """flink-python's jar in the image (``/opt/flink/opt`` of the apache/flink images)."""
    major, minor = version.removeprefix("v").split("_")
    return f"local:///opt/flink/opt/flink-python-{major}.{minor}.0.jar"


def flink_memory(quantity: str) -> str:
    """A Kubernetes quantity as Flink's MemorySize (binary units: 2Gi -> 2g, 512Mi -> 512m)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    if not m:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    number, unit = float(m.group(1)), m.group(2) or ""
    binary = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    decimal = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    size = number * (binary.get(unit) or decimal[unit])
    return f"{int(size) >> 20}m"


def flink_cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def settings(cfg: StreamFeatures) -> contract.JobSettings:
    return contract.JobSettings(
        topic=cfg.topic,
        group=cfg.consumer_group,
        parallelism=cfg.parallelism,
        archive=cfg.archive_uri.rstrip("/"),
        checkpoints=f"{cfg.checkpoint_uri.rstrip('/')}/checkpoints",
        state_backend="rocksdb",
        feature_state_ttl_s=duration_seconds(cfg.state_ttl.features),
        item_state_ttl_s=duration_seconds(cfg.state_ttl.items),
        trend_window_s=duration_seconds(cfg.windows.trending),
        trend_slide_s=duration_seconds(cfg.windows.trending_slide),
    )


def flink_configuration(spec: RecommenderServiceSpec, cfg: StreamFeatures) -> dict[str, str]:
    """Flink settings (all strings): RocksDB, exactly-once checkpoints retained on cancel,
    savepoints and HA metadata beside them, the region's internal OSS endpoint."""
    base = cfg.checkpoint_uri.rstrip("/")
    return {
        "taskmanager.numberOfTaskSlots": "1",
        "state.backend.type": "rocksdb",
        "state.backend.incremental": "true",
        "state.backend.rocksdb.localdir": f"{SCRATCH['flink-data']}/rocksdb",
        "io.tmp.dirs": SCRATCH["tmp"],
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": f"{base}/checkpoints",
        "execution.checkpointing.savepoint-dir": f"{base}/savepoints",
        # the pre-2.0 names of the same two settings (Flink 1.20 images, older Flink operators)
        "state.checkpoints.dir": f"{base}/checkpoints",
        "state.savepoints.dir": f"{base}/savepoints",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "high-availability.type": "kubernetes",
        "high-availability.storageDir": f"{base}/ha",
        "fs.oss.endpoint": f"oss-{spec.region}-internal.aliyuncs.com",
        # the image's venv runs the driver and the Python UDF workers (stream/Dockerfile)
        "python.executable": contract.PYTHON_PATH,
        "python.client.executable": contract.PYTHON_PATH,
        "kubernetes.operator.savepoint.history.max.count": "5",
        # Prometheus scrapes every JobManager/TaskManager on METRICS_PORT (a PodMonitor or pod
        # annotations): the Kafka source's pendingRecords there is the lag in status (lag_query)
        "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "metrics.reporter.prom.port": str(METRICS_PORT),
    }


def lag_query(owner: Owner) -> str:
    """PromQL for the records waiting in the topic for the job: the sum over its TaskManagers of the
    Kafka source's FLIP-33 ``pendingRecords`` gauge (labels as a PodMonitor sets them)."""
    pods = f"{stream_name(owner)}-taskmanager-.*"
    return f'sum({PENDING_METRIC}{{namespace="{owner.namespace}",pod=~"{pods}"}})'


def _placement(cfg: StreamFeatures) -> dict[str, Any]:
    """Never on spot, unless the job tolerates restarts: then spot is preferred, not required."""
    if cfg.tolerate_restarts:
        return {
            "tolerations": [topo.SPOT_TAINT.toleration()],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "preference": {"matchExpressions": topo.spot_only_node_affinity_terms()},
                        }
                    ]
                }
            },
        }
    return {
        "nodeSelector": {topo.CAPACITY_LABEL: topo.CAPACITY_ON_DEMAND},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": topo.not_spot_node_affinity_terms()}]
                }
            }
        },
    }


def _env(spec: RecommenderServiceSpec, cfg: StreamFeatures) -> list[dict[str, Any]]:
    store = spec.serving.feature_store
    if store is None:  # the CRD's CEL rule and the spec's validator reject this earlier
        raise ValueError("features.stream writes into the feature store: set spec.serving.featureStore")
    kafka = cfg.kafka.bootstrap_secret_ref
    return [
        {
            "name": contract.BOOTSTRAP_ENV,
            "valueFrom": {"secretKeyRef": {"name": kafka.name, "key": kafka.key}},
        },
        {
            "name": contract.REDIS_URL_ENV,
            "valueFrom": {"secretKeyRef": {"name": store.secret_ref.name, "key": store.secret_ref.key}},
        },
    ]


def pod_template(
    owner: Owner, spec: RecommenderServiceSpec, cfg: StreamFeatures, cpu: str, memory: str
) -> dict[str, Any]:
    """The hardened pod both Flink components run in: non-root, read-only root filesystem with
    emptyDirs where Flink writes, no capabilities, RuntimeDefault seccomp. The service account token
    stays mounted: native mode's JobManager creates the TaskManager pods and, with Kubernetes HA,
    both read the leader ConfigMaps."""
    security = {
        **pods.pod_security_context(),
        "runAsUser": FLINK_UID,
        "runAsGroup": FLINK_UID,
        "fsGroup": FLINK_UID,
    }
    container = {
        "name": MAIN_CONTAINER,
        "securityContext": {**pods.container_security_context(), "runAsUser": FLINK_UID},
        "env": _env(spec, cfg),
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "volumeMounts": [{"name": name, "mountPath": path} for name, path in SCRATCH.items()],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": stream_labels(owner)},
        "spec": {
            "securityContext": security,
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": [{"name": name, "emptyDir": {"sizeLimit": "2Gi"}} for name in SCRATCH],
            **_placement(cfg),
        },
    }


def stream_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "recops-stream",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "recops.io/service": owner.name,
    }


def render_flink_deployment(owner: Owner, spec: RecommenderServiceSpec) -> dict[str, Any] | None:
    cfg = spec.features.stream if spec.features else None
    if cfg is None:
        return None
    jm, tm = cfg.resources.job_manager, cfg.resources.task_manager
    return {
        "apiVersion": FLINK_API,
        "kind": FLINK_KIND,
        "metadata": {
            "name": stream_name(owner),
            "namespace": owner.namespace,
            "labels": stream_labels(owner),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "image": cfg.image,
            "flinkVersion": cfg.flink_version,
            "mode": "native",
            "serviceAccount": cfg.service_account,
            "flinkConfiguration": flink_configuration(spec, cfg),
            "jobManager": {
                "replicas": 1,
                "resource": {"cpu": flink_cpu(jm.cpu), "memory": flink_memory(jm.memory)},
                "podTemplate": pod_template(owner, spec, cfg, jm.cpu, jm.memory),
            },
            "taskManager": {
                "resource": {"cpu": flink_cpu(tm.cpu), "memory": flink_memory(tm.memory)},
                "podTemplate": pod_template(owner, spec, cfg, tm.cpu, tm.memory),
            },
            "job": {
                "jarURI": python_jar(cfg.flink_version),
                "entryClass": PYTHON_DRIVER,
                "args": ["-py", contract.JOB_PATH, *contract.job_args(settings(cfg))],
                "parallelism": cfg.parallelism,
                "upgradeMode": "savepoint",
                "state": "running",
            },
        },
    }


#: how often the archive's committed part files are published as Parquet (the nightly training
#: reads ``events/dt=...``; each run is idempotent, so a missed or repeated one loses nothing)
ARCHIVE_SCHEDULE = "*/10 * * * *"


def archive_name(owner: Owner) -> str:
    return f"{owner.name}-archive"


def archive_events_uri(cfg: StreamFeatures) -> str:
    """The ``events/`` directory of the archive, where the job stages and the compaction publishes."""
    return f"{cfg.archive_uri.rstrip('/')}/events"


def render_archive_compaction(owner: Owner, spec: RecommenderServiceSpec) -> dict[str, Any] | None:
    """The CronJob that runs ``recops_stream.archive`` (in the stream image) on the archive bucket,
    mounted writable; never two at once, placed like the job."""
    cfg = spec.features.stream if spec.features else None
    if cfg is None:
        return None
    oss = oss_volumes([], [cfg.archive_uri])
    labels = {**stream_labels(owner), "app.kubernetes.io/component": "archive"}
    container = {
        "name": "compact",
        "image": cfg.image,
        "command": [contract.PYTHON_PATH, "-m", "recops_stream.archive", archive_events_uri(cfg)],
        "env": oss.env,
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {**pods.container_security_context(), "runAsUser": FLINK_UID},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *oss.mounts],
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            **pods.hardened_pod_fields(),
            "securityContext": {
                **pods.pod_security_context(),
                "runAsUser": FLINK_UID,
                "runAsGroup": FLINK_UID,
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *oss.volumes],
            **_placement(cfg),
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": archive_name(owner),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "schedule": ARCHIVE_SCHEDULE,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 1800,
                    "ttlSecondsAfterFinished": 3600,
                    "template": pod,
                },
            },
        },
    }


def render_stream(owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    """The FlinkDeployment and the archive's compaction CronJob, when asked for and the Flink CRD is
    served (else the condition says why)."""
    if not ctx.flink_available:
        return []
    objs = [render_flink_deployment(owner, spec), render_archive_compaction(owner, spec)]
    return [o for o in objs if o]


# ---------------------------------------------------------------------------------- status
def _error_line(status: dict[str, Any]) -> str:
    """The Flink operator's ``status.error`` (a JSON object with a message, or text) as one line."""
    raw = status.get("error") or ""
    try:
        parsed = json.loads(raw)
        raw = parsed.get("message", raw) if isinstance(parsed, dict) else raw
    except (TypeError, ValueError):
        pass
    line = " ".join(str(raw).split())
    return line[:300]


def stream_status(live: dict[str, Any] | None, lag: float | None = None) -> dict[str, Any]:
    """``status.stream`` of our service from the live FlinkDeployment's status and the lag."""
    st = (live or {}).get("status") or {}
    job = st.get("jobStatus") or {}
    out: dict[str, Any] = {
        "lifecycleState": st.get("lifecycleState"),
        "jobState": job.get("state"),
        "jobId": job.get("jobId"),
        "message": _error_line(st) or None,
        "lagRecords": None if lag is None else int(lag),
    }
    return out


def stream_condition(
    spec: RecommenderServiceSpec, available: bool, live: dict[str, Any] | None, lag: float | None = None
) -> tuple[str, bool, str, str] | None:
    """(type, ok, reason, one-line message) of ``StreamJobReady``, or None without features.stream."""
    if not (spec.features and spec.features.stream):
        return None
    kind = "StreamJobReady"
    if not available:
        return (
            kind,
            False,
            "CRDsMissing",
            ("flink.apache.org CRDs are not installed: the stream job (FlinkDeployment) is not deployed"),
        )
    st = stream_status(live)
    life, job = st["lifecycleState"], st["jobState"]
    if live is None:
        return kind, False, "Pending", "the FlinkDeployment does not exist yet"
    if life in FAILED_STATES or job == "FAILED":
        why = st["message"] or "no error reported by the Flink operator"
        return kind, False, "JobFailed", f"stream job failed (lifecycle {life}, job {job}): {why}"
    if life in HEALTHY and job == "RUNNING":
        limit = spec.features.stream.max_lag_records
        if lag is not None and lag > limit:
            return kind, False, "FallingBehind", f"stream job {int(lag):,} records behind (max {limit:,})"
        return kind, True, "Running", f"stream job running (lifecycle {life})"
    return (
        kind,
        False,
        "Progressing",
        f"stream job not running yet (lifecycle {life or 'unknown'}, job {job or 'unknown'})",
    )
