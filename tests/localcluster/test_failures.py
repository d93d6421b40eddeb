"""A component that cannot start stops the launch with its name and log file, and leaves nothing behind."""

from __future__ import annotations

import os

import pytest

from recops_localcluster.cluster import ComponentFailed, LocalCluster, _alive
from recops_localcluster.nodes import NodeSet

pytestmark = pytest.mark.integration


def test_failing_component_is_named_with_its_log(tmp_path, monkeypatch):
    broken = tmp_path / "kube-scheduler"
    broken.write_text("#!/bin/sh\necho 'E1124 scheduler: no such flag --bogus' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("TEST_ASSET_KUBE_SCHEDULER", str(broken))
    cluster = LocalCluster(run_dir=tmp_path / "run", nodes=NodeSet(on_demand=1, spot=0, eci=0))
    started: dict[str, int] = {}
    real_spawn = cluster._spawn

    def spy(name, argv):
        log = real_spawn(name, argv)
        started[name] = cluster.pids[name]
        return log

    monkeypatch.setattr(cluster, "_spawn", spy)
    with pytest.raises(ComponentFailed) as e:
        cluster.start()
    assert e.value.component == "kube-scheduler"
    assert str(e.value.log).endswith("logs/kube-scheduler.log")
    assert "kube-scheduler failed" in str(e.value) and "no such flag" in str(e.value)
    assert {"etcd", "kube-apiserver", "kube-controller-manager"} <= set(started)
    assert not any(_alive(pid) for pid in started.values()), "earlier components were stopped"
    assert "no such flag" in e.value.log.read_text(), "the named log is kept to read"
    assert os.listdir(tmp_path / "run") == ["logs"], "keys and etcd data are removed"
