"""Pure parts of status, preemption detection and the closed-loop metrics gate."""

from __future__ import annotations

from recops_operator.api.models import MetricsGate
from recops_operator.api.status import TrainingRun, TrainingStatus
from recops_operator.training import config as c
from recops_operator.training import loop, preemption, runs


def _job(name, created, *, active=0, cond=None, reason=None, labels=None, ann=None):
    status = {"active": active, "startTime": created}
    if cond:
        status["conditions"] = [
            {"type": cond, "status": "True", "reason": reason, "lastTransitionTime": "t-end"}
        ]
        if cond == "Complete":
            status["completionTime"] = "t-done"
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": labels or {},
            "annotations": ann or {},
        },
        "status": status,
    }


def test_current_and_last_runs_from_jobs():
    jobs = [
        _job("a-train-1", "2026-11-22T02:00:00Z", cond="Complete"),
        _job("a-train-2", "2026-11-23T02:00:00Z", cond="Failed", reason="BackoffLimitExceeded"),
        _job(
            "a-train-od-x",
            "2026-11-24T01:00:00Z",
            active=1,
            labels={c.TRIGGER_LABEL: c.TRIGGER_ON_DEMAND},
            ann={runs.preempted_pod_key("a-train-od-x-abcde"): "EvictionByEvictionAPI", "other": "1"},
        ),
    ]
    current, last = runs.current_and_last(jobs)
    assert current.name == "a-train-od-x" and current.phase == "Running"
    assert current.trigger == c.TRIGGER_ON_DEMAND and current.preemptions == 1
    assert last.dump() == {
        "name": "a-train-2",
        "version": "a-train-2",
        "trigger": c.TRIGGER_SCHEDULED,
        "phase": "Failed",
        "reason": "BackoffLimitExceeded",
        "startTime": "2026-11-23T02:00:00Z",
        "preemptions": 0,
        "completionTime": "t-end",
    }
    assert runs.active_runs(jobs) == ["a-train-od-x"]


def test_only_one_run_holds_the_slot():
    def j(name, created, suspend, **kw):
        job = _job(name, created, **kw)
        job["spec"] = {"suspend": suspend}
        return job

    queued_cron = j("a-train-2", "2026-11-24T02:00:00Z", True)
    queued_od = j("a-train-od-x", "2026-11-24T02:00:05Z", True)
    running = j("a-train-1", "2026-11-24T01:00:00Z", False, active=1)
    done = j("a-train-0", "2026-11-23T01:00:00Z", False, cond="Complete")
    assert runs.next_to_start([done, queued_od, running, queued_cron]) is None
    assert runs.next_to_start([done, queued_od, queued_cron]) == "a-train-2"  # oldest first
    assert runs.next_to_start([done]) is None
    assert runs.job_phase(queued_od) == ("Pending", None)


