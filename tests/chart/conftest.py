"""Chart tests use the session control plane (tests/conftest.py: k8s_cluster, k8s_namespace)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.training` / `tests.support` helpers


@pytest.fixture(scope="module")
def cluster(k8s_cluster):
    return k8s_cluster


@pytest.fixture
def namespace(k8s_namespace):
    return k8s_namespace
