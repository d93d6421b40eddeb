"""`recops-demo` end to end: control plane, operator, a Ready service, then a real bundle served with the
operator-rendered config, a real Redis, and a recommendation that changes after one click; then the
clickstream through a real Kafka broker and the Flink job: a session feature and a trending list."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_serves_a_recommendation_that_changes_after_a_click(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    env = {**os.environ, "RECOPS_DEMO_CACHE": str(cache), "RECOPS_DEMO_LIMIT_ROWS": "150000"}
    for key in ("USE_EXISTING_CLUSTER", "RECOPS_DEMO_EXIT"):
        env.pop(key, None)
    log = tmp_path / "demo.out"
    demo = subprocess.Popen(  # as from a terminal: its own process group, Ctrl-C (SIGINT) handled
        [str(Path(sys.executable).parent / "recops-demo")],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 600
        while "Press Ctrl-C to stop everything." not in log.read_text():
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        assert demo.wait(120) == 0, log.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    out = log.read_text()
    assert "training a bundle on completejourney" in out
    assert re.search(r"home-feed\s+True\s+Ready", out), out

    version = yaml.safe_load((ROOT / "examples" / "home-feed.yaml").read_text())["spec"]["model"]["version"]
    known, before, after = (
        json.loads(line) for line in out.splitlines() if line.startswith('{"model_version"')
    )
    for resp in (known, before, after):
        assert resp["model_version"] == version  # the operator-rendered config's model, served
        assert len(resp["items"]) == 5 and resp["feature_store"] == "on"
    if known["arm"] == "model":  # a known household gets its own candidates, not the popularity fallback
        reasons = {i["reason"] for i in known["items"]}  # its candidates and buy-again items
        assert reasons <= {"model", "repeat", "popular"} and reasons & {"model", "repeat"}, known
    assert before["arm"] == after["arm"] == "model"
    assert {i["reason"] for i in before["items"]} == {"fallback"}  # nothing known about the shopper yet
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert "session" in {i["reason"] for i in after["items"]}
    assert re.search(r"[1-5] of 5 recommendations changed after one click", out)
    assert "Gasoline" not in out  # the example's rules: no fuel, coupons or store items recommended

    # the clicks went server -> Kafka -> Flink -> Redis: the session's 5-minute view count of the category
    feats = re.search(
        r"Redis recops:f:s:demo-stream-shopper\n  after [0-9.]+s: (\{.*\})  \(ttl (\d+)s\)", out
    )
    assert feats, out[-3000:]
    cat = re.search(r"POST /v1/events x3 \(views in category (\d+)\)", out).group(1)
    assert json.loads(feats.group(1))[f"v5:{cat}"] == "3" and 0 < int(feats.group(2)) <= 1800
    hot, after = re.search(r"after 20 views/0.5 s of item (\d+): \[(\d+)", out).groups()
    assert hot == after  # the viewed item tops its category's trending list

    # Ctrl-C stopped everything it started: server and Redis ports closed, the cluster's run dir gone
    server_port = int(re.search(r"recops-serve is ready at http://127.0.0.1:(\d+)", out).group(1))
    redis_port = int(re.search(r"Redis at redis://127.0.0.1:(\d+)", out).group(1))
    assert not port_open(server_port) and not port_open(redis_port)
    kubeconfig = Path(re.search(r"export KUBECONFIG=(\S+)", out).group(1))
    assert not kubeconfig.parent.exists()
    assert "stopped: no process or port left behind" in out

    # the bundle is published to the cache only when complete, and the next run reuses it
    bundles = list(cache.glob(f"bundle-completejourney-{version}-*/manifest.json"))
    assert len(bundles) == 1 and not list(cache.glob(".training-*"))
    monkeypatch.setenv("RECOPS_DEMO_CACHE", str(cache))
    from recops_localcluster.demo_serving import start_training

    again = start_training(version, tmp_path / "train.log")
    assert again.cached and again.wait() == bundles[0].parent
