"""Pure render of training CronJob/Job: schema-valid, spot-only, preemption-tolerant, hardened."""

from __future__ import annotations

import kubernetes_validate
import pytest

from recops_contracts import topology
from recops_operator import pods
from recops_operator.training import config as c
from recops_operator.training import naming
from recops_operator.training.config import TrainingConfigError
from recops_operator.training.invariants import check_capacity_invariants
from recops_operator.training.render import (
    pending_trigger,
    render_cronjob,
    render_on_demand_job,
    render_training,
)

K8S = "1.37.0"


def _container(pod_template):
    (container,) = pod_template["spec"]["containers"]
    return container


def test_cronjob_is_schema_valid_and_never_runs_twice(svc):
    cron = render_cronjob(svc())
    kubernetes_validate.validate(cron, K8S, strict=True)
    assert cron["metadata"]["name"] == "home-feed-train"
    assert cron["spec"]["schedule"] == "0 2 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["successfulJobsHistoryLimit"] == 3
    assert cron["spec"]["suspend"] is False
    owner = cron["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("RecommenderService", "home-feed", True)


def test_no_schedule_means_no_cronjob_and_no_training_means_nothing(svc):
    assert render_cronjob(svc(schedule=None)) is None
    body = svc()
    del body["spec"]["training"]
    assert render_training(body) == []


def test_job_spec_ignores_disruption_and_fails_fast_on_config_errors(svc):
    job = render_on_demand_job(svc(), "tok-1")
    kubernetes_validate.validate(job, K8S, strict=True)
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    ignored = {
        cond["type"] for r in rules if r["action"] == "Ignore" for cond in r.get("onPodConditions", [])
    }
    assert ignored == {"DisruptionTarget", c.ECI_EXPIRED_CONDITION}
    (fail,) = [r for r in rules if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": c.CONTAINER_NAME, "operator": "In", "values": [2, 64, 78]}
    # SIGTERM exit (checkpointed on request) is not a failure either
    assert any(r["action"] == "Ignore" and r.get("onExitCodes", {}).get("values") == [143] for r in rules)


def test_run_id_checkpoint_and_resume_args_are_the_same_for_every_pod_of_a_run(svc):
    tpl = render_on_demand_job(svc(), "tok-1")["spec"]["template"]
    container = _container(tpl)
    env = {e["name"]: e for e in container["env"]}
    # the run id comes from the Job, so a replacement pod of the same Job gets the same one
    assert (
        env["RECOPS_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['batch.kubernetes.io/job-name']"
    )
    assert (
        env["RECOPS_CHECKPOINT_URI"]["value"]
        == "oss://retail-models-cn-hangzhou/ckpt/home-feed/$(RECOPS_RUN_ID)"
    )
    assert env["RECOPS_OUTPUT_URI"]["value"] == "oss://retail-models-cn-hangzhou/home-feed/$(RECOPS_RUN_ID)"
    assert env["RECOPS_MODEL_VERSION"]["value"] == "$(RECOPS_RUN_ID)"
    assert env["RECOPS_DATA_WINDOW_DAYS"]["value"] == "90"
    # threads follow the container's CPU limit (downward API), not the node's core count
    assert env["RECOPS_TRAIN_THREADS"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": container["name"],
        "resource": "limits.cpu",
    }
    assert container["resources"]["limits"]["cpu"]
    names = [e["name"] for e in container["env"]]
    assert names.index("RECOPS_RUN_ID") < names.index(
        "RECOPS_CHECKPOINT_URI"
    )  # $(VAR) needs earlier definition
    args = container["args"]
    assert args[0] == "train" and "--resume" in args
    assert args[args.index("--checkpoint") + 1] == "$(RECOPS_CHECKPOINT_URI)"
    assert args[args.index("--checkpoint-interval") + 1] == "120"
    assert args[args.index("--out") + 1] == "$(RECOPS_OUTPUT_URI)"
    assert args[args.index("--version") + 1] == "$(RECOPS_MODEL_VERSION)"
    assert args[args.index("--events") + 1] == "builtin:completejourney"
    assert "--catalog" not in args and "--dataset" not in args


def test_spot_pool_placement(svc):
    tpl = render_cronjob(svc())["spec"]["jobTemplate"]["spec"]["template"]
    terms = tpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchExpressions": topology.spot_only_node_affinity_terms()}]
    assert tpl["spec"]["tolerations"] == [topology.SPOT_TAINT.toleration()]
    assert topology.ECI_SPOT_STRATEGY not in tpl["metadata"]["annotations"]


def test_eci_spot_placement_has_no_on_demand_fallback(svc):
    tpl = render_cronjob(svc(placement="eci"))["spec"]["jobTemplate"]["spec"]["template"]
    ann = tpl["metadata"]["annotations"]
    assert ann[topology.ECI_SPOT_STRATEGY] == "SpotAsPriceGo"
    assert ann[topology.ECI_SPOT_FALLBACK] == "false"
    assert ann[topology.ECI_SPOT_RELEASE_STRATEGY] == "api-evict"
    assert tpl["spec"]["tolerations"] == [topology.ECI_TAINT.toleration()]
    (term,) = tpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]


def test_pod_is_hardened_and_exits_inside_the_spot_notice(svc):
    tpl = render_on_demand_job(svc(), "t")["spec"]["template"]
    pod = tpl["spec"]
    assert pod["terminationGracePeriodSeconds"] < c.SPOT_NOTICE_SECONDS
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(tpl)["securityContext"]
    assert sc == pods.container_security_context()  # the one hardened shape every pod shares
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"] == {"drop": ["ALL"]}
    )
    res = _container(tpl)["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "2", "memory": "4Gi"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"capacity": "on-demand"}, "spot"),
        ({"terminationGracePeriodSeconds": 200}, "terminationGracePeriodSeconds: .* 150"),
        ({"data": None}, "spec.training.data: "),
        ({"dataset": "completejourney"}, "spec.training.data"),
        ({"checkpoint": {"intervalSeconds": 60}}, "checkpoint.uri"),
        ({"placement": "anywhere"}, "placement"),
    ],
)
def test_bad_training_spec_gets_a_specific_error(svc, override, message):
    with pytest.raises(TrainingConfigError, match=message):
        render_on_demand_job(svc(**override), "t")


