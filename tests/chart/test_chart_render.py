"""The chart, rendered by the real helm: lint, least-privilege RBAC, hardened single-replica operator,
webhook with a certificate that verifies, schema-valid for Kubernetes 1.37."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509

from .helm import CHART, ROOT, by_kind, helm, template

MANAGE = ["get", "list", "watch", "create", "patch", "update", "delete"]
# The whole permission set, spelled out: a new verb or resource must be added here on purpose.
EXPECTED_RULES = [
    (["recops.io"], ["recommenderservices"], ["get", "list", "watch", "patch", "update"]),
    (["recops.io"], ["recommenderservices/status"], ["get", "patch", "update"]),
    (["recops.io"], ["recommenderservices/finalizers"], ["update"]),
    (["apps"], ["deployments"], MANAGE),
    ([""], ["services", "configmaps"], MANAGE),
    (["autoscaling"], ["horizontalpodautoscalers"], MANAGE),
    (["policy"], ["poddisruptionbudgets"], MANAGE),
    (["batch"], ["jobs", "cronjobs"], MANAGE),
    ([""], ["pods"], ["get", "list", "watch", "delete"]),
    ([""], ["pods/eviction"], ["create"]),
    ([""], ["pods/status"], ["patch"]),
    ([""], ["persistentvolumeclaims"], ["get", "list", "watch"]),  # StorageReady: bucket claims exist, Bound
    ([""], ["events"], ["get", "list", "watch", "create", "patch"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
    (["networking.k8s.io"], ["ingresses", "networkpolicies"], MANAGE),
    (["networking.istio.io"], ["virtualservices", "destinationrules"], MANAGE),
    (["monitoring.coreos.com"], ["servicemonitors", "prometheusrules"], MANAGE),
    (["keda.sh"], ["scaledobjects"], ["get", "create", "patch", "delete"]),
    (["flink.apache.org"], ["flinkdeployments"], ["get", "list", "watch", "create", "patch", "delete"]),
]


def _rules(docs):
    return [
        (r["apiGroups"], r["resources"], r["verbs"])
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
        for r in role["rules"]
    ]


def test_helm_lint_strict():
    out = helm("lint", str(CHART), "--strict")
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_rbac_is_exactly_what_the_operator_uses():
    rules = _rules(template())
    discovery = [
        (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
        ([""], ["namespaces"], ["get", "list", "watch"]),  # kopf's namespace observer
    ]
    assert sorted(rules) == sorted([*EXPECTED_RULES, *discovery])
    flat = [(g, r, v) for gs, rs, vs in rules for g in gs for r in rs for v in vs]
    assert not [x for x in flat if "*" in x], "no wildcards"
    for group, resource in [
        ("", "secrets"),
        ("", "nodes"),
        ("", "serviceaccounts"),
        ("", "namespaces"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    ]:
        writes = {v for g, r, v in flat if g == group and r == resource} - {"get", "list", "watch"}
        assert not writes, f"{group}/{resource} must not be writable: {writes}"
        if resource in ("secrets", "nodes", "serviceaccounts"):
            assert not [x for x in flat if x[:2] == (group, resource)], f"{resource} must not be readable"
    assert not [x for x in flat if x[1] == "pods" and x[2] in ("create", "patch", "update")]


def test_optional_integrations_drop_their_rules_and_namespaced_mode_binds_per_namespace():
    docs = template(
        "rbac.istio=false",
        "rbac.prometheusOperator=false",
        "rbac.flink=false",
        "operator.allNamespaces=false",
        "operator.watchNamespaces={shop,ads}",
    )
    groups = {g for gs, _, _ in _rules(docs) for g in gs}
    assert "networking.istio.io" not in groups and "monitoring.coreos.com" not in groups
    assert "flink.apache.org" not in groups
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ads", "shop"]
    assert [b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == [
        "recops-recops-operator-discovery"
    ]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=shop" in args and "--all-namespaces" not in args


def test_operator_deployment_is_single_recreate_hardened_and_probed():
    (dep,) = by_kind(template("operator.prometheusUrl=http://prom.monitoring:9090"), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]
    assert "--standalone" in c["args"] and "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (
        env["RECOPS_PROMETHEUS_URL"] == "http://prom.monitoring:9090"
        and env["RECOPS_DEFAULT_REGION"] == "cn-hangzhou"
    )
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == "recops-recops-operator"


def test_webhook_certificate_verifies_for_the_service_name():
    docs = template()
    (secret,) = by_kind(docs, "Secret")
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = vwc["webhooks"]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert hook["rules"][0]["resources"] == ["recommenderservices"] and hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    svc = hook["clientConfig"]["service"]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{svc['name']}.{svc['namespace']}.svc" in sans
    assert svc["name"] in {s["metadata"]["name"] for s in by_kind(docs, "Service")}


def test_cert_manager_option_and_monitoring_objects():
    docs = template(
        "webhook.certificate.source=cert-manager",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    )
    assert not by_kind(docs, "Secret") and by_kind(docs, "Certificate") and by_kind(docs, "Issuer")
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    assert "cert-manager.io/inject-ca-from" in vwc["metadata"]["annotations"]
    (rule,) = by_kind(docs, "PrometheusRule")
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "RecOpsServingLatencyP99High" in names
    assert by_kind(docs, "ServiceMonitor")


def test_bad_certificate_source_is_refused():
    res = helm("template", "x", str(CHART), "--set", "webhook.certificate.source=vault", check=False)
    assert res.returncode != 0 and "webhook.certificate.source must be helm or cert-manager" in res.stderr


def test_chart_crds_are_the_generated_ones():
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert shipped == generated, "run python dashboards/build.py to copy crds/ into the chart"
    for name in generated:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()


def test_rendered_objects_are_valid_kubernetes_1_37():
    kv = pytest.importorskip("kubernetes_validate")
    for doc in template():
        if doc["apiVersion"].startswith(("cert-manager", "monitoring.coreos.com", "recops.io")):
            continue
        kv.validate(doc, "1.37", strict=True)


OSS_SETS = (
    "ossVolumes.roleName=recops-oss-mount",
    "ossVolumes.buckets[0].name=retail-models-hz",
    "ossVolumes.buckets[0].namespaces[0]=recs",
    "ossVolumes.buckets[1].name=retail-data-hz",
    "ossVolumes.buckets[1].namespaces[0]=recs",
    "ossVolumes.buckets[1].readOnly=true",
    "ossVolumes.buckets[1].operator=false",
    "ossVolumes.buckets[1].region=cn-shanghai",
)


def test_oss_volumes_bind_each_bucket_claim_the_operator_renders_on_the_internal_endpoint():
    """Per bucket and namespace a CSI PV pre-bound to the claim the operator mounts
    (``recops_contracts.storage.claim_name``): RRSA, no keys, internal endpoint of the bucket's
    region, read-only where asked and always for the operator's own mount."""
    from recops_contracts import storage

    docs = template(*OSS_SETS)
    pvs = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolume")}
    pvcs = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in by_kind(docs, "PersistentVolumeClaim")
    }
    models, data = storage.claim_name("retail-models-hz"), storage.claim_name("retail-data-hz")
    assert set(pvcs) == {("recs", models), ("recs", data), ("recops-system", models)}
    for (ns, name), pvc in pvcs.items():
        pv = pvs[pvc["spec"]["volumeName"]]
        assert pv["spec"]["claimRef"] == {"namespace": ns, "name": name}
        assert pv["spec"]["accessModes"] == pvc["spec"]["accessModes"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        attrs = pv["spec"]["csi"]["volumeAttributes"]
        assert pv["spec"]["csi"]["driver"] == "ossplugin.csi.alibabacloud.com"
        assert attrs["authType"] == "rrsa" and attrs["roleName"] == "recops-oss-mount"
        assert not {"akId", "akSecret"} & set(attrs) and "nodePublishSecretRef" not in pv["spec"]["csi"]
        region = "cn-shanghai" if name == data else "cn-hangzhou"
        assert attrs["url"] == f"oss-{region}-internal.aliyuncs.com"
    modes = {k: v["spec"]["accessModes"] for k, v in pvcs.items()}
    assert modes == {
        ("recs", models): ["ReadWriteMany"],  # training writes bundles there
        ("recs", data): ["ReadOnlyMany"],
        ("recops-system", models): ["ReadOnlyMany"],  # the operator only reads manifests
    }
    op = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    c = op["containers"][0]
    assert {"name": "RECOPS_OSS_LOCAL_ROOT", "value": storage.OSS_ROOT} in c["env"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == f"{storage.OSS_ROOT}/retail-models-hz")
    assert mount["readOnly"] is True
    vol = next(v for v in op["volumes"] if v["name"] == mount["name"])
    assert vol["persistentVolumeClaim"] == {"claimName": models, "readOnly": True}
    assert not any("retail-data-hz" in m["mountPath"] for m in c["volumeMounts"])
    kv = pytest.importorskip("kubernetes_validate")
    for doc in [*pvs.values(), *pvcs.values()]:
        kv.validate(doc, "1.37", strict=True)


def test_oss_volumes_need_a_role_and_default_to_none():
    out = helm("template", "recops", str(CHART), "--set", "ossVolumes.buckets[0].name=b-hz", check=False)
    assert out.returncode != 0 and "ossVolumes: set roleName" in out.stderr
    docs = template()
    assert not by_kind(docs, "PersistentVolume") and not by_kind(docs, "PersistentVolumeClaim")
    env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "RECOPS_OSS_LOCAL_ROOT" not in {e["name"] for e in env}
