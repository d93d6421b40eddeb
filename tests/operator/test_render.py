"""The serving renderer: hardened, placed correctly, never on spot, schema-valid for Kubernetes 1.37."""

from __future__ import annotations

import kubernetes_validate
import pytest

from recops_contracts import topology as topo
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.training.invariants import check_capacity_invariants
from tests.support.specs import spec

OWNER = Owner(name="home-feed", namespace="shop", uid="0b7c6b3e-0000-4000-8000-000000000001")


def by_kind(objs):
    return {o["kind"]: o for o in objs}


@pytest.mark.parametrize("placement", ["eci", "nodes"])
@pytest.mark.parametrize("monitoring", [False, True])
def test_objects_are_valid_for_kubernetes_1_37(placement, monitoring):
    for obj in desired_objects(
        OWNER, spec(placement=placement), RenderContext(monitoring_available=monitoring)
    ):
        if obj["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # not a core schema; shape asserted below
        kubernetes_validate.validate(obj, "1.37", strict=True)


def test_kinds_and_ownership():
    objs = desired_objects(OWNER, spec(), RenderContext(monitoring_available=True))
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "PrometheusRule",
            "NetworkPolicy",  # stable track
            "NetworkPolicy",  # canary track
        ]
    )
    for o in objs:
        ref = o["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("RecommenderService", OWNER.uid, True)
        assert o["metadata"]["labels"]["recops.io/service"] == OWNER.name
    assert "ServiceMonitor" not in by_kind(
        desired_objects(OWNER, spec(), RenderContext(monitoring_available=False))
    )


def test_pod_is_hardened():
    pod = by_kind(desired_objects(OWNER, spec()))["Deployment"]["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        topo.ZONE_LABEL,
        "kubernetes.io/hostname",
    }
    # the feature-store Secret is a read-only file named by an argument, never an env var
    # (the one variable is where the OSS buckets are mounted: a path, no secret)
    assert c.get("env") == [{"name": "RECOPS_OSS_LOCAL_ROOT", "value": "/mnt/oss"}], c.get("env")
    args = c["args"]
    url_file = args[args.index("--redis-url-file") + 1]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "feature-store")
    assert mount["readOnly"] and url_file.startswith(mount["mountPath"] + "/")
    vol = next(v for v in pod["volumes"] if v["name"] == "feature-store")["secret"]
    assert vol["secretName"] == "tair" and vol["items"] == [
        {"key": "url", "path": url_file.rsplit("/", 1)[1]}
    ]
    key_file = args[args.index("--attribution-key-file") + 1]
    key_mount = next(m for m in c["volumeMounts"] if m["name"] == "attribution-key")
    assert key_mount["readOnly"] and key_file.startswith(key_mount["mountPath"] + "/")
    key_vol = next(v for v in pod["volumes"] if v["name"] == "attribution-key")["secret"]
    assert key_vol["secretName"] == "tair" and key_vol["optional"] is True
    assert key_vol["items"] == [{"key": "attribution-key", "path": "attribution-key"}]


def test_eci_placement_and_never_spot():
    eci = by_kind(desired_objects(OWNER, spec(placement="eci", eci={"useSpecs": ["2-4Gi"]})))["Deployment"][
        "spec"
    ]["template"]
    assert eci["spec"]["nodeSelector"] == {"type": "virtual-kubelet"}
    assert topo.ECI_TAINT.toleration() in eci["spec"]["tolerations"]
    assert eci["metadata"]["annotations"][topo.ECI_AUTO_IMAGE_CACHE] == "true"
    assert eci["metadata"]["annotations"][topo.ECI_USE_SPECS] == "2-4Gi"
    nodes = by_kind(desired_objects(OWNER, spec(placement="nodes")))["Deployment"]["spec"]["template"]
    assert nodes["spec"]["nodeSelector"] == {topo.CAPACITY_LABEL: topo.CAPACITY_ON_DEMAND}
    for tpl in (eci, nodes):
        terms = tpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert terms == [{"matchExpressions": topo.not_spot_node_affinity_terms()}]
        assert not any(t.get("key") == topo.SPOT_TAINT.key for t in tpl["spec"].get("tolerations", []))
    # The shared capacity invariant (also used by the admission webhook) agrees.
    for placement in ("eci", "nodes"):
        assert check_capacity_invariants(desired_objects(OWNER, spec(placement=placement))) == []


def test_service_is_intranet_only_and_hpa_bounds():
    objs = by_kind(desired_objects(OWNER, spec(replicas={"min": 3, "max": 50})))
    assert objs["Service"]["metadata"]["annotations"][topo.SLB_ADDRESS_TYPE] == "intranet"
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 50)
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}
    assert "replicas" not in objs["Deployment"]["spec"], "the HPA owns replicas"


def test_render_is_deterministic():
    assert desired_objects(OWNER, spec()) == desired_objects(OWNER, spec())


