"""Generated dashboards/rules are in sync with the code, valid for promtool, and unit-tested with it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import build
import pytest
from alerts import ALERTS
from panels import DASHBOARDS, all_queries, concrete

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "rules"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


def test_committed_outputs_match_the_generator():
    for path, text in build.outputs().items():
        if path.parent.name == "crds":
            continue  # the CRD copy in the chart has its own test (tests/chart)
        assert path.exists(), f"{path} missing: run python dashboards/build.py"
        assert path.read_text() == text, f"{path} is stale: run python dashboards/build.py"


def test_dashboards_cover_the_required_signals():
    exprs = " ".join(q.expr for _, _, q in all_queries())
    for metric in (
        "recops_http_request_duration_seconds_bucket",
        "recops_http_requests_total",
        "recops_recommendation_fallback_total",
        "recops_feature_store_errors_total",
        "recops_session_feature_age_seconds",
        "recops_rollout_weight",
        "recops_rollout_analysis_total",
        "recops_attributed_events_total",
        "recops_serving_replicas",
        "recops_training_runs_total",
        "recops_training_preemptions_total",
        "recops_training_last_checkpoint_timestamp_seconds",
        "recops_operator_reconcile_total",
    ):
        assert metric in exprs, metric
    model = json.loads((ROOT / "dashboards" / "grafana" / "recops-serving.json").read_text())
    assert model["uid"] == "recops-serving"
    assert [p["title"] for p in model["panels"]] == [p.title for p in DASHBOARDS[0].panels]
    assert {v["name"] for v in model["templating"]["list"]} == {"datasource", "namespace", "recsvc"}


def test_generated_json_parses_back_into_grafana_models():
    from grafana_foundation_sdk.models import dashboard

    for d in DASHBOARDS:
        data = json.loads((ROOT / "dashboards" / "grafana" / f"{d.uid}.json").read_text())
        model = dashboard.Dashboard.from_json(data)
        assert model.uid == d.uid and len(model.panels) == len(d.panels)
        for panel in data["panels"]:
            assert panel["options"], f"{panel['title']}: options must be set (Grafana expects an object)"


def test_runbook_anchors_exist():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for a in ALERTS:
        assert a.runbook in anchors, f"{a.name}: docs/runbook.md has no section #{a.runbook}"


@needs_promtool
def test_promtool_check_rules():
    r = subprocess.run(
        ["promtool", "check", "rules", str(RULES / "recops-alerts.yaml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


@needs_promtool
def test_promtool_unit_tests_pass_and_cover_every_alert():
    tests = (RULES / "recops-alerts.test.yaml").read_text()
    for a in ALERTS:
        assert f"alertname: {a.name}" in tests, f"no promtool unit test for {a.name}"
    r = subprocess.run(
        ["promtool", "test", "rules", "recops-alerts.test.yaml"], cwd=RULES, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """promtool parses every dashboard query (as recording rules) with the Grafana variables filled in."""
    rules = [
        {"record": f"recops:check:{i}", "expr": concrete(q.expr)} for i, (_, _, q) in enumerate(all_queries())
    ]
    f = tmp_path / "dash.yaml"
    f.write_text(json.dumps({"groups": [{"name": "dash", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
