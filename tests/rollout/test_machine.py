"""The rollout state machine, exhaustively: every phase x every verdict, plus the stories."""

from __future__ import annotations

import itertools

import pytest

from recops_operator.api.models import Rollout
from recops_operator.api.status import RolloutStatus
from recops_operator.rollout.machine import (
    LIVE,
    TERMINAL,
    Analysis,
    Phase,
    Verdict,
    next_weight,
    stable_version,
    step,
)

P, F, INC = (
    Analysis(Verdict.PASS),
    Analysis(Verdict.FAIL, [{"name": "p99-latency-ms", "verdict": Verdict.FAIL}]),
    Analysis(Verdict.INCONCLUSIVE),
)


def spec(**kw) -> Rollout:
    base = {
        "candidate": {"version": "v2"},
        "steps": [10, 50, 100],
        "failureLimit": 2,
        "inconclusiveLimit": 3,
        "interval": "1m",
    }
    base.update(kw)
    return Rollout.model_validate(base)


def run(s: Rollout, verdicts, st=None, t0=1000.0):
    st, _ = step(s, st, None, t0)
    for n, v in enumerate(verdicts, 1):
        st, _ = step(s, st, v, t0 + 60 * n)
    return st


def test_healthy_candidate_walks_every_step_then_promotes_only_after_stable_rolled_out():
    s = spec()
    st = run(s, [])
    assert (st.phase, st.weight) == (Phase.PROGRESSING, 10)
    st = run(s, [P])
    assert st.weight == 50
    st = run(s, [P, P])
    assert st.weight == 100 and st.phase == Phase.PROGRESSING
    st = run(s, [P, P, P])
    assert st.phase == Phase.PROMOTING and st.weight == 100
    st2, _ = step(s, st, None, 5000, stable_at_candidate=False)
    assert st2.phase == Phase.PROMOTING, "traffic stays on the candidate until stable runs it"
    st3, ev = step(s, st2, None, 5001, stable_at_candidate=True)
    assert (st3.phase, st3.weight, st3.promoted_version) == (Phase.SUCCEEDED, 0, "v2")
    assert ev[0][1] == "RolloutSucceeded"
    assert stable_version("v1", s, st3) == "v2"


def test_failure_limit_rolls_back_to_zero_with_the_reason():
    s = spec()
    st = run(s, [P, F])
    assert st.phase == Phase.PROGRESSING and st.weight == 50 and st.failures == 1
    st = run(s, [P, F, F])
    assert (st.phase, st.weight) == (Phase.ROLLED_BACK, 0)
    assert "p99-latency-ms" in st.message
    assert stable_version("v1", s, st) == "v1"


def test_a_pass_resets_consecutive_failures():
    st = run(spec(), [F, P, F])
    assert st.phase == Phase.PROGRESSING and st.failures == 1


def test_no_data_holds_the_weight_never_promotes_and_fails_after_the_limit():
    s = spec()
    st = run(s, [P, INC, INC])
    assert (st.phase, st.weight) == (Phase.PROGRESSING, 50)
    st = run(s, [P, INC, INC, INC])
    assert (st.phase, st.weight) == (Phase.FAILED, 0)
    st = run(s, [P, P, INC, INC])
    assert st.phase != Phase.PROMOTING


def test_shadow_phase_precedes_live_traffic():
    s = spec(shadow={"percent": 5, "intervals": 2})
    st = run(s, [])
    assert (st.phase, st.weight) == (Phase.SHADOWING, 0)
    assert next_weight(s, st) == 10
    st = run(s, [P])
    assert st.phase == Phase.SHADOWING
    st = run(s, [P, P])
    assert (st.phase, st.weight) == (Phase.PROGRESSING, 10)
    assert run(s, [F, F]).phase == Phase.ROLLED_BACK


def test_progress_deadline_rolls_back():
    s = spec(progressDeadlineSeconds=120)
    st, _ = step(s, None, None, 0)
    st, _ = step(s, st, INC, 60)
    st, _ = step(s, st, INC, 200)
    assert (st.phase, st.weight, "deadline" in st.message) == (Phase.ROLLED_BACK, 0, True)


