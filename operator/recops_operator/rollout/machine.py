"""The rollout state machine: a pure function of (spec, status, analysis verdict, observations, now).

Everything the rollout knows lives in ``status.rollout`` (returned here as a new
dict), so an operator restart resumes exactly where it was. Vocabulary follows
Flagger/Argo (steps, interval, failureLimit, promote/abort/retry), with the
fixes their users ask for: no data is *Inconclusive* and holds the weight (never
promotes, fails only after ``inconclusiveLimit`` intervals); manual actions are
declarative (applied once per nonce, GitOps-safe); the stable track switches to
the candidate only after the stable Deployment has fully rolled out (Promoting).

Phases: Idle -> [Shadowing] -> Progressing -> Promoting -> Succeeded,
or -> RolledBack (failed analysis, deadline, abort) / Failed (no data too long);
Paused holds anything live until resumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from recops_operator.api.models import Rollout


class Phase(StrEnum):
    IDLE = "Idle"
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    PAUSED = "Paused"


LIVE = {Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTING}
#: Kept across rollouts: what stable serves since the last promotion, and the last manual action.
KEEP = ("promotedVersion", "promotedImage", "promotedOver", "lastAction")
TERMINAL = {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED}


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


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


def _event(events: list[tuple[str, str, str]], kind: str, reason: str, message: str) -> None:
    events.append((kind, reason, message))


def evidence(checks: list[dict[str, Any]]) -> str:
    """The business check's numbers in one clause (for events and the status message), or ''."""
    for c in checks:
        b = c.get("business")
        if not b or b["canary"]["rate"] is None or b["stable"]["rate"] is None:
            continue
        span = (
            ""
            if c.get("value") is None
            else f", lift {c['value']:+.1%} [{b['liftLow']:+.1%}, {b['liftHigh']:+.1%}]"
        )
        return (
            f"; {c['name']}: canary {b['canary']['rate']:.4g} vs stable {b['stable']['rate']:.4g} per answer "
            f"({b['canary']['recommendations']:.0f} / {b['stable']['recommendations']:.0f} answers){span}, "
            f"{c['verdict']}: {c.get('message', '')}"
        )
    return ""


