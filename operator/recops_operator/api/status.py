"""Typed ``status.rollout`` and ``status.training``: the rollout state machine and the training
controller read and write only these models, and the CRD's status schema is generated from them
(``kubectl explain recsvc.status.rollout``, ``recsvc.status.training``).

Reading is lenient (``extra="ignore"``: a status written by an older operator still loads);
writing goes through ``dump`` (camelCase, no nulls), the form persisted in the object and
compared to decide whether anything changed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from recops_operator.api.fields import Maybe, Text, Timestamp, UnixTime


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

    def dump(self) -> dict[str, Any]:
        """The persisted form: camelCase, JSON types, nulls left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class TrackTotals(_Status):
    recommendations: Maybe(float, "Answers served since the rollout started.") = None
    value: Maybe(float, "Attributed events (or revenue) on those answers.") = None
    rate: Maybe(float, "value per answer.") = None


class BusinessNumbers(_Status):
    """What the business check's sequential test saw (rollout/sequential.py)."""

    canary: Annotated[TrackTotals, Field(description="Candidate track.")] = TrackTotals()
    stable: Annotated[TrackTotals, Field(description="Stable track.")] = TrackTotals()
    lift_low: Maybe(float, "Low end of the lift's always-valid interval.") = None
    lift_high: Maybe(float, "High end of the lift's always-valid interval.") = None
    log_likelihood_ratio: Maybe(float, "mSPRT statistic against the margin.") = None
    log_threshold: Maybe(float, "log(1/alpha): above it is significant.") = None
    window: Text("PromQL range of the totals (since the rollout began).") = None


class BusinessEvidence(BusinessNumbers):
    verdict: Maybe(Verdict, "Pass, Fail or Inconclusive.") = None
    lift: Maybe(float, "rate_canary / rate_stable - 1.") = None
    message: Text("The decision in words.") = None


class AnalysisCheck(_Status):
    name: Annotated[str, Field(description="Check name.")]
    value: Maybe(float, "Measured value (none: no data).") = None
    threshold: Annotated[str, Field(description="What the value is held against.")] = ""
    verdict: Annotated[Verdict, Field(description="Pass, Fail or Inconclusive.")]
    message: Text("Why, in words.") = None
    error: Text("Query error (Prometheus unreachable).") = None
    business: Maybe(BusinessNumbers, "The business check's numbers.") = None


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
    candidate: Text("Candidate version under rollout.") = None
    step_index: Annotated[int, Field(description="Index into spec.rollout.steps (-1 while shadowing).")] = 0
    weight: Annotated[int, Field(description="Percent of traffic on the candidate.")] = 0
    started_at: UnixTime("Unix time the rollout started.") = None
    step_started_at: UnixTime("Unix time the current step started.") = None
    last_analysis_at: UnixTime("Unix time of the last analysis.") = None
    failures: Annotated[int, Field(description="Consecutive failed analyses.")] = 0
    inconclusive: Annotated[int, Field(description="Consecutive inconclusive analyses.")] = 0
    shadow_passed: Annotated[int, Field(description="Shadow intervals passed.")] = 0
    message: Text("The latest decision in words.") = None
    checks: Annotated[list[AnalysisCheck], Field(description="Checks of the last analysis.")] = []
    last_verdict: Maybe(Verdict, "Verdict of the last analysis.") = None
    business: Maybe(BusinessEvidence, "The business check's latest evidence.") = None
    promoted_version: Text("What stable serves since the last promotion.") = None
    promoted_image: Text("The image that version was promoted with.") = None
    promoted_search_version: Text("The search bundle promoted with it (None: spec.search.version).") = None
    promoted_over: Text("spec.model.version when it was promoted.") = None
    last_action: Maybe(AppliedAction, "The last manual action applied.") = None
    paused_from: Maybe(Phase, "Phase to resume into.") = None

    @classmethod
    def of(cls, value: RolloutStatus | dict[str, Any] | None) -> RolloutStatus:
        return value if isinstance(value, RolloutStatus) else cls.model_validate(value or {})


