"""The rollout state machine: a pure function of (spec, status, analysis verdict, observations, now).

Everything the rollout knows lives in ``status.rollout`` (``api.status.RolloutStatus``, a new
one returned here), so an operator restart resumes exactly where it was. Vocabulary follows
Flagger/Argo (steps, interval, failureLimit, promote/abort/retry), with the
fixes their users ask for: no data is *Inconclusive* and holds the weight (never
promotes, fails only after ``inconclusiveLimit`` intervals); manual actions are
declarative (applied once per nonce, GitOps-safe); the stable track switches to
the candidate only after the stable Deployment has fully rolled out (Promoting).

Phases: Idle -> [Shadowing] -> Progressing -> Promoting -> Succeeded,
or -> RolledBack (failed analysis, deadline, abort) / Failed (no data too long);
Paused holds anything live until resumed. ``step`` dispatches to one function per situation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recops_operator.api.models import Rollout
from recops_operator.api.status import (
    AnalysisCheck,
    AppliedAction,
    BusinessEvidence,
    Phase,
    RolloutStatus,
    Verdict,
)

LIVE = {Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTING}
#: Kept across rollouts: what stable serves since the last promotion, and the last manual action.
KEEP = ("promoted_version", "promoted_image", "promoted_search_version", "promoted_over", "last_action")
TERMINAL = {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED}
Events = list[tuple[str, str, str]]


@dataclass(frozen=True)
class Analysis:
    """One analysis interval's outcome: overall verdict plus each check's record."""

    verdict: Verdict
    checks: list[dict[str, Any]] = field(default_factory=list)


def parse_duration(text: str) -> float:
    total, num = 0.0, ""
    for ch in text:
        if ch.isdigit():
            num += ch
        else:
            total += int(num) * {"s": 1, "m": 60, "h": 3600}[ch]
            num = ""
    return total


def _kept(st: RolloutStatus, **fields: Any) -> RolloutStatus:
    """A fresh status that keeps only what outlives a rollout (KEEP), plus ``fields``."""
    return RolloutStatus(**{k: getattr(st, k) for k in KEEP}, **fields)


def evidence(checks: list[AnalysisCheck]) -> str:
    """The business check's numbers in one clause (for events and the status message), or ''."""
    for c in checks:
        b = c.business
        if not b or b.canary.rate is None or b.stable.rate is None:
            continue
        span = "" if c.value is None else f", lift {c.value:+.1%} [{b.lift_low:+.1%}, {b.lift_high:+.1%}]"
        return (
            f"; {c.name}: canary {b.canary.rate:.4g} vs stable {b.stable.rate:.4g} per answer "
            f"({b.canary.recommendations:.0f} / {b.stable.recommendations:.0f} answers){span}, "
            f"{c.verdict}: {c.message or ''}"
        )
    return ""


def step(
    spec: Rollout,
    status: RolloutStatus | dict[str, Any] | None,
    analysis: Analysis | None,
    now: float,
    *,
    stable_at_candidate: bool = False,
) -> tuple[RolloutStatus, Events]:
    """Next ``status.rollout`` and the events to emit (kind, reason, message).

    ``analysis`` is None when no analysis ran this call (interval not elapsed).
    ``stable_at_candidate``: the stable Deployment has rolled out the candidate version.
    """
    st = RolloutStatus.of(status).model_copy(deep=True)
    events: Events = []
    cand = spec.candidate.version if spec.candidate else None
    if cand is None:
        if st.phase != Phase.IDLE:
            st = _kept(st, phase=Phase.IDLE, weight=0, message="no candidate")
        return st, events
    if st.candidate != cand:
        return _start(spec, st, cand, now, events)
    if spec.action and (st.last_action is None or st.last_action.nonce != spec.action.nonce):
        return _act(spec, st, now, events)
    if st.phase in TERMINAL or st.phase == Phase.PAUSED:
        return st, events
    if st.phase == Phase.PROMOTING:
        return _promoting(spec, st, cand, stable_at_candidate, events)
    if now - (st.started_at if st.started_at is not None else now) > spec.progress_deadline_seconds:
        st = st.model_copy(
            update={
                "phase": Phase.ROLLED_BACK,
                "weight": 0,
                "message": f"progress deadline of {spec.progress_deadline_seconds}s exceeded",
            }
        )
        events.append(("Warning", "RolloutRolledBack", st.message))
        return st, events
    if analysis is None:
        return st, events
    return _analysed(spec, st, analysis, cand, now, events)


