"""One pod identity: every pod the operator renders (stable, canary, training CronJob and
on-demand Job) and the operator's own pod run as the user the images create."""

from __future__ import annotations

import re
from pathlib import Path

from recops_operator import pods
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.training.render import render_on_demand_job
from tests.support.kube import service

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner(name="home-feed", namespace="shop", uid="0b7c6b3e-0000-4000-8000-000000000002")


def _image_uid(dockerfile: str) -> int:
    text = (ROOT / dockerfile).read_text()
    uid = int(re.search(r"useradd --uid (\d+)", text).group(1))
    assert re.search(rf"^USER {uid}(:{uid})?$", text, re.M), f"{dockerfile} runs as its useradd uid"
    return uid


def _pod_specs(objs):
    for o in objs:
        spec = o.get("spec") or {}
        if o["kind"] == "CronJob":
            yield o, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] in ("Deployment", "Job"):
            yield o, spec["template"]["spec"]


def test_every_rendered_pod_runs_as_the_image_user():
    uid = _image_uid("inference_image/Dockerfile")
    assert pods.RUN_AS_USER == uid == _image_uid("operator/Dockerfile")
    body = service("home-feed")
    body["spec"]["rollout"]["candidate"] = {"version": "2026-12-01"}
    spec = RecommenderServiceSpec.model_validate(body["spec"])
    rollout = {"phase": "Progressing", "candidate": "2026-12-01", "weight": 10, "stepIndex": 1}
    objs = desired_objects(OWNER, spec, RenderContext(rollout=rollout))
    full = {**body, "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid}}
    objs += [render_on_demand_job(full, "manual-1")]
    seen = set()
    for obj, pod in _pod_specs(objs):
        seen.add((obj["kind"], obj["metadata"]["name"]))
        assert pod["securityContext"] == pods.pod_security_context(), obj["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"] == pods.container_security_context(), (
                obj["metadata"]["name"],
                c["name"],
            )
    kinds = {k for k, _ in seen}
    assert {"Deployment", "CronJob", "Job"} <= kinds and sum(k == "Deployment" for k, _ in seen) == 2, seen


def test_the_chart_runs_the_operator_as_its_image_user():
    chart = (ROOT / "charts/recops-operator/templates/deployment.yaml").read_text()
    uid = _image_uid("operator/Dockerfile")
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert re.search(rf"{key}: {uid}\b", chart), key
