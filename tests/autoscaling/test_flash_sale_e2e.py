"""Flash sale end to end on the real control plane: real load on real servers steps 10x within 5 s;
Prometheus -> KEDA (operator + metrics adapter) -> HPA (kube-controller-manager) -> Deployment -> KWOK
pods Running on the ECI node. Replicas reach the target and come back down; a scheduled sale window
pre-scales before the spike and releases after it. Deadlines are generous: speed is bench's job."""

from __future__ import annotations

import json
import time

import pytest

from recops_contracts import topology as topo
from tests.support import flashsale

from .conftest import NAME, NAMESPACE

pytestmark = pytest.mark.integration

PER_REPLICA = 4  # requests/s per replica (the trigger's threshold)
BASELINE, SPIKE = 20.0, 200.0  # -> 5 and 50 replicas
BASE_REPLICAS, TARGET = 5, 50


def _conditions(cluster) -> dict[str, dict]:
    out = cluster.kubectl("get", "recsvc", NAME, "-n", NAMESPACE, "-o", "json").stdout
    return {c["type"]: c for c in (json.loads(out).get("status") or {}).get("conditions") or []}


def test_spike_scales_out_on_eci_and_back_and_a_sale_window_prescales(
    keda_cluster, servers, prometheus, tmp_path
):
    c = keda_cluster
    c.kubectl("create", "namespace", NAMESPACE)
    flashsale.wait_until(
        lambda: c.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
        60,
        "sa/default",
    )
    load = flashsale.OfferedLoad(servers.ports).start()
    load.set_rate(BASELINE)
    op = flashsale.Operator(c, NAMESPACE, tmp_path / "operator.log", prometheus.url)
    sampler = None
    try:
        body = flashsale.service_body(NAME, PER_REPLICA)
        flashsale.wait_until(
            lambda: (
                c.kubectl(
                    "apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=json.dumps(body), check=False
                ).returncode
                == 0
            ),
            90,
            "the operator's webhook to admit the service",
            period=2,
        )
        # targetCPUUtilization: null survives the API server (nullable, not defaulted to 60): with a CPU
        # trigger the unreadable CPU of KWOK pods would hold every scale-down
        stored = json.loads(c.kubectl("get", "recsvc", NAME, "-n", NAMESPACE, "-o", "json").stdout)
        assert stored["spec"]["serving"]["autoscaling"]["targetCPUUtilization"] is None
        # KEDA, not the plain HPA, and the status says so
        flashsale.wait_until(
            lambda: c.kubectl("get", "scaledobject", NAME, "-n", NAMESPACE, check=False).returncode == 0,
            120,
            "the ScaledObject",
        )
        assert c.kubectl("get", "hpa", NAME, "-n", NAMESPACE, check=False).returncode != 0, "no plain HPA"
        cond = flashsale.wait_until(lambda: _conditions(c).get("Autoscaling"), 60, "Autoscaling condition")
        assert cond["reason"] == "KedaScaledObject" and "offered request rate" in cond["message"]
        # the offered rate is what Prometheus sees from the real servers
        q = f'sum(rate(recops_http_requests_total{{namespace="{NAMESPACE}",recsvc="{NAME}"}}[4s]))'
        flashsale.wait_until(
            lambda: prometheus.query(q) and float(prometheus.query(q)[0]["value"][1]) > 10, 60, q
        )

        sampler = flashsale.Sampler(c.api_client(), NAMESPACE, NAME).start()
        # baseline: the KEDA HPA settles the Deployment at offered / per-replica target
        flashsale.wait_until(
            lambda: (
                (s := sampler.latest())
                and s.ready >= BASE_REPLICAS - 1
                and s.spec_replicas <= BASE_REPLICAS + 1
            ),
            240,
            f"baseline ~{BASE_REPLICAS} replicas Ready",
        )
        hpa = json.loads(c.kubectl("get", "hpa", f"keda-hpa-{NAME}", "-n", NAMESPACE, "-o", "json").stdout)
        assert hpa["spec"]["metrics"][0]["type"] == "External"
        assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["External"], "no CPU metric"

        # the spike: 10x within 5 s
        step = load.set_rate(SPIKE, ramp_seconds=4)
        flashsale.wait_until(
            lambda: (s := sampler.latest()) and s.ready >= TARGET - 2,
            300,
            f"~{TARGET} replicas Ready after the spike",
        )
        running, total = flashsale.pods_running_on_eci(c, NAMESPACE, NAME)
        assert running >= TARGET - 2, f"{running}/{total} pods Running+Ready on the ECI node"
        on_spot = flashsale.pods_on_pool(c, NAMESPACE, NAME, topo.SPOT_POOL.name)
        assert not on_spot, f"inference pods on the spot node: {on_spot}"
        decision = sampler.timeline.first(lambda s: s.spec_replicas > BASE_REPLICAS + 1, step)
        assert decision is not None
        assert max(s.spec_replicas for s in sampler.timeline.samples) <= TARGET + 5, "no runaway overshoot"
        assert load.codes.get("200", 0) > 0

        # after the spike: back down (slow, but down)
        load.set_rate(BASELINE)
        flashsale.wait_until(
            lambda: (s := sampler.latest()) and s.spec_replicas <= BASE_REPLICAS + 1, 300, "scale back down"
        )

        # a sale window pre-scales before the spike and releases after it
        window, opens_in = flashsale.next_window(lead_seconds=15, minutes=2)
        body["spec"]["serving"]["autoscaling"]["schedules"] = [{**window, "minReplicas": TARGET}]
        applied = time.monotonic()
        c.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=json.dumps(body))
        so = json.loads(c.kubectl("get", "scaledobject", NAME, "-n", NAMESPACE, "-o", "json").stdout)
        flashsale.wait_until(
            lambda: any(
                t["type"] == "cron"
                for t in json.loads(
                    c.kubectl("get", "scaledobject", NAME, "-n", NAMESPACE, "-o", "json").stdout
                )["spec"]["triggers"]
            ),
            60,
            "the cron trigger",
        )
        del so
        opens_at = applied + opens_in
        flashsale.wait_until(
            lambda: (s := sampler.latest()) and s.ready >= TARGET - 2,
            opens_in + 240,
            "the window's floor Ready",
        )
        before = [s.spec_replicas for s in sampler.timeline.samples if applied <= s.t < opens_at - 2]
        assert before and max(before) <= BASE_REPLICAS + 2, f"not scaled before the window: {before}"
        assert time.monotonic() >= opens_at - 1, "scaled out by the window, not before it"
        pre = flashsale.wait_until(
            lambda: _conditions(c).get("PreScaled", {}).get("status") == "True", 60, "PreScaled"
        )
        assert pre
        ev = c.kubectl(
            "get", "events", "-n", NAMESPACE, "--field-selector", "reason=SaleWindowOpened", "-o", "json"
        )
        assert json.loads(ev.stdout)["items"], "an Event says the window opened"
        # the spike inside the window finds the capacity already there
        shed_from = load.set_rate(SPIKE, ramp_seconds=4)
        time.sleep(15)
        assert min(s.ready for s in sampler.timeline.samples if s.t >= shed_from) >= TARGET - 2
        load.set_rate(BASELINE)
        # ... and the window releases after it
        flashsale.wait_until(
            lambda: (s := sampler.latest()) and s.spec_replicas <= BASE_REPLICAS + 1,
            400,
            "release after the window",
        )
        flashsale.wait_until(
            lambda: _conditions(c).get("PreScaled", {}).get("status") == "False", 60, "window closed"
        )
    except AssertionError:
        _diagnose(c, prometheus, load, sampler)
        raise
    finally:
        if sampler:
            sampler.stop()
        load.stop()
        op.stop()


def _diagnose(c, prometheus, load, sampler) -> None:
    """What the autoscaling chain saw, printed on failure (pytest shows it with the assertion)."""
    hpa = c.kubectl("get", "hpa", "-n", NAMESPACE, "-o", "json", check=False).stdout
    for h in json.loads(hpa or '{"items": []}')["items"]:
        print("HPA", h["metadata"]["name"], json.dumps(h.get("status"), indent=1))
    so = c.kubectl("get", "scaledobject", NAME, "-n", NAMESPACE, "-o", "json", check=False).stdout
    if so:
        print("ScaledObject status", json.dumps(json.loads(so).get("status"), indent=1))
    q = f'sum(rate(recops_http_requests_total{{namespace="{NAMESPACE}",recsvc="{NAME}"}}[4s]))'
    print(
        "offered rate now",
        prometheus.query(q),
        "sent",
        load.sent,
        load.codes,
        "rate",
        load.rate_at(time.monotonic()),
    )
    if sampler:
        print("last samples", sampler.timeline.samples[-5:])
    for comp in ("keda-operator", "keda-adapter", "kube-controller-manager"):
        log = c.logs / f"{comp}.log"
        if log.exists():
            print(f"--- {comp} (tail)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
