"""End to end: the operator (real process, real control plane) drives a rollout from a real
Prometheus that scrapes real stable/canary inference servers under load from the test.

KWOK pods do not run the image, so local server processes play the stable and canary pods;
Prometheus labels their series exactly as the ServiceMonitor relabelling does in a cluster.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.kube import get, service, wait_for
from tests.support.prometheus_server import PrometheusServer
from tests.support.rollout import NAME, rollout_status, start_rollout
from tests.support.serving import Load

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rollout_panels_and_alert_have_data(prom: PrometheusServer, ns: str) -> None:
    """Every rollout and replica query of the dashboards, and the rolled-back alert's signal, return data
    for this namespace from the real operator process that just promoted and rolled back (scraped)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dashboards"))
    from alerts import ALERTS
    from panels import all_queries, concrete

    exprs = [
        concrete(q.expr)
        for _, _, q in all_queries()
        if any(m in q.expr for m in ("recops_rollout", "recops_serving_replicas", "recops_operator"))
    ]
    assert len(exprs) >= 6, exprs
    prom.wait_for(f'recops_rollouts_total{{namespace="{ns}", result="rolled_back"}}')
    time.sleep(2)  # one more scrape, for increase()
    for expr in exprs:
        got = [r for r in prom.query(expr) if r["metric"].get("namespace", ns) == ns]
        assert got, f"no data for dashboard query {expr}"
    (alert,) = [a for a in ALERTS if a.name == "RecOpsCanaryRolledBack"]
    assert prom.query(alert.expr), f"the rolled-back alert does not fire: {alert.expr}"
    (alert,) = [a for a in ALERTS if a.name == "RecOpsOperatorReconcileErrors"]
    assert prom.query(alert.expr.rsplit(" > ", 1)[0]), "the reconcile-errors alert's signal has data"


def svc_with_candidate(version: str) -> dict:
    body = service(NAME)
    body["spec"]["rollout"] = {
        "candidate": {"version": version},
        "steps": [50, 100],
        "interval": "10s",
        "failureLimit": 2,
        "inconclusiveLimit": 20,
        "analysis": {"minRequests": 20, "maxP99LatencyMs": 80, "maxErrorRate": 0.05},
        "traffic": {"provider": "nginx", "host": "home-feed.shop.internal"},
    }
    return body


