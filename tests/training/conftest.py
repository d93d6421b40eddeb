"""Training test fixtures: a RecommenderService body with a training section."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

BASE: dict[str, Any] = {
    "apiVersion": "recops.io/v1alpha1",
    "kind": "RecommenderService",
    "metadata": {"name": "home-feed", "namespace": "shop", "uid": "0b7c6b3e-0000-4000-8000-000000000001"},
    "spec": {
        "region": "cn-hangzhou",
        "model": {"uri": "oss://retail-models-cn-hangzhou/home-feed/", "version": "v1"},
        "serving": {"image": "registry.cn-hangzhou.aliyuncs.com/recops/recops-serve:1.0", "placement": "eci"},
        "training": {
            "schedule": "0 2 * * *",
            "data": {"events": "builtin:completejourney"},
            "dataWindow": {"days": 90},
            "capacity": "spot",
            "placement": "nodes",
            "resources": {"cpu": "2", "memory": "4Gi"},
            "checkpoint": {"uri": "oss://retail-models-cn-hangzhou/ckpt/home-feed/", "intervalSeconds": 120},
            "backoffLimit": 2,
            "gate": {"metrics": ["ndcg@10", "recall@50"], "tolerance": 0.005},
        },
    },
}


def service(**training: Any) -> dict[str, Any]:
    """The base body with ``spec.training`` keys overridden (None removes a key)."""
    body = copy.deepcopy(BASE)
    for k, v in training.items():
        if v is None:
            body["spec"]["training"].pop(k, None)
        else:
            body["spec"]["training"][k] = v
    return body


@pytest.fixture
def svc() -> Callable[..., dict[str, Any]]:
    return service
