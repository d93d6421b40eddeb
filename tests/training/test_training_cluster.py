"""Training on the real control plane: kube-apiserver + KCM (Job/CronJob controllers) +
kube-scheduler + KWOK spot / on-demand / ECI nodes.

KWOK's ``recops-job-pod-succeeded`` stage completes every Running Job pod after ~1 s.
Tests that need a training pod to stay Running (to preempt it, or to hold the run slot)
add the annotation ``recops.io/kwok-hold`` to the *rendered* pod template (the stage skips
pods carrying it; nothing else in the template is changed), and remove it from a pod to
let that pod complete. A preemption is simulated the way the kubelet reports one:
pod status -> Failed with ``DisruptionTarget=True`` (and exit 137), or through the real
Eviction API (what ECI's ``api-evict`` and our SpotToBeReleased handler do).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from recops_contracts import topology
from recops_contracts.training import CHECKPOINT_STATE_NAME
from recops_operator.training import check_capacity_invariants, naming, runs
from recops_operator.training import config as c
from recops_operator.training.render import render_cronjob, render_on_demand_job, training_selector
from recops_operator.training.sync import record_preemption, request_checkpoint
from tests.support.training import (
    HOLD,
    answer_spot_release_notice,
    body_for,
    bundle_dir,
    checkpoint_dir,
    fail_pod,
    hold,
    job_condition,
    list_pods,
    local_oss,
    node_labels,
    read_job,
    running_pods,
    runs_of,
    ssa_apply,
    sync_once,
    training_registry,
    wait_for,
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------------------
def test_training_lands_only_on_spot_and_inference_never(k8s_cluster, k8s_namespace, svc):
    """Real scheduler: spot-pool and ECI-spot training pods vs. on-demand/ECI inference pods."""
    api, ns = k8s_cluster.api_client(), k8s_namespace
    jobs = []
    for placement in ("nodes", "eci"):
        for i in range(3):
            job = render_on_demand_job(body_for(svc, ns, placement=placement), f"{placement}-{i}")
            job["spec"]["suspend"] = False
            hold(job["spec"]["template"])
            jobs.append(job)
    # inference: the operator's own serving renderer (placement eci and nodes), 6 replicas each
    from recops_operator.api.models import RecommenderServiceSpec
    from recops_operator.render import Owner, RenderContext, desired_objects

    inference = []
    for placement in ("eci", "nodes"):
        raw = body_for(svc, ns)["spec"]
        raw["serving"].update(
            placement=placement, featureStore={"secretRef": {"name": "tair"}}, replicas={"min": 6, "max": 6}
        )
        owner = Owner(name=f"feed-{placement}", namespace=ns, uid="00000000-0000-4000-8000-000000000000")
        objs = desired_objects(owner, RecommenderServiceSpec.model_validate(raw), RenderContext())
        for dep in (o for o in objs if o["kind"] == "Deployment"):
            dep["metadata"].pop("ownerReferences", None)  # no such owner stored in this test
            dep["spec"]["replicas"] = 6  # the HPA's job in production (not applied here)
            inference.append(dep)
    assert len(inference) == 2
    assert check_capacity_invariants(jobs + inference) == []  # what the webhook will check
    for obj in jobs + inference:
        ssa_apply(k8s_cluster, obj)

    nodes = node_labels(api)
    training = wait_for("6 running training pods", running_pods(api, ns, training_selector("home-feed"), 6))
    for pod in training:
        labels = nodes[pod["spec"]["nodeName"]]
        if pod["metadata"]["annotations"].get(topology.ECI_SPOT_STRATEGY):
            assert labels.get(topology.ECI_NODE_LABEL_KEY) == topology.ECI_NODE_LABEL_VALUE
        else:
            assert labels.get(topology.CAPACITY_LABEL) == topology.CAPACITY_SPOT, pod["spec"]["nodeName"]
    eci_training = [
        p for p in training if p["metadata"]["annotations"].get(topology.ECI_SPOT_STRATEGY) == "SpotAsPriceGo"
    ]
    assert len(eci_training) == 3
    serving = wait_for("12 running inference pods", running_pods(api, ns, "recops.io/track=stable", 12))
    placed = [nodes[p["spec"]["nodeName"]] for p in serving]
    assert all(lbl.get(topology.CAPACITY_LABEL) != topology.CAPACITY_SPOT for lbl in placed)
    assert all(not p["metadata"].get("annotations", {}).get(topology.ECI_SPOT_STRATEGY) for p in serving)
    # the spot taint is what keeps the spot pool clean: a training template without the
    # toleration (rejected by the invariant check) cannot be scheduled at all
    bad = render_on_demand_job(body_for(svc, ns), "no-toleration")
    bad["spec"]["suspend"] = False
    bad["spec"]["template"]["spec"]["tolerations"] = []
    assert check_capacity_invariants([bad])
    ssa_apply(k8s_cluster, bad)
    sel = f"batch.kubernetes.io/job-name={bad['metadata']['name']}"
    wait_for("unschedulable pod", lambda: list_pods(api, ns, sel))
    time.sleep(2)
    (pod,) = list_pods(api, ns, sel)
    assert pod["status"].get("phase") == "Pending" and not pod["spec"].get("nodeName")


def test_preemption_does_not_fail_the_job_and_the_replacement_resumes(k8s_cluster, k8s_namespace, svc):
    """backoffLimit 0: a single counted failure would fail the Job, so surviving two
    preemptions proves they are ignored; a genuine failure afterwards does fail it."""
    api, ns = k8s_cluster.api_client(), k8s_namespace
    job = render_on_demand_job(body_for(svc, ns, backoffLimit=0), "preempt-me")
    job["spec"]["suspend"] = False
    hold(job["spec"]["template"])
    ssa_apply(k8s_cluster, job)
    name = job["metadata"]["name"]
    sel = f"batch.kubernetes.io/job-name={name}"

    (first,) = wait_for("first pod running", running_pods(api, ns, sel))
    # 1) spot reclaim as the kubelet reports it: Failed + DisruptionTarget, exit 137
    delays = []
    t = time.monotonic()
    fail_pod(api, first, exit_code=137, disruption=True)
    assert record_preemption(api, {**first, "status": {}}, "TerminationByKubelet")
    assert not record_preemption(api, first, "TerminationByKubelet")  # counted once
    second = wait_for(
        "replacement pod",
        lambda: [
            p
            for p in running_pods(api, ns, sel)() or []
            if p["metadata"]["name"] != first["metadata"]["name"]
        ],
    )[0]
    delays.append(time.monotonic() - t)
    # 2) the operator's answer to SpotToBeReleased: Eviction API with the pod's grace period
    t = time.monotonic()
    assert request_checkpoint(api, second, c.SPOT_TO_BE_RELEASED_REASON)
    third = wait_for(
        "second replacement pod",
        lambda: [
            p
            for p in running_pods(api, ns, sel)() or []
            if p["metadata"]["name"] not in (first["metadata"]["name"], second["metadata"]["name"])
        ],
    )[0]
    delays.append(time.monotonic() - t)
    assert record_preemption(api, second, "EvictionByEvictionAPI")

    status = read_job(api, ns, name)
    assert job_condition(status, "Failed") is None
    assert status["status"].get("failed", 0) == 0  # Ignore: not counted against backoffLimit
    assert runs.job_preemptions(status) == 2
    # every pod of the run: same run id (Job name label -> RECOPS_RUN_ID), same resume args
    for pod in (first, second, third):
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name
    container = third["spec"]["containers"][0]
    assert container["args"] == first["spec"]["containers"][0]["args"]
    assert "--resume" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RECOPS_CHECKPOINT_URI"]["value"].endswith("/$(RECOPS_RUN_ID)")
    assert (
        env["RECOPS_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['batch.kubernetes.io/job-name']"
    )

    # 3) ECI released the spot instance: Failed/BidFailed after ContainerInstanceExpired
    t = time.monotonic()
    fail_pod(api, third, exit_code=137, disruption=False, reason="BidFailed", eci_expired=True)
    seen = {first["metadata"]["name"], second["metadata"]["name"], third["metadata"]["name"]}
    fourth = wait_for(
        "third replacement pod",
        lambda: [p for p in running_pods(api, ns, sel)() or [] if p["metadata"]["name"] not in seen],
    )[0]
    delays.append(time.monotonic() - t)
    shown = ", ".join(f"{d:.1f}s" for d in delays)
    sys.__stdout__.write(
        f"\npreemption -> replacement Running (kubelet-style, eviction, BidFailed): {shown}\n"
    )
    assert record_preemption(api, {**third, "status": {"reason": "BidFailed"}}, "BidFailed")
    assert runs.job_preemptions(read_job(api, ns, name)) == 3
    assert fourth["spec"]["containers"][0]["args"] == container["args"]
    assert read_job(api, ns, name)["status"].get("failed", 0) == 0

    # control: a genuine crash (exit 1, no disruption) is counted and fails the Job at backoffLimit 0
    fail_pod(api, fourth, exit_code=1, disruption=False)
    failed = wait_for("job failed", lambda: job_condition(read_job(api, ns, name), "Failed"))
    assert failed["reason"] == "BackoffLimitExceeded"


def test_config_error_exit_code_fails_the_job_at_once(k8s_cluster, k8s_namespace, svc):
    api, ns = k8s_cluster.api_client(), k8s_namespace
    job = render_on_demand_job(body_for(svc, ns, backoffLimit=6), "bad-config")
    job["spec"]["suspend"] = False
    hold(job["spec"]["template"])
    ssa_apply(k8s_cluster, job)
    sel = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
    (pod,) = wait_for("pod running", running_pods(api, ns, sel))
    fail_pod(api, pod, exit_code=78, disruption=False)
    failed = wait_for(
        "job failed", lambda: job_condition(read_job(api, ns, job["metadata"]["name"]), "Failed")
    )
    assert failed["reason"] == "PodFailurePolicy"  # not retried 6 times
    assert len(list_pods(api, ns, sel)) == 1


@pytest.mark.slow  # waits for the CronJob's next minute boundary (10-75 s)
def test_scheduled_and_on_demand_runs_never_overlap(k8s_cluster, k8s_namespace, svc, tmp_path, monkeypatch):
    api, ns = k8s_cluster.api_client(), k8s_namespace
    local_oss(monkeypatch, tmp_path)
    body = body_for(svc, ns, schedule="* * * * *")
    cron = render_cronjob(body)
    hold(cron["spec"]["jobTemplate"]["spec"]["template"])
    ssa_apply(k8s_cluster, cron)
    # the CronJob controller creates the scheduled run at the next minute, queued
    scheduled = wait_for("scheduled Job", lambda: runs_of(api, body), timeout=75, interval=1)[0]
    k8s_cluster.kubectl(
        "patch", "cronjob", "-n", ns, cron["metadata"]["name"], "-p", '{"spec":{"suspend":true}}'
    )
    assert scheduled["metadata"]["name"].startswith(naming.training_base_name("home-feed") + "-")
    assert scheduled["metadata"]["labels"][c.TRIGGER_LABEL] == c.TRIGGER_SCHEDULED
    assert scheduled["spec"]["suspend"] is True and not list_pods(
        api, ns, f"batch.kubernetes.io/job-name={scheduled['metadata']['name']}"
    )
    status, _ = sync_once(api, body)
    assert status.current_run.name == scheduled["metadata"]["name"]
    sel_cron = f"batch.kubernetes.io/job-name={scheduled['metadata']['name']}"
    (cron_pod,) = wait_for("scheduled run running", running_pods(api, ns, sel_cron))
    assert node_labels(api)[cron_pod["spec"]["nodeName"]][topology.CAPACITY_LABEL] == topology.CAPACITY_SPOT

    # an on-demand request while the scheduled run is active: recorded, queued, not started
    body["spec"]["training"]["trigger"] = "retrain-2026-11-24"
    status, _ = sync_once(api, body)
    od_name = naming.on_demand_job_name("home-feed", "retrain-2026-11-24")
    assert status.last_trigger == "retrain-2026-11-24"
    od = read_job(api, ns, od_name)
    assert od["metadata"]["labels"][c.TRIGGER_LABEL] == c.TRIGGER_ON_DEMAND
    assert od["spec"]["suspend"] is True
    sync_once(api, body)  # idempotent: no second Job for the same token
    assert len(runs_of(api, body)) == 2

    # the scheduled run finishes (KWOK completes the pod once the hold is lifted) ...
    client.CoreV1Api(api).patch_namespaced_pod(
        cron_pod["metadata"]["name"], ns, {"metadata": {"annotations": {HOLD: None}}}
    )
    wait_for(
        "scheduled run complete",
        lambda: job_condition(read_job(api, ns, scheduled["metadata"]["name"]), "Complete"),
    )
    status, _ = sync_once(api, body)  # ... and only then the on-demand run gets the slot
    assert status.last_run.name == scheduled["metadata"]["name"] and status.last_run.phase == "Succeeded"
    assert read_job(api, ns, od_name)["spec"]["suspend"] is False
    wait_for("on-demand run complete", lambda: job_condition(read_job(api, ns, od_name), "Complete"))
    status, _ = sync_once(api, body)
    assert status.last_run.name == od_name and status.last_run.trigger == c.TRIGGER_ON_DEMAND
    assert status.current_run is None


def _manifest(body, version: str, metrics: dict[str, float]) -> None:
    """The bundle manifest of ``version`` under the body's ``spec.model.uri``."""
    d = bundle_dir(body, version)
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(
        json.dumps({"version": version, "data_window": {"days": 90}, "metrics": metrics})
    )


