"""One NetworkPolicy per track: the inference (stable), candidate (canary) and training pods.

Ingress only from what ``spec.network`` allows (namespaces, pod labels of this namespace, the VPC
ranges of the intranet load balancer) plus the monitoring namespace, on the serving port; the
canary also from its own stable pods (mesh-free shadowing mirrors from them). Egress only DNS, the
feature store (when set), object storage and the model API of answer synthesis (when set); stable
also to its canary (shadowing). Training has no ingress at all. Pure, like every renderer.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlparse

from recops_operator.api.models import Assistant, RecommenderServiceSpec
from recops_operator.render.serving import Owner, RenderContext, _meta
from recops_operator.training import config as training_config

DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def _ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


#: never reachable from a pod, even inside an allowed range (100.64.0.0/10 holds it)
METADATA = ipaddress.ip_network("100.100.100.200/32")


def _blocks(cidrs: list[str]) -> list[dict[str, Any]]:
    out = []
    for c in cidrs:
        block: dict[str, Any] = {"cidr": c}
        net = ipaddress.ip_network(c, strict=False)
        if net.prefixlen < 32 and net.overlaps(METADATA):
            block["except"] = [str(METADATA)]
        out.append({"ipBlock": block})
    return out


def _track(owner: Owner, track: str) -> dict[str, Any]:
    return {"matchLabels": {"recops.io/service": owner.name, "recops.io/track": track}}


def _egress(spec: RecommenderServiceSpec, serving: bool) -> list[dict[str, Any]]:
    net = spec.network
    rules = [
        DNS,
        {
            "to": _blocks(net.object_storage_cidrs),
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}],
        },
    ]
    if serving and spec.search is not None and spec.search.assistant is not None:
        rules.append(_model_api(spec.search.assistant))
    if serving and spec.serving.feature_store:
        rules.append(
            {
                "to": _blocks(net.feature_store_cidrs),
                "ports": [{"protocol": "TCP", "port": net.feature_store_port}],
            }
        )
    return rules


def _model_api(assistant: Assistant) -> dict[str, Any]:
    """Answer synthesis: the model API's ranges, on its port (the URL's, else the scheme's)."""
    url = urlparse(assistant.endpoint)
    port = assistant.egress_port or url.port or (443 if url.scheme == "https" else 80)
    return {"to": _blocks(assistant.cidrs), "ports": [{"protocol": "TCP", "port": port}]}


def _policy(
    owner: Owner,
    name: str,
    selector: dict[str, Any],
    ingress: list[dict[str, Any]],
    egress: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(owner, name),
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def render_network(
    owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext | None = None
) -> list[dict[str, Any]]:
    net = spec.network
    if not net.policies:
        return []
    port = [{"protocol": "TCP", "port": spec.serving.port}]
    callers: list[dict[str, Any]] = [_ns(n) for n in net.allow_namespaces]
    if net.allow_pod_labels:
        callers.append({"podSelector": {"matchLabels": dict(net.allow_pod_labels)}})
    callers += [*_blocks(net.allow_cidrs), _ns(net.monitoring_namespace)]
    stable_egress = [*_egress(spec, True), {"to": [{"podSelector": _track(owner, "canary")}], "ports": port}]
    objs = [
        _policy(
            owner,
            f"{owner.name}-stable",
            _track(owner, "stable"),
            [{"from": callers, "ports": port}],
            stable_egress,
        ),
        _policy(
            owner,
            f"{owner.name}-canary",
            _track(owner, "canary"),
            [{"from": [*callers, {"podSelector": _track(owner, "stable")}], "ports": port}],
            _egress(spec, True),
        ),
    ]
    if spec.training is not None:
        training = {
            "matchLabels": {
                training_config.SERVICE_LABEL: owner.name,
                training_config.COMPONENT_LABEL: training_config.COMPONENT_TRAINING,
            }
        }
        objs.append(_policy(owner, f"{owner.name}-training", training, [], _egress(spec, False)))
    if spec.search is not None and spec.search.schedule:  # the vectorization pods: as training's
        search = {
            "matchLabels": {
                training_config.SERVICE_LABEL: owner.name,
                training_config.COMPONENT_LABEL: "search",
            }
        }
        objs.append(_policy(owner, f"{owner.name}-search", search, [], _egress(spec, False)))
    return objs