def test_manual_actions_apply_once_per_nonce():
    s = spec()
    st = run(s, [P])
    ab = spec(action={"type": "abort", "nonce": "a1"})
    st2, ev = step(ab, st, None, 9000)
    assert (st2.phase, st2.weight) == (Phase.ROLLED_BACK, 0) and ev[0][1] == "RolloutAborted"
    st3, ev3 = step(ab, st2, P, 9100)
    assert st3 == st2 and ev3 == [], "same nonce is not re-applied and terminal phases stay"
    retry = spec(action={"type": "retry", "nonce": "r1"})
    st4, _ = step(retry, st3, None, 9200)
    assert (st4.phase, st4.weight, st4.failures) == (Phase.PROGRESSING, 10, 0)
    pause = spec(action={"type": "pause", "nonce": "p1"})
    st5, _ = step(pause, st4, None, 9300)
    assert st5.phase == Phase.PAUSED and st5.weight == 10
    assert step(pause, st5, F, 9400)[0].phase == Phase.PAUSED
    resume = spec(action={"type": "resume", "nonce": "q1"})
    st6, _ = step(resume, st5, None, 9500)
    assert st6.phase == Phase.PROGRESSING
    promote = spec(action={"type": "promote", "nonce": "x1"})
    st7, _ = step(promote, st6, None, 9600)
    assert (st7.phase, st7.weight) == (Phase.PROMOTING, 100)


def test_new_candidate_restarts_and_removing_it_goes_idle():
    s = spec()
    st = run(s, [P, F, F])
    assert st.phase == Phase.ROLLED_BACK
    st2, _ = step(spec(candidate={"version": "v3"}), st, None, 20000)
    assert (st2.phase, st2.candidate, st2.weight) == (Phase.PROGRESSING, "v3", 10)
    st3, _ = step(spec(candidate=None), st2, None, 20001)
    assert (st3.phase, st3.weight) == (Phase.IDLE, 0)


@pytest.mark.parametrize(
    "phase,verdict",
    list(
        itertools.product(
            [Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTING, *TERMINAL, Phase.PAUSED], [P, F, INC, None]
        )
    ),
)
def test_every_phase_and_verdict_is_safe(phase, verdict):
    """Invariants for all combinations: weights stay valid, terminal/paused phases never move,
    only a Pass (or a manual promote) can raise the weight, and nothing promotes without data."""
    s = spec(shadow={"percent": 5})
    st = RolloutStatus.model_validate(
        {
            "phase": phase,
            "candidate": "v2",
            "stepIndex": 1 if phase != Phase.SHADOWING else -1,
            "startedAt": 1000.0,
            "stepStartedAt": 1000.0,
            "weight": {Phase.SHADOWING: 0, Phase.PROGRESSING: 50, Phase.PROMOTING: 100, Phase.PAUSED: 50}.get(
                phase, 0
            ),
            "failures": 0,
            "inconclusive": 0,
        }
    )
    new, _ = step(s, st, verdict, 1060.0)
    assert 0 <= new.weight <= 100
    if phase in TERMINAL or phase == Phase.PAUSED:
        assert new.phase == phase and new.weight == st.weight
    if verdict is not P and phase != Phase.PROMOTING:
        assert new.weight <= st.weight, "no data or a failure never raises the weight"
        assert new.phase not in (Phase.PROMOTING, Phase.SUCCEEDED) or phase in (
            Phase.PROMOTING,
            Phase.SUCCEEDED,
        )
    if new.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.IDLE, Phase.SUCCEEDED):
        assert new.weight == 0
    if new.phase in LIVE:
        assert new.candidate == "v2"


def test_restart_safety_status_is_the_only_state():
    """Replaying the persisted status after a 'restart' gives the same next state as without one."""
    s = spec()
    st = run(s, [P])
    persisted = st.dump()  # what the API server stores, read back by the restarted operator
    a, _ = step(s, st, P, 1200)
    b, _ = step(s, persisted, P, 1200)
    assert a == b and a.weight == 100


