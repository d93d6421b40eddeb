"""Analysis against a real Prometheus scraping real recops-serve processes (stable and canary)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from recops_operator.api.models import Rollout
from recops_operator.rollout.analysis import analyse, prometheus_query
from recops_operator.rollout.machine import Verdict
from tests.support.prometheus_server import PrometheusServer, Target

pytestmark = pytest.mark.integration
NS, SVC = "shop", "home-feed"


def rollout(**analysis) -> Rollout:
    return Rollout.model_validate(
        {"candidate": {"version": "v2"}, "interval": "30s", "analysis": {"minRequests": 50, **analysis}}
    )


async def _load(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
        for i in range(0, n, 20):
            await asyncio.gather(
                *(c.get("/v1/recommendations", params={"user_id": f"u{j}"}) for j in range(i, i + 20))
            )


@pytest.fixture
def arms(bundles, redis_server, make_server, tmp_path):
    stable, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    healthy, _ = make_server({"model_uri": str(bundles["v2"])}, redis_server.url)
    slow, _ = make_server(
        {"model_uri": str(bundles["v2"]), "fault_latency_ms": 150, "fault_error_percent": 20},
        redis_server.url,
    )
    for arm in (stable, healthy):  # as a pod gets before its readiness matters: connections opened, code warm
        asyncio.run(_load(arm.url, 40))
    return stable, healthy, slow


def _prom(tmp_path, stable, canary):
    targets = [
        Target(f"127.0.0.1:{stable.port}", {"namespace": NS, "recsvc": SVC, "track": "stable"}),
        Target(f"127.0.0.1:{canary.port}", {"namespace": NS, "recsvc": SVC, "track": "canary"}),
    ]
    return PrometheusServer(tmp_path / "prom", targets, scrape_interval="1s")


def _scraped(prom) -> None:
    """Both targets scraped at least twice before any load, so increase() sees the start."""
    prom.wait_for(
        'count_over_time(up{track="canary"}[1m]) >= 2 and on() count_over_time(up{track="stable"}[1m]) >= 2',
        timeout=30,
    )


def _settle(prom, expr: str) -> None:
    prom.wait_for(expr, timeout=30)
    time.sleep(2.5)  # two more scrapes after the load


def test_healthy_candidate_passes_and_a_faulty_one_fails(arms, tmp_path):
    stable, healthy, slow = arms
    with _prom(tmp_path / "a", stable, healthy) as prom:
        _scraped(prom)
        assert (
            analyse(rollout(), NS, SVC, shadowing=False, query=prometheus_query(prom.url)).verdict
            == Verdict.INCONCLUSIVE
        ), "no traffic yet"
        asyncio.run(_load(healthy.url, 200))
        asyncio.run(_load(stable.url, 200))
        _settle(prom, 'sum(recops_http_requests_total{track="canary",code="200"}) >= 200')
        result = analyse(rollout(), NS, SVC, shadowing=False, query=prometheus_query(prom.url))
        assert result.verdict == Verdict.PASS, result.checks
        names = {c["name"]: c for c in result.checks}
        assert names["requests"]["value"] >= 50 and names["p99-latency-ms"]["value"] < 80
    with _prom(tmp_path / "b", stable, slow) as prom:
        _scraped(prom)
        asyncio.run(_load(slow.url, 200))
        _settle(prom, 'sum(recops_http_requests_total{track="canary"}) >= 200')
        result = analyse(rollout(), NS, SVC, shadowing=False, query=prometheus_query(prom.url))
        assert result.verdict == Verdict.FAIL
        failed = {c["name"] for c in result.checks if c["verdict"] == Verdict.FAIL}
        assert failed == {"p99-latency-ms", "error-rate"}, result.checks


def test_unreachable_prometheus_is_inconclusive_never_a_pass(arms):
    result = analyse(rollout(), NS, SVC, shadowing=False, query=prometheus_query("http://127.0.0.1:9"))
    assert result.verdict == Verdict.INCONCLUSIVE and result.checks[-1]["name"] == "prometheus"


def test_tick_fails_fast_between_intervals_but_never_promotes_early(arms, tmp_path, monkeypatch):
    """With one failure left before rollback, a tick between intervals analyses anyway and acts on a
    failure at once; a passing canary between intervals changes nothing (promotion waits)."""
    import kopf

    from recops_operator.rollout import handlers
    from tests.support.kube import service

    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)  # no kopf context here: events are not the point
    stable, healthy, slow = arms
    now = time.time()

    def body(prom_url: str) -> dict:
        spec = service(SVC)["spec"]
        spec["rollout"] = {
            "candidate": {"version": "v2"},
            "steps": [10, 50, 100],
            "interval": "5m",
            "failureLimit": 1,
            "prometheusURL": prom_url,
            "analysis": {"minRequests": 50},
        }
        status = {
            "rollout": {
                "phase": "Progressing",
                "candidate": "v2",
                "stepIndex": 0,
                "weight": 10,
                "startedAt": now,
                "stepStartedAt": now,
                "lastAnalysisAt": now,  # the next scheduled analysis is 5 minutes away
                "failures": 0,
                "inconclusive": 0,
            }
        }
        return {"metadata": {"name": SVC, "namespace": NS}, "spec": spec, "status": status}

    with _prom(tmp_path / "ok", stable, healthy) as prom:
        _scraped(prom)
        asyncio.run(_load(healthy.url, 200))
        _settle(prom, 'sum(recops_http_requests_total{track="canary",code="200"}) >= 200')
        assert handlers.tick(NS, SVC, body(prom.url), now=now + 5) is None, "a pass between intervals waits"
    with _prom(tmp_path / "bad", stable, slow) as prom:
        _scraped(prom)
        asyncio.run(_load(slow.url, 200))
        _settle(prom, 'sum(recops_http_requests_total{track="canary"}) >= 200')
        new = handlers.tick(NS, SVC, body(prom.url), now=now + 5)
        assert new is not None and new["phase"] == "RolledBack" and new["weight"] == 0, new


def test_business_check_counts_events_by_the_track_that_answered(
    bundles, redis_server, make_server, tmp_path
):
    """Clicks on canary answers posted to the *stable* pod count for the canary (the token says who
    answered); a candidate whose answers convert half as often fails; revenue uses price x quantity."""
    key = "shared-by-every-pod"  # the Secret file both tracks mount
    stable, _ = make_server({"model_uri": str(bundles["v1"]), "track": "stable"}, redis_server.url, key)
    canary, _ = make_server({"model_uri": str(bundles["v2"]), "track": "canary"}, redis_server.url, key)

    async def shop(server, n: int, every: int) -> None:
        async with httpx.AsyncClient(timeout=5) as c:
            for i in range(n):
                r = await c.get(f"{server.url}/v1/recommendations", params={"user_id": f"s{i}"})
                answer = r.json()
                assert answer["attribution_token"].split(":")[1] in ("stable", "canary")
                if i % every == 0 and answer["arm"] == "model":  # the click goes to the other pod
                    ev = {
                        "user_id": f"s{i}",
                        "item_id": answer["items"][0]["item_id"],
                        "type": "purchase",
                        "price": 10.0,
                        "quantity": 2,
                        "attribution_token": answer["attribution_token"],
                    }
                    other = stable if server is canary else canary
                    (await c.post(f"{other.url}/v1/events", json=ev)).raise_for_status()

    with _prom(tmp_path / "biz", stable, canary) as prom:
        _scraped(prom)
        t0 = time.time()
        asyncio.run(shop(stable, 600, 2))  # half of stable's answers convert
        asyncio.run(shop(canary, 600, 4))  # a quarter of the candidate's
        _settle(prom, 'sum(recops_attributed_events_total{answer_track="canary"}) >= 100')
        spec = rollout(business={"metric": "purchase", "maxRelativeDrop": 0.1, "minSamples": 300})
        result = analyse(spec, NS, SVC, shadowing=False, query=prometheus_query(prom.url), started_at=t0 - 3)
        (check,) = [c for c in result.checks if c["name"] == "business-purchase"]
        b = check["business"]
        # increase() extrapolates to the window's edges (by up to a quarter here, with the scrape
        # timing): the totals and the lift are approximate (the exact counts are checked below)
        assert b["canary"]["recommendations"] == pytest.approx(600, rel=0.25)
        assert b["canary"]["value"] == pytest.approx(150, rel=0.25), "counted on the stable pod, for canary"
        assert b["stable"]["value"] == pytest.approx(300, rel=0.25)
        assert check["value"] < -0.3, "half the conversion: a lift near -50%"
        assert check["verdict"] == Verdict.FAIL and result.verdict == Verdict.FAIL
        revenue = analyse(
            rollout(business={"metric": "revenue", "maxRelativeDrop": 0.1, "minSamples": 300}),
            NS,
            SVC,
            shadowing=False,
            query=prometheus_query(prom.url),
            started_at=t0 - 3,
        )
        (rc,) = [c for c in revenue.checks if c["name"] == "business-revenue"]
        assert rc["verdict"] == Verdict.FAIL
    # exact, from the pod that received the canary's clicks: revenue = price x quantity per purchase
    text = httpx.get(f"{stable.url}/metrics").text

    def sample(name: str) -> float:
        line = next(
            x
            for x in text.splitlines()
            if x.startswith(name + "{")
            and 'answer_track="canary"' in x
            and 'arm="model"' in x
            and ('type="purchase"' in x or "revenue" in name)
        )
        return float(line.rsplit(" ", 1)[1])

    purchases = sample("recops_attributed_events_total")
    assert purchases == 150
    assert sample("recops_attributed_revenue_total") == 20.0 * purchases
    assert sample("recops_attributed_revenue_squared_total") == 400.0 * purchases
