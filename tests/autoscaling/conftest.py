"""A control plane of its own with KEDA (its CRDs would switch every other test's services from the
plain HPA to ScaledObjects), a trained bundle, real servers and a real Prometheus scraping them."""

from __future__ import annotations

import pytest

from recops_localcluster import binaries
from recops_localcluster.cluster import LocalCluster, install_crds
from recops_localcluster.nodes import NodeSet
from tests.conftest import CRD_DIR
from tests.support import flashsale
from tests.support.prometheus_server import PrometheusServer, Target

NAMESPACE, NAME = "flash", "sale"


@pytest.fixture(scope="module")
def keda_cluster():
    try:
        for name in binaries.COMPONENTS:
            binaries.find(name)
        binaries.keda_dir()
    except binaries.MissingBinary as e:
        pytest.fail(f"local control plane with KEDA unavailable: {e}", pytrace=False)
    # a spot node too: inference must never land on it
    cluster = LocalCluster(keda=True, nodes=NodeSet(on_demand=1, spot=1, eci=1)).start()
    try:
        install_crds(cluster, CRD_DIR)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("flash")
    bundle = flashsale.train_bundle(root / "bundle")
    s = flashsale.Servers(root / "servers", bundle, n=2).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def prometheus(servers, tmp_path_factory):
    labels = {"namespace": NAMESPACE, "recsvc": NAME, "track": "stable"}
    targets = [Target(f"127.0.0.1:{p}", labels, job="recops-serve") for p in servers.ports]
    with PrometheusServer(tmp_path_factory.mktemp("prom"), targets, scrape_interval="1s") as prom:
        yield prom
