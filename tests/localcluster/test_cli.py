"""`recops-localcluster up` then `down` leaves no process, port or run dir behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "recops_localcluster.cli"]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_then_down_leaves_nothing(tmp_path):
    run_dir = tmp_path / "kcp"
    base = [*CLI, "--run-dir", str(run_dir)]
    up = subprocess.run(
        [*base, "up", "--on-demand", "1", "--spot", "1", "--eci", "1"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={run_dir}/admin.kubeconfig" in up.stdout
    state = json.loads((run_dir / "state.json").read_text())
    kubectl = str(Path(sys.executable).parent / "kubectl")
    nodes = subprocess.run(
        [kubectl, f"--kubeconfig={state['kubeconfig']}", "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(nodes.stdout.split()) == 3
    status = subprocess.run([*base, "status"], capture_output=True, text=True, check=True).stdout
    assert status.count("running") == 5

    down = subprocess.run([*base, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for name, pid in state["pids"].items():
        alive = (
            os.path.exists(f"/proc/{pid}")
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
        )
        assert not alive, f"{name} (pid {pid}) still running"
    assert not port_open(state["api_port"]) and not port_open(state["etcd_port"])
    assert not run_dir.exists()
