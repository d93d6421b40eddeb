"""The operator as a real process against the real control plane (kubectl in, kubectl out)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from recops_contracts import topology as topo
from recops_localcluster.cluster import free_port
from tests.support.kube import Operator, apply, feature_store_secret, get, ready, service, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def operator(k8s_cluster, k8s_namespace, tmp_path) -> Iterator[Operator]:
    feature_store_secret(k8s_cluster, k8s_namespace)
    port = free_port()
    op = Operator(
        k8s_cluster,
        k8s_namespace,
        tmp_path / "operator.log",
        {"RECOPS_METRICS_PORT": str(port), "RECOPS_METRICS_ADDR": "127.0.0.1"},
    ).start()
    op.metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        yield op
    finally:
        op.stop()


def nodes(cluster) -> dict[str, dict]:
    return {
        n["metadata"]["name"]: n
        for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }


def pods_nodes(cluster, ns, name="home-feed") -> list[str]:
    pods = get(cluster, ns, "pods", "-l", f"recops.io/service={name},recops.io/track=stable")["items"]
    return [p["spec"].get("nodeName") for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_apply_example_gives_a_ready_hardened_stack_on_eci(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    apply(k8s_cluster, ns, service())
    body = wait_for(lambda: ready(k8s_cluster, ns), what="Ready")
    st = body["status"]
    assert st["replicas"] == {"desired": 2, "ready": 2} and st["stableVersion"] == "2026-11-20"
    assert st["observedGeneration"] == body["metadata"]["generation"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Reconciled"]["status"] == "True"
    assert (
        conds["MonitoringAvailable"]["status"] == "False"
        and conds["MonitoringAvailable"]["reason"] == "CRDsMissing"
    )

    dep = get(k8s_cluster, ns, "deploy", "home-feed")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"type": "virtual-kubelet"}
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    svc = get(k8s_cluster, ns, "svc", "home-feed")
    assert svc["metadata"]["annotations"][topo.SLB_ADDRESS_TYPE] == "intranet"
    hpa = get(k8s_cluster, ns, "hpa", "home-feed")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 200)
    assert get(k8s_cluster, ns, "pdb", "home-feed") and get(k8s_cluster, ns, "cm", "home-feed-serving")
    node_map = nodes(k8s_cluster)
    placed = pods_nodes(k8s_cluster, ns)
    assert placed and all(node_map[n]["metadata"]["labels"].get("type") == "virtual-kubelet" for n in placed)
    printed = k8s_cluster.kubectl("get", "recsvc", "-n", ns).stdout
    assert "True" in printed and "2026-11-20" in printed


def test_updates_are_followed_by_children_and_status(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    apply(k8s_cluster, ns, service())
    wait_for(lambda: ready(k8s_cluster, ns), what="Ready")
    new_image = "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-serve:0.2.0"
    apply(
        k8s_cluster,
        ns,
        service(
            serving__image=new_image, serving__placement="nodes", serving__replicas={"min": 3, "max": 30}
        ),
    )
    wait_for(
        lambda: (
            get(k8s_cluster, ns, "deploy", "home-feed")["spec"]["template"]["spec"]["containers"][0]["image"]
            == new_image
        ),
        what="new image",
    )
    wait_for(lambda: get(k8s_cluster, ns, "hpa", "home-feed")["spec"]["minReplicas"] == 3, what="HPA min 3")
    node_map = nodes(k8s_cluster)

    def on_demand_only():
        placed = pods_nodes(k8s_cluster, ns)
        return len(placed) == 3 and all(
            node_map[n]["metadata"]["labels"].get(topo.CAPACITY_LABEL) == "on-demand" for n in placed if n
        )

    wait_for(on_demand_only, what="3 pods on on-demand nodes")
    body = wait_for(
        lambda: (
            (b := ready(k8s_cluster, ns))
            and b["status"]["replicas"]["ready"] == 3
            and b["status"]["observedGeneration"] == b["metadata"]["generation"]
            and b
        ),
        what="status follows",
    )
    assert body["status"]["replicas"]["desired"] == 3


INVALID = [
    ("missing region", {"region": None}, "spec.region: Required value"),
    ("region pattern", {"region": "Hangzhou"}, "spec.region in body should match"),
    ("model uri not oss", {"model__uri": "s3://bucket/x/"}, "spec.model.uri in body should match"),
    ("model version empty", {"model__version": ""}, "spec.model.version in body should match"),
    (
        "replicas min > max",
        {"serving__replicas": {"min": 5, "max": 2}},
        "replicas.min must be <= replicas.max",
    ),
    ("replicas min 0", {"serving__replicas": {"min": 0, "max": 2}}, "should be greater than or equal to 1"),
    ("steps not ascending", {"rollout__steps": [10, 5, 100]}, "rollout.steps must be strictly ascending"),
    ("last step not 100", {"rollout__steps": [2, 10, 50]}, "the last rollout step must be 100"),
    ("placement spot", {"serving__placement": "spot"}, 'spec.serving.placement: Unsupported value: "spot"'),
    (
        "training on-demand",
        {"training__capacity": "on-demand"},
        'spec.training.capacity: Unsupported value: "on-demand"',
    ),
    ("topK 0", {"serving__topK": 0}, "spec.serving.topK: Invalid value: 0"),
    ("holdout without salt", {"experiment__holdout": {"percent": 10}}, "holdout.salt is required"),
    ("candidate equals stable", {"rollout__candidate__version": "2026-11-20"}, "nothing to roll out"),
    (
        "cpu target 150",
        {"serving__autoscaling__targetCPUUtilization": 150},
        "should be less than or equal to 95",
    ),
    ("unknown traffic provider", {"rollout__traffic__provider": "envoy"}, 'Unsupported value: "envoy"'),
    (
        "bad secret name",
        {"serving__featureStore__secretRef__name": "Bad_Name"},
        "secretRef.name in body should match",
    ),
    (
        "grace above spot notice",
        {"training__terminationGracePeriodSeconds": 170},
        "should be less than or equal to 150",
    ),
    (
        "model bucket in another region",
        {"model__uri": "oss://retail-models-cn-shanghai/home/"},
        "outside spec.region cn-hangzhou",
    ),
    (
        "checkpoint bucket of unknown region",
        {"training__checkpoint__uri": "oss://mystery-bucket/ckpt/"},
        "cannot tell the region of bucket 'mystery-bucket'",
    ),
    (
        "prometheus outside the region",
        {"rollout__prometheusURL": "https://ap-southeast-1.arms.aliyuncs.com/api/v1/prometheus/x"},
        "ARMS endpoint in ap-southeast-1",
    ),
    (
        "the removed free-form dataset field",
        {"training__dataset": "completejourney"},
        "spec.training.dataset was replaced by spec.training.data",
    ),
    (
        "events outside object storage",
        {"training__data__events": "s3://elsewhere/events/"},
        "spec.training.data.events in body should match",
    ),
    (
        "shop events in another region's bucket",
        {"training__data__events": "oss://shop-data-cn-shanghai/events/"},
        "spec.training.data.events: bucket 'shop-data-cn-shanghai' is in cn-shanghai",
    ),
    (
        "catalogue of unknown region",
        {
            "training__data": {
                "events": "builtin:completejourney",
                "catalog": "oss://mystery-bucket/c.parquet",
            }
        },
        "spec.training.data.catalog: cannot tell the region of bucket 'mystery-bucket'",
    ),
    (
        "unknown exclusion",
        {"serving__exclude__viewed": True},
        "unknown field",
    ),
    (
        "category cap of zero",
        {"serving__rules__maxPerCategory": 0},
        "spec.serving.rules.maxPerCategory",
    ),
    (
        "prometheus on a public host",
        {"rollout__prometheusURL": "https://prom.example.com"},
        "neither in-cluster",
    ),
]


def test_invalid_objects_are_rejected_with_specific_messages(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    failures = []
    for i, (label, overrides, expected) in enumerate(INVALID):
        res = apply(k8s_cluster, ns, service(f"bad-{i}", **overrides), check=False)
        if res.returncode == 0 or expected not in res.stderr:
            failures.append(f"{label}: rc={res.returncode} stderr={res.stderr.strip()[:300]}")
    assert not failures, "\n".join(failures)
    assert get(k8s_cluster, ns, "recsvc")["items"] == []
    assert (
        get(k8s_cluster, ns, "deploy")["items"] == []
        and get(k8s_cluster, ns, "cm", "-l", "app.kubernetes.io/managed-by=recops")["items"] == []
    )
    assert len(INVALID) >= 21

    # Immutable region, checked on update by CEL transition rule.
    apply(k8s_cluster, ns, service())
    res = apply(
        k8s_cluster,
        ns,
        service(region="cn-shanghai", model__uri="oss://retail-models-cn-shanghai/x/"),
        check=False,
    )
    assert res.returncode != 0 and "region is immutable" in res.stderr


def test_drift_is_repaired_and_delete_removes_everything(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    apply(k8s_cluster, ns, service())
    wait_for(lambda: ready(k8s_cluster, ns), what="Ready")
    image = get(k8s_cluster, ns, "deploy", "home-feed")["spec"]["template"]["spec"]["containers"][0]["image"]
    k8s_cluster.kubectl("-n", ns, "set", "image", "deploy/home-feed", "serve=evil/image:latest")
    wait_for(
        lambda: (
            get(k8s_cluster, ns, "deploy", "home-feed")["spec"]["template"]["spec"]["containers"][0]["image"]
            == image
        ),
        what="image restored",
    )
    # every child kind the operator renders is watched: an edit to the training CronJob is repaired by
    # its watch event, not by the 30 s resync (without the watch this took 30 s; with it, ~0.1 s)
    schedule = get(k8s_cluster, ns, "cronjob", "home-feed-train")["spec"]["schedule"]
    k8s_cluster.kubectl(
        "-n", ns, "patch", "cronjob", "home-feed-train", "-p", json.dumps({"spec": {"schedule": "* * * * *"}})
    )
    wait_for(
        lambda: get(k8s_cluster, ns, "cronjob", "home-feed-train")["spec"]["schedule"] == schedule,
        timeout=15,
        what="CronJob schedule restored from its watch event",
    )
    k8s_cluster.kubectl("-n", ns, "delete", "svc", "home-feed")
    wait_for(lambda: get(k8s_cluster, ns, "svc", "home-feed"), what="Service recreated")
    k8s_cluster.kubectl("-n", ns, "delete", "deploy", "home-feed", "--wait=false")
    wait_for(
        lambda: (
            (d := get(k8s_cluster, ns, "deploy", "home-feed")) and not d["metadata"].get("deletionTimestamp")
        ),
        what="Deployment recreated",
    )
    wait_for(lambda: ready(k8s_cluster, ns), what="Ready again")
    gauge = f'recops_serving_replicas{{namespace="{ns}",recsvc="home-feed",state="min"}} 2.0'
    assert gauge in httpx.get(operator.metrics_url).text, "the replica panel's series, from the operator"

    k8s_cluster.kubectl("-n", ns, "delete", "recsvc", "home-feed")
    wait_for(
        lambda: gauge.rsplit(" ", 1)[0] not in httpx.get(operator.metrics_url).text, what="gauges dropped"
    )
    for kind in ("deploy", "svc", "hpa", "pdb", "cm", "cronjob"):
        wait_for(
            lambda kind=kind: get(k8s_cluster, ns, kind, "-l", "recops.io/service=home-feed")["items"] == [],
            what=f"{kind} garbage-collected",
        )


def _versions(cluster, ns) -> dict[str, str]:
    out = {}
    for kind in ("recsvc", "deploy", "svc", "hpa", "pdb", "cm", "cronjob"):
        for item in get(cluster, ns, kind)["items"]:
            out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return out


def test_steady_state_makes_no_writes(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    apply(k8s_cluster, ns, service())
    wait_for(lambda: ready(k8s_cluster, ns), what="Ready")
    time.sleep(5)  # let the last child events settle
    before = _versions(k8s_cluster, ns)
    time.sleep(40)  # longer than the resync timer (30 s in this fixture)
    assert _versions(k8s_cluster, ns) == before


def test_sigkill_mid_reconcile_converges_without_duplicates_or_orphans(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    docs = [service(f"svc-{i:02d}") for i in range(20)]
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    time.sleep(1.5)
    operator.kill(signal.SIGKILL)
    partial = len(get(k8s_cluster, ns, "deploy")["items"])
    operator.start()

    def all_ready():
        items = get(k8s_cluster, ns, "recsvc")["items"]
        return len(items) == 20 and all((i.get("status") or {}).get("phase") == "Ready" for i in items)

    wait_for(all_ready, timeout=240, what="20 services Ready after restart")
    deps = get(k8s_cluster, ns, "deploy")["items"]
    assert sorted(d["metadata"]["name"] for d in deps) == sorted(d["metadata"]["name"] for d in docs)
    uids = {i["metadata"]["name"]: i["metadata"]["uid"] for i in get(k8s_cluster, ns, "recsvc")["items"]}
    for kind in ("deploy", "svc", "hpa", "pdb", "cm"):
        for item in get(k8s_cluster, ns, kind, "-l", "app.kubernetes.io/managed-by=recops")["items"]:
            ref = item["metadata"]["ownerReferences"][0]
            assert uids.get(ref["name"]) == ref["uid"], f"orphan {kind}/{item['metadata']['name']}"
    print(f"deployments present at SIGKILL: {partial}/20")
