"""The local control plane is a real Kubernetes: scheduling, controllers, GC, CEL and taints all work."""

from __future__ import annotations

import json
import time

import pytest

from recops_contracts import topology as topo

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def get_json(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def apply(cluster, obj):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def nodes_by_name(cluster):
    return {n["metadata"]["name"]: n for n in get_json(cluster, "nodes")["items"]}


def test_nodes_model_the_target_cluster(k8s_cluster):
    nodes = nodes_by_name(k8s_cluster).values()
    pools = {n["metadata"]["labels"].get("recops.io/local-pool") for n in nodes}
    assert {"serving", "training-spot", "eci"} <= pools
    for n in nodes:
        labels, taints = n["metadata"]["labels"], n["spec"].get("taints", [])
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True"
        if labels.get(topo.CAPACITY_LABEL) == topo.CAPACITY_SPOT:
            assert topo.SPOT_TAINT.as_k8s() in [{k: t[k] for k in ("key", "value", "effect")} for t in taints]
        if labels.get("type") == "virtual-kubelet":
            assert topo.ECI_TAINT.as_k8s() in [{k: t[k] for k in ("key", "value", "effect")} for t in taints]
        if labels.get(topo.CAPACITY_LABEL) == topo.CAPACITY_ON_DEMAND:
            assert labels[topo.ZONE_LABEL].startswith("cn-hangzhou-") and not taints
    zones = {
        n["metadata"]["labels"][topo.ZONE_LABEL]
        for n in nodes
        if n["metadata"]["labels"].get(topo.CAPACITY_LABEL) == "on-demand"
    }
    assert len(zones) >= 2


def test_deployment_pods_are_scheduled_and_running(k8s_cluster, k8s_namespace):
    apply(
        k8s_cluster,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": k8s_namespace},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        },
    )
    dep = wait_for(
        lambda: (
            (d := get_json(k8s_cluster, "deploy", "web", "-n", k8s_namespace))["status"].get("readyReplicas")
            == 3
            and d
        ),
        what="3 ready replicas",
    )
    assert dep["status"]["availableReplicas"] == 3
    pods = get_json(k8s_cluster, "pods", "-n", k8s_namespace, "-l", "app=web")["items"]
    assert len(pods) == 3 and all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"] for p in pods)


def test_job_completes(k8s_cluster, k8s_namespace):
    apply(
        k8s_cluster,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once", "namespace": k8s_namespace},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
                }
            },
        },
    )
    job = wait_for(
        lambda: (
            (j := get_json(k8s_cluster, "job", "once", "-n", k8s_namespace))["status"].get("succeeded") == 1
            and j
        ),
        what="job success",
    )
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])


def test_deleting_an_owner_garbage_collects_dependents(k8s_cluster, k8s_namespace):
    owner = json.loads(
        k8s_cluster.kubectl("create", "configmap", "owner", "-n", k8s_namespace, "-o", "json").stdout
    )
    apply(
        k8s_cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "namespace": k8s_namespace,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        },
    )
    k8s_cluster.kubectl("delete", "configmap", "owner", "-n", k8s_namespace)
    wait_for(
        lambda: (
            k8s_cluster.kubectl("get", "configmap", "dependent", "-n", k8s_namespace, check=False).returncode
            != 0
        ),
        what="garbage collection of the dependent",
    )


def test_crd_schema_and_cel_reject_bad_objects_with_the_servers_message(k8s_cluster):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "ranges.test.recops.io"},
        "spec": {
            "group": "test.recops.io",
            "scope": "Namespaced",
            "names": {"kind": "Range", "plural": "ranges", "singular": "range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": "min must be <= max"}
                                    ],
                                    "properties": {
                                        "min": {"type": "integer", "minimum": 0},
                                        "max": {"type": "integer"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    apply(k8s_cluster, crd)
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/ranges.test.recops.io", "--timeout=30s")

    def create(spec):
        obj = {
            "apiVersion": "test.recops.io/v1",
            "kind": "Range",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": spec,
        }
        return k8s_cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False
        )

    assert create({"min": 1, "max": 2}).returncode == 0
    bad = create({"min": 5, "max": 2})
    assert bad.returncode != 0 and "min must be <= max" in bad.stderr
    negative = create({"min": -1, "max": 2})
    assert negative.returncode != 0 and "should be greater than or equal to 0" in negative.stderr


def test_untolerating_pods_never_land_on_spot_or_eci(k8s_cluster, k8s_namespace):
    nodes = nodes_by_name(k8s_cluster)
    apply(
        k8s_cluster,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "plain", "namespace": k8s_namespace},
            "spec": {
                "replicas": 12,
                "selector": {"matchLabels": {"app": "plain"}},
                "template": {
                    "metadata": {"labels": {"app": "plain"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
            },
        },
    )
    wait_for(
        lambda: (
            get_json(k8s_cluster, "deploy", "plain", "-n", k8s_namespace)["status"].get("readyReplicas") == 12
        ),
        what="12 ready",
    )
    placed = {
        p["spec"]["nodeName"]
        for p in get_json(k8s_cluster, "pods", "-n", k8s_namespace, "-l", "app=plain")["items"]
    }
    assert placed, "pods were placed"
    for name in placed:
        pool = nodes[name]["metadata"]["labels"]["recops.io/local-pool"]
        assert pool == "serving", f"{name} ({pool}) got a pod that tolerates nothing"

    # A pod that tolerates the spot taint and requires spot lands on spot.
    apply(
        k8s_cluster,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer", "namespace": k8s_namespace},
            "spec": {
                "tolerations": [topo.SPOT_TAINT.toleration()],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": topo.spot_only_node_affinity_terms()}]
                        }
                    }
                },
                "containers": [{"name": "c", "image": "x"}],
            },
        },
    )
    node = wait_for(
        lambda: get_json(k8s_cluster, "pod", "trainer", "-n", k8s_namespace)["spec"].get("nodeName"),
        what="trainer scheduled",
    )
    assert nodes[node]["metadata"]["labels"][topo.CAPACITY_LABEL] == topo.CAPACITY_SPOT