# ---------------------------------------------------------------------------------- training
class GateRecord(_Status):
    passed: Annotated[bool, Field(description="Whether the run's model may replace the serving one.")]
    reasons: Annotated[list[str], Field(description="Why not, one line per failed metric.")] = []


class RunDataWindow(_Status):
    """The data window the trainer recorded in the bundle manifest."""

    start: UnixTime("Unix time of the oldest event trained on.") = None
    end: UnixTime("Unix time of the newest event trained on.") = None
    days: Maybe(int, "Window length in days, when the trainer states it.") = None


class RunData(_Status):
    """What the trainer's load read and rejected (the bundle's data report)."""

    rows: Maybe(int, "Rows read.") = None
    rejected: Maybe(int, "Rows rejected.") = None
    reasons: Maybe(dict[str, int], "Rejected rows per reason.") = None
    items_without_catalog: Annotated[
        int | None,
        Field(alias="items_without_catalog", description="Items trained on that the catalogue lacks."),
    ] = None


class RunTuned(_Status):
    """The serving configuration the trainer tuned on its validation tail."""

    exclude: Maybe(dict[str, bool], "Measured exclusion policy (seen, purchased).") = None
    blend: Maybe(dict[str, float], "Tuned source weights.") = None


class RunRetrieval(_Status):
    """How the bundle retrieves candidates and the recall its gate measured (ann.py)."""

    mode: Text("precomputed or index.") = None
    recall_at_k: Maybe(float, "Recall of the index against exact search at k.") = None
    k: Maybe(int, "Candidates per query the recall is measured at.") = None
    ef_search: Maybe(int, "HNSW efSearch the bundle serves with.") = None


class TrainingRun(_Status):
    """One training run (one Job) and, once it finished, the closed loop's record of it."""

    name: Annotated[str, Field(description="Run id: the Job name.")]
    version: Text("Model version the run produces (the run id).") = None
    trigger: Text("scheduled or on-demand.") = None
    phase: Annotated[str, Field(description="Pending, Running, Succeeded or Failed.")]
    reason: Text("The Job's reason for the phase.") = None
    start_time: Timestamp("RFC 3339 start time.") = None
    completion_time: Timestamp("RFC 3339 end time.") = None
    preemptions: Maybe(int, "Preempted pods of this run.") = None
    message: Text("The trainer's one-line failure reason.") = None
    data_window: Maybe(RunDataWindow, "Data window of the bundle.") = None
    data: Maybe(RunData, "Rows read and rejected.") = None
    tuned: Maybe(RunTuned, "Serving configuration the trainer tuned.") = None
    retrieval: Maybe(RunRetrieval, "Candidate retrieval of the bundle.") = None
    data_window_days: Maybe(int, "spec.training.dataWindow.days.") = None
    serving_version: Text("Model serving when the run finished.") = None
    metrics: Maybe(dict[str, float], "Offline metrics of the run's bundle.") = None
    serving_metrics: Maybe(dict[str, float], "Offline metrics of the serving bundle.") = None
    gate: Maybe(GateRecord, "The metrics gate's verdict.") = None
    action: Text("candidate-set, gate-passed or gate-failed.") = None


class TrainingStatus(_Status):
    """The training controller's state: runs, preemptions, checkpoints and the closed loop's lineage."""

    last_trigger: Text("The on-demand trigger last turned into a run.") = None
    preemptions: Annotated[int, Field(description="Preempted pods over all finished runs.")] = 0
    current_run: Maybe(TrainingRun, "The run in progress.") = None
    last_run: Maybe(TrainingRun, "The newest finished run.") = None
    last_checkpoint_time: Timestamp("RFC 3339 time of the newest checkpoint of that run.") = None

    @classmethod
    def of(cls, value: TrainingStatus | dict[str, Any] | None) -> TrainingStatus:
        return value if isinstance(value, TrainingStatus) else cls.model_validate(value or {})


def drop_none(value: Any) -> Any:
    """``value`` with every None member of its mappings left out, at every level."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def merge_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: keys ``new`` lacks are
    nulled at every level, so no key of an earlier value outlives it."""
    old = old or {}
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            patch[k] = merge_patch(old[k], v)
        else:
            patch[k] = v
    return patch