def test_healthy_candidate_is_promoted_and_a_faulty_one_rolled_back(
    k8s_cluster, k8s_namespace, tmp_path, bundles, redis_server, make_server
):
    ns = k8s_namespace
    stable, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    canary, canary_cfg = make_server({"model_uri": str(bundles["v2"])}, redis_server.url)
    prom, op = start_rollout(k8s_cluster, ns, tmp_path, stable, canary)
    try:
        k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(service(NAME)))
        wait_for(
            lambda: (get(k8s_cluster, ns, "recsvc", NAME).get("status") or {}).get("phase") == "Ready",
            what="Ready",
        )
        with Load(stable.url, canary.url):
            k8s_cluster.kubectl(
                "-n", ns, "apply", "-f", "-", input=json.dumps(svc_with_candidate("2026-11-21"))
            )
            st = wait_for(
                lambda: (s := rollout_status(k8s_cluster, ns)).get("weight") == 50 and s, what="canary at 50%"
            )
            ing = get(k8s_cluster, ns, "ingress", f"{NAME}-canary")
            assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"] == "true"
            assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "50"
            assert (
                get(k8s_cluster, ns, "deploy", f"{NAME}-canary")["spec"]["template"]["metadata"]["labels"][
                    "recops.io/model-version"
                ]
                == "2026-11-21"
            )
            printed = k8s_cluster.kubectl("-n", ns, "get", "recsvc", NAME).stdout
            assert "2026-11-21" in printed and "50" in printed
            st = wait_for(
                lambda: (s := rollout_status(k8s_cluster, ns)).get("phase") == "Succeeded" and s,
                timeout=120,
                what="promotion",
            )
            assert st["promotedVersion"] == "2026-11-21" and st["weight"] == 0
            assert any(c["name"] == "p99-latency-ms" and c["verdict"] == "Pass" for c in st["checks"])
            dep = get(k8s_cluster, ns, "deploy", NAME)
            assert dep["spec"]["template"]["metadata"]["labels"]["recops.io/model-version"] == "2026-11-21", (
                "stable serves the new version"
            )
            wait_for(
                lambda: get(k8s_cluster, ns, "deploy", f"{NAME}-canary") is None,
                what="candidate track removed",
            )
            assert get(k8s_cluster, ns, "recsvc", NAME)["status"]["stableVersion"] == "2026-11-21"

            # A bad candidate: the canary process now injects errors and latency.
            canary_cfg.write_text(
                json.dumps(
                    {
                        "model_uri": str(bundles["v2"]),
                        "reload_seconds": 0.5,
                        "fault_error_percent": 30,
                        "fault_latency_ms": 120,
                    }
                )
            )
            time.sleep(1.5)
            k8s_cluster.kubectl(
                "-n", ns, "apply", "-f", "-", input=json.dumps(svc_with_candidate("2026-11-22"))
            )
            wait_for(lambda: rollout_status(k8s_cluster, ns).get("weight") == 50, what="bad canary at 50%")
            st = wait_for(
                lambda: (s := rollout_status(k8s_cluster, ns)).get("phase") == "RolledBack" and s,
                timeout=120,
                what="rollback",
            )
            assert st["weight"] == 0 and ("error-rate" in st["message"] or "p99" in st["message"])
            wait_for(
                lambda: get(k8s_cluster, ns, "ingress", f"{NAME}-canary") is None,
                what="canary Ingress removed (0% to the candidate)",
            )
            assert (
                get(k8s_cluster, ns, "deploy", NAME)["spec"]["template"]["metadata"]["labels"][
                    "recops.io/model-version"
                ]
                == "2026-11-21"
            )
            events = k8s_cluster.kubectl(
                "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={NAME}", "-o", "json"
            ).stdout
            reasons = {e["reason"] for e in json.loads(events)["items"]}
            assert {"RolloutStarted", "RolloutSucceeded", "RolloutRolledBack"} <= reasons
            rollout_panels_and_alert_have_data(prom, ns)
    finally:
        op.stop()
        prom.stop()


def test_no_traffic_holds_and_operator_restart_resumes_at_the_same_step(
    k8s_cluster, k8s_namespace, tmp_path, bundles, redis_server, make_server
):
    ns = k8s_namespace
    stable, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    canary, _ = make_server({"model_uri": str(bundles["v2"])}, redis_server.url)
    prom, op = start_rollout(k8s_cluster, ns, tmp_path, stable, canary)
    try:
        k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(svc_with_candidate("2026-11-21")))
        st = wait_for(
            lambda: (s := rollout_status(k8s_cluster, ns)).get("inconclusive", 0) >= 2 and s,
            timeout=60,
            what="inconclusive intervals",
        )
        assert (st["phase"], st["weight"]) == ("Progressing", 50), "no traffic: held, never promoted"
        op.kill()
        before = rollout_status(k8s_cluster, ns)
        op.start()
        time.sleep(8)
        after = rollout_status(k8s_cluster, ns)
        assert (after["phase"], after["stepIndex"], after["weight"]) == (
            before["phase"],
            before["stepIndex"],
            before["weight"],
        )
        assert after["startedAt"] == before["startedAt"] and after["inconclusive"] >= before["inconclusive"]
        prom.stop()  # Prometheus down mid-rollout: held (inconclusive), not failed, not promoted
        held = wait_for(
            lambda: (
                (s := rollout_status(k8s_cluster, ns))
                and any(c["name"] == "prometheus" for c in s.get("checks", []))
                and s
            ),
            timeout=60,
            what="an analysis with Prometheus unreachable",
        )
        assert (held["phase"], held["weight"]) == ("Progressing", 50)
    finally:
        op.stop()
        prom.stop()
