"""The smallest valid RecommenderServiceSpec the pure-render and status tests build on."""

from __future__ import annotations

from recops_operator.api.models import RecommenderServiceSpec


def spec(**serving) -> RecommenderServiceSpec:
    """A cn-hangzhou service with ``serving`` fields overridden (camelCase, as in a manifest)."""
    return RecommenderServiceSpec.model_validate(
        {
            "region": "cn-hangzhou",
            "model": {"uri": "oss://retail-models-hz/home-feed/", "version": "2026-11-20"},
            "serving": {
                "image": "registry.cn-hangzhou.aliyuncs.com/recops/recops-serve:1.0",
                "featureStore": {"secretRef": {"name": "tair"}},
                **serving,
            },
        }
    )
