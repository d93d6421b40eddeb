"""Traffic objects per router: rendered, schema-valid, and stored/read back by the real API server."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import Owner, RenderContext, desired_objects

OWNER = Owner("home-feed", "shop", "0b7c6b3e-0000-4000-8000-000000000001")


def spec(provider: str, **rollout) -> RecommenderServiceSpec:
    return RecommenderServiceSpec.model_validate(
        {
            "region": "cn-hangzhou",
            "model": {"uri": "oss://retail-models-cn-hangzhou/home/", "version": "v1"},
            "serving": {
                "image": "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-serve:1",
                "replicas": {"min": 4, "max": 40},
            },
            "rollout": {
                "candidate": {"version": "v2"},
                "shadow": {"percent": 5},
                "traffic": {"provider": provider, "host": "feed.shop.internal"},
                **rollout,
            },
        }
    )


def ctx(phase="Progressing", weight=25, step=2, mesh=True) -> RenderContext:
    return RenderContext(
        mesh_available=mesh, rollout={"phase": phase, "weight": weight, "stepIndex": step, "candidate": "v2"}
    )


def kinds(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@pytest.mark.parametrize(
    "provider,prefix", [("nginx", "nginx.ingress.kubernetes.io"), ("alb", "alb.ingress.kubernetes.io")]
)
def test_ingress_canary_annotations(provider, prefix):
    objs = desired_objects(OWNER, spec(provider), ctx())
    ing = kinds(objs, "Ingress")
    assert set(ing) == {"home-feed", "home-feed-canary"}
    canary = ing["home-feed-canary"]
    assert canary["metadata"]["annotations"] == {f"{prefix}/canary": "true", f"{prefix}/canary-weight": "25"}
    assert canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "home-feed-canary"
    assert (
        "annotations" not in ing["home-feed"]["metadata"] or not ing["home-feed"]["metadata"]["annotations"]
    )
    for o in objs:
        if o["apiVersion"].startswith(("networking.k8s.io", "apps", "v1")):
            kubernetes_validate.validate(o, "1.37", strict=True)
    dep = kinds(objs, "Deployment")["home-feed-canary"]
    assert dep["spec"]["replicas"] == 2, "pre-scaled for the next step (50% of min 4)"
    assert dep["spec"]["template"]["metadata"]["labels"]["recops.io/track"] == "canary"
    idle = desired_objects(OWNER, spec(provider), RenderContext())
    assert set(kinds(idle, "Ingress")) == {"home-feed"} and "home-feed-canary" not in kinds(
        idle, "Deployment"
    )


def test_asm_virtualservice_weights_and_mirror():
    live = desired_objects(OWNER, spec("asm"), ctx())
    vs = kinds(live, "VirtualService")["home-feed"]
    route = vs["spec"]["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in route] == [("stable", 75), ("canary", 25)]
    assert sum(r["weight"] for r in route) == 100
    dr = kinds(live, "DestinationRule")["home-feed"]
    assert {s["name"]: s["labels"]["recops.io/track"] for s in dr["spec"]["subsets"]} == {
        "stable": "stable",
        "canary": "canary",
    }
    shadow = kinds(desired_objects(OWNER, spec("asm"), ctx("Shadowing", 0, -1)), "VirtualService")[
        "home-feed"
    ]["spec"]["http"][0]
    assert shadow["mirror"]["subset"] == "canary" and shadow["mirrorPercentage"] == {"value": 5.0}
    assert [r["weight"] for r in shadow["route"]] == [100, 0]
    assert kinds(desired_objects(OWNER, spec("asm"), ctx(mesh=False)), "VirtualService") == {}, (
        "no mesh CRDs: nothing to apply"
    )


def test_shadow_without_a_mesh_configures_the_stable_pods():
    objs = desired_objects(OWNER, spec("nginx"), ctx("Shadowing", 0, -1))
    cfg = json.loads(kinds(objs, "ConfigMap")["home-feed-serving"]["data"]["config.json"])
    assert cfg["shadow_url"] == "http://home-feed-canary.shop.svc" and cfg["shadow_percent"] == 5


ISTIO_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.networking.istio.io"},
        "spec": {
            "group": "networking.istio.io",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    for kind, plural in (("VirtualService", "virtualservices"), ("DestinationRule", "destinationrules"))
]


@pytest.mark.integration
def test_objects_are_stored_and_read_back_by_the_api_server(k8s_cluster, k8s_namespace):
    for crd in ISTIO_CRDS:
        k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    k8s_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/virtualservices.networking.istio.io",
        "crd/destinationrules.networking.istio.io",
    )
    owner = Owner("home-feed", k8s_namespace, OWNER.uid)
    for provider in ("nginx", "asm"):
        for o in desired_objects(owner, spec(provider), ctx()):
            if o["kind"] in ("Ingress", "VirtualService", "DestinationRule"):
                o["metadata"].pop("ownerReferences")
                k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(o))
    ing = json.loads(
        k8s_cluster.kubectl("-n", k8s_namespace, "get", "ingress", "home-feed-canary", "-o", "json").stdout
    )
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    vs = json.loads(
        k8s_cluster.kubectl("-n", k8s_namespace, "get", "virtualservice", "home-feed", "-o", "json").stdout
    )
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [75, 25]
