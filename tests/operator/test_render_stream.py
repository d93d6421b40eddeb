"""spec.features.stream -> the FlinkDeployment, pure: shape, the job's args read back by the job's
own parser, the hardened pod template (valid for Kubernetes 1.37), placement, and the status mapping."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from pydantic import ValidationError

from recops_contracts import stream as contract
from recops_contracts import topology as topo
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.api.semantics import location_errors
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.render import stream as r
from recops_stream import features as f
from recops_stream import options

OWNER = Owner(name="home-feed", namespace="shop", uid="u-1")
STREAM = {
    "image": "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-stream:1.0",
    "kafka": {"bootstrapSecretRef": {"name": "kafka"}},
    "topic": "shop.events",
    "consumerGroup": "shop-features",
    "parallelism": 4,
    "windows": {"trending": "20m", "trendingSlide": "30s"},
    "stateTTL": {"features": "40m", "items": "72h"},
    "checkpointURI": "oss://recops-state-cn-hangzhou/home-feed/",
    "archiveURI": "oss://retail-events-cn-hangzhou/home-feed",
}


def spec(stream: dict | None = None, store: bool = True, **over) -> RecommenderServiceSpec:
    serving = {"image": "registry.cn-hangzhou.aliyuncs.com/recops/recops-serve:1.0"}
    if store:
        serving["featureStore"] = {"secretRef": {"name": "tair", "key": "url"}}
    body = {
        "region": "cn-hangzhou",
        "model": {"uri": "oss://retail-models-cn-hangzhou/home-feed/", "version": "v1"},
        "serving": serving,
        "features": {"stream": {**STREAM, **(stream or {})}},
        **over,
    }
    return RecommenderServiceSpec.model_validate(body)


def flink(s: RecommenderServiceSpec) -> dict:
    (obj,) = [
        o for o in desired_objects(OWNER, s, RenderContext(flink_available=True)) if o["kind"] == r.FLINK_KIND
    ]
    return obj


def test_flink_deployment_shape_and_ownership():
    obj = flink(spec())
    assert obj["apiVersion"] == "flink.apache.org/v1beta1"
    assert obj["metadata"]["name"] == "home-feed-stream" and obj["metadata"]["namespace"] == "shop"
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref["kind"] == "RecommenderService" and ref["uid"] == "u-1" and ref["controller"] is True
    job = obj["spec"]["job"]
    assert job["upgradeMode"] == "savepoint" and job["state"] == "running" and job["parallelism"] == 4
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["jarURI"] == "local:///opt/flink/opt/flink-python-2.3.0.jar"
    assert job["args"][:2] == ["-py", contract.JOB_PATH]
    assert obj["spec"]["mode"] == "native" and obj["spec"]["flinkVersion"] == "v2_3"
    conf = obj["spec"]["flinkConfiguration"]
    assert all(isinstance(v, str) for v in conf.values())
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.dir"] == "oss://recops-state-cn-hangzhou/home-feed/checkpoints"
    assert (
        conf["execution.checkpointing.savepoint-dir"] == "oss://recops-state-cn-hangzhou/home-feed/savepoints"
    )
    assert conf["fs.oss.endpoint"] == "oss-cn-hangzhou-internal.aliyuncs.com"
    assert obj["spec"]["jobManager"]["resource"] == {"cpu": 1.0, "memory": "2048m"}
    assert obj["spec"]["taskManager"]["resource"] == {"cpu": 2.0, "memory": "4096m"}


def test_the_jobs_own_parser_reads_the_rendered_args():
    """One source of truth: what the operator renders is what recops_stream's runner parses."""
    args = flink(spec())["spec"]["job"]["args"][2:]
    env = {contract.BOOTSTRAP_ENV: "alikafka-vpc:9092", contract.REDIS_URL_ENV: "redis://tair:6379"}
    ns = options.parse(args, env)
    assert (ns.topic, ns.group, ns.parallelism, ns.state_backend) == (
        "shop.events",
        "shop-features",
        4,
        "rocksdb",
    )
    assert ns.bootstrap == "alikafka-vpc:9092" and ns.redis_url == "redis://tair:6379"
    assert ns.detached and ns.checkpoints == "oss://recops-state-cn-hangzhou/home-feed/checkpoints"
    assert options.location(ns.archive_dir) == "oss://retail-events-cn-hangzhou/home-feed"
    cfg = options.job_config(ns)
    assert (cfg.feature_state_ttl_s, cfg.item_state_ttl_s) == (2400, 72 * 3600)
    assert (cfg.trend_window_s, cfg.trend_slide_s, cfg.item_ttl_s) == (1200, 30, 72 * 3600)
    # no credentials on the command line (the Flink operator shows args in its status)
    assert not [a for a in args if "9092" in a or "redis://" in a]


