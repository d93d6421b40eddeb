"""check_capacity_invariants: training only on spot, inference never on spot."""

from __future__ import annotations

import copy

from recops_contracts import topology
from recops_operator.training import check_capacity_invariants
from recops_operator.training.render import render_cronjob, render_on_demand_job


def _inference_deployment(**pod_spec):
    spec = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": topology.not_spot_node_affinity_terms()}]
                }
            }
        },
        "containers": [{"name": "serve", "image": "x"}],
    }
    spec.update(pod_spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "home-feed-stable"},
        "spec": {"template": {"metadata": {"labels": {"recops.io/track": "stable"}}, "spec": spec}},
    }


def test_rendered_training_and_proper_inference_pass(svc):
    objs = [
        render_cronjob(svc()),
        render_on_demand_job(svc(placement="eci"), "t"),
        _inference_deployment(),
        _inference_deployment(
            affinity=None,
            nodeSelector={"type": "virtual-kubelet"},
            tolerations=[topology.ECI_TAINT.toleration()],
        ),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": []}},
    ]
    assert check_capacity_invariants(objs) == []


def test_training_on_on_demand_capacity_is_rejected(svc):
    job = render_on_demand_job(svc(), "t")
    job["spec"]["template"]["spec"]["affinity"] = None
    (err,) = check_capacity_invariants([job])
    assert "admits on-demand nodes" in err and "Job/" in err

    eci = render_on_demand_job(svc(placement="eci"), "t")
    del eci["spec"]["template"]["metadata"]["annotations"][topology.ECI_SPOT_STRATEGY]
    (err,) = check_capacity_invariants([eci])
    assert topology.ECI_SPOT_STRATEGY in err

    fallback = render_on_demand_job(svc(placement="eci"), "t")
    fallback["spec"]["template"]["metadata"]["annotations"][topology.ECI_SPOT_FALLBACK] = "true"
    (err,) = check_capacity_invariants([fallback])
    assert "fall" in err

    # an OR-ed second term that admits on-demand nodes breaks the invariant
    ored = render_cronjob(svc())
    terms = ored["spec"]["jobTemplate"]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    terms.append(
        {"matchExpressions": [{"key": topology.CAPACITY_LABEL, "operator": "In", "values": ["on-demand"]}]}
    )
    (err,) = check_capacity_invariants([ored])
    assert "term 1" in err and "CronJob/home-feed-train" in err


def test_inference_on_spot_is_rejected():
    spot_ann = _inference_deployment()
    spot_ann["spec"]["template"]["metadata"]["annotations"] = {topology.ECI_SPOT_STRATEGY: "SpotAsPriceGo"}
    assert any("must not carry" in e for e in check_capacity_invariants([spot_ann]))

    tolerating = _inference_deployment(tolerations=[{"operator": "Exists"}])
    assert any("tolerate the spot taint" in e for e in check_capacity_invariants([tolerating]))

    unconstrained = _inference_deployment(affinity=None)
    assert any("admits spot nodes" in e for e in check_capacity_invariants([unconstrained]))

    on_spot_pool = copy.deepcopy(
        _inference_deployment(nodeSelector={topology.CAPACITY_LABEL: "spot"}, affinity=None)
    )
    assert any("admits spot nodes" in e for e in check_capacity_invariants([on_spot_pool]))


def test_bare_pod_templates_are_accepted_too(svc):
    tpl = render_on_demand_job(svc(), "t")["spec"]["template"]
    assert check_capacity_invariants([tpl]) == []
    tpl["spec"]["tolerations"] = []
    assert check_capacity_invariants([tpl]) != []
