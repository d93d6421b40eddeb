"""On a real control plane: a service's pods wait for their bucket claims, the status names the
missing one, and the claims the chart renders for the namespace let them run (StorageReady)."""

from __future__ import annotations

import json

import pytest

from recops_contracts import storage
from tests.chart.helm import template
from tests.support.kube import Operator, apply, feature_store_secret, get, ready, service, wait_for

pytestmark = pytest.mark.integration

BUCKET = "retail-models-cn-hangzhou"  # the example's model and checkpoint bucket
DATA = "shop-data-cn-hangzhou"  # the shop's events: read by training pods only


def _claims(ns: str, bucket: str) -> list[dict]:
    """The platform's part for ``bucket`` in ``ns``, exactly as the chart renders it."""
    docs = template(
        "ossVolumes.roleName=recops-oss-mount",
        f"ossVolumes.buckets[0].name={bucket}",
        f"ossVolumes.buckets[0].namespaces[0]={ns}",
        "ossVolumes.buckets[0].operator=false",
    )
    objs = [d for d in docs if d["kind"] in ("PersistentVolume", "PersistentVolumeClaim")]
    assert {d["kind"] for d in objs} == {"PersistentVolume", "PersistentVolumeClaim"}
    return objs


def _storage(cluster, ns):
    st = (get(cluster, ns, "recsvc", "home-feed") or {}).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == "StorageReady"), None)


def test_pods_wait_for_their_bucket_claims_and_status_names_the_missing_one(
    k8s_cluster, k8s_namespace, tmp_path
):
    ns, claim = k8s_namespace, storage.claim_name(BUCKET)
    feature_store_secret(k8s_cluster, ns)
    op = Operator(
        k8s_cluster,
        ns,
        tmp_path / "operator.log",
        # no resync within the test: claims reach the status through the operator's claim watch
        {"RECOPS_OSS_VOLUMES": "claims", "RECOPS_RESYNC_SECONDS": "3600"},
    )
    op.start()
    pv_names: list[str] = []
    try:
        apply(k8s_cluster, ns, service(training__data={"events": f"oss://{DATA}/events/"}))
        cond = wait_for(lambda: (c := _storage(k8s_cluster, ns)) and c["status"] == "False" and c, timeout=60,
                        what="StorageReady False")  # fmt: skip
        assert cond["reason"] == "ClaimMissing" and claim in cond["message"] and ns in cond["message"], cond
        assert storage.claim_name(DATA) in cond["message"], cond  # the training pods' bucket too
        assert "\n" not in cond["message"]

        def unschedulable():
            pods = (get(k8s_cluster, ns, "pods", "-l", "recops.io/service=home-feed") or {}).get(
                "items"
            ) or []
            for p in pods:
                for c in (p.get("status") or {}).get("conditions") or []:
                    if (
                        c["type"] == "PodScheduled"
                        and c["status"] == "False"
                        and claim in c.get("message", "")
                    ):
                        return p
            return None

        pod = wait_for(unschedulable, timeout=60, what="a serving pod unschedulable for its claim")
        mount = next(
            m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == f"/mnt/oss/{BUCKET}"
        )
        assert mount["readOnly"] is True
        assert ready(k8s_cluster, ns) is None
        events = get(k8s_cluster, ns, "events", "--field-selector", "involvedObject.name=home-feed")["items"]
        assert any(e["reason"] == "ClaimMissing" and e["type"] == "Warning" for e in events)

        # the platform's part, exactly as the chart renders it for this namespace
        objs = _claims(ns, BUCKET)
        pv_names = [d["metadata"]["name"] for d in objs if d["kind"] == "PersistentVolume"]
        k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in objs))
        wait_for(lambda: ((get(k8s_cluster, ns, "pvc", claim) or {}).get("status") or {}).get("phase") == "Bound",
                 timeout=60, what="the claim Bound by the PV controller")  # fmt: skip
        wait_for(
            lambda: ready(k8s_cluster, ns), timeout=90, what="the service Ready once its pods are scheduled"
        )
        cond = _storage(k8s_cluster, ns)  # serving runs; training still lacks its data bucket
        assert cond["status"] == "False" and storage.claim_name(DATA) in cond["message"], cond
        assert claim not in cond["message"], cond

        # nothing the service's own children do changes now: only the claim watch can see this one
        objs = _claims(ns, DATA)
        pv_names += [d["metadata"]["name"] for d in objs if d["kind"] == "PersistentVolume"]
        k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in objs))
        cond = wait_for(lambda: (c := _storage(k8s_cluster, ns)) and c["status"] == "True" and c, timeout=60,
                        what="StorageReady True through the claim watch")  # fmt: skip
        assert cond["reason"] == "ClaimsBound" and claim in cond["message"]
        assert storage.claim_name(DATA) in cond["message"]
    finally:
        op.stop()
        for name in pv_names:  # cluster-scoped: the namespace's deletion does not take it
            k8s_cluster.kubectl("delete", "pv", name, "--wait=false", "--ignore-not-found", check=False)