def test_a_later_rollout_never_reverts_stable_to_the_pre_promotion_model():
    s = spec()
    st = run(s, [P, P, P])
    st, _ = step(s, st, None, 5000, stable_at_candidate=True)
    st.promoted_over = "v1"  # set by the handler from spec.model.version
    nxt = spec(candidate={"version": "v3"})
    st2, _ = step(nxt, st, None, 6000)
    assert st2.promoted_version == "v2" and stable_version("v1", nxt, st2) == "v2"
    st3 = run(nxt, [F, F], st2, t0=6000)
    assert st3.phase == Phase.ROLLED_BACK and stable_version("v1", nxt, st3) == "v2"
    assert stable_version("v2", nxt, st3) == "v2" and stable_version("v9", nxt, st3) == "v9", (
        "editing spec.model.version takes over"
    )


def test_business_evidence_goes_into_status_and_the_rollback_event():
    """The sequential test's numbers (rates, answers, lift interval, decision) reach status and events."""
    from recops_operator.api.models import BusinessCheck
    from recops_operator.rollout.analysis import business_check

    totals = {"canary": (20_000.0, 600.0), "stable": (180_000.0, 9_000.0)}  # 3% vs 5% per answer

    def query(q: str) -> float:
        track = "canary" if 'track="canary"' in q else "stable"
        return totals[track][0 if "recops_http_requests_total" in q else 1]

    check = business_check(BusinessCheck(metric="add_to_cart"), "shop", "feed", query, "600s")
    assert check["verdict"] == Verdict.FAIL and check["business"]["liftHigh"] < -0.05
    bad = Analysis(Verdict.FAIL, [check])
    st, events = step(spec(failureLimit=1), run(spec(failureLimit=1), []), bad, 2000.0)
    assert st.phase == Phase.ROLLED_BACK
    assert st.business.canary.model_dump() == {"recommendations": 20000.0, "value": 600.0, "rate": 0.03}
    assert st.business.verdict == Verdict.FAIL and st.business.lift == pytest.approx(-0.4, abs=0.01)
    ((kind, reason, message),) = events
    assert kind == "Warning"
    assert reason == "RolloutRolledBack" and "business-add_to_cart" in message
    assert "canary 0.03 vs stable 0.05 per answer (20000 / 180000 answers), lift -40.0%" in message


def test_a_promoted_candidate_image_stays_on_stable_after_the_candidate_is_removed():
    """The promoted version keeps the image it was promoted with (not serving.image)."""
    from recops_operator.rollout.machine import stable_image

    image = "registry-vpc.cn-hangzhou.aliyuncs.com/shop/recops-serve:v2"
    s = spec(candidate={"version": "v2", "image": image})
    st = run(s, [P, P, P])
    st, _ = step(s, st, None, 5000, stable_at_candidate=True)
    assert st.phase == Phase.SUCCEEDED and st.promoted_image == image
    gone = spec(candidate=None)
    st, _ = step(gone, st, None, 5001)
    assert stable_image("serving:v1", "v1", gone, st) == image
    # a later promotion of a candidate without its own image goes back to serving.image
    s3 = spec(candidate={"version": "v3"})
    st = run(s3, [P, P, P], st=st)
    st, _ = step(s3, st, None, 9000, stable_at_candidate=True)
    st, _ = step(gone, st, None, 9001)
    assert stable_image("serving:v1", "v1", gone, st) == "serving:v1" and st.promoted_image is None


def test_a_promoted_candidate_search_bundle_goes_to_stable_with_it():
    """The candidate's search bundle is served by stable from Promoting on and kept after it is gone."""
    from recops_operator.rollout.machine import stable_search_version

    s = spec(candidate={"version": "v2", "searchVersion": "s2"})
    st = run(s, [P, P])
    assert stable_search_version("s1", "v1", s, st) == "s1"  # live canary: stable keeps its own
    st = run(s, [P], st=st, t0=4000)
    assert st.phase == Phase.PROMOTING and stable_search_version("s1", "v1", s, st) == "s2"
    st, _ = step(s, st, None, 5000, stable_at_candidate=True)
    assert st.phase == Phase.SUCCEEDED and st.promoted_search_version == "s2"
    st.promoted_over = "v1"  # what the handler records on success
    gone = spec(candidate=None)
    st, _ = step(gone, st, None, 5001)
    assert stable_search_version("s1", "v1", gone, st) == "s2"
    assert stable_search_version("s9", "v9", gone, st) == "s9"  # spec.model moved on: the spec's own
