"""Serving dashboard and alert queries against a real Prometheus scraping real `recops-serve serve` processes.

Two inference processes (canary, and stable mirroring to it as shadow; scrape labels as the ServiceMonitor
sets them) with a real Redis, a bundle from a real small training run (or $RECOPS_TEST_BUNDLE), holdout on;
after recommendation and event traffic every serving query and serving alert signal must return data.
Operator queries are checked against the real operator process in tests/chart/test_chart_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alerts import ALERTS
from panels import all_queries, concrete

from recops_localcluster.procs import wait_http
from tests.support.prometheus_server import PrometheusServer, Target, free_port

pytestmark = pytest.mark.integration


def _serving(expr: str) -> bool:
    return "recops_operator" not in expr and "recops_rollout" not in expr and "recops_training" not in expr


def _bundle(exe: str, tmp: Path) -> str:
    """$RECOPS_TEST_BUNDLE, else a real (small) training run: completejourney, first 20k interactions."""
    if os.environ.get("RECOPS_TEST_BUNDLE"):
        return os.environ["RECOPS_TEST_BUNDLE"]
    uri = f"file://{tmp}/models/v1"
    cmd = [
        exe,
        "train",
        "--events",
        "builtin:completejourney",
        "--out",
        uri,
        "--version",
        "v1",
        "--limit-rows",
        "20000",
        "--iterations",
        "2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"training a test bundle failed: {res.stderr[-2000:]}")
    return uri


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    exe = shutil.which("recops-serve") or str(Path(sys.executable).parent / "recops-serve")
    if not Path(exe).exists():
        pytest.skip("recops-serve is not installed yet (serving engineer)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    tmp = tmp_path_factory.mktemp("live")
    procs: list[subprocess.Popen] = []
    try:
        rport = free_port()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(rport),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(tmp),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        bundle = _bundle(exe, tmp)
        targets, urls = [], []
        holdout = ["--set", "holdout_percent=30", "--set", 'holdout_salt="t"']
        for track in ("canary", "stable"):  # stable mirrors every request to the canary (shadow metrics)
            port = free_port()
            log = tmp / f"serve-{track}.log"
            extra = (
                ["--set", f'shadow_url="{urls[0]}"', "--set", "shadow_percent=100"]
                if track == "stable"
                else []
            )
            cmd = [
                exe,
                "serve",
                "--bundle",
                bundle,
                "--redis-url",
                f"redis://127.0.0.1:{rport}/0",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *holdout,
                *extra,
            ]
            p = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/readyz", p, log=log, what=f"recops-serve {track}")
            urls.append(f"http://127.0.0.1:{port}")
            labels = {
                "namespace": "shop",
                "recsvc": "home-feed",
                "track": track,
                "pod": f"home-feed-{track}-0",
            }
            targets.append(Target(f"127.0.0.1:{port}", labels, job="recops-serve"))
        with PrometheusServer(tmp / "prom", targets, scrape_interval="1s") as prom:
            with httpx.Client(timeout=5) as http:
                for round_ in range(8):
                    for base in urls:
                        for u in range(30):
                            user = f"u{u}-{round_ % 3}"
                            r = http.get(f"{base}/v1/recommendations", params={"user_id": user, "k": 10})
                            items = [i["item_id"] for i in r.json().get("items", [])] or [1]
                            for typ in ("view", "purchase") if u % 5 == 0 else ("view",):
                                http.post(
                                    f"{base}/v1/events",
                                    json={"user_id": user, "item_id": items[0], "type": typ},
                                )
                        http.get(f"{base}/v1/recommendations", params={"k": "10"})  # a 400 (no user)
                    time.sleep(1)
            time.sleep(3)  # two more scrapes after the last traffic
            yield prom
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


SERVING_QUERIES = [(u, t, q) for u, t, q in all_queries() if _serving(q.expr) and not q.external]


@pytest.mark.parametrize(
    ("uid", "title", "query"), SERVING_QUERIES, ids=lambda v: getattr(v, "legend", str(v))[:40]
)
def test_serving_query_returns_data_from_a_live_server(live, uid, title, query):
    assert live.wait_for(concrete(query.expr, "30s"), timeout=15), f"{title}: no data for {query.expr}"


@pytest.mark.parametrize("alert", [a for a in ALERTS if _serving(a.expr)], ids=lambda a: a.name)
def test_serving_alert_signal_has_data_from_a_live_server(live, alert):
    import re

    signal = re.sub(r"\s*(>|>=|<|==)\s*[0-9.]+$", "", alert.expr)
    assert live.wait_for(signal, timeout=15), f"{alert.name}: no data for {signal}"


def test_png_preview_from_the_live_servers(live, tmp_path):
    """The preview renderer draws every serving panel from the live data (RECOPS_WRITE_PREVIEW=1 writes it
    to dashboards/img/recops-serving-live.png for the README)."""
    import render
    from panels import SERVING

    out = tmp_path / "live.png"
    if os.environ.get("RECOPS_WRITE_PREVIEW"):
        out = Path(render.__file__).resolve().parent / "img" / "recops-serving-live.png"
    end = time.time()
    drawn = render.render(
        live.url,
        SERVING,
        out,
        end - 60,
        end,
        skip_external=True,
        note="live: 2 recops-serve processes + Redis, scraped by Prometheus",
    )
    missing = {p.title for p in SERVING.panels if p.kind == "timeseries"} - set(drawn)
    assert not missing, missing
    assert out.read_bytes()[:4] == b"\x89PNG"