def test_preemption_reasons():
    assert preemption.preemption_reason({"status": {"phase": "Failed", "reason": "BidFailed"}}) == "BidFailed"
    evicted = {
        "status": {
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
        }
    }
    assert preemption.preemption_reason(evicted) == "EvictionByEvictionAPI"
    notice = {
        "status": {"phase": "Running", "conditions": [{"type": "ContainerInstanceExpired", "status": "True"}]}
    }
    assert preemption.release_notice(notice)
    assert preemption.should_request_checkpoint(notice)
    notice["metadata"] = {"deletionTimestamp": "2026-11-24T02:00:00Z"}
    assert not preemption.should_request_checkpoint(notice)  # evicted already: asked once only
    notice["metadata"] = {}
    notice["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    assert not preemption.should_request_checkpoint(notice)
    assert preemption.preemption_reason({"status": {"phase": "Failed", "conditions": []}}) is None
    ev = {"reason": "SpotToBeReleased", "involvedObject": {"kind": "Pod", "name": "p"}}
    assert preemption.is_spot_release_event(ev)
    assert not preemption.is_spot_release_event({**ev, "reason": "Scheduled"})
    body = preemption.eviction_body("p", "ns", 120)
    assert body["deleteOptions"] == {"gracePeriodSeconds": 120}


def test_metrics_gate_is_tolerant_but_fails_closed():
    gate = MetricsGate(metrics=["ndcg@10", "recall@50"], tolerance=0.01)
    assert loop.metrics_gate(
        {"ndcg@10": 0.195, "recall@50": 0.4}, {"ndcg@10": 0.2, "recall@50": 0.4}, gate
    ).passed
    worse = loop.metrics_gate({"ndcg@10": 0.18, "recall@50": 0.4}, {"ndcg@10": 0.2, "recall@50": 0.4}, gate)
    assert not worse.passed and "ndcg@10" in worse.reasons[0]
    missing = loop.metrics_gate({"ndcg@10": 0.3}, {"ndcg@10": 0.2, "recall@50": 0.4}, gate)
    assert not missing.passed and "recall@50" in missing.reasons[0]


def test_decide_sets_candidate_only_when_gate_passes_and_auto_rollout(svc):
    run = TrainingRun(name="home-feed-train-1", version="home-feed-train-1", phase="Succeeded")
    good = {"ndcg@10": 0.21, "recall@50": 0.5}
    base = {"ndcg@10": 0.2, "recall@50": 0.5}
    auto = svc(autoRollout=True)["spec"]
    d = loop.decide(auto, run, good, base)
    assert d.candidate_version == "home-feed-train-1"
    assert d.record.gate.passed and d.record.data_window_days == 90 and d.record.serving_version == "v1"
    assert (
        d.record.action == "candidate-set" and d.record.metrics == good and d.record.serving_metrics == base
    )
    assert run.gate is None  # the run it was given is not changed
    assert loop.candidate_patch("home-feed-train-1") == {
        "spec": {"rollout": {"candidate": {"version": "home-feed-train-1"}}}
    }
    # gate passes but autoRollout off: recorded, no candidate
    off = loop.decide(svc()["spec"], run, good, base)
    assert off.candidate_version is None and off.record.action == "gate-passed"
    # worse model: no candidate, reason recorded
    bad = loop.decide(auto, run, {"ndcg@10": 0.1, "recall@50": 0.5}, base)
    assert bad.candidate_version is None and bad.record.action == "gate-failed"
    # failed run or unreadable manifest: no candidate
    failed = run.model_copy(update={"phase": "Failed"})
    assert loop.decide(auto, failed, good, base).candidate_version is None
    assert loop.decide(auto, run, None, base).candidate_version is None


def test_unchanged_status_is_not_written():
    from recops_operator.training.sync import status_changed, training_patch

    stored = {"lastTrigger": "a", "preemptions": 0, "lastRun": {"name": "r", "phase": "Succeeded"}}
    body = {"status": {"training": stored}}
    same = TrainingStatus(last_trigger="a", last_run=TrainingRun(name="r", phase="Succeeded"))
    assert not status_changed(body, same) and training_patch(body, same) is None
    assert status_changed(body, same.model_copy(update={"preemptions": 1}))
    assert not status_changed(body, None)


def test_status_training_is_written_whole_no_key_of_an_earlier_run_survives():
    """A merge patch merges nested objects: writing the new lastRun over the stored one would keep
    the earlier run's keys (its message, data report, ...). The patch nulls them."""
    from recops_operator.training.sync import training_patch

    stored = {
        "lastTrigger": "a",
        "preemptions": 0,
        "currentRun": {"name": "r2", "phase": "Running"},
        "lastRun": {
            "name": "r1",
            "phase": "Failed",
            "message": "exit 78: bad data",
            "data": {"rows": 10, "rejected": 3, "reasons": {"unparseable_ts": 3}},
            "metrics": {"ndcg@10": 0.1},
        },
    }
    new = TrainingStatus(
        last_trigger="a",
        last_run=TrainingRun(name="r2", phase="Succeeded", metrics={"recall@20": 0.3}),
    )
    patch = training_patch({"status": {"training": stored}}, new)
    assert _merge(stored, patch) == new.dump()
    assert patch["currentRun"] is None and patch["lastRun"]["message"] is None
    assert patch["lastRun"]["metrics"] == {"ndcg@10": None, "recall@20": 0.3}


def _merge(target, patch):
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def test_status_training_reads_what_older_operators_wrote():
    st = TrainingStatus.of(
        {
            "lastTrigger": "t",
            "preemptions": 2,
            "lastRun": {
                "name": "r",
                "phase": "Succeeded",
                "gate": {"passed": True, "reasons": []},
                "data": {"rows": 5, "rejected": 0, "items_without_catalog": 1},
                "somethingOld": 1,
            },
        }
    )
    assert st.last_run.gate.passed and st.last_run.data.items_without_catalog == 1 and st.preemptions == 2
    assert st.dump()["lastRun"]["data"] == {"rows": 5, "rejected": 0, "items_without_catalog": 1}
