"""A rollout's real moving parts for tests and benches: the operator process reading a real
Prometheus that scrapes real stable and canary servers (labelled as the ServiceMonitor does)."""

from __future__ import annotations

from tests.support.kube import Operator, feature_store_secret, get
from tests.support.prometheus_server import PrometheusServer, Target, free_port

NAME = "home-feed"


def start_rollout(k8s_cluster, ns, tmp_path, stable, canary, extra_env: dict[str, str] | None = None):
    """A Prometheus scraping both servers and the operator, then the operator reading it."""
    op_metrics = free_port()
    prom = PrometheusServer(
        tmp_path / "prom",
        [
            Target(f"127.0.0.1:{stable.port}", {"namespace": ns, "recsvc": NAME, "track": "stable"}),
            Target(f"127.0.0.1:{canary.port}", {"namespace": ns, "recsvc": NAME, "track": "canary"}),
            Target(f"127.0.0.1:{op_metrics}", job="recops-operator"),  # the operator's own metrics
        ],
        scrape_interval="1s",
    ).start()
    feature_store_secret(k8s_cluster, ns)
    op = Operator(
        k8s_cluster,
        ns,
        tmp_path / "operator.log",
        {
            "RECOPS_PROMETHEUS_URL": prom.url,
            "RECOPS_ROLLOUT_TICK_SECONDS": "1",
            "RECOPS_METRICS_PORT": str(op_metrics),
            "RECOPS_METRICS_ADDR": "127.0.0.1",
            **(extra_env or {}),
        },
    ).start()
    return prom, op


def rollout_status(k8s_cluster, ns) -> dict:
    return (get(k8s_cluster, ns, "recsvc", NAME).get("status") or {}).get("rollout") or {}
