"""Every dashboard and alert PromQL expression runs on a real Prometheus holding contract-shaped data.

The TSDB is backfilled with promtool from OpenMetrics text (contract_series.py), so this test checks
the queries against the metrics contract even where no live exporter exists (kube-state-metrics).
The live test (test_queries_live.py) does the same against scraped real processes."""

from __future__ import annotations

import re
import time

import pytest
from alerts import ALERTS
from contract_series import openmetrics
from panels import all_queries, concrete

from tests.support.prometheus_server import PrometheusServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    end = int(time.time()) - 60
    with PrometheusServer(tmp_path_factory.mktemp("prom-backfill"), openmetrics=openmetrics(end)) as p:
        p.end = end
        yield p


@pytest.mark.parametrize(
    ("uid", "title", "query"), all_queries(), ids=lambda v: getattr(v, "legend", str(v))[:40]
)
def test_dashboard_query_returns_data(prom, uid, title, query):
    res = prom.query(concrete(query.expr), at=prom.end)
    assert res, f"{uid} / {title}: no data for {query.expr}"
    assert any(re.fullmatch(r"-?[0-9.e+-]+", s["value"][1]) for s in res), f"only NaN: {res}"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_alert_expression_runs_and_its_condition_selects_data(prom, alert):
    prom.query(alert.expr, at=prom.end)  # must parse and evaluate
    # Strip the threshold: the underlying signal must exist in the data.
    signal = re.sub(r"\s*(>|>=|<|==)\s*[0-9.]+$", "", alert.expr)
    assert signal != alert.expr
    assert prom.query(signal, at=prom.end), f"{alert.name}: signal has no data: {signal}"


@pytest.mark.parametrize("uid", ["recops-serving", "recops-rollouts"])
def test_png_preview_draws_every_panel(prom, tmp_path, uid):
    import render
    from panels import DASHBOARDS

    dash = next(d for d in DASHBOARDS if d.uid == uid)
    out = tmp_path / f"{uid}.png"
    drawn = render.render(prom.url, dash, out, prom.end - 20 * 60, prom.end)
    expected = {p.title for p in dash.panels if p.kind == "timeseries"}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(drawn) == expected and all(drawn.values())  # every panel drew at least one series