def test_on_demand_job_name_is_deterministic_per_token_and_a_valid_label(svc):
    a1 = render_on_demand_job(svc(), "2026-11-24T02:00")
    a2 = render_on_demand_job(svc(), "2026-11-24T02:00")
    b = render_on_demand_job(svc(), "another")
    assert a1["metadata"]["name"] == a2["metadata"]["name"] != b["metadata"]["name"]
    assert a1["metadata"]["annotations"][c.TRIGGER_TOKEN_ANNOTATION] == "2026-11-24T02:00"
    assert a1["metadata"]["labels"][c.TRIGGER_LABEL] == c.TRIGGER_ON_DEMAND
    assert a1["spec"]["ttlSecondsAfterFinished"] > 0
    long = "x" * 63
    assert len(naming.training_base_name(long)) <= 52 - 2
    assert len(naming.on_demand_job_name(long, "t")) <= 63
    assert len(naming.training_base_name(long)) + len("-29384521") <= 63


def test_trigger_field_annotation_and_status_record(svc):
    body = svc(trigger="run-1")
    assert pending_trigger(body) == "run-1"
    body["metadata"]["annotations"] = {c.TRIGGER_ANNOTATION: "run-2"}
    assert pending_trigger(body) == "run-2"  # annotation wins
    body["status"] = {"training": {"lastTrigger": "run-2"}}
    assert pending_trigger(body) is None  # already turned into a run


def test_every_run_is_created_queued(svc):
    assert render_on_demand_job(svc(), "t")["spec"]["suspend"] is True
    assert render_cronjob(svc())["spec"]["jobTemplate"]["spec"]["suspend"] is True


def test_pipeline_hook_renders_the_cronjob_from_the_typed_spec(svc):
    from recops_operator.api.models import RecommenderServiceSpec
    from recops_operator.render import Owner, RenderContext, desired_objects

    body = svc()
    body["spec"]["serving"]["featureStore"] = {"secretRef": {"name": "tair"}}
    spec = RecommenderServiceSpec.model_validate(body["spec"])
    owner = Owner(name="home-feed", namespace="shop", uid=body["metadata"]["uid"])
    objs = desired_objects(owner, spec, RenderContext())
    (cron,) = [o for o in objs if o["kind"] == "CronJob"]
    assert cron == render_cronjob(body)  # typed spec and raw body render the same object
    kubernetes_validate.validate(cron, K8S, strict=True)
    assert check_capacity_invariants(objs) == []  # serving + training together


def test_retrieval_gate_and_mode_reach_the_trainer_only_when_set(svc):
    default = _container(render_on_demand_job(svc(), "t")["spec"]["template"])["args"]
    assert "--min-recall" not in default and "--retrieval" not in default  # the trainer's own defaults
    args = _container(
        render_on_demand_job(svc(retrieval={"minRecall": 0.97, "mode": "index"}), "t")["spec"]["template"]
    )["args"]
    assert args[args.index("--min-recall") + 1] == "0.97"
    assert args[args.index("--retrieval") + 1] == "index"
