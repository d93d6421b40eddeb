"""Autoscaling render: a KEDA ScaledObject when keda.sh exists, else the plain HPA; spike behaviour;
sale windows (cron form for KEDA, the HPA floor without it); the conditions that say which."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from recops_contracts import topology as topo
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.render.autoscaling import (
    autoscaling_conditions,
    cron_next,
    offered_rate_query,
    window_cron,
    window_open,
)
from tests.support.specs import spec as base_spec

OWNER = Owner("home-feed", "shop", "uid-1")
UTC = dt.UTC


def spec(**autoscaling) -> RecommenderServiceSpec:
    """An ECI service that may scale from 5 to 500 replicas, with these autoscaling fields."""
    return base_spec(placement="eci", replicas={"min": 5, "max": 500}, autoscaling=autoscaling)


def kinds(objs):
    return {o["kind"]: o for o in objs}


def test_keda_present_renders_a_scaled_object_and_no_hpa():
    objs = kinds(
        desired_objects(
            OWNER,
            spec(targetRequestsPerSecond=20),
            RenderContext(keda_available=True, prometheus_url="http://prom:9090"),
        )
    )
    assert "HorizontalPodAutoscaler" not in objs
    so = objs["ScaledObject"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "home-feed",
    }
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (5, 500)
    prom = next(t for t in so["spec"]["triggers"] if t["type"] == "prometheus")
    assert prom["metricType"] == "AverageValue" and prom["metadata"]["threshold"] == "20"
    assert prom["metadata"]["serverAddress"] == "http://prom:9090"
    # offered load: every status code counts (a shed 503 is demand too), summed over the service's pods
    q = prom["metadata"]["query"]
    assert q.startswith("sum(rate(recops_http_requests_total{") and "code" not in q
    assert 'recsvc="home-feed"' in q and 'namespace="shop"' in q
    assert {t["type"] for t in so["spec"]["triggers"]} == {"prometheus", "cpu"}
    assert so["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_no_keda_keeps_the_plain_hpa():
    objs = kinds(desired_objects(OWNER, spec(), RenderContext()))
    assert "ScaledObject" not in objs
    assert objs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 5


def test_cpu_trigger_optional_and_spec_url_wins():
    s = spec(targetCPUUtilization=None, prometheusURL="http://arms.cn-hangzhou.aliyuncs.com/api")
    so = kinds(desired_objects(OWNER, s, RenderContext(keda_available=True, prometheus_url="http://other")))[
        "ScaledObject"
    ]
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus"]
    assert so["spec"]["triggers"][0]["metadata"]["serverAddress"].startswith("http://arms.")


def test_behaviour_allows_10x_in_one_period_and_scales_down_slowly():
    for ctx in (RenderContext(), RenderContext(keda_available=True, prometheus_url="http://p")):
        objs = kinds(desired_objects(OWNER, spec(), ctx))
        b = (
            objs["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            if "ScaledObject" in objs
            else objs["HorizontalPodAutoscaler"]["spec"]["behavior"]
        )
        up = b["scaleUp"]
        assert up["stabilizationWindowSeconds"] == 0 and up["selectPolicy"] == "Max"
        current = 50
        allowed = max(
            current * (1 + p["value"] / 100) if p["type"] == "Percent" else current + p["value"]
            for p in up["policies"]
        )
        assert allowed >= 10 * current, "one period must allow a 10x step"
        down = b["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 60
        assert all(p["type"] == "Percent" and p["value"] <= 50 for p in down["policies"])


def test_behaviour_is_exposed_in_spec():
    b = kinds(
        desired_objects(
            OWNER, spec(scaleUpPercent=200, scaleUpPods=7, scaleUpPeriodSeconds=5), RenderContext()
        )
    )["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleUp"]["policies"]
    assert b == [
        {"type": "Percent", "value": 200, "periodSeconds": 5},
        {"type": "Pods", "value": 7, "periodSeconds": 5},
    ]


def test_sale_windows_become_cron_triggers():
    s = spec(
        schedules=[
            {"start": "2026-11-11T19:30", "duration": "5h", "minReplicas": 300, "timezone": "Asia/Shanghai"},
            {"start": "0 20 * * 5", "end": "30 23 * * 5", "minReplicas": 50},
        ]
    )
    so = kinds(desired_objects(OWNER, s, RenderContext(keda_available=True, prometheus_url="http://p")))[
        "ScaledObject"
    ]
    crons = [t for t in so["spec"]["triggers"] if t["type"] == "cron"]
    assert [c["metadata"] for c in crons] == [
        {
            "timezone": "Asia/Shanghai",
            "start": "30 19 11 11 *",
            "end": "30 0 12 11 *",
            "desiredReplicas": "300",
        },
        {"timezone": "Asia/Shanghai", "start": "0 20 * * 5", "end": "30 23 * * 5", "desiredReplicas": "50"},
    ]


def test_window_shapes_keda_cannot_express_are_rejected():
    with pytest.raises(ValidationError, match="exactly one of end or duration"):
        spec(schedules=[{"start": "0 20 * * *", "minReplicas": 5}])
    with pytest.raises(ValidationError, match="crosses midnight"):
        spec(schedules=[{"start": "0 22 * * 5", "duration": "4h", "minReplicas": 5}])
    with pytest.raises(ValidationError, match="plain minute and hour"):
        spec(schedules=[{"start": "*/5 20 * * *", "duration": "1h", "minReplicas": 5}])
    with pytest.raises(ValidationError, match="time zone"):
        spec(
            schedules=[
                {"start": "0 20 * * *", "duration": "1h", "minReplicas": 5, "timezone": "Mars/Olympus"}
            ]
        )
    assert window_cron(
        spec(
            schedules=[{"start": "0 22 * * *", "duration": "4h", "minReplicas": 5}]
        ).serving.autoscaling.schedules[0]
    ) == (
        "0 22 * * *",
        "0 2 * * *",
    )


def test_window_open_follows_kedas_rule():
    w = spec(
        schedules=[{"start": "2026-12-02T10:30", "duration": "2m", "minReplicas": 30, "timezone": "UTC"}]
    ).serving.autoscaling.schedules[0]
    at = lambda h, m, s=0: dt.datetime(2026, 12, 2, h, m, s, tzinfo=UTC)  # noqa: E731
    assert not window_open(w, at(10, 29, 59))
    assert window_open(w, at(10, 30, 1))
    assert window_open(w, at(10, 31, 59))
    assert not window_open(w, at(10, 32, 1))
    # the zone is the window's: 20:00-23:00 Shanghai is 12:00-15:00 UTC
    evening = spec(
        schedules=[{"start": "0 20 * * *", "end": "0 23 * * *", "minReplicas": 9}]
    ).serving.autoscaling.schedules[0]
    assert window_open(evening, at(12, 30)) and not window_open(evening, at(15, 30))
    assert cron_next("0 20 * * 5", dt.datetime(2026, 12, 2, 0, 0, tzinfo=UTC)) == dt.datetime(
        2026, 12, 4, 20, 0, tzinfo=UTC
    )


def test_without_keda_an_open_window_moves_the_hpa_floor_and_status_says_so():
    s = spec(
        schedules=[{"start": "2026-12-02T10:30", "duration": "1h", "minReplicas": 80, "timezone": "UTC"}]
    )
    inside = RenderContext(now=dt.datetime(2026, 12, 2, 10, 45, tzinfo=UTC))
    outside = RenderContext(now=dt.datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    hpa = lambda ctx: kinds(desired_objects(OWNER, s, ctx))["HorizontalPodAutoscaler"]["spec"]  # noqa: E731
    assert hpa(inside)["minReplicas"] == 80 and hpa(outside)["minReplicas"] == 5
    conds = {c["type"]: c for c in autoscaling_conditions(s, inside, 3)}
    assert conds["Autoscaling"]["reason"] == "HorizontalPodAutoscaler"
    assert conds["PreScaled"]["status"] == "True" and "floor 80" in conds["PreScaled"]["message"]
    conds = {c["type"]: c for c in autoscaling_conditions(s, outside, 3)}
    assert conds["PreScaled"]["status"] == "False"
    keda = {c["type"]: c for c in autoscaling_conditions(s, RenderContext(keda_available=True), 3)}
    assert keda["Autoscaling"]["reason"] == "KedaScaledObject"
    assert "no Prometheus URL" in keda["Autoscaling"]["message"]


def test_eci_pods_start_from_the_image_cache():
    s = spec()
    s.serving.eci.image_snapshot_id = "imc-2ze0abcdef123456"
    ann = kinds(desired_objects(OWNER, s, RenderContext()))["Deployment"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert ann[topo.ECI_AUTO_IMAGE_CACHE] == "true"
    assert ann[topo.ECI_IMAGE_SNAPSHOT_ID] == "imc-2ze0abcdef123456"


def test_offered_query_window():
    assert offered_rate_query("a", "b", "5s").endswith("[5s]))")


@pytest.mark.parametrize("keda", [False, True])
def test_admission_dry_runs_the_autoscaler_reconcile_renders(keda):
    """The webhook's implied objects (with the probing candidate) carry the same autoscaler as the
    reconcile: a positional RenderContext once turned the probe's rollout status into keda_available."""
    from recops_operator.dryrun import implied_objects

    ctx = RenderContext(keda_available=keda, prometheus_url="http://p")
    got = {o["kind"] for o in implied_objects(OWNER, spec(), ctx)}
    assert ("ScaledObject" in got) is keda
    assert ("HorizontalPodAutoscaler" in got) is not keda
    with pytest.raises(TypeError):
        RenderContext(False, False, None)  # keyword-only: no field can be filled by position
