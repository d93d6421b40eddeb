"""The training part of a RecommenderService, as the training renderer sees it.

``TrainingConfig`` is read from the raw (camelCase) ``spec`` mapping rather than from the
pydantic API model so the renderer stays a pure function of the stored object: the API
model validates and defaults at admission time; this module only needs the values. The
field names here mirror ``spec.training`` in the CRD one to one.

Constants that other parts rely on (pod labels, exit codes, the spot notice window) live
here too, so the Job renderer, the preemption handler and the admission check agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: Pod/Job label that marks training workloads (inference pods never carry it).
COMPONENT_LABEL = "recops.io/component"
COMPONENT_TRAINING = "training"
SERVICE_LABEL = "recops.io/service"
#: Label on Jobs: how the run was started.
TRIGGER_LABEL = "recops.io/training-trigger"
TRIGGER_SCHEDULED = "scheduled"
TRIGGER_ON_DEMAND = "on-demand"
#: Annotation on Jobs: the on-demand trigger token that started this run.
TRIGGER_TOKEN_ANNOTATION = "recops.io/training-trigger-token"
#: Annotation on the RecommenderService that requests an on-demand run (same meaning as
#: ``spec.training.trigger``; the annotation wins when both are set).
TRIGGER_ANNOTATION = "recops.io/train-now"

#: Name of the training container (podFailurePolicy exit-code rules refer to it).
CONTAINER_NAME = "trainer"

#: Exit codes of ``recops-serve train`` that mean "the run is misconfigured; retrying
#: cannot help": argparse usage error (2), EX_USAGE (64), EX_CONFIG (78).
CONFIG_ERROR_EXIT_CODES: tuple[int, ...] = (2, 64, 78)

#: ECI announces a spot release ~3 min ahead (ACK Serverless docs say ~5); design for 3.
SPOT_NOTICE_SECONDS = 180
#: Upper bound for terminationGracePeriodSeconds: the pod must checkpoint and exit inside
#: the notice window, with margin for the eviction round trip.
MAX_GRACE_SECONDS = 150

#: Pod condition ECI sets when the spot instance is about to be released.
ECI_EXPIRED_CONDITION = "ContainerInstanceExpired"
#: Pod status reason ECI sets when the spot instance was released.
ECI_BID_FAILED_REASON = "BidFailed"
#: Event reason ECI emits ahead of a spot release.
SPOT_TO_BE_RELEASED_REASON = "SpotToBeReleased"

Placement = Literal["eci", "nodes"]


class TrainingConfigError(ValueError):
    """``spec.training`` cannot be rendered (the CRD schema should have caught it)."""


@dataclass(frozen=True)
class MetricsGate:
    """Offline-metric gate of the closed loop: candidate >= serving - tolerance, per metric."""

    metrics: tuple[str, ...] = ("ndcg@10",)
    tolerance: float = 0.0


@dataclass(frozen=True)
class TrainingConfig:
    events: str
    checkpoint_uri: str
    catalog: str | None = None
    max_bad_fraction: float = 0.1
    type_map: tuple[tuple[str, str], ...] = ()
    schedule: str | None = None
    time_zone: str | None = None
    suspend: bool = False
    image: str | None = None
    placement: Placement = "nodes"
    capacity: Literal["spot"] = "spot"
    cpu: str = "1"
    memory: str = "2Gi"
    checkpoint_interval_seconds: int = 300
    data_window_days: int | None = None
    backoff_limit: int = 3
    active_deadline_seconds: int | None = None
    termination_grace_period_seconds: int = 120
    trigger: str | None = None
    auto_rollout: bool = False
    gate: MetricsGate = field(default_factory=MetricsGate)
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 3

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TrainingConfig | None:
        """Read ``spec.training``; None when the service has no training section."""
        raw = spec.get("training")
        if not raw:
            return None
        ckpt = raw.get("checkpoint") or {}
        if raw.get("dataset"):
            raise TrainingConfigError(
                "spec.training.dataset was replaced by spec.training.data.events (docs/data.md)"
            )
        data = raw.get("data") or {}
        if not data.get("events"):
            raise TrainingConfigError("spec.training.data.events is required")
        if not ckpt.get("uri"):
            raise TrainingConfigError("spec.training.checkpoint.uri is required")
        if raw.get("capacity", "spot") != "spot":
            raise TrainingConfigError("spec.training.capacity must be 'spot': training runs on spot only")
        res = raw.get("resources") or {}
        window = raw.get("dataWindow") or {}
        gate = raw.get("gate") or {}
        grace = int(raw.get("terminationGracePeriodSeconds", 120))
        if not 0 < grace <= MAX_GRACE_SECONDS:
            raise TrainingConfigError(
                f"spec.training.terminationGracePeriodSeconds={grace} must be in 1..{MAX_GRACE_SECONDS} "
                f"(below the {SPOT_NOTICE_SECONDS} s spot notice)"
            )
        history = raw.get("history") or {}
        return cls(
            events=str(data["events"]),
            catalog=data.get("catalog") or None,
            max_bad_fraction=float(data.get("maxBadFraction", 0.1)),
            type_map=tuple(sorted((data.get("typeMap") or {}).items())),
            checkpoint_uri=str(ckpt["uri"]),
            checkpoint_interval_seconds=int(ckpt.get("intervalSeconds", 300)),
            schedule=raw.get("schedule") or None,
            time_zone=raw.get("timeZone") or None,
            suspend=bool(raw.get("suspend", False)),
            image=raw.get("image") or None,
            placement=raw.get("placement", "nodes"),
            cpu=str(res.get("cpu", "1")),
            memory=str(res.get("memory", "2Gi")),
            data_window_days=window.get("days"),
            backoff_limit=int(raw.get("backoffLimit", 3)),
            active_deadline_seconds=raw.get("activeDeadlineSeconds"),
            termination_grace_period_seconds=grace,
            trigger=raw.get("trigger") or None,
            auto_rollout=bool(raw.get("autoRollout", False)),
            gate=MetricsGate(
                metrics=tuple(gate.get("metrics") or MetricsGate.metrics),
                tolerance=float(gate.get("tolerance", 0.0)),
            ),
            successful_jobs_history_limit=int(history.get("successful", 3)),
            failed_jobs_history_limit=int(history.get("failed", 3)),
        )
