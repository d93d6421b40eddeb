"""helm install into the real local control plane (server-side validation), then the installed RBAC is
proven sufficient by running the operator's spot-notice e2e scenario under the chart ServiceAccount's own
token (TokenRequest API), and proven minimal with SubjectAccessReviews for what it must not do."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from .helm import CHART, helm

pytestmark = pytest.mark.integration


def _install_example() -> dict:
    text = (CHART.parents[1] / "docs" / "install.md").read_text()
    start = text.index("kubectl apply -f - <<'YAML'\n") + len("kubectl apply -f - <<'YAML'\n")
    return yaml.safe_load(text[start : text.index("\nYAML\n", start)])


def test_install_guide_example_is_accepted_by_the_chart_crd(cluster, namespace):
    """docs/install.md's first RecommenderService passes the API server's schema and CEL rules (server-side
    dry run against the CRD shipped in the chart); a broken variant is refused with the CEL message."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/recommenderservices.recops.io", "--timeout=30s"
    )
    obj = _install_example()
    obj["metadata"]["namespace"] = namespace
    ok = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    assert ok.returncode == 0, ok.stderr
    obj["spec"]["experiment"]["holdout"]["salt"] = ""
    bad = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    assert bad.returncode != 0 and "holdout.salt is required" in bad.stderr, bad.stderr


