"""Typed ``status.rollout``: the rollout state machine reads and writes only these models, and
the CRD's status schema is generated from them (``kubectl explain recsvc.status.rollout``).

Reading is lenient (``extra="ignore"``: a status written by an older operator still loads);
writing goes through ``RolloutStatus.dump`` (camelCase, no nulls), the form persisted in the
object and compared to decide whether anything changed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    IDLE = "Idle"
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    PAUSED = "Paused"


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class TrackTotals(_Status):
    recommendations: Annotated[
        float | None, Field(description="Answers served since the rollout started.")
    ] = None
    value: Annotated[float | None, Field(description="Attributed events (or revenue) on those answers.")] = (
        None
    )
    rate: Annotated[float | None, Field(description="value per answer.")] = None


class BusinessNumbers(_Status):
    """What the business check's sequential test saw (rollout/sequential.py)."""

    canary: Annotated[TrackTotals, Field(description="Candidate track.")] = TrackTotals()
    stable: Annotated[TrackTotals, Field(description="Stable track.")] = TrackTotals()
    lift_low: Annotated[float | None, Field(description="Low end of the lift's always-valid interval.")] = (
        None
    )
    lift_high: Annotated[float | None, Field(description="High end of the lift's always-valid interval.")] = (
        None
    )
    log_likelihood_ratio: Annotated[
        float | None, Field(description="mSPRT statistic against the margin.")
    ] = None
    log_threshold: Annotated[float | None, Field(description="log(1/alpha): above it is significant.")] = None
    window: Annotated[
        str | None, Field(description="PromQL range of the totals (since the rollout began).")
    ] = None


class BusinessEvidence(BusinessNumbers):
    verdict: Annotated[Verdict | None, Field(description="Pass, Fail or Inconclusive.")] = None
    lift: Annotated[float | None, Field(description="rate_canary / rate_stable - 1.")] = None
    message: Annotated[str | None, Field(description="The decision in words.")] = None


class AnalysisCheck(_Status):
    name: Annotated[str, Field(description="Check name.")]
    value: Annotated[float | None, Field(description="Measured value (none: no data).")] = None
    threshold: Annotated[str, Field(description="What the value is held against.")] = ""
    verdict: Annotated[Verdict, Field(description="Pass, Fail or Inconclusive.")]
    message: Annotated[str | None, Field(description="Why, in words.")] = None
    error: Annotated[str | None, Field(description="Query error (Prometheus unreachable).")] = None
    business: Annotated[BusinessNumbers | None, Field(description="The business check's numbers.")] = None


class AppliedAction(_Status):
    type: Annotated[str, Field(description="promote, abort, retry, pause or resume.")]
    nonce: Annotated[str, Field(description="The spec.rollout.action nonce it was applied for.")]
    applied_at: Annotated[float, Field(description="Unix time it was applied.")]


class RolloutStatus(_Status):
    """The rollout state machine's whole state: an operator restart resumes from it."""

    phase: Annotated[
        Phase,
        Field(description="Idle, Shadowing, Progressing, Promoting, Succeeded, RolledBack, Failed, Paused."),
    ] = Phase.IDLE
    candidate: Annotated[str | None, Field(description="Candidate version under rollout.")] = None
    step_index: Annotated[int, Field(description="Index into spec.rollout.steps (-1 while shadowing).")] = 0
    weight: Annotated[int, Field(description="Percent of traffic on the candidate.")] = 0
    started_at: Annotated[float | None, Field(description="Unix time the rollout started.")] = None
    step_started_at: Annotated[float | None, Field(description="Unix time the current step started.")] = None
    last_analysis_at: Annotated[float | None, Field(description="Unix time of the last analysis.")] = None
    failures: Annotated[int, Field(description="Consecutive failed analyses.")] = 0
    inconclusive: Annotated[int, Field(description="Consecutive inconclusive analyses.")] = 0
    shadow_passed: Annotated[int, Field(description="Shadow intervals passed.")] = 0
    message: Annotated[str | None, Field(description="The latest decision in words.")] = None
    checks: Annotated[list[AnalysisCheck], Field(description="Checks of the last analysis.")] = []
    last_verdict: Annotated[Verdict | None, Field(description="Verdict of the last analysis.")] = None
    business: Annotated[
        BusinessEvidence | None, Field(description="The business check's latest evidence.")
    ] = None
    promoted_version: Annotated[
        str | None, Field(description="What stable serves since the last promotion.")
    ] = None
    promoted_image: Annotated[str | None, Field(description="The image that version was promoted with.")] = (
        None
    )
    promoted_over: Annotated[str | None, Field(description="spec.model.version when it was promoted.")] = None
    last_action: Annotated[AppliedAction | None, Field(description="The last manual action applied.")] = None
    paused_from: Annotated[Phase | None, Field(description="Phase to resume into.")] = None

    @classmethod
    def of(cls, value: RolloutStatus | dict[str, Any] | None) -> RolloutStatus:
        return value if isinstance(value, RolloutStatus) else cls.model_validate(value or {})

    def dump(self) -> dict[str, Any]:
        """The persisted form: camelCase, JSON types, nulls left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
