"""Session fixtures shared by every component's tests.

``k8s_cluster``: one real control plane per pytest session (etcd, kube-apiserver,
KCM, scheduler, KWOK with ACK-shaped fake nodes) from ``recops_localcluster``, or
an existing cluster with ``USE_EXISTING_CLUSTER=true`` + ``KUBECONFIG``. The
RecommenderService CRD is installed. Missing binaries fail with the command to
build them (``make test`` builds them first), never a silent skip.

``k8s_namespace``: a fresh namespace per test (its ``default`` ServiceAccount
exists), deleted afterwards.

``bundles``, ``redis_server``, ``make_server``: real trained bundles and real ``recops-serve``
processes with real Redis (tests/support/serving.py, a plugin for every directory).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ("tests.support.serving",)
ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "crds"


@pytest.fixture(scope="session")
def k8s_cluster():
    from recops_localcluster import binaries
    from recops_localcluster.cluster import ExistingCluster, LocalCluster, existing_cluster, install_crds

    kubeconfig = existing_cluster()
    if kubeconfig:
        cluster = ExistingCluster(kubeconfig)
        install_crds(cluster, CRD_DIR)
        yield cluster
        return
    try:
        for name in binaries.COMPONENTS:
            binaries.find(name)
    except binaries.MissingBinary as e:
        pytest.fail(f"local control plane unavailable: {e}", pytrace=False)
    cluster = LocalCluster().start()
    try:
        install_crds(cluster, CRD_DIR)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _cluster_oss_volumes(request, monkeypatch) -> None:
    """Renders in this process (in-process kopf, the training sync) against the cluster follow its
    ``RECOPS_OSS_VOLUMES`` as the operator subprocesses do through ``cluster.env``: the local control
    plane has no OSS CSI driver, so no bucket claims (``tests/operator/test_storage_e2e.py`` asks for them)."""
    if "k8s_cluster" in request.fixturenames:
        mode = request.getfixturevalue("k8s_cluster").env.get("RECOPS_OSS_VOLUMES")
        if mode:
            monkeypatch.setenv("RECOPS_OSS_VOLUMES", mode)


@pytest.fixture
def k8s_namespace(k8s_cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    k8s_cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    while k8s_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(
                f"ServiceAccount default never appeared in {name} (is kube-controller-manager running?)"
            )
        time.sleep(0.2)
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