def test_closed_loop_sets_candidate_only_when_the_metrics_gate_passes(
    k8s_cluster, k8s_namespace, svc, tmp_path, monkeypatch
):
    api, ns = k8s_cluster.api_client(), k8s_namespace
    local_oss(monkeypatch, tmp_path)
    body = body_for(svc, ns, schedule=None, autoRollout=True)
    _manifest(body, "v1", {"ndcg@10": 0.200, "recall@50": 0.500})

    def run(token: str, metrics: dict[str, float]):
        name = naming.on_demand_job_name("home-feed", token)
        _manifest(body, name, metrics)  # what `recops-serve train --out` leaves behind
        ckpt = checkpoint_dir(body, name)
        ckpt.mkdir(parents=True)
        (ckpt / "step-1.ckpt").write_text("x")
        body["spec"]["training"]["trigger"] = token
        sync_once(api, body)
        wait_for(f"run {name} complete", lambda: job_condition(read_job(api, ns, name), "Complete"))
        return name, sync_once(api, body)

    # slightly worse but within tolerance (0.005): candidate set, lineage recorded
    good, (status, patch) = run("good", {"ndcg@10": 0.197, "recall@50": 0.52})
    assert patch == {"spec": {"rollout": {"candidate": {"version": good}}}}
    last = status.last_run
    assert last.name == good and last.phase == "Succeeded" and last.action == "candidate-set"
    assert last.gate.passed and last.gate.reasons == []
    assert last.metrics == {"ndcg@10": 0.197, "recall@50": 0.52} and last.serving_metrics["ndcg@10"] == 0.2
    assert last.data_window.days == 90 and last.serving_version == "v1"
    assert status.last_checkpoint_time
    assert sync_once(api, body)[1] is None  # decided once per run

    # worse than serving beyond tolerance: no candidate, reason recorded
    bad, (status, patch) = run("bad", {"ndcg@10": 0.15, "recall@50": 0.52})
    assert patch is None
    assert body["spec"]["rollout"]["candidate"]["version"] == good  # untouched
    assert status.last_run.name == bad and status.last_run.action == "gate-failed"
    assert "ndcg@10" in status.last_run.gate.reasons[0]