@pytest.fixture(scope="module")
def release(cluster):
    """The chart installed by helm into its own namespace; uninstalled afterwards."""
    suffix = uuid.uuid4().hex[:5]
    name, ns = f"recops-{suffix}", f"recops-system-{suffix}"
    env = cluster.env
    common = ["--namespace", ns, "--kubeconfig", str(cluster.kubeconfig)]
    # server-side dry run: every object validated by the API server (schemas, RBAC escalation checks)
    dry = helm("install", name, str(CHART), *common, "--create-namespace", "--dry-run=server", env=env)
    assert "STATUS: pending-install" in dry.stdout
    helm("install", name, str(CHART), *common, "--create-namespace", "--wait", "--timeout", "120s", env=env)
    try:
        yield {
            "name": name,
            "ns": ns,
            "sa": f"{name}-recops-operator" if "recops-operator" not in name else name,
            "common": common,
        }
    finally:
        helm("uninstall", name, *common, "--wait", "--timeout", "60s", env=env, check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _get(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_installed_operator_runs_on_on_demand_capacity(cluster, release):
    dep = _get(cluster, "deployment", "-n", release["ns"], release["sa"])
    assert dep["status"]["availableReplicas"] == 1
    (pod,) = _get(
        cluster, "pods", "-n", release["ns"], "-l", f"app.kubernetes.io/instance={release['name']}"
    )["items"]
    node = _get(cluster, "node", pod["spec"]["nodeName"])
    from recops_contracts import topology

    assert node["metadata"]["labels"].get(topology.CAPACITY_LABEL) != topology.CAPACITY_SPOT
    assert pod["spec"]["serviceAccountName"] == release["sa"]


def test_upgrade_keeps_the_webhook_certificate(cluster, release):
    secret = f"{release['sa']}-webhook-tls"
    before = _get(cluster, "secret", "-n", release["ns"], secret)["data"]
    helm("upgrade", release["name"], str(CHART), *release["common"], "--reuse-values", env=cluster.env)
    after = _get(cluster, "secret", "-n", release["ns"], secret)["data"]
    assert before == after
    vwc = _get(cluster, "validatingwebhookconfiguration", release["sa"])
    assert vwc["webhooks"][0]["clientConfig"]["caBundle"] == after["ca.crt"]


MUST = [  # (verb, resource, subresource-less) the operator's calls, in a workload namespace
    ("patch", "recommenderservices.recops.io"),
    ("patch", "recommenderservices.recops.io/status"),
    ("update", "recommenderservices.recops.io/finalizers"),
    ("watch", "recommenderservices.recops.io"),
    ("create", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("patch", "services"),
    ("patch", "configmaps"),
    ("patch", "horizontalpodautoscalers.autoscaling"),
    ("patch", "poddisruptionbudgets.policy"),
    ("create", "jobs.batch"),
    ("patch", "cronjobs.batch"),
    ("delete", "pods"),
    ("create", "pods/eviction"),
    ("patch", "pods/status"),
    ("create", "events"),
    ("patch", "ingresses.networking.k8s.io"),
    ("patch", "virtualservices.networking.istio.io"),
    ("patch", "servicemonitors.monitoring.coreos.com"),
    ("patch", "scaledobjects.keda.sh"),
    ("delete", "scaledobjects.keda.sh"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
]
MUST_NOT = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("patch", "pods"),
    ("patch", "nodes"),
    ("list", "nodes"),
    ("create", "serviceaccounts/token"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("patch", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "recommenderservices.recops.io"),
    ("delete", "recommenderservices.recops.io"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "namespaces"),
    ("get", "configmaps/proxy"),
    ("impersonate", "users"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("list", "scaledobjects.keda.sh"),
    ("patch", "triggerauthentications.keda.sh"),
]


def _can(cluster, release, verb, resource, ns="shop") -> bool:
    """A SubjectAccessReview for the ServiceAccount (works for CRDs that are not installed here, too)."""
    resource, _, sub = resource.partition("/")
    res, _, group = resource.partition(".")
    sar = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{release['ns']}:{release['sa']}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{release['ns']}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "namespace": ns,
                "verb": verb,
                "group": group,
                "resource": res,
                "subresource": sub,
            },
        },
    }
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(sar)).stdout
    return json.loads(out)["status"].get("allowed", False)


def test_service_account_can_do_what_the_operator_does_and_nothing_more(cluster, release):
    missing = [m for m in MUST if not _can(cluster, release, *m)]
    assert not missing, f"chart RBAC lacks {missing}"
    extra = [m for m in MUST_NOT if _can(cluster, release, *m)]
    assert not extra, f"chart RBAC grants {extra}"


def _token_kubeconfig(cluster, release, tmp_path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount with a TokenRequest token."""
    token = cluster.kubectl(
        "create", "token", release["sa"], "-n", release["ns"], "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    clu = admin["clusters"][0]["cluster"]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": clu}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_operator_e2e_scenario_runs_under_the_chart_identity(
    cluster, release, namespace, tmp_path, monkeypatch
):
    """The training engineer's operator scenario (kopf handlers in-process, SpotToBeReleased -> eviction ->
    replacement -> counted preemption), with the operator authenticated as the chart's ServiceAccount."""
    import kubernetes.config.kube_config as kube_config
    from kopf.testing import KopfRunner
    from kubernetes import client, config

    from recops_operator.controller import CONTROLLER
    from tests.support.training import answer_spot_release_notice, training_registry
    from tests.training.conftest import service

    kubeconfig = _token_kubeconfig(cluster, release, tmp_path)
    whoami = cluster.kubectl("auth", "whoami", f"--kubeconfig={kubeconfig}", "-o", "json").stdout
    assert json.loads(whoami)["status"]["userInfo"]["username"].endswith(f":{release['sa']}")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    monkeypatch.setattr(CONTROLLER, "_api", client.ApiClient(cfg))
    args = ["run", "--standalone", "--namespace", namespace, "-m", "recops_operator.training.handlers"]
    # only the training handlers: other modules in this process may have registered admission handlers
    with KopfRunner(args, timeout=90, registry=training_registry()) as runner:
        time.sleep(2)
        answer_spot_release_notice(cluster, namespace, service, "event")
    assert runner.exception is None, runner.output[-3000:]
    assert "forbidden" not in runner.output.lower(), runner.output[-3000:]  # APIForbiddenError, 403s
    _operator_metrics_feed_the_dashboards(namespace, tmp_path)


def _operator_metrics_feed_the_dashboards(namespace: str, tmp_path: Path) -> None:
    """The operator registry that just counted the preemption, scraped by a real Prometheus: the rollouts
    dashboard's preemption panel and the preemption alert's signal return this namespace's data."""
    import sys

    from tests.support.prometheus_server import scraping_this_process

    sys.path.insert(0, str(CHART.parents[1] / "dashboards"))
    from alerts import ALERTS
    from panels import ROLLOUTS, concrete

    with scraping_this_process(tmp_path / "prom") as prom:
        raw = prom.wait_for(f'recops_training_preemptions_total{{namespace="{namespace}"}}')
        assert [float(s["value"][1]) for s in raw] == [1.0]
        time.sleep(2)  # a second scrape for increase()
        (panel,) = [p for p in ROLLOUTS.panels if "preemptions" in p.title]
        got = prom.query(concrete(panel.queries[0].expr))
        assert any(s["metric"].get("recsvc") for s in got), got
        (alert,) = [a for a in ALERTS if a.name == "RecOpsTrainingPreemptedTooOften"]
        assert prom.query(alert.expr.rsplit(" > ", 1)[0])


def test_full_operator_reconciles_the_install_example_under_the_chart_identity(
    cluster, release, namespace, tmp_path
):
    """`recops-operator run` as a real process, authenticated only by the chart ServiceAccount's token, takes
    docs/install.md's RecommenderService to Ready with all its children, never hitting a 403; its real
    /metrics endpoint, scraped by Prometheus, feeds the rollouts dashboard's reconcile panel."""
    from tests.support.prometheus_server import PrometheusServer, Target, free_port

    kubeconfig = _token_kubeconfig(cluster, release, tmp_path)
    # The chart's webhook points at the in-cluster Service, whose KWOK pod serves nothing: take it out of
    # the path (the webhook itself is the operator-core tests' subject).
    cluster.kubectl("delete", "validatingwebhookconfiguration", release["sa"], check=False)
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "tair-credentials",
        "-n",
        namespace,
        "--from-literal=url=redis://127.0.0.1:6379/0",
    )
    health, metrics, hook = free_port(), free_port(), free_port()
    # The webhook server runs as in the pod: with the chart's TLS Secret mounted as a directory.
    tls = tmp_path / "tls"
    tls.mkdir()
    secret = _get(cluster, "secret", "-n", release["ns"], f"{release['sa']}-webhook-tls")
    for key, value in secret["data"].items():
        (tls / key).write_bytes(base64.b64decode(value))
    log = tmp_path / "operator.log"
    env = {
        **cluster.env,
        "KUBECONFIG": str(kubeconfig),
        "RECOPS_METRICS_PORT": str(metrics),
        "RECOPS_METRICS_ADDR": "127.0.0.1",
        "RECOPS_RESYNC_SECONDS": "5",
        "RECOPS_WEBHOOK_PORT": str(hook),
        "RECOPS_WEBHOOK_CERT_DIR": str(tls),
        "RECOPS_WEBHOOK_HOST": "127.0.0.1",
    }
    exe = Path(sys.executable).parent / "recops-operator"
    proc = subprocess.Popen(
        [
            str(exe),
            "run",
            "--standalone",
            f"--namespace={namespace}",
            f"--liveness=http://127.0.0.1:{health}/healthz",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        obj = _install_example()
        obj["metadata"]["namespace"] = namespace
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
        deadline = time.monotonic() + 90
        while True:
            cr = _get(cluster, "recsvc", "-n", namespace, obj["metadata"]["name"])
            ready = [c for c in cr.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            if ready and ready[0]["status"] == "True":
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not Ready: {cr.get('status')}\n{log.read_text()[-3000:]}"
            time.sleep(1)
        kinds = {
            o["kind"]
            for o in _get(
                cluster,
                "deploy,svc,cm,hpa,pdb",
                "-n",
                namespace,
                "-l",
                f"recops.io/service={obj['metadata']['name']}",
            )["items"]
        }
        assert {
            "Deployment",
            "Service",
            "ConfigMap",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        } <= kinds
        with PrometheusServer(
            tmp_path / "prom", [Target(f"127.0.0.1:{metrics}", job="recops-operator")]
        ) as prom:
            assert prom.wait_for('recops_operator_reconcile_total{job="recops-operator"}')
            time.sleep(2)
            sys.path.insert(0, str(CHART.parents[1] / "dashboards"))
            from panels import ROLLOUTS, concrete

            (panel,) = [p for p in ROLLOUTS.panels if p.title.startswith("Operator reconciles")]
            assert prom.query(concrete(panel.queries[0].expr))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()
    assert "forbidden" not in text.lower(), text[-3000:]
