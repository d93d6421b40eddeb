"""spec.search renders a spot-only vectorization CronJob like training's and the serving config."""

from __future__ import annotations

import json

import pydantic
import pytest

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import desired_objects
from recops_operator.render.serving import Owner, RenderContext
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


def _rolling(candidate: dict, **search) -> RecommenderServiceSpec:
    raw = spec(version="s-old", **search).model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["rollout"] = {"candidate": candidate, "shadow": {"percent": 20}}
    return RecommenderServiceSpec.model_validate(raw)


def _configs(s: RecommenderServiceSpec, rollout: dict) -> dict[str, dict]:
    """track -> its serving config, as rendered for ``status.rollout``."""
    objs = desired_objects(OWNER, s, RenderContext(rollout=rollout))
    return {
        o["metadata"]["labels"]["recops.io/track"]: json.loads(o["data"]["config.json"])
        for o in objs
        if o["kind"] == "ConfigMap" and "config.json" in o.get("data", {})
    }


@pytest.mark.parametrize("phase", ["Shadowing", "Progressing"])
def test_the_canary_serves_the_candidates_search_bundle(phase):
    s = _rolling({"version": "m-new", "searchVersion": "s-new"})
    cfg = _configs(s, {"phase": phase, "candidate": "m-new", "stepIndex": -1 if phase == "Shadowing" else 0})
    assert cfg["canary"]["model_version"] == "m-new"
    assert cfg["canary"]["search_uri"] == "oss://retail-models-hz/search/s-new"
    assert cfg["stable"]["search_uri"] == "oss://retail-models-hz/search/s-old"
    # while shadowing, stable mirrors (search included) to the canary Service; not once it is live
    assert ("shadow_url" in cfg["stable"]) == (phase == "Shadowing")
    if phase == "Shadowing":
        assert cfg["stable"]["shadow_url"] == "http://home-feed-canary.shop.svc"


def test_a_candidate_without_a_search_version_keeps_the_stable_bundle():
    s = _rolling({"version": "m-new"})
    cfg = _configs(s, {"phase": "Progressing", "candidate": "m-new", "stepIndex": 0})
    assert cfg["canary"]["search_uri"] == cfg["stable"]["search_uri"] == "oss://retail-models-hz/search/s-old"


def test_stable_takes_the_candidates_search_bundle_when_it_is_promoted():
    s = _rolling({"version": "m-new", "searchVersion": "s-new"})
    cfg = _configs(s, {"phase": "Promoting", "candidate": "m-new", "weight": 100})
    assert (cfg["stable"]["model_version"], cfg["stable"]["search_uri"]) == (
        "m-new",
        "oss://retail-models-hz/search/s-new",
    )
    # the candidate removed after success: stable keeps the promoted pair until spec.model changes
    raw = s.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["rollout"].pop("candidate")
    after = RecommenderServiceSpec.model_validate(raw)
    done = {
        "phase": "Idle",
        "promotedVersion": "m-new",
        "promotedSearchVersion": "s-new",
        "promotedOver": after.model.version,
    }
    assert _configs(after, done)["stable"]["search_uri"] == "oss://retail-models-hz/search/s-new"
    raw["model"]["version"] = "m-next"  # the GitOps follow-up names both again
    raw["search"]["version"] = "s-next"
    moved = RecommenderServiceSpec.model_validate(raw)
    assert _configs(moved, done)["stable"]["search_uri"] == "oss://retail-models-hz/search/s-next"


def test_a_candidate_search_version_needs_spec_search():
    raw = base_spec().model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["rollout"] = {"candidate": {"version": "m-new", "searchVersion": "s-new"}}
    with pytest.raises(pydantic.ValidationError, match=r"set spec\.search"):
        RecommenderServiceSpec.model_validate(raw)


ASSISTANT = {
    "endpoint": "http://vllm.llm.svc:8000/v1/",
    "model": "qwen2.5-7b-instruct",
    "apiKeySecretRef": {"name": "llm-key"},
    "cidrs": ["10.8.0.0/16"],
}


def test_the_assistant_reaches_the_config_its_key_is_a_secret_file_and_egress_opens_its_port():
    objs = desired_objects(OWNER, spec(version="s1", assistant=ASSISTANT))
    (cm,) = _by_kind(objs, "ConfigMap", "home-feed-serving")
    cfg = json.loads(cm["data"]["config.json"])
    assert (
        cfg["assistant_url"] == "http://vllm.llm.svc:8000/v1"
        and cfg["assistant_model"] == "qwen2.5-7b-instruct"
    )
    assert (
        cfg["assistant_budget_tokens"],
        cfg["assistant_max_answer_tokens"],
        cfg["assistant_timeout_seconds"],
    ) == (
        1500,
        400,
        20.0,
    )
    assert "llm-key" not in cm["data"]["config.json"]  # the key is never config
    (dep,) = _by_kind(objs, "Deployment", "home-feed")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    path = args[args.index("--assistant-key-file") + 1]
    assert path == "/var/run/secrets/recops/assistant/api-key"
    (vol,) = [v for v in pod["volumes"] if v["name"] == "assistant-key"]
    assert vol["secret"]["secretName"] == "llm-key" and vol["secret"]["items"] == [
        {"key": "api-key", "path": "api-key"}
    ]
    assert "optional" not in vol["secret"]
    assert not any(e.get("name", "").endswith("KEY") for e in pod["containers"][0].get("env", []))
    for track in ("stable", "canary"):
        (policy,) = _by_kind(objs, "NetworkPolicy", f"home-feed-{track}")
        rules = policy["spec"]["egress"]
        assert {
            "to": [{"ipBlock": {"cidr": "10.8.0.0/16"}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        } in rules
    (search,) = _by_kind(objs, "NetworkPolicy", "home-feed-search")  # the vectorization pods
    assert not any(r.get("ports") == [{"protocol": "TCP", "port": 8000}] for r in search["spec"]["egress"])


def test_without_an_assistant_nothing_of_it_is_rendered_and_the_egress_port_can_be_named():
    objs = desired_objects(OWNER, spec(version="s1"))
    (cm,) = _by_kind(objs, "ConfigMap", "home-feed-serving")
    assert "assistant_url" not in json.loads(cm["data"]["config.json"])  # /v1/answer: 503
    (dep,) = _by_kind(objs, "Deployment", "home-feed")
    assert "--assistant-key-file" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    keyless = {**ASSISTANT, "endpoint": "https://1.vpc.cn-hangzhou.pai-eas.aliyuncs.com/api/predict/q/v1"}
    del keyless["apiKeySecretRef"]
    objs = desired_objects(OWNER, spec(version="s1", assistant=keyless))
    (dep,) = _by_kind(objs, "Deployment", "home-feed")
    assert "--assistant-key-file" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    (policy,) = _by_kind(objs, "NetworkPolicy", "home-feed-stable")
    assert [{"protocol": "TCP", "port": 443}] in [r["ports"] for r in policy["spec"]["egress"]]
    objs = desired_objects(OWNER, spec(version="s1", assistant={**ASSISTANT, "egressPort": 8080}))
    (policy,) = _by_kind(objs, "NetworkPolicy", "home-feed-stable")
    assert {
        "to": [{"ipBlock": {"cidr": "10.8.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    } in policy["spec"]["egress"]
