"""Cluster fixtures for chart tests: the shared `k8s_cluster`/`k8s_namespace` (tests/conftest.py) when
present, else a LocalCluster of our own (same launcher) so the chart tests also run on their own."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.training` scenario helpers


@pytest.fixture(scope="module")
def cluster(request):
    try:
        yield request.getfixturevalue("k8s_cluster")
        return
    except pytest.FixtureLookupError:
        pass
    from recops_localcluster.cluster import LocalCluster

    c = LocalCluster().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def namespace(cluster):
    name = f"chart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