def test_contract_defaults_are_the_jobs_defaults():
    d, ns = (
        f.JobConfig(),
        options.parse(["--archive-dir", "/a", "--checkpoints", "/c", "--bootstrap", "k", "--redis-url", "r"]),
    )
    assert (d.feature_state_ttl_s, d.item_state_ttl_s) == (
        contract.FEATURE_STATE_TTL_SECONDS,
        contract.ITEM_STATE_TTL_SECONDS,
    )
    assert (d.trend_window_s, d.trend_slide_s) == (
        contract.TREND_WINDOW_SECONDS,
        contract.TREND_SLIDE_SECONDS,
    )
    assert options.job_config(ns) == d  # no flags: the job runs exactly as before
    assert (ns.topic, ns.group) == (contract.DEFAULT_TOPIC, contract.DEFAULT_GROUP)
    with pytest.raises(SystemExit):
        options.parse(["--archive-dir", "/a", "--checkpoints", "/c"], {})  # no bootstrap anywhere


@pytest.mark.parametrize("component", ["jobManager", "taskManager"])
def test_pod_template_is_hardened_and_valid(component):
    tpl = flink(spec())["spec"][component]["podTemplate"]
    pod = {**tpl, "metadata": {**tpl["metadata"], "name": "x"}}
    kubernetes_validate.validate(pod, "1.37", strict=True)
    ps = tpl["spec"]
    assert ps["securityContext"]["runAsNonRoot"] is True and ps["securityContext"]["runAsUser"] == r.FLINK_UID
    assert ps["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = ps["containers"]
    assert c["name"] == "flink-main-container"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/opt/flink/log", "/flink-data"} <= mounts
    assert {v["name"] for v in ps["volumes"] if "emptyDir" in v} == {m["name"] for m in c["volumeMounts"]}
    assert c["resources"]["limits"] == c["resources"]["requests"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env == {
        contract.BOOTSTRAP_ENV: {"name": "kafka", "key": "bootstrap"},
        contract.REDIS_URL_ENV: {"name": "tair", "key": "url"},
    }


def test_never_on_spot_unless_it_tolerates_restarts():
    ps = flink(spec())["spec"]["taskManager"]["podTemplate"]["spec"]
    required = ps["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == topo.not_spot_node_affinity_terms()
    assert "tolerations" not in ps and ps["nodeSelector"] == {topo.CAPACITY_LABEL: topo.CAPACITY_ON_DEMAND}
    spot = flink(spec({"tolerateRestarts": True}))["spec"]["taskManager"]["podTemplate"]["spec"]
    assert spot["tolerations"] == [topo.SPOT_TAINT.toleration()]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in spot["affinity"]["nodeAffinity"]
    assert "nodeSelector" not in spot


def test_nothing_without_the_section_or_the_crd():
    s = spec()
    assert not [o for o in desired_objects(OWNER, s, RenderContext()) if o["kind"] == r.FLINK_KIND]
    bare = RecommenderServiceSpec.model_validate({**s.model_dump(by_alias=True), "features": None})
    assert r.render_flink_deployment(OWNER, bare) is None
    assert r.stream_condition(bare, False, None) is None
    kind, ok, reason, msg = r.stream_condition(s, False, None)
    assert (kind, ok, reason) == ("StreamJobReady", False, "CRDsMissing") and "flink.apache.org" in msg


def _live(life, job, error=None):
    st = {"lifecycleState": life, "jobStatus": {"state": job, "jobId": "j1"}}
    if error is not None:
        st["error"] = error
    return {"status": st}


def test_status_mapping():
    s = spec()
    assert r.stream_condition(s, True, _live("STABLE", "RUNNING"))[1:3] == (True, "Running")
    assert r.stream_condition(s, True, _live("DEPLOYED", "CREATED"))[1:3] == (False, "Progressing")
    assert r.stream_condition(s, True, None)[1:3] == (False, "Pending")
    err = json.dumps(
        {"type": "org.apache.flink...JobException", "message": "Recovery is suppressed\nby FixedDelay"}
    )
    _, ok, reason, msg = r.stream_condition(s, True, _live("FAILED", "FAILED", err))
    assert (ok, reason) == (False, "JobFailed")
    assert "\n" not in msg and "Recovery is suppressed by FixedDelay" in msg
    assert r.stream_status(_live("STABLE", "RUNNING")) == {
        "lifecycleState": "STABLE", "jobState": "RUNNING", "jobId": "j1", "message": None,
        "lagRecords": None,
    }  # fmt: skip


def test_lag_above_the_limit_is_falling_behind_and_the_query_selects_our_taskmanagers():
    s = spec({"maxLagRecords": 1000})
    running = _live("STABLE", "RUNNING")
    assert r.stream_condition(s, True, running, 1000.0)[1:3] == (True, "Running")
    _, ok, reason, msg = r.stream_condition(s, True, running, 1001.0)
    assert (ok, reason, msg) == (False, "FallingBehind", "stream job 1,001 records behind (max 1,000)")
    assert r.stream_condition(s, True, _live("FAILED", "FAILED"), 10**6)[2] == "JobFailed"  # failure first
    assert r.stream_status(running, 1001.4)["lagRecords"] == 1001
    q = r.lag_query(OWNER)
    assert q.startswith("sum(flink_taskmanager_job_task_operator_pendingRecords{")
    assert f'namespace="{OWNER.namespace}"' in q and f'pod=~"{r.stream_name(OWNER)}-taskmanager-.*"' in q
    conf = r.flink_configuration(s, s.features.stream)
    assert conf["metrics.reporter.prom.port"] == str(r.METRICS_PORT)


def test_bad_specs_fail_with_clear_messages():
    with pytest.raises(ValidationError, match=r"set spec\.serving\.featureStore"):
        spec(store=False)
    with pytest.raises(ValidationError, match=r"multiple of windows\.trendingSlide"):
        spec({"windows": {"trending": "20m", "trendingSlide": "7s"}})
    with pytest.raises(ValidationError, match=r"stateTTL\.features must be between 30m"):
        spec({"stateTTL": {"features": "10m"}})
    with pytest.raises(ValidationError):  # credentials never inline: only a Secret reference is accepted
        spec({"kafka": {"bootstrap": "broker:9092"}})
    errors = location_errors(spec({"checkpointURI": "oss://state-cn-shanghai/x/"}), {}, {})
    assert errors == [
        "spec.features.stream.checkpointURI: bucket 'state-cn-shanghai' is in cn-shanghai, outside "
        "spec.region cn-hangzhou (data residency)"
    ]


def test_memory_and_cpu_conversion():
    assert [r.flink_memory(q) for q in ("2Gi", "512Mi", "3G")] == ["2048m", "512m", "2861m"]
    assert [r.flink_cpu(q) for q in ("500m", "2")] == [0.5, 2.0]


def test_the_documented_section_is_valid_and_in_region():
    """docs/stream.md's spec.features.stream, on the shipped example: admitted as documented."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "stream.md").read_text().split("## On ACK", 1)[1]
    doc = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])["spec"]
    body = yaml.safe_load((root / "examples" / "home-feed.yaml").read_text())["spec"]
    body["features"] = doc["features"]
    s = RecommenderServiceSpec.model_validate(body)
    assert s.features.stream.parallelism == 4
    assert [e for e in location_errors(s, {}, {}) if "features" in e] == []


def _archive_job(s: RecommenderServiceSpec) -> dict:
    (obj,) = [
        o
        for o in desired_objects(OWNER, s, RenderContext(flink_available=True))
        if o["kind"] == "CronJob" and o["metadata"]["name"] == r.archive_name(OWNER)
    ]
    return obj


def test_the_archive_is_compacted_on_its_mounted_bucket_by_the_stream_image(monkeypatch):
    """A CronJob runs ``recops_stream.archive`` (its own parser reads the rendered command) on the
    archive's events/ through the bucket's claim, writable; never two at once; hardened, placed
    like the job, schema-valid; gone with the section or the CRD."""
    from recops_operator import oss
    from recops_stream import archive

    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    job = _archive_job(spec())
    kubernetes_validate.validate(job, "1.37", strict=True)
    assert job["spec"]["concurrencyPolicy"] == "Forbid" and job["spec"]["schedule"] == r.ARCHIVE_SCHEDULE
    ps = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = ps["containers"]
    assert c["image"] == STREAM["image"] and c["command"][:3] == [
        contract.PYTHON_PATH,
        "-m",
        "recops_stream.archive",
    ]
    a = archive.parser().parse_args(c["command"][3:])
    assert a.events_dir == STREAM["archiveURI"] + "/events" and a.interval == 0
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    bucket = mounts["/mnt/oss/retail-events-cn-hangzhou"]
    assert bucket["readOnly"] is False  # it publishes Parquet and deletes the staged part files
    claim = next(v for v in ps["volumes"] if v["name"] == bucket["name"])["persistentVolumeClaim"]
    assert claim == {"claimName": "recops-oss-retail-events-cn-hangzhou"}
    assert {"name": "RECOPS_OSS_LOCAL_ROOT", "value": "/mnt/oss"} in c["env"]
    assert (
        c["securityContext"]["readOnlyRootFilesystem"] is True
        and ps["securityContext"]["runAsNonRoot"] is True
    )
    assert "tolerations" not in ps and ps["nodeSelector"] == {topo.CAPACITY_LABEL: topo.CAPACITY_ON_DEMAND}
    assert _archive_job(spec({"tolerateRestarts": True}))["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "tolerations"
    ] == [topo.SPOT_TAINT.toleration()]
    assert not [o for o in desired_objects(OWNER, spec(), RenderContext()) if o["kind"] == "CronJob"]
    bare = RecommenderServiceSpec.model_validate({**spec().model_dump(by_alias=True), "features": None})
    assert r.render_archive_compaction(OWNER, bare) is None