@pytest.fixture
def training_operator(k8s_cluster, k8s_namespace, monkeypatch):
    """The training kopf handlers running in-process, scoped to the test namespace."""
    import kubernetes.config.kube_config as kube_config
    from kopf.testing import KopfRunner

    from recops_operator.controller import CONTROLLER

    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    # read once at import by the kubernetes client, which kopf's login uses
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(k8s_cluster.kubeconfig))
    monkeypatch.setattr(CONTROLLER, "_api", k8s_cluster.api_client())
    args = ["run", "--standalone", "--namespace", k8s_namespace, "-m", "recops_operator.training.handlers"]
    with KopfRunner(args, timeout=60, registry=training_registry()) as runner:
        time.sleep(2)  # watches established
        yield runner
    assert runner.exception is None, runner.output[-3000:]


@pytest.mark.parametrize("signal", ["event", "condition"])
def test_operator_answers_spot_release_notice(k8s_cluster, k8s_namespace, svc, training_operator, signal):
    answer_spot_release_notice(k8s_cluster, k8s_namespace, svc, signal)


def _ensure_crd(cluster) -> None:
    """Install the CRD generated from the API models (crds/)."""
    from pathlib import Path

    crd = Path(__file__).resolve().parents[2] / "crds" / "recommenderservices.recops.io.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/recommenderservices.recops.io", "--timeout=30s"
    )


