"""Status tells the truth when an apply fails, create included (issue #18).

A spec the API server refuses reaches the reconcile only when admission did not see it: here it is
created while no operator (and so no webhook) runs -- as during an operator outage with
failurePolicy Ignore, or an object from before an upgrade -- and then the operator starts. Requests
above limits make the Deployment, the first child that matters, fail on the very first apply.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from tests.support.kube import Operator, apply, feature_store_secret, get, ready, service, wait_for

pytestmark = pytest.mark.integration


def _failure_events(cluster, ns, name):
    items = get(cluster, ns, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in items if e.get("reason") == "ApplyFailed"]


def test_first_apply_failure_shows_in_status_and_one_counting_event(k8s_cluster, k8s_namespace, tmp_path):
    ns = k8s_namespace
    feature_store_secret(k8s_cluster, ns)
    k8s_cluster.kubectl(
        "delete", "validatingwebhookconfiguration", "validate.recops.io", "--ignore-not-found", check=False
    )
    bad = service(
        serving__resources={
            "requests": {"cpu": "4", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "4Gi"},
        }
    )
    apply(k8s_cluster, ns, bad)  # no webhook: only the CRD schema judged it
    op = Operator(
        k8s_cluster,
        ns,
        tmp_path / "operator.log",
        {"RECOPS_BACKOFF_BASE_SECONDS": "1", "RECOPS_BACKOFF_CAP_SECONDS": "4"},
    )
    try:
        _check(k8s_cluster, ns, op)
    finally:
        op.stop()


def _failed_at(log: Path) -> float:
    """Wall time of the first failed reconcile, from the operator's own log line."""
    for line in log.read_text(errors="replace").splitlines():
        # the log format cuts logger names to 20 characters: recops_operator.reconcile
        if "recops_operator.reco" in line and "reconcile of" in line and "failed:" in line:
            stamp = line[1 : line.index("]")]
            return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError("no failed reconcile in the operator log")


def _check(k8s_cluster, ns, op):
    op.start()

    def failed():
        body = get(k8s_cluster, ns, "recsvc", "home-feed")
        st = (body or {}).get("status") or {}
        return st if st.get("phase") == "Failed" else None

    st = wait_for(failed, timeout=30, what="phase Failed")
    elapsed = time.time() - _failed_at(op.log)  # failure -> visible to kubectl (an upper bound)
    conds = {c["type"]: c for c in st["conditions"]}
    msg = conds["Ready"]["message"]
    assert conds["Ready"]["status"] == "False" and conds["Reconciled"]["reason"] == "ApplyFailed"
    assert "\n" not in msg and len(msg) <= 300 and not msg.lstrip().startswith("{"), msg
    assert "Deployment home-feed" in msg and "resources.requests" in msg, msg
    assert "spec.serving.resources.requests.cpu" in msg, msg
    assert elapsed < 5, f"status visible {elapsed:.1f}s after the failure"
    printed = k8s_cluster.kubectl("get", "recsvc", "-n", ns).stdout
    assert "Failed" in printed and "False" in printed, printed

    # retries back off and hit the same failure: one Event whose count grows, not one per retry
    first = wait_for(lambda: _failure_events(k8s_cluster, ns, "home-feed"), timeout=10, what="event")
    assert len(first) == 1 and first[0]["type"] == "Warning"
    grown = wait_for(
        lambda: (
            (evs := _failure_events(k8s_cluster, ns, "home-feed"))
            and len(evs) == 1
            and evs[0].get("count", 1) >= 3
            and evs
        ),
        timeout=30,
        what="the count of the one ApplyFailed event to grow",
    )
    assert grown[0]["metadata"]["name"] == first[0]["metadata"]["name"]
    assert get(k8s_cluster, ns, "deploy")["items"] == []

    # fixing the spec makes it Ready, and the condition says so
    apply(k8s_cluster, ns, service())
    body = wait_for(lambda: ready(k8s_cluster, ns), timeout=90, what="Ready after the fix")
    conds = {c["type"]: c for c in body["status"]["conditions"]}
    assert conds["Reconciled"]["status"] == "True", json.dumps(conds)
