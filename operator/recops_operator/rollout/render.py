"""Pure render of a rollout: candidate Deployment/Service/ConfigMap and the router's traffic objects.

Reads ``ctx.rollout`` (the persisted ``status.rollout``) for phase and weight, so
applying the render is all a step takes. Routers (``spec.rollout.traffic.provider``):
``nginx``: a stable Ingress plus a canary Ingress with ``nginx.ingress.kubernetes.io/canary``
and ``canary-weight``; ``alb``: the same with ``alb.ingress.kubernetes.io/canary*``;
``asm``: an Istio VirtualService with weighted stable/canary routes (and
``mirror``/``mirrorPercentage`` while shadowing) over a DestinationRule's subsets.
Without a mesh, shadowing is done by the stable pods themselves (``shadow_url`` in
their config), so it works on every router.
"""

from __future__ import annotations

import math
from typing import Any

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.api.status import Phase, RolloutStatus
from recops_operator.render.serving import (
    Owner,
    RenderContext,
    _meta,
    deployment_name,
    render_config_map,
    render_deployment,
)
from recops_operator.rollout.machine import LIVE, next_weight

CANARY = "canary"


def active(ctx: RenderContext) -> bool:
    st = RolloutStatus.of(ctx.rollout)
    return st.phase in LIVE or st.phase == Phase.PAUSED


def canary_service_name(owner: Owner) -> str:
    return f"{owner.name}-{CANARY}"


def _canary_replicas(spec: RecommenderServiceSpec, st: RolloutStatus) -> int:
    """Pre-scaled for the next weight, so capacity is there before traffic moves."""
    bounds = spec.rollout.canary_replicas
    share = max(st.weight, next_weight(spec.rollout, st)) / 100
    want = math.ceil(spec.serving.replicas.min * max(share, 0.01))
    lo, hi = (bounds.min, bounds.max) if bounds else (1, spec.serving.replicas.max)
    return max(lo, min(hi, want))


def _ingress(
    owner: Owner, spec: RecommenderServiceSpec, name: str, service: str, annotations: dict[str, str]
) -> dict[str, Any]:
    t = spec.rollout.traffic
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {**_meta(owner, name), "annotations": annotations},
        "spec": {
            "rules": [
                {
                    "host": t.host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": service, "port": {"name": "http"}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    cls = t.ingress_class_name or t.provider
    obj["spec"]["ingressClassName"] = cls
    return obj


def render_traffic(owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    t = spec.rollout.traffic
    st = RolloutStatus.of(ctx.rollout)
    weight = st.weight if active(ctx) else 0
    if t.provider in ("nginx", "alb"):
        if not t.host:
            return []
        prefix = "nginx.ingress.kubernetes.io" if t.provider == "nginx" else "alb.ingress.kubernetes.io"
        objs = [_ingress(owner, spec, owner.name, owner.name, {})]
        if active(ctx):
            objs.append(
                _ingress(
                    owner,
                    spec,
                    f"{owner.name}-{CANARY}",
                    canary_service_name(owner),
                    {f"{prefix}/canary": "true", f"{prefix}/canary-weight": str(weight)},
                )
            )
        return objs
    host = t.host or f"{owner.name}.{owner.namespace}.svc.cluster.local"
    route: dict[str, Any] = {
        "route": [
            {
                "destination": {
                    "host": f"{owner.name}.{owner.namespace}.svc.cluster.local",
                    "subset": "stable",
                },
                "weight": 100 - weight,
            },
            {
                "destination": {
                    "host": f"{owner.name}.{owner.namespace}.svc.cluster.local",
                    "subset": CANARY,
                },
                "weight": weight,
            },
        ]
    }
    if st.phase == Phase.SHADOWING and spec.rollout.shadow.percent:
        route["mirror"] = {"host": f"{owner.name}.{owner.namespace}.svc.cluster.local", "subset": CANARY}
        route["mirrorPercentage"] = {"value": float(spec.rollout.shadow.percent)}
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": _meta(owner, owner.name),
            "spec": {
                "host": f"{owner.name}.{owner.namespace}.svc.cluster.local",
                "subsets": [
                    {"name": "stable", "labels": {"recops.io/track": "stable"}},
                    {"name": CANARY, "labels": {"recops.io/track": CANARY}},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": _meta(owner, owner.name),
            "spec": {"hosts": [host], "http": [route]},
        },
    ]


def render_rollout(owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    st = RolloutStatus.of(ctx.rollout)
    if active(ctx) and spec.rollout.candidate:
        cand = spec.rollout.candidate
        objs.append(render_config_map(owner, spec, cand.version, CANARY, cand.search_version))
        objs.append(
            render_deployment(
                owner,
                spec,
                track=CANARY,
                version=cand.version,
                image=cand.image,
                replicas=_canary_replicas(spec, st),
            )
        )
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(owner, canary_service_name(owner)),
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"recops.io/service": owner.name, "recops.io/track": CANARY},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
                },
            }
        )
    if spec.rollout.traffic.provider != "asm" or ctx.mesh_available:
        objs.extend(render_traffic(owner, spec, ctx))
    return objs


__all__ = ["deployment_name", "render_rollout", "render_traffic"]
