"""End to end: canaries judged on what the shop cares about, clicks on recommendations.

Real control plane, operator process, Prometheus and two recops-serve processes (stable and
canary, one Redis) trained on Diginetica; shoppers replay real held-out Diginetica sessions
(tests/support/shopper.py), routed by the live canary weight of the RecommenderService, and click
a recommendation when it holds the item they really clicked next. Latency and error limits are
loose on purpose: only the business check can tell these candidates apart.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time

import pytest

from recops_serve import ranking
from tests.support.kube import get, service, wait_for
from tests.support.rollout import NAME, rollout_status, start_rollout
from tests.support.serving import train
from tests.support.shopper import Shoppers, held_out_sessions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop_bundles(tmp_path_factory) -> dict[str, str]:
    """A Diginetica model, and the same bundle told to rank by popularity alone (a worse model)."""
    from recops_serve.data import DatasetUnavailable, load_diginetica

    try:
        load_diginetica("test")
    except DatasetUnavailable:
        pytest.skip("Diginetica (../shared/data) is not on this machine")
    root = tmp_path_factory.mktemp("shop")
    train(root / "good", "v2", 250_000, dataset="diginetica")
    shutil.copytree(root / "good", root / "popularity")
    manifest = json.loads((root / "popularity" / "manifest.json").read_text())
    only = {**ranking.Blend().as_dict(), **dict.fromkeys(ranking.SOURCES, 0.0), "popularity": 1.0}
    serving = manifest["serving"]
    serving["blend"] = only
    serving["blend_if_excluded"] = {k: only for k in serving.get("blend_if_excluded", {})}
    manifest["version"] = "v3-popularity"
    (root / "popularity" / "manifest.json").write_text(json.dumps(manifest))
    return {"good": str(root / "good"), "popularity": str(root / "popularity")}


class Router:
    """Splits shoppers by the canary weight the operator put in status (what the Ingress does)."""

    def __init__(self, cluster, ns: str, stable: str, canary: str):
        self.cluster, self.ns, self.stable, self.canary = cluster, ns, stable, canary
        self.weight = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop_flag.is_set():
            self.weight = int(rollout_status(self.cluster, self.ns).get("weight") or 0)
            time.sleep(0.5)

    def __call__(self) -> str:
        return self.canary if random.random() * 100 < self.weight else self.stable

    def __enter__(self) -> Router:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join(5)


def decided(cluster, ns: str, candidate: str) -> dict:
    """status.rollout once the rollout of ``candidate`` promoted or rolled back."""
    return wait_for(
        lambda: (
            (s := rollout_status(cluster, ns)).get("candidate") == candidate
            and s.get("phase") in ("Succeeded", "RolledBack")
            and s
        ),
        timeout=240,
        what=f"the rollout of {candidate} decided",
    )


def with_candidate(version: str, min_samples: int) -> dict:
    body = service(NAME)
    body["spec"]["experiment"] = {"holdout": {"percent": 20, "salt": "2026q4", "metric": "click"}}
    body["spec"]["rollout"] = {
        "candidate": {"version": version},
        "steps": [50, 100],
        "interval": "10s",
        "failureLimit": 2,
        "inconclusiveLimit": 100,
        "progressDeadlineSeconds": 600,
        "analysis": {
            "minRequests": 10,
            "maxP99LatencyMs": 1000,
            "maxErrorRate": 0.05,
            "business": {
                "metric": "click",
                "maxRelativeDrop": 0.25,
                "confidence": 0.95,
                "minSamples": min_samples,
            },
        },
        "traffic": {"provider": "nginx", "host": "home-feed.shop.internal"},
    }
    return body


def test_business_check_promotes_an_equal_model_rolls_back_a_worse_one_and_waits_for_evidence(
    k8s_cluster, k8s_namespace, tmp_path, shop_bundles, redis_server, make_server
):
    ns = k8s_namespace
    sessions = held_out_sessions(4000)
    key = "the-services-secret"  # the Secret file every pod mounts
    holdout = {"holdout_percent": 20, "holdout_salt": "2026q4"}  # a fifth of shoppers get popularity
    stable, _ = make_server({"model_uri": shop_bundles["good"], **holdout}, redis_server.url, key)
    canary, canary_cfg = make_server(
        {"model_uri": shop_bundles["good"], "track": "canary", **holdout}, redis_server.url, key
    )
    prom, op = start_rollout(k8s_cluster, ns, tmp_path, stable, canary, {"RECOPS_LIFT_SECONDS": "5"})
    apply = lambda body: k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(body))  # noqa: E731
    try:
        apply(service(NAME))
        wait_for(lambda: (get(k8s_cluster, ns, "recsvc", NAME).get("status") or {}).get("phase") == "Ready")
        with Router(k8s_cluster, ns, stable.url, canary.url) as router:
            # 1. too little traffic for the evidence asked for: held at the first step, never promoted
            with Shoppers(sessions, router, threads=1, pause_s=0.2):
                apply(with_candidate("v2", min_samples=100_000))
                st = wait_for(
                    lambda: (s := rollout_status(k8s_cluster, ns)).get("inconclusive", 0) >= 3 and s,
                    timeout=90,
                    what="inconclusive business intervals",
                )
            assert (st["phase"], st["weight"]) == ("Progressing", 50)
            assert st["business"]["verdict"] == "Inconclusive" and "need 100000" in st["business"]["message"]

            # 2. enough traffic, same model on both tracks: non-inferior, promoted
            with Shoppers(sessions, router, threads=2) as shoppers:
                apply(with_candidate("v2", min_samples=300))
                st = decided(k8s_cluster, ns, "v2")
                assert st["phase"] == "Succeeded", st.get("message")
                assert st["business"]["verdict"] == "Pass", st["business"]
                assert st["business"]["liftLow"] > -0.25
                assert shoppers.counts.get(f"clicks:{canary.url}", 0) > 50

                # 3. a worse model (popularity only) with fine latency and errors: rolled back by the
                # business check alone
                canary_cfg.write_text(
                    json.dumps(
                        {"model_uri": shop_bundles["popularity"], "track": "canary", "reload_seconds": 0.5}
                    )
                )
                wait_for(lambda: canary.get("/readyz").json().get("model_version") == "v3-popularity")
                apply(with_candidate("v3-popularity", min_samples=300))
                st = decided(k8s_cluster, ns, "v3-popularity")
            assert st["phase"] == "RolledBack", st.get("message")
            failed = {c["name"] for c in st["checks"] if c["verdict"] == "Fail"}
            assert failed == {"business-click"}, st["checks"]
            assert st["business"]["liftHigh"] < -0.25
            assert "business-click: canary" in st["message"] and "per answer" in st["message"]
            # personalisation against the holdout, in the same language: status and the lift gauges
            lift = wait_for(
                lambda: (
                    (
                        h := (
                            (get(k8s_cluster, ns, "recsvc", NAME).get("status") or {}).get("experiment") or {}
                        ).get("holdout")
                    )
                    and h.get("verdict") == "Pass"
                    and h
                ),
                timeout=60,
                what="a significant holdout lift in status.experiment.holdout",
            )
            assert lift["liftLow"] > 0 and lift["model"]["rate"] > lift["holdout"]["rate"], lift
            assert prom.wait_for('recops_holdout_lift{bound="low"} > 0', timeout=30), "lift gauges scraped"
            events = json.loads(
                k8s_cluster.kubectl(
                    "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={NAME}", "-o", "json"
                ).stdout
            )["items"]
            rolled = [e for e in events if e["reason"] == "RolloutRolledBack"]
            assert rolled and "lift" in rolled[-1]["message"]
    finally:
        op.stop()
        prom.stop()