# Every spec.serving field the server must act on, with a non-default value: each one must change the
# config file the server reads (a spec field the server does not read cannot exist). Fields that shape
# the pod rather than the server (image, placement, replicas, ...) are listed apart.
SERVER_FIELDS = {
    "topK": 20,
    "sessionLength": 5,
    "featureStore": {"secretRef": {"name": "tair"}, "sessionTTLSeconds": 600, "maxSessionEvents": 20},
    "fallback": {"strategy": "popularity", "newItemBoostHours": 0},
    "exclude": {"purchased": True, "seen": False},
    "rules": {"excludeCategories": ["FUEL"], "maxPerCategory": 2},
}
POD_FIELDS = {"image", "placement", "replicas", "autoscaling", "resources", "eci", "port"}


def _config(s: RecommenderServiceSpec) -> dict:
    import json

    from recops_operator.render.serving import CONFIG_FILE, render_config_map

    return json.loads(render_config_map(OWNER, s, s.model.version)["data"][CONFIG_FILE])


def test_every_serving_field_reaches_the_servers_typed_config():
    from recops_contracts.serving import ServeConfig
    from recops_operator.api.models import Serving

    wire = {f.alias or n for n, f in Serving.model_fields.items()}
    assert wire == set(SERVER_FIELDS) | POD_FIELDS, "a new serving field must be classified here"
    base = _config(spec())
    ServeConfig.model_validate(base)  # strict: the server refuses unknown keys
    for field, value in SERVER_FIELDS.items():
        changed = _config(spec(**{field: value}))
        ServeConfig.model_validate(changed)
        assert changed != base, f"spec.serving.{field} does not reach the server"
    cfg = ServeConfig.model_validate(_config(spec(**SERVER_FIELDS)))
    assert (cfg.top_k, cfg.session_length, cfg.session_ttl_seconds, cfg.max_session_events) == (
        20,
        5,
        600,
        20,
    )
    assert (cfg.fallback_strategy, cfg.new_item_boost_hours) == ("popularity", 0)
    assert (cfg.exclude.purchased, cfg.exclude.seen) == (True, False)
    assert (cfg.rules.exclude_categories, cfg.rules.max_per_category) == (["FUEL"], 2)
    # unset exclusions stay unset: the server then uses the policy the trainer measured
    assert ServeConfig.model_validate(base).exclude.purchased is None


def test_defaults_are_written_once():
    from recops_contracts import serving as defaults
    from recops_operator.api.models import FeatureStore, Serving

    s = Serving(image="x")
    fs = FeatureStore(secret_ref={"name": "t"})
    assert (s.top_k, s.session_length, s.fallback.strategy) == (
        defaults.TOP_K,
        defaults.SESSION_LENGTH,
        defaults.FALLBACK_STRATEGY,
    )
    assert (fs.session_ttl_seconds, fs.max_session_events) == (
        defaults.SESSION_TTL_SECONDS,
        defaults.MAX_SESSION_EVENTS,
    )


def test_one_network_policy_per_track_least_privilege():
    full = RecommenderServiceSpec.model_validate(
        {
            **spec().model_dump(by_alias=True, exclude_none=True),
            "training": {
                "data": {"events": "builtin:completejourney"},
                "checkpoint": {"uri": "oss://b-cn-hangzhou/c/"},
            },
            "network": {"allowNamespaces": ["ingress-nginx"]},
        }
    )
    pols = {
        o["metadata"]["name"]: o["spec"] for o in desired_objects(OWNER, full) if o["kind"] == "NetworkPolicy"
    }
    assert set(pols) == {"home-feed-stable", "home-feed-canary", "home-feed-training"}
    for p in pols.values():
        assert p["policyTypes"] == ["Ingress", "Egress"]
        assert p["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        assert all(
            "ipBlock" not in peer or peer["ipBlock"]["cidr"] != "0.0.0.0/0"
            for r in p["egress"]
            for peer in r["to"]
        )
    stable = pols["home-feed-stable"]
    assert stable["podSelector"]["matchLabels"] == {
        "recops.io/service": "home-feed",
        "recops.io/track": "stable",
    }
    (rule,) = stable["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    names = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in rule["from"]
        if "namespaceSelector" in p
    ]
    assert names == ["ingress-nginx", "monitoring"]
    redis = [r for r in stable["egress"] if r["ports"] == [{"protocol": "TCP", "port": 6379}]]
    assert len(redis) == 1, "the feature store is reachable from serving"
    assert pols["home-feed-training"]["ingress"] == [], "nothing calls a training pod"
    oss = next(
        r for r in pols["home-feed-training"]["egress"] if {"protocol": "TCP", "port": 443} in r["ports"]
    )
    assert oss["to"] == [{"ipBlock": {"cidr": "100.64.0.0/10", "except": ["100.100.100.200/32"]}}], (
        "the instance metadata service sits in the OSS service range and is carved out"
    )
    assert not any(
        r["ports"] == [{"protocol": "TCP", "port": 6379}] for r in pols["home-feed-training"]["egress"]
    )
    canary_from = pols["home-feed-canary"]["ingress"][0]["from"]
    assert {"podSelector": stable["podSelector"]} in canary_from, "stable pods mirror to the canary"
