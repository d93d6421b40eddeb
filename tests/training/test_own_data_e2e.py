"""A shop's own data, end to end on the real control plane.

The shop's events (Hive dt= partitions) and catalogue, as Parquet under the local ``oss://`` root,
are named in ``spec.training.data`` of a RecommenderService the real API server admits (CRD
schema + CEL). The operator's training sync turns a trigger into a spot Job; the Job's rendered
container is run for real by this test (KWOK pods run nothing: the test does the kubelet's part,
env expansion included, exactly as test_trainer_process does), KWOK completes the pod, the
closed loop reads the bundle the trainer wrote, passes the metrics gate and sets it as the
candidate; ``recops-serve`` then serves that candidate from the rendered candidate config.

A second run on a 30%-bad events file exits 78 with a one-line reason; the pod fails as the
kubelet reports it (exit code + termination message), the Job fails at once, status.training
says why (file and reason), and the candidate and serving model stay as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kubernetes import client

from recops_contracts.training import CONFIG_ERROR_EXIT_CODES
from recops_localcluster import procs
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render.serving import serving_config
from recops_operator.training import naming
from recops_operator.training.render import render_on_demand_job
from recops_operator.training.sync import apply_sync
from recops_serve.datasource import export_builtin
from tests.support.redis_server import free_port
from tests.support.training import (
    HOLD,
    expand,
    fail_pod,
    job_condition,
    kubelet_env,
    list_pods,
    read_job,
    sync_once,
    wait_for,
)

pytestmark = pytest.mark.integration
BUCKET = "retail-data-cn-hangzhou"
MODELS = "oss://retail-models-cn-hangzhou/home-feed/"


def _run_container(pod: dict, root: Path, extra: list[str]) -> tuple[int, str, str]:
    """The kubelet's part for the pod's trainer container: env, $(VAR) expansion, the process."""
    (container,) = pod["spec"]["containers"]
    env = kubelet_env(
        container, pod["metadata"]["labels"]["batch.kubernetes.io/job-name"], pod["metadata"]["name"]
    )
    term = root / f"termination-{pod['metadata']['name']}"
    args = expand(container["args"], env)
    proc = subprocess.run(
        [sys.executable, "-m", "recops_serve.train", *args[1:], *extra],
        env={**os.environ, **env, "RECOPS_OSS_LOCAL_ROOT": str(root), "RECOPS_TERMINATION_LOG": str(term)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr, term.read_text() if term.exists() else ""


def _finish_pod(api, pod: dict, code: int, message: str) -> None:
    """What the kubelet reports when the container ends: success lets KWOK complete the pod; a
    failure is written as the kubelet writes it (exit code + termination message)."""
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    core = client.CoreV1Api(api)
    if code == 0:
        core.patch_namespaced_pod(name, ns, {"metadata": {"annotations": {HOLD: None}}})
        return
    fail_pod(api, pod, exit_code=code, disruption=False, message=message)


def _one_run(api, ns: str, body: dict, token: str, root: Path, extra: list[str]):
    """Trigger -> Job (held so this test can run its container) -> container -> pod end -> sync."""
    body["spec"]["training"]["trigger"] = token
    job = render_on_demand_job(body, token)
    job["spec"]["template"]["metadata"].setdefault("annotations", {})[HOLD] = "true"
    client.BatchV1Api(api).create_namespaced_job(ns, job)  # the operator's own Job, held for the test
    sync_once(api, body)  # the operator starts it (it finds the Job it would have created)
    name = job["metadata"]["name"]
    sel = f"job-name={name}"
    pod = wait_for(
        f"pod of {name} running",
        lambda: next((p for p in list_pods(api, ns, sel) if p["status"].get("phase") == "Running"), None),
    )
    code, out, term = _run_container(pod, root, extra)
    _finish_pod(api, pod, code, term)
    done = "Complete" if code == 0 else "Failed"
    wait_for(f"{name} {done}", lambda: job_condition(read_job(api, ns, name), done), timeout=90)
    status = apply_sync(api, ns, body["metadata"]["name"])  # as the operator does on the Job event
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "recops.io", "v1alpha1", ns, "recommenderservices", body["metadata"]["name"]
    )
    body["status"] = obj["status"]
    return name, code, out, status, obj


def _shop_files(root: Path) -> tuple[str, str]:
    """A shop's data in the contract's layout (a slice of completejourney, written by export-data)."""
    out = export_builtin("completejourney", str(root / BUCKET / "shop"), limit_rows=90_000)
    assert Path(out["events"]).is_dir() and any(Path(out["events"]).glob("dt=*/*.parquet"))
    return f"oss://{BUCKET}/shop/events/", f"oss://{BUCKET}/shop/catalog.parquet"


def _bad_events(root: Path) -> str:
    """The same shop's events, with 30% of the timestamps unparseable (a broken export)."""
    good = pq.read_table(next((root / BUCKET / "shop" / "events").glob("dt=*/*.parquet")))
    n = min(good.num_rows, 2000)
    t = good.slice(0, n).to_pydict()
    ts = [str(int(x)) if i % 10 >= 3 else "not-a-time" for i, x in enumerate(t["ts"])]
    bad = pa.table({**t, "ts": pa.array(ts, pa.string())})
    d = root / BUCKET / "broken" / "events"
    d.mkdir(parents=True)
    pq.write_table(bad, d / "part-0.parquet")
    return f"oss://{BUCKET}/broken/events/"


