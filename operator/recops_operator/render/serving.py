"""Pure render of the serving stack: spec -> desired Kubernetes objects.

No API calls here: the same input always gives the same objects, which is what
makes reconcile idempotent and lets tests validate every object against the
Kubernetes 1.37 OpenAPI schema without a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from recops_contracts import topology as topo
from recops_contracts.serving import ServeConfig
from recops_operator import pods
from recops_operator.api.models import GROUP, KIND, VERSION, RecommenderServiceSpec
from recops_operator.api.status import RolloutStatus
from recops_operator.oss import oss_volumes
from recops_operator.render import autoscaling

MANAGED_BY = "recops"
CONFIG_MOUNT = "/etc/recops"
CONFIG_FILE = "config.json"
SECRET_MOUNT = "/var/run/secrets/recops/feature-store"
ATTRIBUTION_MOUNT = "/var/run/secrets/recops/attribution"
ASSISTANT_MOUNT = "/var/run/secrets/recops/assistant"
ASSISTANT_KEY_FILE = "api-key"
FEATURE_STORE_FILE = "url"


@dataclass(frozen=True)
class Owner:
    """The RecommenderService that owns the rendered objects."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True, kw_only=True)
class RenderContext:
    """Facts the renderer may depend on: discovered by the handler (CRDs present) or
    persisted state (``rollout`` is ``status.rollout``: phase, weight, promoted version)."""

    monitoring_available: bool = False
    mesh_available: bool = False
    keda_available: bool = False  # keda.sh ScaledObject served: KEDA renders the HPA
    flink_available: bool = False  # flink.apache.org FlinkDeployment served: the stream job renders
    prometheus_url: str | None = None  # the operator's default (RECOPS_PROMETHEUS_URL)
    now: datetime | None = None  # sale windows of the plain-HPA path are evaluated at this time
    rollout: RolloutStatus | None = None  # a persisted dict is read into the model on construction

    def __post_init__(self) -> None:
        if self.rollout is not None and not isinstance(self.rollout, RolloutStatus):
            object.__setattr__(self, "rollout", RolloutStatus.of(self.rollout))


#: key in the feature-store Secret holding the attribution-token HMAC key
ATTRIBUTION_KEY = "attribution-key"


def labels(owner: Owner, track: str | None = None, version: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "recops-serve",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "recops.io/service": owner.name,
    }
    if track:
        out["recops.io/track"] = track
    if version:
        out["recops.io/model-version"] = version
    return out


def _meta(owner: Owner, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels(owner), **(extra_labels or {})},
        "ownerReferences": [owner.reference()],
    }


def config_map_name(owner: Owner, track: str = "stable") -> str:
    return f"{owner.name}-serving" if track == "stable" else f"{owner.name}-serving-{track}"


def serving_config(
    spec: RecommenderServiceSpec, version: str, track: str, search_version: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The recops-serve config file: ``recops_contracts.serving.ServeConfig``, the schema the server parses.
    ``search_version``: the track's search bundle (default: spec.search.version)."""
    s = spec.serving
    fs = s.feature_store
    cfg = ServeConfig(
        model_uri=spec.model.uri.rstrip("/") + "/" + version,
        model_version=version,
        track=track,
        region=spec.region,
        top_k=s.top_k,
        **(
            {"session_ttl_seconds": fs.session_ttl_seconds, "max_session_events": fs.max_session_events}
            if fs
            else {}
        ),
        session_length=s.session_length,
        fallback_strategy=s.fallback.strategy,
        new_item_boost_hours=s.fallback.new_item_boost_hours,
        exclude=s.exclude.model_dump(),
        rules={
            "exclude_categories": s.rules.exclude_categories,
            "max_per_category": s.rules.max_per_category,
        },
        holdout_percent=spec.experiment.holdout.percent,
        holdout_salt=spec.experiment.holdout.salt,
        **_search_config(spec, search_version),
        **extra,
    )
    return cfg.model_dump(mode="json", exclude_none=True)


def _search_config(spec: RecommenderServiceSpec, version: str | None) -> dict[str, Any]:
    search = spec.search
    version = version or (search.version if search else None)
    if search is None or not version:
        return {}
    out: dict[str, Any] = {"search_uri": search.uri.rstrip("/") + "/" + version, "search_alpha": search.alpha}
    if (a := search.assistant) is not None:
        out |= {
            "assistant_url": a.endpoint.rstrip("/"),
            "assistant_model": a.model,
            "assistant_budget_tokens": a.budget_tokens,
            "assistant_max_answer_tokens": a.max_answer_tokens,
            "assistant_timeout_seconds": float(a.timeout_seconds),
        }
    return out


def render_config_map(
    owner: Owner,
    spec: RecommenderServiceSpec,
    version: str,
    track: str = "stable",
    search_version: str | None = None,
    **extra: Any,
) -> dict:
    """The track's serving config: model ``version`` with its search bundle ``search_version``."""
    cfg = serving_config(spec, version, track, search_version, **extra)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, config_map_name(owner, track), {"recops.io/track": track}),
        "data": {CONFIG_FILE: json.dumps(cfg, indent=2, sort_keys=True)},
    }


