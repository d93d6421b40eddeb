"""The training part of a RecommenderService, as the training renderer sees it.

``training_of`` reads ``spec.training`` through the API model (``api.models.Training``): one
schema, one set of defaults and bounds, for admission, the CRD and the renderer alike.

Constants that other parts rely on (pod labels, the spot notice window) live here too, so the
Job renderer, the preemption handler and the admission check agree; exit codes and artifact
names are the trainer's contract (``recops_contracts.training``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from recops_operator.api.models import MAX_TRAINING_GRACE_SECONDS, Training

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

#: ECI announces a spot release ~3 min ahead (ACK Serverless docs say ~5); design for 3.
SPOT_NOTICE_SECONDS = 180
#: Upper bound for terminationGracePeriodSeconds (the API model's bound).
MAX_GRACE_SECONDS = MAX_TRAINING_GRACE_SECONDS

#: Pod condition ECI sets when the spot instance is about to be released.
ECI_EXPIRED_CONDITION = "ContainerInstanceExpired"
#: Pod status reason ECI sets when the spot instance was released.
ECI_BID_FAILED_REASON = "BidFailed"
#: Event reason ECI emits ahead of a spot release.
SPOT_TO_BE_RELEASED_REASON = "SpotToBeReleased"

Placement = Literal["eci", "nodes"]


class TrainingConfigError(ValueError):
    """``spec.training`` cannot be rendered (the CRD schema should have caught it)."""


def training_of(spec: Mapping[str, Any]) -> Training | None:
    """``spec.training`` validated and defaulted by the API model; None without one. The stored
    object passed admission, so an error here means it was written around the webhook."""
    raw = spec.get("training")
    if not raw:
        return None
    try:
        return Training.model_validate(raw)
    except ValidationError as e:
        raise TrainingConfigError(
            "; ".join(
                f"spec.training.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
        ) from e
