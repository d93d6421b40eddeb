"""Issue #18 acceptance: what would fail later is rejected at apply, naming the field; legitimate
edge cases are still admitted. Real kube-apiserver + etcd + KCM + scheduler + KWOK, the operator
and its webhook as a process; every case goes through `kubectl apply` (server-side dry run would
hide "nothing created", so it is a real apply).
"""

from __future__ import annotations

import pytest

from tests.support.kube import Operator, apply, feature_store_secret, get, service

pytestmark = pytest.mark.integration

ENTERPRISE_ACR = "shop-registry-vpc.cn-hangzhou.cr.aliyuncs.com"
RES = "serving__resources"
SEARCH = {
    "catalog": "oss://retail-data-cn-hangzhou/catalog.parquet",
    "uri": "oss://retail-models-cn-hangzhou/search/",
}

REJECTED = [
    # --- children the API server refuses (dry-run apply of every rendered child)
    (
        "cpu requests above limits",
        {RES: {"requests": {"cpu": "4", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}}},
        "spec.serving.resources.requests.cpu (4) exceeds spec.serving.resources.limits.cpu (1)",
    ),
    (
        "memory requests above limits",
        {RES: {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}},
        "spec.serving.resources.requests.memory (8Gi) exceeds spec.serving.resources.limits.memory (4Gi)",
    ),
    (
        "malformed schedule",
        {"training__schedule": "every night"},
        "spec.training.schedule: CronJob bad-2-train rejected spec.schedule: Invalid value",
    ),
    ("schedule with 6 fields", {"training__schedule": "0 0 2 * * *"}, "spec.training.schedule"),
    (
        "unknown time zone",
        {"training__timeZone": "Mars/Olympus_Mons"},
        "spec.training.timeZone: CronJob bad-4-train rejected spec.timeZone: Invalid value",
    ),
    ("time zone as an offset", {"training__timeZone": "UTC+8"}, "spec.timeZone"),
    ("name too long for the candidate Service", {"__name": "n" * 60}, f"Service {'n' * 60}-canary rejected"),
    (
        "secret key not a valid key",
        {"serving__featureStore__secretRef__key": "a/b"},
        "spec.serving.featureStore.secretRef.key in body should match",
    ),
    # --- residency and safety: one rule over every location-typed field
    (
        "image from another region's registry",
        {"serving__image": "registry-vpc.cn-shanghai.aliyuncs.com/recops/recops-serve:0.1.0"},
        "spec.serving.image: registry 'registry-vpc.cn-shanghai.aliyuncs.com' is in cn-shanghai",
    ),
    (
        "image from Docker Hub",
        {"serving__image": "nginx:1.27"},
        "spec.serving.image: cannot tell the region of registry 'docker.io'",
    ),
    (
        "training image from an unknown enterprise registry",
        {"training__image": "other-registry.cn-hangzhou.cr.aliyuncs.com/x/serve:1"},
        "spec.training.image: cannot tell the region",
    ),
    (
        "candidate image from another region",
        {
            "rollout__candidate": {
                "version": "2026-12-01",
                "image": "registry.ap-southeast-1.aliyuncs.com/r/s:1",
            }
        },
        "spec.rollout.candidate.image: registry 'registry.ap-southeast-1.aliyuncs.com' is in ap-southeast-1",
    ),
    (
        "model uri with ..",
        {"model__uri": "oss://retail-models-cn-hangzhou/home-feed/../other-shop/"},
        "spec.model.uri: 'oss://retail-models-cn-hangzhou/home-feed/../other-shop/' has a dot segment",
    ),
    ("model uri with .", {"model__uri": "oss://retail-models-cn-hangzhou/./home-feed/"}, "spec.model.uri"),
    (
        "checkpoint with encoded ..",
        {"training__checkpoint__uri": "oss://retail-models-cn-hangzhou/ckpt/%2e%2e/x/"},
        "spec.training.checkpoint.uri: 'oss://retail-models-cn-hangzhou/ckpt/%2e%2e/x/' has percent-encoded",
    ),
    (
        "events with an empty segment",
        {"training__data__events": "oss://shop-data-cn-hangzhou/a//b/"},
        "spec.training.data.events",
    ),
    (
        "credentials in a bucket uri",
        {"model__uri": "oss://AKID:secret@retail-models-cn-hangzhou/x/"},
        "spec.model.uri",
    ),
    (
        "prometheus at the metadata service",
        {"rollout__prometheusURL": "http://100.100.100.200/latest/meta-data"},
        "spec.rollout.prometheusURL: host '100.100.100.200' is link-local or the instance metadata service",
    ),
    (
        "prometheus link-local",
        {"rollout__prometheusURL": "http://169.254.10.1:9090"},
        "spec.rollout.prometheusURL: host '169.254.10.1' is link-local",
    ),
    (
        "prometheus public IP",
        {"rollout__prometheusURL": "http://8.8.8.8:9090"},
        "spec.rollout.prometheusURL: host '8.8.8.8' is a public address",
    ),
    (
        "prometheus dot segments",
        {"rollout__prometheusURL": "http://prometheus.monitoring.svc:9090/../admin"},
        "spec.rollout.prometheusURL: path has a dot segment",
    ),
    (
        "traffic host the metadata service",
        {"rollout__traffic__host": "100.100.100.200"},
        "spec.rollout.traffic.host: host '100.100.100.200'",
    ),
    (
        "egress to the whole internet",
        {"network__objectStorageCIDRs": ["0.0.0.0/0"]},
        "spec.network.objectStorageCIDRs[0]: '0.0.0.0/0' includes public addresses",
    ),
    (
        "callers from link-local",
        {"network__allowCIDRs": ["169.254.0.0/16"]},
        "spec.network.allowCIDRs[0]: '169.254.0.0/16' includes link-local addresses",
    ),
    (
        "assistant on another region's model API",
        {
            "search": {
                **SEARCH,
                "assistant": {
                    "endpoint": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
                    "model": "qwen-plus",
                },
            }
        },
        "spec.search.assistant.endpoint: model API 'dashscope-intl.aliyuncs.com' is in ap-southeast-1, outside spec.region cn-hangzhou",
    ),
    (
        "assistant key inlined in the URL",
        {"search": {**SEARCH, "assistant": {"endpoint": "http://user:sk-1@llm.ai.svc/v1", "model": "m"}}},
        "spec.search.assistant.endpoint in body should match",
    ),
    # --- floors and ranges in the schema (the API server itself, messages with the bound)
    ("rollout interval of zero", {"rollout__interval": "0s"}, "rollout.interval must be between 5s and 1h"),
    ("rollout interval of 4s", {"rollout__interval": "4s"}, "rollout.interval must be between 5s and 1h"),
    (
        "rollout interval of a day",
        {"rollout__interval": "24h"},
        "rollout.interval must be between 5s and 1h",
    ),
    (
        "scrape interval of zero",
        {"monitoring__scrapeInterval": "0s"},
        "monitoring.scrapeInterval must be between 5s and 5m",
    ),
    (
        "progress deadline of years",
        {"rollout__progressDeadlineSeconds": 10**9},
        "spec.rollout.progressDeadlineSeconds: Invalid value",
    ),
    (
        "min requests absurd",
        {"rollout__analysis__minRequests": 10**9},
        "should be less than or equal to 10000000",
    ),
    ("shadow above 100%", {"rollout__shadow__percent": 150}, "spec.rollout.shadow.percent"),
    ("a step of 0%", {"rollout__steps": [0, 100]}, "spec.rollout.steps[0]"),
]

