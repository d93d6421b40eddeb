"""Rollout decision latency and operator CPU per active rollout (``python -m bench rollout``).

Real everything: local control plane + KWOK, the operator process, a real Prometheus scraping two
real recops-serve processes (stable and candidate, labelled like the ServiceMonitor does), load
from this process. Decision latency: from the moment the candidate's error rate over the analysis
window crosses the threshold *in Prometheus* (polled every 100 ms with the operator's own query) to
the moment the API server holds no canary Ingress (0% to the candidate). Expected: about one timer
tick, since with failureLimit 1 every tick checks for a failure (fail fast); a pass waits an interval.
CPU per active rollout: operator CPU seconds over a fixed window with N rollouts holding
(inconclusive: no traffic to them) minus the same N services without candidates, divided by N.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, bundle, cpu_seconds, table
from recops_operator.rollout.analysis import queries
from recops_operator.rollout.machine import parse_duration
from tests.support.kube import Operator, get, service, wait_for
from tests.support.prometheus_server import PrometheusServer, Target
from tests.support.redis_server import RedisServer
from tests.support.serving import Load, ServerProc

NS, NAME = "bench", "home-feed"
INTERVAL = "10s"
TICK = "1"


def _rollout(version: str, name: str = NAME, interval: str = INTERVAL) -> dict:
    body = service(name)
    body["spec"]["rollout"] = {
        "candidate": {"version": version},
        "steps": [10, 50, 100],
        "interval": interval,
        "failureLimit": 1,
        "inconclusiveLimit": 1000,
        "analysis": {"minRequests": 20, "maxErrorRate": 0.05, "maxP99LatencyMs": 1000},
        "traffic": {"provider": "nginx", "host": f"{name}.shop.internal"},
    }
    return body


def _status(cluster) -> dict:
    return ((get(cluster, NS, "recsvc", NAME) or {}).get("status") or {}).get("rollout") or {}


def bench_rollout(runs: int = 3, idle_services: int = 20, window_s: float = 60.0) -> None:
    from recops_localcluster.cluster import LocalCluster, install_crds

    work = Path(tempfile.mkdtemp(prefix="recops-bench-rollout-"))
    b = bundle()
    with LocalCluster() as cluster, RedisServer(work / "redis") as redis:
        install_crds(cluster, ROOT / "crds")
        cluster.kubectl("create", "namespace", NS)
        cluster.kubectl(
            "-n", NS, "create", "secret", "generic", "tair-credentials", "--from-literal=url=redis://x"
        )
        cfg = {"model_uri": str(b), "reload_seconds": 0.5}
        stable_cfg, canary_cfg = work / "stable.json", work / "canary.json"
        stable_cfg.write_text(json.dumps(cfg))
        canary_cfg.write_text(json.dumps(cfg))
        stable = ServerProc(stable_cfg, redis.url, work / "stable.log")
        canary = ServerProc(canary_cfg, redis.url, work / "canary.log")
        prom = PrometheusServer(
            work / "prom",
            [
                Target(f"127.0.0.1:{stable.port}", {"namespace": NS, "recsvc": NAME, "track": "stable"}),
                Target(f"127.0.0.1:{canary.port}", {"namespace": NS, "recsvc": NAME, "track": "canary"}),
            ],
            scrape_interval="1s",
        ).start()
        op = Operator(
            cluster,
            NS,
            work / "operator.log",
            {"RECOPS_PROMETHEUS_URL": prom.url, "RECOPS_ROLLOUT_TICK_SECONDS": TICK},
        ).start()
        rows = []
        try:
            err_q = queries(NS, NAME, "canary", INTERVAL)["error-rate"]
            latencies = []
            with Load(stable.url, canary.url):
                for run in range(runs):
                    canary_cfg.write_text(json.dumps(cfg))
                    time.sleep(1.5 + parse_duration(INTERVAL))  # healthy again, errors out of the window
                    cluster.kubectl(
                        "-n", NS, "apply", "-f", "-", input=json.dumps(_rollout(f"2026-12-0{run + 1}"))
                    )
                    wait_for(
                        lambda: _status(cluster).get("weight") == 50,  # one analysis passed at 10%
                        timeout=120,
                        what="candidate at 50% after a passed analysis",
                    )
                    canary_cfg.write_text(json.dumps({**cfg, "fault_error_percent": 100}))
                    visible = zero = None
                    deadline = time.monotonic() + 120
                    while zero is None and time.monotonic() < deadline:
                        now = time.time()
                        if visible is None:
                            res = prom.query(err_q)
                            if res and float(res[0]["value"][1]) > 0.05:
                                visible = now
                        ing = get(cluster, NS, "ingress", f"{NAME}-canary")
                        weight = ((ing or {}).get("metadata", {}).get("annotations") or {}).get(
                            "nginx.ingress.kubernetes.io/canary-weight"
                        )
                        if visible is not None and (ing is None or weight == "0"):
                            zero = now
                        time.sleep(0.1)
                    if visible is None or zero is None:
                        raise RuntimeError(f"run {run}: breach visible={visible} zero={zero}; see {work}")
                    latencies.append(zero - visible)
                    st = _status(cluster)
                    assert st.get("phase") == "RolledBack", st
            rows.append(
                [
                    f"decision latency, breach visible -> 0% (interval {INTERVAL}, tick {TICK}s, {runs} runs)",
                    f"median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s",
                ]
            )

            # CPU per active rollout
            names = [f"idle-{i:02d}" for i in range(idle_services)]
            docs = [json.dumps(service(n)) for n in names]
            cluster.kubectl("-n", NS, "apply", "-f", "-", input="\n---\n".join(docs), timeout=300)
            time.sleep(15)
            c0 = cpu_seconds(op.proc.pid)
            time.sleep(window_s)
            idle_cpu = cpu_seconds(op.proc.pid) - c0
            docs = [json.dumps(_rollout("2026-12-31", n)) for n in names]
            cluster.kubectl("-n", NS, "apply", "-f", "-", input="\n---\n".join(docs), timeout=300)
            time.sleep(15)
            c0 = cpu_seconds(op.proc.pid)
            time.sleep(window_s)
            active_cpu = cpu_seconds(op.proc.pid) - c0
            per = (active_cpu - idle_cpu) / idle_services / window_s
            rows.append(
                [
                    f"operator CPU, {idle_services + 1} services without rollouts",
                    f"{100 * idle_cpu / window_s:.1f}% of a core",
                ]
            )
            rows.append(
                [
                    f"operator CPU, {idle_services} rollouts holding (analysis every {INTERVAL})",
                    f"{100 * active_cpu / window_s:.1f}% of a core",
                ]
            )
            rows.append(
                ["operator CPU per active rollout", f"{1000 * per:.1f} ms per s ({100 * per:.2f}% of a core)"]
            )
            table(
                "rollout: real control plane, operator, Prometheus and inference servers",
                ["measure", "value"],
                rows,
            )
        finally:
            op.stop()
            prom.stop()
            stable.stop()
            canary.stop()