def test_own_data_trains_becomes_the_candidate_and_is_served(k8s_cluster, k8s_namespace, svc, tmp_path):
    api, ns = k8s_cluster.api_client(), k8s_namespace
    root = tmp_path / "oss"
    events, catalog = _shop_files(root)
    body = svc(
        schedule=None,
        autoRollout=True,
        data={"events": events, "catalog": catalog},
        gate={"metrics": ["ndcg@10"], "tolerance": 0.2},
        checkpoint={"uri": "oss://retail-models-cn-hangzhou/ckpt/home-feed/", "intervalSeconds": 30},
    )
    body["metadata"]["namespace"] = ns
    del body["metadata"]["uid"]
    body["spec"]["model"]["uri"] = MODELS
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object("recops.io", "v1alpha1", ns, "recommenderservices", body)
    assert created["spec"]["training"]["data"]["events"] == events  # admitted by the real API server
    body["metadata"] = created["metadata"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOPS_OSS_LOCAL_ROOT", str(root))
        # the model serving today: an earlier run on the first part of the same shop's data
        v1 = naming.bundle_uri(MODELS, "v1")
        subprocess.run(
            [sys.executable, "-m", "recops_serve.train", "--events", events, "--catalog", catalog,
             "--out", v1, "--version", "v1", "--limit-rows", "40000"],
            env={**os.environ, "RECOPS_OSS_LOCAL_ROOT": str(root)}, check=True, capture_output=True,
        )  # fmt: skip
        run, code, out, status, obj = _one_run(api, ns, body, "shop-data-1", root, [])
        assert code == 0, out
        last = status.last_run
        assert last.phase == "Succeeded" and last.action == "candidate-set", last
        assert obj["spec"]["rollout"]["candidate"]["version"] == run  # the closed loop, in the API server
        body["spec"]["rollout"] = obj["spec"]["rollout"]
        (trained,) = [x for x in obj["status"]["conditions"] if x["type"] == "Trained"]
        assert trained["status"] == "True" and run in trained["message"]
        assert last.data.rows > 0 and last.data.rejected == 0
        assert last.tuned.exclude == {"seen": True, "purchased": False}, "grocery: buy-again measured"
        assert set(last.metrics) >= {"ndcg@10", "recall@20", "mrr@20"}
        # the recall gate's figure, from the manifest (a small shop keeps precomputed candidates)
        assert last.retrieval.mode == "precomputed" and last.retrieval.recall_at_k >= 0.95, last

        # the candidate, served from the config the operator renders for it
        spec = RecommenderServiceSpec.model_validate(body["spec"])
        cfg = serving_config(spec, run, "canary")
        path = tmp_path / "canary.json"
        path.write_text(json.dumps(cfg))
        port = free_port()
        log = tmp_path / "serve.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recops_serve.cli",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            env={**os.environ, "RECOPS_OSS_LOCAL_ROOT": str(root)},
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        try:
            procs.wait_http(f"http://127.0.0.1:{port}/readyz", proc, log=log, what="recops-serve")
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
            assert ready["model_version"] == run
            recs = httpx.get(
                f"http://127.0.0.1:{port}/v1/recommendations", params={"session_id": "new-shopper", "k": 5}
            ).json()
            assert recs["model_version"] == run and len(recs["items"]) == 5
        finally:
            procs.stop(proc)

        # a broken export: exit 78, the reason in status, nothing serving changes
        body["spec"]["training"]["data"]["events"] = _bad_events(root)
        bad_run, code, out, status, obj = _one_run(api, ns, body, "shop-data-2", root, [])
        assert code == CONFIG_ERROR_EXIT_CODES[-1] == 78, out
        last = status.last_run
        assert last.name == bad_run and last.phase == "Failed"
        assert "unparseable_ts" in last.message and "30.0%" in last.message, last
        assert "exit 78" in last.message and "broken/events" in last.message
        # stored exactly as the type dumps it: no key of the earlier, successful run (data report,
        # tuned serving, metrics) is merged into this failed run's record
        assert obj["status"]["training"] == status.dump(), obj["status"]["training"]
        (trained,) = [x for x in obj["status"]["conditions"] if x["type"] == "Trained"]
        assert trained["status"] == "False" and trained["reason"] == "RunFailed"
        assert "unparseable_ts" in trained["message"], trained
        assert obj["spec"]["rollout"]["candidate"]["version"] == run  # untouched
        assert not (root / "retail-models-cn-hangzhou" / "home-feed" / bad_run).exists()