ADMITTED = [
    ("the example", {}),
    ("single replica", {"serving__replicas": {"min": 1, "max": 1}}),
    ("a single 100% step", {"rollout__steps": [100]}),
    ("in-cluster Prometheus", {"rollout__prometheusURL": "http://prometheus-k8s.monitoring.svc:9090"}),
    (
        "regional ARMS Prometheus",
        {
            "rollout__prometheusURL": "https://cn-hangzhou.arms.aliyuncs.com/api/v1/prometheus/abc/123/cn-hangzhou"
        },
    ),
    (
        "internal OSS endpoint",
        {"model__uri": "oss://anybucket.oss-cn-hangzhou-internal.aliyuncs.com/home-feed/"},
    ),
    ("long name (56 chars, the longest whose candidate Service fits)", {"__name": "l" * 56}),
    (
        "enterprise ACR instance from the registry list",
        {"serving__image": f"{ENTERPRISE_ACR}/recops/recops-serve:0.1.0"},
    ),
    (
        "digest-pinned image",
        {"serving__image": "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-serve@sha256:" + "a" * 64},
    ),
    (
        "requests equal limits",
        {RES: {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1000m", "memory": "2048Mi"}}},
    ),
    ("schedule with a time zone", {"training__schedule": "0 2 * * *", "training__timeZone": "Asia/Shanghai"}),
    ("interval at the floor", {"rollout__interval": "5s"}),
    (
        "assistant on the region's PAI-EAS VPC endpoint",
        {
            "search": {
                **SEARCH,
                "assistant": {
                    "endpoint": "http://1234567.vpc.cn-hangzhou.pai-eas.aliyuncs.com/api/predict/qwen/v1",
                    "model": "qwen2.5-7b-instruct",
                    "apiKeySecretRef": {"name": "llm-key"},
                },
            }
        },
    ),
]


def _body(label: str, i: int, overrides: dict, prefix: str):
    overrides = dict(overrides)
    name = overrides.pop("__name", f"{prefix}-{i}")
    return service(name, **overrides)


@pytest.fixture
def operator_with_registry(k8s_cluster, k8s_namespace, tmp_path):
    feature_store_secret(k8s_cluster, k8s_namespace)
    op = Operator(
        k8s_cluster,
        k8s_namespace,
        tmp_path / "operator.log",
        {"RECOPS_REGISTRY_REGIONS": f"{ENTERPRISE_ACR}=cn-hangzhou"},
    ).start()
    try:
        yield op
    finally:
        op.stop()


def test_issue_18_table_rejected_at_apply_naming_the_field(
    k8s_cluster, k8s_namespace, operator_with_registry
):
    ns = k8s_namespace
    assert len(REJECTED) + len(ADMITTED) >= 30
    failures = []
    for i, (label, overrides, expected) in enumerate(REJECTED):
        res = apply(k8s_cluster, ns, _body(label, i, overrides, "bad"), check=False)
        if res.returncode == 0 or expected not in res.stderr:
            failures.append(f"{label}: rc={res.returncode} stderr={res.stderr.strip()[:400]}")
    assert not failures, "\n".join(failures)
    assert get(k8s_cluster, ns, "recsvc")["items"] == []
    for kind in ("deploy", "svc", "cm", "cronjob", "job", "hpa", "pdb", "ingress"):
        assert get(k8s_cluster, ns, kind, "-l", "app.kubernetes.io/managed-by=recops")["items"] == [], kind

    for i, (label, overrides) in enumerate(ADMITTED):
        res = apply(k8s_cluster, ns, _body(label, i, overrides, "ok"), check=False)
        if res.returncode != 0:
            failures.append(f"{label}: rejected: {res.stderr.strip()[:400]}")
    assert not failures, "\n".join(failures)
