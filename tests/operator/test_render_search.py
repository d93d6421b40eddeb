"""spec.search renders a spot-only vectorization CronJob like training's and the serving config."""

from __future__ import annotations

import json

import pydantic
import pytest

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import desired_objects
from recops_operator.render.serving import Owner
from recops_operator.training.invariants import check_capacity_invariants
from tests.support.specs import spec as base_spec

OWNER = Owner("home-feed", "shop", "uid-1")


def spec(**search) -> RecommenderServiceSpec:
    raw = base_spec().model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["search"] = {
        "catalog": "oss://retail-data-hz/catalog/",
        "uri": "oss://retail-models-hz/search/",
        "schedule": "0 3 * * *",
        **search,
    }
    return RecommenderServiceSpec.model_validate(raw)


def _by_kind(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def test_vectorize_cronjob_is_spot_only_and_resumable():
    objs = desired_objects(OWNER, spec(placement="eci", checkpointIntervalSeconds=120))
    (cron,) = _by_kind(objs, "CronJob", "home-feed-vectorize")
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "vectorize",
        "--catalog",
        "oss://retail-data-hz/catalog/",
        "--out",
        "oss://retail-models-hz/search/$(RECOPS_RUN_ID)",
        "--checkpoint",
        "oss://retail-models-hz/search/_checkpoints/$(RECOPS_RUN_ID)",
        "--checkpoint-interval",
        "120",
        "--resume",
        "--version",
        "$(RECOPS_RUN_ID)",
    ]
    ann = job["template"]["metadata"]["annotations"]
    assert ann["k8s.aliyun.com/eci-spot-strategy"] == "SpotAsPriceGo"
    assert ann["k8s.aliyun.com/eci-spot-fallback"] == "false"
    rules = job["podFailurePolicy"]["rules"]
    assert any(
        r["action"] == "Ignore"
        and {"type": "DisruptionTarget", "status": "True"} in r.get("onPodConditions", [])
        for r in rules
    )
    assert any(r["action"] == "Ignore" and r.get("onExitCodes", {}).get("values") == [143] for r in rules)
    assert any(r["action"] == "FailJob" and 78 in r.get("onExitCodes", {}).get("values", []) for r in rules)
    assert pod["terminationGracePeriodSeconds"] == 120
    assert job["template"]["metadata"]["labels"]["recops.io/component"] == "search"
    # its own NetworkPolicy, as training's
    assert _by_kind(objs, "NetworkPolicy", "home-feed-search")


def test_visual_search_embeds_images_in_the_same_job():
    (cron,) = _by_kind(desired_objects(OWNER, spec()), "CronJob", "home-feed-vectorize")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--visual" not in args  # off by default: text only
    objs = desired_objects(OWNER, spec(visual={"enabled": True, "maxFailedImages": 0.1}))
    (cron,) = _by_kind(objs, "CronJob", "home-feed-vectorize")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-3:] == ["--visual", "--max-failed-images", "0.1"]
    with pytest.raises(pydantic.ValidationError, match="maxFailedImages"):
        spec(visual={"enabled": True, "maxFailedImages": 2})
    with pytest.raises(pydantic.ValidationError, match="efficientnet-lite0"):
        spec(visual={"enabled": True, "model": "resnet50"})


def test_nodes_placement_uses_the_spot_pool():
    (cron,) = _by_kind(desired_objects(OWNER, spec()), "CronJob", "home-feed-vectorize")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert "spot" in json.dumps(terms).lower() and pod["tolerations"]


def test_serving_config_names_the_search_bundle():
    objs = desired_objects(OWNER, spec(version="s-2026-12-01", alpha=0.7))
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and "config.json" in o["data"])
    cfg = json.loads(cm["data"]["config.json"])
    assert cfg["search_uri"] == "oss://retail-models-hz/search/s-2026-12-01"
    assert cfg["search_alpha"] == 0.7
    # without a version: no search bundle configured (the routes answer 503), and no schedule: no job
    objs = desired_objects(OWNER, spec(schedule=None))
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and "config.json" in o["data"])
    assert "search_uri" not in json.loads(cm["data"]["config.json"])
    assert not _by_kind(objs, "CronJob", "home-feed-vectorize")


def test_admission_capacity_check_accepts_the_spot_job_and_refuses_it_off_spot():
    for placement in ("nodes", "eci"):
        assert check_capacity_invariants(desired_objects(OWNER, spec(placement=placement))) == []
    (cron,) = _by_kind(desired_objects(OWNER, spec()), "CronJob", "home-feed-vectorize")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["affinity"] = {}
    pod["tolerations"] = []
    errors = check_capacity_invariants([cron])
    assert errors and "home-feed-vectorize" in errors[0], errors