def _placement(spec: RecommenderServiceSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """Pod-spec placement fields and pod annotations. Inference is never on spot."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": topo.not_spot_node_affinity_terms()}]
            }
        }
    }
    if spec.serving.placement == "eci":
        annotations = {topo.ECI_AUTO_IMAGE_CACHE: "true" if spec.serving.eci.image_cache else "false"}
        if spec.serving.eci.image_snapshot_id:  # a prepared image cache: the pod pulls nothing
            annotations[topo.ECI_IMAGE_SNAPSHOT_ID] = spec.serving.eci.image_snapshot_id
        if spec.serving.eci.use_specs:
            annotations[topo.ECI_USE_SPECS] = ",".join(spec.serving.eci.use_specs)
        fields = {
            "nodeSelector": {topo.ECI_NODE_LABEL_KEY: topo.ECI_NODE_LABEL_VALUE},
            "tolerations": [topo.ECI_TAINT.toleration()],
            "affinity": affinity,
        }
        return fields, annotations
    fields = {
        "nodeSelector": {topo.CAPACITY_LABEL: topo.CAPACITY_ON_DEMAND},
        "affinity": affinity,
    }
    return fields, {}


def _secret_file(
    volume: str, option: str, secret: str, key: str, mount: str, path: str, optional: bool = False
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """(the serve option naming the file, read-only mount, secret volume) for one Secret key as a file."""
    source: dict[str, Any] = {
        "secretName": secret,
        "items": [{"key": key, "path": path}],
        "defaultMode": 0o400,
    }
    if optional:
        source["optional"] = True
    return (
        [option, f"{mount}/{path}"],
        {"name": volume, "mountPath": mount, "readOnly": True},
        {"name": volume, "secret": source},
    )


def deployment_name(owner: Owner, track: str = "stable") -> str:
    return owner.name if track == "stable" else f"{owner.name}-{track}"


class _Files(NamedTuple):
    args: list[str]
    mounts: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    env: list[dict[str, str]]


def _files(owner: Owner, spec: RecommenderServiceSpec, track: str) -> _Files:
    """What the container reads, and how: the serve options naming its files, mounts and volumes.

    The serving config (track and model version included) as a ConfigMap file; secrets as files,
    not env vars: env leaks into crash dumps, /proc/<pid>/environ and ``kubectl describe``.
    """
    args = ["--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}"]
    mounts = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "model-cache", "mountPath": "/var/cache/recops"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(owner, track)}},
        {"name": "model-cache", "emptyDir": {"sizeLimit": "4Gi"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if spec.serving.feature_store:
        ref = spec.serving.feature_store.secret_ref
        for part in (
            _secret_file(
                "feature-store", "--redis-url-file", ref.name, ref.key, SECRET_MOUNT, FEATURE_STORE_FILE
            ),
            # the HMAC key of attribution tokens, shared by every pod and track (a token verifies on
            # any pod); optional: without it each pod signs with its own key (docs/runbook.md)
            _secret_file(
                "attribution-key",
                "--attribution-key-file",
                ref.name,
                ATTRIBUTION_KEY,
                ATTRIBUTION_MOUNT,
                ATTRIBUTION_KEY,
                optional=True,
            ),
        ):
            args += part[0]
            mounts.append(part[1])
            volumes.append(part[2])
    assistant = spec.search.assistant if spec.search else None
    if assistant is not None and assistant.api_key_secret_ref is not None:
        ref = assistant.api_key_secret_ref
        option, mount, volume = _secret_file(
            "assistant-key", "--assistant-key-file", ref.name, ref.key, ASSISTANT_MOUNT, ASSISTANT_KEY_FILE
        )
        args += option
        mounts.append(mount)
        volumes.append(volume)
    # the buckets of the model and search bundles, read-only (every track reads, none writes)
    oss = oss_volumes([spec.model.uri, spec.search.uri if spec.search else None])
    return _Files(args, mounts + oss.mounts, volumes + oss.volumes, oss.env)


def _probes() -> dict[str, Any]:
    """Ready once the bundle is loaded; alive while the process answers; a slow first load is not death."""
    return {
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
    }


def _serve_container(spec: RecommenderServiceSpec, image: str, files: _Files) -> dict[str, Any]:
    """The ``recops-serve`` container: its command line, port, resources, probes and hardening."""
    s = spec.serving
    return {
        "name": "serve",
        "image": image,
        "args": ["serve", *files.args, "--port", str(s.port)],
        "ports": [{"name": "http", "containerPort": s.port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": s.resources.requests.cpu, "memory": s.resources.requests.memory},
            "limits": {"cpu": s.resources.limits.cpu, "memory": s.resources.limits.memory},
        },
        **_probes(),
        "securityContext": pods.container_security_context(),
        "volumeMounts": files.mounts,
        **({"env": files.env} if files.env else {}),
    }


def _spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Spread a track's pods over zones and hosts, preferred (never blocks a scale-up)."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in (topo.ZONE_LABEL, "kubernetes.io/hostname")
    ]


def _pod_spec(
    spec: RecommenderServiceSpec, selector: dict[str, str], container: dict[str, Any], files: _Files
) -> tuple[dict[str, Any], dict[str, str]]:
    """(hardened, never-spot pod spec, pod annotations) around ``container``."""
    placement, annotations = _placement(spec)
    pod_spec = {
        **placement,
        **pods.hardened_pod_fields(),
        "terminationGracePeriodSeconds": 30,
        "securityContext": pods.pod_security_context(),
        "topologySpreadConstraints": _spread(selector),
        "containers": [container],
        "volumes": files.volumes,
    }
    return pod_spec, annotations


def render_deployment(
    owner: Owner,
    spec: RecommenderServiceSpec,
    *,
    track: str = "stable",
    version: str | None = None,
    image: str | None = None,
    replicas: int | None = None,
) -> dict[str, Any]:
    """An inference Deployment for one track. ``replicas`` None leaves scaling to the HPA."""
    version = version or spec.model.version
    selector = {"recops.io/service": owner.name, "recops.io/track": track}
    files = _files(owner, spec, track)
    container = _serve_container(spec, image or spec.serving.image, files)
    pod_spec, annotations = _pod_spec(spec, selector, container, files)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, deployment_name(owner, track), {"recops.io/track": track}),
        "spec": {
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(owner, track, version), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
    if replicas is not None:
        deployment["spec"]["replicas"] = replicas
    return deployment


def render_service(owner: Owner, spec: RecommenderServiceSpec) -> dict[str, Any]:
    """Intranet-only load balancer in front of every track (weights are the router's job)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **_meta(owner, owner.name),
            "annotations": {
                topo.SLB_ADDRESS_TYPE: topo.SLB_INTRANET,
                "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-instance-charge-type": "PayByCLCU",
                "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-additional-resource-tags": f"recops-service={owner.name},region={spec.region}",
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "selector": {"recops.io/service": owner.name, "recops.io/track": "stable"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_hpa(owner: Owner, spec: RecommenderServiceSpec) -> dict[str, Any]:
    """The plain HPA (no KEDA, no open sale window); see ``render.autoscaling``."""
    return autoscaling.render_hpa(
        owner, spec, None, meta=_meta(owner, owner.name), target=deployment_name(owner)
    )


def render_pdb(owner: Owner, spec: RecommenderServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner, owner.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"recops.io/service": owner.name, "recops.io/track": "stable"}},
        },
    }


def render_monitoring(owner: Owner, spec: RecommenderServiceSpec) -> list[dict[str, Any]]:
    """ServiceMonitor (relabels pod labels to recsvc/track) and a per-service PrometheusRule."""
    sel = f'namespace="{owner.namespace}",recsvc="{owner.name}"'
    p99 = spec.rollout.analysis.max_p99_latency_ms / 1000
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta(owner, owner.name),
            "spec": {
                "selector": {"matchLabels": {"recops.io/service": owner.name}},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics",
                        "interval": spec.monitoring.scrape_interval,
                        "relabelings": [
                            {
                                "sourceLabels": ["__meta_kubernetes_pod_label_recops_io_service"],
                                "targetLabel": "recsvc",
                            },
                            {
                                "sourceLabels": ["__meta_kubernetes_pod_label_recops_io_track"],
                                "targetLabel": "track",
                            },
                            {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": _meta(owner, owner.name),
            "spec": {
                "groups": [
                    {
                        "name": f"recops-{owner.name}",
                        "rules": [
                            {
                                "alert": "RecopsServiceP99High",
                                "expr": f'histogram_quantile(0.99, sum by (le) (rate(recops_http_request_duration_seconds_bucket{{{sel},route="recommendations"}}[5m]))) > {p99}',
                                "for": "5m",
                                "labels": {"severity": "page"},
                                "annotations": {
                                    "summary": f"{owner.namespace}/{owner.name} p99 above {spec.rollout.analysis.max_p99_latency_ms} ms"
                                },
                            }
                        ],
                    }
                ]
            },
        },
    ]


def render_serving(
    owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext | None = None
) -> list[dict[str, Any]]:
    """Every serving object for the stable track (serving the promoted candidate once promoted)."""
    from recops_operator.api.status import Phase
    from recops_operator.rollout.machine import stable_image, stable_search_version, stable_version

    ctx = ctx or RenderContext()
    st = RolloutStatus.of(ctx.rollout)
    version = stable_version(spec.model.version, spec.rollout, st)
    image = stable_image(spec.serving.image, spec.model.version, spec.rollout, st)
    searched = stable_search_version(
        spec.search.version if spec.search else None, spec.model.version, spec.rollout, st
    )
    shadow: dict[str, Any] = {}
    if st.phase == Phase.SHADOWING and spec.rollout.shadow.percent:
        # Mesh-free shadowing: stable pods mirror a sample (recommendations, search, retrieve) to
        # the candidate, which serves its own search bundle, and compare.
        shadow = {
            "shadow_url": f"http://{owner.name}-canary.{owner.namespace}.svc",
            "shadow_percent": spec.rollout.shadow.percent,
        }
    config = render_config_map(owner, spec, version, "stable", searched, **shadow)
    objs = [
        config,
        render_deployment(owner, spec, version=version, image=image),
        render_service(owner, spec),
        *autoscaling.render_autoscaler(
            owner, spec, ctx, meta=_meta(owner, owner.name), target=deployment_name(owner)
        ),
        render_pdb(owner, spec),
    ]
    if ctx.monitoring_available and spec.monitoring.service_monitor:
        objs.extend(render_monitoring(owner, spec))
    return objs
