"""spec.features.stream on the real control plane, the operator as a subprocess (its own kopf, webhook
and applier): first without the flink.apache.org CRDs (a condition and an Event say so), then with a
FlinkDeployment CRD installed: the object is created and updated from the spec, and a status patched
onto it as the Flink operator would shows up in the RecommenderService's status and conditions.

The FlinkDeployment CRD here is the Apache Flink Kubernetes Operator's own (1.10.0, as its API jar
from Maven Central carries it: scripts/build-flink-crd.sh, part of ``make test``), so the API server
checks our FlinkDeployment against the Flink operator's schema, and a field that schema does not
know would be pruned: the test asserts that everything rendered survives. It is installed by this
module only, never put in crds/ (the session cluster installs every CRD there), and removed again
at the end. Operator 1.10's schema stops at flinkVersion v1_20, so the service here asks for v1_20
(the image that carries Flink 1.20), and the default v2_3 is shown refused at admission. The two tests run in this
order; the first removes a leftover CRD before it starts. The last one reads the job's lag from a
real Prometheus whose TSDB is backfilled (promtool) with the Kafka source's pendingRecords gauge as
the Flink reporter exports it per TaskManager pod.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.apply import is_subset
from recops_operator.render import Owner
from recops_operator.render import stream as stream_render
from tests.support.kube import Operator, apply, feature_store_secret, get, service, wait_for
from tests.support.prometheus_server import PrometheusServer

pytestmark = pytest.mark.integration

CRD_NAME = "flinkdeployments.flink.apache.org"
ROOT = Path(__file__).resolve().parents[2]


def _flink_crd() -> dict:
    """The Flink operator's FlinkDeployment CRD (apiextensions v1), from the cached API jar."""
    out = subprocess.run([str(ROOT / "scripts" / "build-flink-crd.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load((Path(out.stdout.strip().splitlines()[-1]) / f"{CRD_NAME}-v1.yml").read_text())


FLINK_CRD = _flink_crd()


def _install_flink_crd(cluster) -> None:
    """Server-side apply (the CRD is ~500 KB: past the client-side last-applied annotation's limit),
    then wait until it is Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(FLINK_CRD))

    def established() -> bool:
        crd = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    wait_for(established, timeout=60, what="the FlinkDeployment CRD Established")


STREAM = {
    "image": "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-stream:0.1.0",
    "flinkVersion": "v1_20",  # the newest the 1.10 operator's schema knows
    "kafka": {"bootstrapSecretRef": {"name": "kafka-bootstrap"}},
    "checkpointURI": "oss://recops-state-cn-hangzhou/home-feed/",
    "archiveURI": "oss://retail-events-cn-hangzhou/home-feed/",
}


def _secrets(cluster, ns):
    feature_store_secret(cluster, ns)
    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "kafka-bootstrap", "--from-literal=bootstrap=k:9092"
    )


def _condition(cluster, ns, ctype="StreamJobReady"):
    body = get(cluster, ns, "recsvc", "home-feed") or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def _events(cluster, ns, reason):
    items = get(cluster, ns, "events", "--field-selector", "involvedObject.name=home-feed")["items"]
    return [e for e in items if e.get("reason") == reason]


def _crd_present(cluster) -> bool:
    return cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0


def test_without_the_flink_crds_a_condition_and_an_event_say_so(k8s_cluster, k8s_namespace, tmp_path):
    ns = k8s_namespace
    if _crd_present(k8s_cluster):  # a leftover of an interrupted run of the next test
        k8s_cluster.kubectl("delete", "crd", CRD_NAME, "--wait=true")
    _secrets(k8s_cluster, ns)
    op = Operator(k8s_cluster, ns, tmp_path / "operator.log").start()
    try:
        bad = service(features={"stream": {**STREAM, "checkpointURI": "oss://state-cn-shanghai/x/"}})
        res = apply(k8s_cluster, ns, bad, check=False)
        assert (
            res.returncode != 0
            and "features.stream.checkpointURI" in res.stderr
            and "cn-shanghai" in res.stderr
        )
        cel = service(features={"stream": {**STREAM, "windows": {"trending": "20m", "trendingSlide": "7s"}}})
        res = apply(k8s_cluster, ns, cel, check=False)
        assert "features.stream.windows.trending must be a multiple of windows.trendingSlide" in res.stderr
        res = apply(
            k8s_cluster, ns, service(features={"stream": STREAM}, serving__featureStore=None), check=False
        )
        assert "features.stream writes into the feature store" in res.stderr

        apply(k8s_cluster, ns, service(features={"stream": STREAM}))
        cond = wait_for(
            lambda: (c := _condition(k8s_cluster, ns)) and c["reason"] == "CRDsMissing" and c,
            timeout=90,
            what="StreamJobReady=CRDsMissing",
        )
        assert cond["status"] == "False" and "flink.apache.org CRDs are not installed" in cond["message"]
        (event,) = wait_for(
            lambda: _events(k8s_cluster, ns, "FlinkCRDsMissing"), timeout=30, what="the Event"
        )
        assert event["type"] == "Warning"
        assert get(k8s_cluster, ns, "recsvc", "home-feed")["status"].get("stream") is None
    finally:
        op.stop()


def test_flink_deployment_is_applied_and_its_status_reaches_ours(k8s_cluster, k8s_namespace, tmp_path):
    ns = k8s_namespace
    _install_flink_crd(k8s_cluster)
    _secrets(k8s_cluster, ns)
    # no resync within the test: the FlinkDeployment's status reaches ours through the child watch
    op = Operator(k8s_cluster, ns, tmp_path / "operator.log", {"RECOPS_RESYNC_SECONDS": "3600"}).start()
    try:
        # the spec's default flinkVersion (v2_3) is outside operator 1.10's schema: refused at apply,
        # by the webhook's dry run of the FlinkDeployment, naming the field
        newer = {k: v for k, v in STREAM.items() if k != "flinkVersion"}
        res = apply(k8s_cluster, ns, service(features={"stream": newer}), check=False)
        assert res.returncode != 0 and "flinkVersion" in res.stderr and "v2_3" in res.stderr, res.stderr
        apply(k8s_cluster, ns, service(features={"stream": STREAM}))
        fd = wait_for(
            lambda: get(k8s_cluster, ns, "flinkdeployment", "home-feed-stream"), timeout=90, what="FD"
        )
        owner = get(k8s_cluster, ns, "recsvc", "home-feed")
        # nothing we render is unknown to the Flink operator's schema (it would have been pruned)
        rendered = stream_render.render_flink_deployment(
            Owner("home-feed", ns, owner["metadata"]["uid"]),
            RecommenderServiceSpec.model_validate(owner["spec"]),
        )
        assert is_subset(rendered["spec"], fd["spec"]), "fields pruned by the Flink operator's CRD"
        (ref,) = fd["metadata"]["ownerReferences"]
        assert ref["uid"] == owner["metadata"]["uid"] and ref["controller"] is True
        assert fd["spec"]["job"]["upgradeMode"] == "savepoint" and fd["spec"]["job"]["parallelism"] == 1
        assert fd["spec"]["flinkConfiguration"]["state.backend.type"] == "rocksdb"
        # the archive's compaction beside the job, admitted by the real API server's CronJob schema
        cron = wait_for(
            lambda: get(k8s_cluster, ns, "cronjob", "home-feed-archive"), timeout=60, what="CronJob"
        )
        (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert c["command"][-1] == STREAM["archiveURI"].rstrip("/") + "/events"
        assert cron["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]

        apply(k8s_cluster, ns, service(features={"stream": {**STREAM, "parallelism": 3}}))
        wait_for(
            lambda: (
                get(k8s_cluster, ns, "flinkdeployment", "home-feed-stream")["spec"]["job"]["parallelism"] == 3
            ),
            timeout=60,
            what="the FlinkDeployment updated",
        )

        def patch_status(status):
            k8s_cluster.kubectl(
                "-n", ns, "patch", "flinkdeployment", "home-feed-stream", "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": status}),
            )  # fmt: skip

        patch_status({"lifecycleState": "STABLE", "jobStatus": {"state": "RUNNING", "jobId": "a1b2"}})
        cond = wait_for(
            lambda: (c := _condition(k8s_cluster, ns)) and c["status"] == "True" and c,
            timeout=90,
            what="StreamJobReady=True",
        )
        assert cond["reason"] == "Running"
        stream = get(k8s_cluster, ns, "recsvc", "home-feed")["status"]["stream"]
        assert stream == {"lifecycleState": "STABLE", "jobState": "RUNNING", "jobId": "a1b2"}  # no lag read

        error = {
            "type": "org.apache.flink.runtime.JobException",
            "message": "Recovery is suppressed\n by policy",
        }
        patch_status(
            {"lifecycleState": "FAILED", "jobStatus": {"state": "FAILED"}, "error": json.dumps(error)}
        )
        cond = wait_for(
            lambda: (c := _condition(k8s_cluster, ns)) and c["reason"] == "JobFailed" and c,
            timeout=90,
            what="StreamJobReady=JobFailed",
        )
        assert cond["status"] == "False" and "Recovery is suppressed by policy" in cond["message"]
        assert "\n" not in cond["message"]
        (event,) = wait_for(lambda: _events(k8s_cluster, ns, "StreamJobFailed"), timeout=30, what="the Event")
        assert event["type"] == "Warning" and "Recovery is suppressed" in event["message"]

        apply(k8s_cluster, ns, service())  # the section removed: the FlinkDeployment goes
        wait_for(
            lambda: get(k8s_cluster, ns, "flinkdeployment", "home-feed-stream") is None,
            timeout=90,
            what="the FlinkDeployment pruned",
        )
        wait_for(
            lambda: get(k8s_cluster, ns, "cronjob", "home-feed-archive") is None,
            timeout=90,
            what="the archive CronJob pruned with it",
        )
    finally:
        op.stop()
        k8s_cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", check=False)


def _pending(ns: str, per_pod: dict[str, float], end: int, minutes: int = 10) -> str:
    """OpenMetrics of the FLIP-33 pendingRecords gauge per TaskManager pod, one sample per 15 s."""
    metric = "flink_taskmanager_job_task_operator_pendingRecords"
    lines = [f"# TYPE {metric} gauge"]
    for ts in range(end - minutes * 60, end + 1, 15):
        for pod, value in per_pod.items():
            lines.append(f'{metric}{{namespace="{ns}",pod="{pod}",job_name="recops-stream"}} {value} {ts}')
    return "\n".join([*lines, "# EOF", ""])


def test_a_lagging_job_turns_the_condition_false_with_an_event(k8s_cluster, k8s_namespace, tmp_path):
    ns = k8s_namespace
    _install_flink_crd(k8s_cluster)
    _secrets(k8s_cluster, ns)
    pods = {"home-feed-stream-taskmanager-1-1": 90_000, "home-feed-stream-taskmanager-1-2": 60_000}
    pods["other-stream-taskmanager-1-1"] = 10**9  # another job's pod: not ours, never summed
    om = _pending(ns, pods, int(time.time()) - 20)
    with PrometheusServer(tmp_path / "prom", openmetrics=om) as prom:
        env = {"RECOPS_RESYNC_SECONDS": "2", "RECOPS_PROMETHEUS_URL": prom.url}
        op = Operator(k8s_cluster, ns, tmp_path / "operator.log", env).start()
        try:
            apply(k8s_cluster, ns, service(features={"stream": STREAM}))
            wait_for(lambda: get(k8s_cluster, ns, "flinkdeployment", "home-feed-stream"), 90, what="FD")
            k8s_cluster.kubectl(
                "-n", ns, "patch", "flinkdeployment", "home-feed-stream", "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {"lifecycleState": "STABLE",
                                                             "jobStatus": {"state": "RUNNING"}}}),
            )  # fmt: skip
            cond = wait_for(
                lambda: (c := _condition(k8s_cluster, ns)) and c["reason"] == "FallingBehind" and c,
                timeout=90,
                what="StreamJobReady=FallingBehind",
            )
            assert cond["status"] == "False" and cond["message"] == (
                "stream job 150,000 records behind (max 100,000)"
            )
            assert get(k8s_cluster, ns, "recsvc", "home-feed")["status"]["stream"]["lagRecords"] == 150_000
            (event,) = wait_for(lambda: _events(k8s_cluster, ns, "StreamJobBehind"), 30, what="the Event")
            assert event["type"] == "Warning" and "150,000 records behind" in event["message"]

            apply(k8s_cluster, ns, service(features={"stream": {**STREAM, "maxLagRecords": 200_000}}))
            cond = wait_for(
                lambda: (c := _condition(k8s_cluster, ns)) and c["status"] == "True" and c,
                timeout=90,
                what="StreamJobReady=True under a higher limit",
            )
            assert cond["reason"] == "Running"
        finally:
            op.stop()
            k8s_cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", check=False)
