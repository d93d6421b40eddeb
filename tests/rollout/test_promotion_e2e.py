"""A promoted candidate's own image stays on stable (real control plane, real operator process).

Promotion by the declarative action (no analysis needed), then edits that have nothing to do with
the rollout: each re-renders the stable Deployment, which must keep the promoted version *and*
the image it was promoted with, not fall back to ``serving.image``.
"""

from __future__ import annotations

import json

import pytest

from tests.support.kube import Operator, feature_store_secret, get, service, wait_for
from tests.support.rollout import NAME, rollout_status

pytestmark = pytest.mark.integration
IMAGE = "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-serve:0.2.0-rc1"


def _stable(cluster, ns) -> tuple[str, str]:
    dep = get(cluster, ns, "deploy", NAME)
    tpl = dep["spec"]["template"]
    return tpl["metadata"]["labels"]["recops.io/model-version"], tpl["spec"]["containers"][0]["image"]


def test_promoted_image_survives_unrelated_edits_and_removing_the_candidate(
    k8s_cluster, k8s_namespace, tmp_path
):
    ns = k8s_namespace
    feature_store_secret(k8s_cluster, ns)
    op = Operator(k8s_cluster, ns, tmp_path / "operator.log", {"RECOPS_ROLLOUT_TICK_SECONDS": "1"}).start()
    apply = lambda body: k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(body))  # noqa: E731
    try:
        body = service(NAME)
        body["spec"]["rollout"]["candidate"] = {"version": "2026-12-01", "image": IMAGE}
        body["spec"]["rollout"]["action"] = {"type": "promote", "nonce": "1"}
        apply(body)
        wait_for(
            lambda: rollout_status(k8s_cluster, ns).get("phase") == "Succeeded", timeout=90, what="promoted"
        )
        assert _stable(k8s_cluster, ns) == ("2026-12-01", IMAGE)

        body["spec"]["serving"]["replicas"]["min"] = 3  # unrelated to the rollout
        apply(body)
        wait_for(lambda: get(k8s_cluster, ns, "deploy", NAME)["spec"]["replicas"] == 3, what="edit applied")
        assert _stable(k8s_cluster, ns) == ("2026-12-01", IMAGE)

        del body["spec"]["rollout"]["candidate"]  # the candidate is gone, stable keeps what was promoted
        del body["spec"]["rollout"]["action"]
        apply(body)
        wait_for(lambda: rollout_status(k8s_cluster, ns).get("phase") == "Idle", what="idle")
        body["spec"]["serving"]["topK"] = 40
        apply(body)
        wait_for(
            lambda: "40" in json.dumps(get(k8s_cluster, ns, "configmap", f"{NAME}-serving") or {}),
            what="config re-rendered",
        )
        assert _stable(k8s_cluster, ns) == ("2026-12-01", IMAGE)
    finally:
        op.stop()