def _start(
    spec: Rollout, st: RolloutStatus, cand: str, now: float, events: Events
) -> tuple[RolloutStatus, Events]:
    """A new candidate: shadow first when the spec mirrors traffic, else the first step."""
    first = Phase.SHADOWING if spec.shadow.percent > 0 else Phase.PROGRESSING
    st = _kept(
        st,
        phase=first,
        candidate=cand,
        step_index=0 if first == Phase.PROGRESSING else -1,
        weight=spec.steps[0] if first == Phase.PROGRESSING else 0,
        started_at=now,
        step_started_at=now,
        message=f"rollout of {cand} started",
    )
    events.append(("Normal", "RolloutStarted", f"candidate {cand}: {first} at weight {st.weight}%"))
    return st, events


def _act(spec: Rollout, st: RolloutStatus, now: float, events: Events) -> tuple[RolloutStatus, Events]:
    """A declarative manual action, applied once per nonce."""
    action, phase = spec.action, st.phase
    st.last_action = AppliedAction(type=action.type, nonce=action.nonce, applied_at=now)
    if action.type == "abort" and phase not in TERMINAL:
        st.phase, st.weight, st.message = Phase.ROLLED_BACK, 0, "aborted by user"
        events.append(("Warning", "RolloutAborted", "aborted by user: traffic back to stable"))
    elif action.type == "promote" and phase in LIVE | {Phase.PAUSED}:
        st.phase, st.weight, st.step_index, st.message = (
            Phase.PROMOTING,
            100,
            len(spec.steps) - 1,
            "promoted by user",
        )
        events.append(("Normal", "RolloutPromoted", "promoted by user"))
    elif action.type == "retry" and phase in {Phase.ROLLED_BACK, Phase.FAILED}:
        st.candidate = None
        return step(spec, st, None, now)
    elif action.type == "pause" and phase in LIVE:
        st.phase, st.paused_from, st.message = Phase.PAUSED, phase, "paused by user"
        events.append(("Normal", "RolloutPaused", f"paused at weight {st.weight}%"))
    elif action.type == "resume" and phase == Phase.PAUSED:
        st.phase, st.paused_from = st.paused_from or Phase.PROGRESSING, None
        st.step_started_at, st.message = now, "resumed by user"
        events.append(("Normal", "RolloutResumed", "resumed by user"))
    return st, events


def _promoting(
    spec: Rollout, st: RolloutStatus, cand: str, stable_at_candidate: bool, events: Events
) -> tuple[RolloutStatus, Events]:
    """Wait until stable runs the candidate, then move traffic back to it."""
    if stable_at_candidate:
        st.phase, st.weight, st.promoted_version = Phase.SUCCEEDED, 0, cand
        st.message = f"{cand} promoted to stable"
        # the image the promoted version runs on (None: serving.image): stable keeps it after the
        # candidate is gone
        st.promoted_image = spec.candidate.image
        st.promoted_search_version = spec.candidate.search_version  # its search bundle goes with it
        events.append(("Normal", "RolloutSucceeded", f"{cand} is now stable"))
    return st, events


def _analysed(
    spec: Rollout, st: RolloutStatus, analysis: Analysis, cand: str, now: float, events: Events
) -> tuple[RolloutStatus, Events]:
    """Record an analysis and act on its verdict."""
    checks = [AnalysisCheck.model_validate(c) for c in analysis.checks]
    st.last_analysis_at, st.checks, st.last_verdict = now, checks, analysis.verdict
    for c in checks:
        if c.business:
            st.business = BusinessEvidence(
                **c.business.model_dump(), verdict=c.verdict, lift=c.value, message=c.message
            )
    why = evidence(checks)
    if analysis.verdict == Verdict.FAIL:
        return _failed(spec, st, checks, why, events)
    if analysis.verdict == Verdict.INCONCLUSIVE:
        return _inconclusive(spec, st, why, events)
    return _passed(spec, st, cand, now, why, events)


def _failed(
    spec: Rollout, st: RolloutStatus, checks: list[AnalysisCheck], why: str, events: Events
) -> tuple[RolloutStatus, Events]:
    st.failures, st.inconclusive = st.failures + 1, 0
    failed = ", ".join(c.name for c in checks if c.verdict == Verdict.FAIL) or "analysis"
    if st.failures >= spec.failure_limit:
        st.phase, st.weight = Phase.ROLLED_BACK, 0
        st.message = f"rolled back after {st.failures} failed analyses: {failed}{why}"
        events.append(("Warning", "RolloutRolledBack", st.message))
    else:
        st.message = f"analysis failed ({failed}); {st.failures}/{spec.failure_limit}{why}"
        events.append(("Warning", "AnalysisFailed", st.message))
    return st, events