def test_operator_closed_loop_end_to_end(k8s_cluster, k8s_namespace, svc, tmp_path, monkeypatch):
    """kopf handlers + real CR: trigger annotation -> queued Job -> started -> KWOK completes it
    -> metrics gate passes -> spec.rollout.candidate set, lineage in status.training."""
    from kopf.testing import KopfRunner

    _ensure_crd(k8s_cluster)
    import kubernetes.config.kube_config as kube_config

    from recops_operator.controller import CONTROLLER
    from recops_operator.training import handlers

    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(k8s_cluster.kubeconfig))
    monkeypatch.setattr(CONTROLLER, "_api", k8s_cluster.api_client())
    api, ns = k8s_cluster.api_client(), k8s_namespace
    # oss:// as the CRD requires; the operator reads it from a local root (RECOPS_OSS_LOCAL_ROOT)
    local_oss(monkeypatch, tmp_path)
    body = body_for(svc, ns, schedule=None, autoRollout=True)
    body["spec"]["serving"]["featureStore"] = {"secretRef": {"name": "tair"}}
    body["metadata"]["annotations"] = {c.TRIGGER_ANNOTATION: "nightly-2026-11-24"}
    _manifest(body, "v1", {"ndcg@10": 0.200, "recall@50": 0.500})
    run = naming.on_demand_job_name("home-feed", "nightly-2026-11-24")
    _manifest(body, run, {"ndcg@10": 0.230, "recall@50": 0.510})
    # the trainer's checkpoint manifest for this run, as `recops-serve train` writes it
    ckpt = checkpoint_dir(body, run)
    ckpt.mkdir(parents=True)
    (ckpt / CHECKPOINT_STATE_NAME).write_text(json.dumps({"saved_at": time.time() - 30}))
    custom = client.CustomObjectsApi(api)
    t0 = time.monotonic()
    args = ["run", "--standalone", "--namespace", ns, "-m", "recops_operator.training.handlers"]
    with KopfRunner(args, timeout=60, registry=training_registry()) as runner:
        custom.create_namespaced_custom_object("recops.io", "v1alpha1", ns, "recommenderservices", body)

        def candidate():
            obj = custom.get_namespaced_custom_object(
                "recops.io", "v1alpha1", ns, "recommenderservices", "home-feed"
            )
            cand = ((obj["spec"].get("rollout") or {}).get("candidate") or {}).get("version")
            last = ((obj.get("status") or {}).get("training") or {}).get("lastRun") or {}
            return obj if cand and last.get("action") else None

        obj = wait_for("candidate set by the closed loop", candidate, timeout=60)
        elapsed = time.monotonic() - t0
        # steady state: kopf's follow-up handling settles, then a full timer period
        # (SYNC_INTERVAL_SECONDS) passes without a single write to the service
        time.sleep(3)
        before = custom.get_namespaced_custom_object(
            "recops.io", "v1alpha1", ns, "recommenderservices", "home-feed"
        )
        time.sleep(handlers.SYNC_INTERVAL_SECONDS + 3)
        after = custom.get_namespaced_custom_object(
            "recops.io", "v1alpha1", ns, "recommenderservices", "home-feed"
        )
    assert runner.exception is None, runner.output[-3000:]
    _training_panels_and_alerts_have_data(ns, tmp_path)
    assert obj["spec"]["rollout"]["candidate"]["version"] == run
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "writes in steady state"
    )
    training = obj["status"]["training"]
    assert training["lastTrigger"] == "nightly-2026-11-24"
    assert training["lastRun"]["name"] == run and training["lastRun"]["phase"] == "Succeeded"
    assert training["lastRun"]["gate"]["passed"] is True
    assert training["lastRun"]["metrics"]["ndcg@10"] == 0.23 and training["lastRun"]["dataWindowDays"] == 90
    job = read_job(api, ns, run)
    assert job["metadata"]["ownerReferences"][0]["name"] == "home-feed"  # removed with the service
    sys.__stdout__.write(f"\ntrigger annotation -> candidate set (operator, KWOK run): {elapsed:.2f}s\n")


def _training_panels_and_alerts_have_data(ns: str, tmp_path) -> None:
    """The registry the handlers just updated (finished run, checkpoint time), scraped by a real
    Prometheus: every training panel and training alert signal returns this namespace's data."""
    from tests.support.prometheus_server import scraping_this_process

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dashboards"))
    from alerts import ALERTS
    from panels import all_queries, concrete

    with scraping_this_process(tmp_path / "prom") as prom:
        prom.wait_for(f'recops_training_last_checkpoint_timestamp_seconds{{namespace="{ns}"}}')
        time.sleep(2)  # a second scrape, for increase()
        exprs = [concrete(q.expr) for _, _, q in all_queries() if "recops_training" in q.expr]
        exprs += [a.expr.rsplit(" ", 2)[0] for a in ALERTS if "recops_training" in a.expr]
        assert len(exprs) >= 5, exprs
        for expr in exprs:
            got = [r for r in prom.query(expr) if r["metric"].get("namespace", ns) == ns]
            assert got, f"no data for {expr}"