def step(
    spec: Rollout,
    status: dict[str, Any] | None,
    analysis: Analysis | None,
    now: float,
    *,
    stable_at_candidate: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Next ``status.rollout`` and the events to emit (kind, reason, message).

    ``analysis`` is None when no analysis ran this call (interval not elapsed).
    ``stable_at_candidate``: the stable Deployment has rolled out the candidate version.
    """
    st: dict[str, Any] = dict(status or {})
    events: list[tuple[str, str, str]] = []
    phase = Phase(st.get("phase", Phase.IDLE))
    cand = spec.candidate.version if spec.candidate else None

    # -- candidate removed or changed -----------------------------------------------------
    if cand is None:
        if phase != Phase.IDLE:
            keep = {k: st[k] for k in KEEP if k in st}
            st = {**keep, "phase": Phase.IDLE, "weight": 0, "message": "no candidate"}
        return st, events
    if st.get("candidate") != cand:
        first = Phase.SHADOWING if spec.shadow.percent > 0 else Phase.PROGRESSING
        st = {
            **{k: st[k] for k in KEEP if k in st},
            "phase": first,
            "candidate": cand,
            "stepIndex": 0 if first == Phase.PROGRESSING else -1,
            "weight": spec.steps[0] if first == Phase.PROGRESSING else 0,
            "startedAt": now,
            "stepStartedAt": now,
            "failures": 0,
            "inconclusive": 0,
            "shadowPassed": 0,
            "message": f"rollout of {cand} started",
        }
        _event(events, "Normal", "RolloutStarted", f"candidate {cand}: {first} at weight {st['weight']}%")
        return st, events

    # -- declarative manual actions (once per nonce) ----------------------------------------
    action = spec.action
    if action and st.get("lastAction", {}).get("nonce") != action.nonce:
        st["lastAction"] = {"type": action.type, "nonce": action.nonce, "appliedAt": now}
        if action.type == "abort" and phase not in TERMINAL:
            st.update(phase=Phase.ROLLED_BACK, weight=0, message="aborted by user")
            _event(events, "Warning", "RolloutAborted", "aborted by user: traffic back to stable")
        elif action.type == "promote" and phase in LIVE | {Phase.PAUSED}:
            st.update(
                phase=Phase.PROMOTING, weight=100, stepIndex=len(spec.steps) - 1, message="promoted by user"
            )
            _event(events, "Normal", "RolloutPromoted", "promoted by user")
        elif action.type == "retry" and phase in {Phase.ROLLED_BACK, Phase.FAILED}:
            st.pop("candidate", None)
            return step(spec, st, None, now)
        elif action.type == "pause" and phase in LIVE:
            st.update(phase=Phase.PAUSED, pausedFrom=phase, message="paused by user")
            _event(events, "Normal", "RolloutPaused", f"paused at weight {st.get('weight', 0)}%")
        elif action.type == "resume" and phase == Phase.PAUSED:
            st.update(
                phase=st.pop("pausedFrom", Phase.PROGRESSING), stepStartedAt=now, message="resumed by user"
            )
            _event(events, "Normal", "RolloutResumed", "resumed by user")
        return st, events

    if phase in TERMINAL or phase == Phase.PAUSED:
        return st, events

    # -- promotion: wait until stable runs the candidate, then move traffic back ------------
    if phase == Phase.PROMOTING:
        if stable_at_candidate:
            st.update(
                phase=Phase.SUCCEEDED, weight=0, promotedVersion=cand, message=f"{cand} promoted to stable"
            )
            # the image the promoted version runs on: stable keeps it after the candidate is gone
            if spec.candidate.image:
                st["promotedImage"] = spec.candidate.image
            else:
                st.pop("promotedImage", None)  # serving.image, like the version it was promoted with
            _event(events, "Normal", "RolloutSucceeded", f"{cand} is now stable")
        return st, events

    # -- progress deadline -------------------------------------------------------------------
    if now - float(st.get("startedAt", now)) > spec.progress_deadline_seconds:
        st.update(
            phase=Phase.ROLLED_BACK,
            weight=0,
            message=f"progress deadline of {spec.progress_deadline_seconds}s exceeded",
        )
        _event(events, "Warning", "RolloutRolledBack", st["message"])
        return st, events

    if analysis is None:
        return st, events
    st["lastAnalysisAt"] = now
    st["checks"] = analysis.checks
    st["lastVerdict"] = analysis.verdict
    why = evidence(analysis.checks)
    for c in analysis.checks:
        if c.get("business"):
            st["business"] = {
                **c["business"],
                "verdict": c["verdict"],
                "lift": c["value"],
                "message": c["message"],
            }
    if analysis.verdict == Verdict.FAIL:
        st["failures"] = int(st.get("failures", 0)) + 1
        st["inconclusive"] = 0
        failed = (
            ", ".join(c["name"] for c in analysis.checks if c.get("verdict") == Verdict.FAIL) or "analysis"
        )
        if st["failures"] >= spec.failure_limit:
            st.update(
                phase=Phase.ROLLED_BACK,
                weight=0,
                message=f"rolled back after {st['failures']} failed analyses: {failed}{why}",
            )
            _event(events, "Warning", "RolloutRolledBack", st["message"])
        else:
            st["message"] = f"analysis failed ({failed}); {st['failures']}/{spec.failure_limit}{why}"
            _event(events, "Warning", "AnalysisFailed", st["message"])
        return st, events
    if analysis.verdict == Verdict.INCONCLUSIVE:
        st["inconclusive"] = int(st.get("inconclusive", 0)) + 1
        if st["inconclusive"] >= spec.inconclusive_limit:
            st.update(
                phase=Phase.FAILED,
                weight=0,
                message=f"no conclusive analysis for {st['inconclusive']} intervals",
            )
            _event(events, "Warning", "RolloutFailed", st["message"])
        else:
            st["message"] = (
                f"inconclusive ({st['inconclusive']}/{spec.inconclusive_limit}): holding at {st.get('weight', 0)}%{why}"
            )
            _event(events, "Normal", "AnalysisInconclusive", st["message"])
        return st, events

    # -- pass ------------------------------------------------------------------------------
    st["failures"] = 0
    st["inconclusive"] = 0
    if phase == Phase.SHADOWING:
        st["shadowPassed"] = int(st.get("shadowPassed", 0)) + 1
        if st["shadowPassed"] >= spec.shadow.intervals:
            st.update(
                phase=Phase.PROGRESSING,
                stepIndex=0,
                weight=spec.steps[0],
                stepStartedAt=now,
                message=f"shadow passed; canary at {spec.steps[0]}%",
            )
            _event(events, "Normal", "RolloutStep", st["message"])
        else:
            st["message"] = f"shadow analysis passed {st['shadowPassed']}/{spec.shadow.intervals}"
        return st, events
    idx = int(st.get("stepIndex", 0))
    if idx + 1 < len(spec.steps):
        st.update(
            stepIndex=idx + 1,
            weight=spec.steps[idx + 1],
            stepStartedAt=now,
            message=f"canary at {spec.steps[idx + 1]}%{why}",
        )
        _event(events, "Normal", "RolloutStep", st["message"])
    else:
        st.update(phase=Phase.PROMOTING, weight=100, message=f"all steps passed; promoting {cand}{why}")
        _event(events, "Normal", "RolloutPromoting", st["message"])
    return st, events


def next_weight(spec: Rollout, st: dict[str, Any]) -> int:
    """The weight the candidate will take next (pre-scale replicas for it before it rises)."""
    phase = st.get("phase")
    if phase == Phase.SHADOWING:
        return spec.steps[0]
    idx = int(st.get("stepIndex", 0))
    return (
        spec.steps[min(idx + 1, len(spec.steps) - 1)]
        if phase in (Phase.PROGRESSING, Phase.PAUSED)
        else int(st.get("weight", 0))
    )


def stable_version(spec_version: str, spec: Rollout, st: dict[str, Any] | None) -> str:
    """The version the stable track serves.

    While promoting (and after), the candidate. Later, the last promoted version for as long
    as ``spec.model.version`` is still the one it was promoted over (``promotedOver``): a new
    candidate or a rollback never silently reverts stable to the pre-promotion model; editing
    ``spec.model.version`` (the GitOps follow-up to a promotion) takes over again.
    """
    st = st or {}
    if (
        st.get("phase") in (Phase.PROMOTING, Phase.SUCCEEDED)
        and spec.candidate
        and st.get("candidate") == spec.candidate.version
    ):
        return spec.candidate.version
    promoted = st.get("promotedVersion")
    if promoted and st.get("promotedOver", spec_version) == spec_version:
        return promoted
    return spec_version


def stable_image(spec_image: str, spec_version: str, spec: Rollout, st: dict[str, Any] | None) -> str:
    """The image of the stable track, consistent with ``stable_version``."""
    st = st or {}
    version = stable_version(spec_version, spec, st)
    if version == spec_version:
        return spec_image
    if (
        spec.candidate
        and version == spec.candidate.version
        and st.get("phase") in (Phase.PROMOTING, Phase.SUCCEEDED)
    ):
        return spec.candidate.image or spec_image
    return st.get("promotedImage") or spec_image