def _inconclusive(spec: Rollout, st: RolloutStatus, why: str, events: Events) -> tuple[RolloutStatus, Events]:
    """No evidence either way: hold the weight; fail after ``inconclusiveLimit`` intervals."""
    st.inconclusive += 1
    if st.inconclusive >= spec.inconclusive_limit:
        st.phase, st.weight = Phase.FAILED, 0
        st.message = f"no conclusive analysis for {st.inconclusive} intervals"
        events.append(("Warning", "RolloutFailed", st.message))
    else:
        st.message = (
            f"inconclusive ({st.inconclusive}/{spec.inconclusive_limit}): holding at {st.weight}%{why}"
        )
        events.append(("Normal", "AnalysisInconclusive", st.message))
    return st, events


def _passed(
    spec: Rollout, st: RolloutStatus, cand: str, now: float, why: str, events: Events
) -> tuple[RolloutStatus, Events]:
    """The next shadow interval, the next step, or promotion after the last."""
    st.failures, st.inconclusive = 0, 0
    if st.phase == Phase.SHADOWING:
        st.shadow_passed += 1
        if st.shadow_passed >= spec.shadow.intervals:
            st.phase, st.step_index, st.weight, st.step_started_at = Phase.PROGRESSING, 0, spec.steps[0], now
            st.message = f"shadow passed; canary at {spec.steps[0]}%"
            events.append(("Normal", "RolloutStep", st.message))
        else:
            st.message = f"shadow analysis passed {st.shadow_passed}/{spec.shadow.intervals}"
        return st, events
    if st.step_index + 1 < len(spec.steps):
        st.step_index += 1
        st.weight, st.step_started_at = spec.steps[st.step_index], now
        st.message = f"canary at {st.weight}%{why}"
        events.append(("Normal", "RolloutStep", st.message))
    else:
        st.phase, st.weight = Phase.PROMOTING, 100
        st.message = f"all steps passed; promoting {cand}{why}"
        events.append(("Normal", "RolloutPromoting", st.message))
    return st, events


def next_weight(spec: Rollout, status: RolloutStatus | dict[str, Any] | None) -> int:
    """The weight the candidate will take next (pre-scale replicas for it before it rises)."""
    st = RolloutStatus.of(status)
    if st.phase == Phase.SHADOWING:
        return spec.steps[0]
    if st.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return spec.steps[min(st.step_index + 1, len(spec.steps) - 1)]
    return st.weight


def stable_version(spec_version: str, spec: Rollout, status: RolloutStatus | dict[str, Any] | None) -> str:
    """The version the stable track serves.

    While promoting (and after), the candidate. Later, the last promoted version for as long
    as ``spec.model.version`` is still the one it was promoted over (``promotedOver``): a new
    candidate or a rollback never silently reverts stable to the pre-promotion model; editing
    ``spec.model.version`` (the GitOps follow-up to a promotion) takes over again.
    """
    st = RolloutStatus.of(status)
    if (
        st.phase in (Phase.PROMOTING, Phase.SUCCEEDED)
        and spec.candidate
        and st.candidate == spec.candidate.version
    ):
        return spec.candidate.version
    if st.promoted_version and (st.promoted_over or spec_version) == spec_version:
        return st.promoted_version
    return spec_version


def stable_image(
    spec_image: str, spec_version: str, spec: Rollout, status: RolloutStatus | dict[str, Any] | None
) -> str:
    """The image of the stable track, consistent with ``stable_version``."""
    return _stable_attr("image", spec_image, spec_version, spec, status)


def stable_search_version(
    spec_search: str | None, spec_version: str, spec: Rollout, status: RolloutStatus | dict[str, Any] | None
) -> str | None:
    """The search bundle of the stable track, consistent with ``stable_version``: the candidate's own
    (``candidate.searchVersion``) once stable serves the candidate."""
    return _stable_attr("search_version", spec_search, spec_version, spec, status)


def _stable_attr(
    name: str, default: Any, spec_version: str, spec: Rollout, status: RolloutStatus | dict[str, Any] | None
) -> Any:
    """What goes with the version stable serves: the spec's ``default`` for spec.model.version, the
    candidate's ``name`` while it is promoted, then the status's ``promoted_<name>`` (None: default)."""
    st = RolloutStatus.of(status)
    version = stable_version(spec_version, spec, st)
    if version == spec_version:
        return default
    if (
        spec.candidate
        and version == spec.candidate.version
        and st.phase in (Phase.PROMOTING, Phase.SUCCEEDED)
    ):
        return getattr(spec.candidate, name) or default
    return getattr(st, f"promoted_{name}") or default
