"""Children of the local control plane and of the test fixtures die with their parent (issue #18).

A pytest session holding the shared cluster is killed with SIGTERM (clean path: the handler stops
the cluster and removes its run dir) and with SIGKILL (no handler runs: prctl PDEATHSIG makes the
kernel SIGKILL each component); `recops-localcluster up --foreground` is killed with SIGTERM.
In every case no etcd, kube-apiserver, KCM, scheduler or kwok is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recops_localcluster.cluster import _alive

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out: {what}")


def _assert_all_gone(pids: dict[str, int], timeout: float = 45) -> None:
    assert set(pids) >= COMPONENTS, pids
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {n: p for n, p in pids.items() if _alive(p)}
    for pid in left.values():  # never leave them to the next test, even on failure
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left running: {left}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_a_pytest_session_leaves_no_control_plane(tmp_path, sig):
    pids_file = tmp_path / "pids.json"
    env = {**os.environ, "RECOPS_PROBE_PIDS": str(pids_file)}
    session = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/localcluster/probe_session.py",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(tmp_path / "session.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: pids_file.exists() or session.poll() is not None, 180, "the probe session's cluster")
        assert pids_file.exists(), (tmp_path / "session.log").read_text()[-3000:]
        state = json.loads(pids_file.read_text())
        assert all(_alive(p) for p in state["pids"].values())
        session.send_signal(sig)
        session.wait(60)
        _assert_all_gone(state["pids"])
        if sig == signal.SIGTERM:
            assert not Path(state["run_dir"]).exists(), "the SIGTERM handler also removed the run dir"
    finally:
        if session.poll() is None:
            session.kill()
        if pids_file.exists():  # after SIGKILL no code of the session ran: its run dir is left
            shutil.rmtree(json.loads(pids_file.read_text())["run_dir"], ignore_errors=True)


def test_sigterm_to_localcluster_up_foreground_leaves_nothing(tmp_path):
    run_dir = tmp_path / "run"
    up = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "recops-localcluster"),
            f"--run-dir={run_dir}",
            "up",
            "--foreground",
            "--on-demand=1",
            "--spot=0",
            "--eci=0",
        ],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "up.log", "wb"),  # noqa: SIM115
        text=True,
        start_new_session=True,
    )
    try:
        line = up.stdout.readline()
        assert line.startswith("export KUBECONFIG="), (tmp_path / "up.log").read_text()[-3000:]
        pids = json.loads((run_dir / "state.json").read_text())["pids"]
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        _assert_all_gone(pids)
        assert not run_dir.exists()
    finally:
        if up.poll() is None:
            up.kill()
