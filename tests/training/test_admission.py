"""The operator's validating webhook applies the capacity invariant to training templates."""

from __future__ import annotations

from recops_contracts import topology
from recops_operator import webhook
from recops_operator.training import render


def _body(svc, **training):
    body = svc(**training)
    body["spec"]["serving"]["featureStore"] = {"secretRef": {"name": "tair"}}
    return body


def test_valid_training_is_admitted_with_and_without_schedule(svc):
    assert webhook.problems(_body(svc)) == []
    assert webhook.problems(_body(svc, schedule=None, placement="eci")) == []


def test_a_renderer_that_drifts_off_spot_is_caught_at_admission(svc, monkeypatch):
    """Defence in depth: whatever the renderer produces is checked, scheduled or on-demand."""
    real = render._placement

    def on_demand_capacity(cfg):
        affinity, _, annotations = real(cfg)
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] = [
            {
                "matchExpressions": [
                    {"key": topology.CAPACITY_LABEL, "operator": "In", "values": ["on-demand"]}
                ]
            }
        ]
        return affinity, [], annotations

    monkeypatch.setattr(render, "_placement", on_demand_capacity)
    errors = webhook.problems(_body(svc, schedule=None))
    assert errors and all("admits on-demand nodes" in e for e in errors)
    assert any(e.startswith("Job/home-feed-train-od-") for e in errors)
    assert any(e.startswith("CronJob/home-feed-train") for e in webhook.problems(_body(svc)))


def test_a_bad_training_spec_is_rejected_with_a_specific_message(svc):
    errors = webhook.problems(_body(svc, capacity="on-demand"))
    assert errors and "capacity" in errors[0]
    errors = webhook.problems(_body(svc, terminationGracePeriodSeconds=400))
    assert errors and "terminationGracePeriodSeconds" in errors[0]
