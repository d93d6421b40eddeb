"""Status tells the truth when an apply fails, create included (issue #18).

The operator runs here without its webhook (as it would with failurePolicy Ignore and the webhook
down), so a spec the API server refuses reaches the reconcile: requests above limits make the
Deployment -- the first child that matters -- fail on the very first apply.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.operator.test_operator_e2e import Operator, apply, get, ready, service, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def operator_without_webhook(k8s_cluster, k8s_namespace, tmp_path):
    op = Operator(
        k8s_cluster,
        k8s_namespace,
        tmp_path / "operator.log",
        {"RECOPS_WEBHOOK_PORT": "", "RECOPS_BACKOFF_BASE_SECONDS": "1", "RECOPS_BACKOFF_CAP_SECONDS": "4"},
    ).start()
    try:
        yield op
    finally:
        op.stop()


def _failure_events(cluster, ns, name):
    items = get(cluster, ns, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in items if e.get("reason") == "ApplyFailed"]


def test_first_apply_failure_shows_in_status_and_one_counting_event(
    k8s_cluster, k8s_namespace, operator_without_webhook
):
    ns = k8s_namespace
    bad = service(
        serving__resources={
            "requests": {"cpu": "4", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "4Gi"},
        }
    )
    t0 = time.monotonic()
    apply(k8s_cluster, ns, bad)

    def failed():
        body = get(k8s_cluster, ns, "recsvc", "home-feed")
        st = (body or {}).get("status") or {}
        return st if st.get("phase") == "Failed" else None

    st = wait_for(failed, timeout=30, what="phase Failed")
    elapsed = time.monotonic() - t0
    conds = {c["type"]: c for c in st["conditions"]}
    msg = conds["Ready"]["message"]
    assert conds["Ready"]["status"] == "False" and conds["Reconciled"]["reason"] == "ApplyFailed"
    assert "\n" not in msg and len(msg) <= 300 and not msg.lstrip().startswith("{"), msg
    assert "Deployment home-feed" in msg and "resources.requests" in msg, msg
    assert "spec.serving.resources.requests.cpu" in msg, msg
    assert elapsed < 5 + 1, f"status took {elapsed:.1f}s"  # +1: kubectl round trips of this poll
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
