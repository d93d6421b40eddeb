"""The one-line translation of an API server rejection, and the retry backoff (pure)."""

from __future__ import annotations

import json

from kubernetes.client.rest import ApiException

from recops_operator import rejections
from recops_operator.reconcile import backoff

BODY_422 = {
    "kind": "Status",
    "status": "Failure",
    "message": 'Deployment.apps "home-feed" is invalid: spec.template.spec.containers[0].resources.requests: '
    'Invalid value: "4": must be less than or equal to cpu limit of 1',
    "reason": "Invalid",
    "details": {
        "name": "home-feed",
        "kind": "Deployment",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "4": must be less than or equal to cpu limit of 1',
                "field": "spec.template.spec.containers[0].resources.requests",
            }
        ],
    },
    "code": 422,
}


def _exc(body) -> ApiException:
    e = ApiException(status=422, reason="Unprocessable Entity")
    e.body = json.dumps(body)
    return e


def test_a_422_becomes_one_line_naming_child_child_field_and_spec_field():
    spec = {"serving": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}}}
    msg = rejections.describe("Deployment", "home-feed", _exc(BODY_422), spec)
    assert msg == (
        "spec.serving.resources.requests.cpu: Deployment home-feed rejected "
        'spec.template.spec.containers[0].resources.requests: Invalid value: "4": '
        "must be less than or equal to cpu limit of 1"
    )


def test_an_ambiguous_value_names_no_spec_field_and_raw_bodies_are_summarised():
    spec = {"a": "4", "b": "4"}
    assert rejections.describe("Deployment", "x", _exc(BODY_422), spec).startswith("Deployment x rejected")
    e = ApiException(status=500, reason="Internal")
    e.body = "<html>" + "word " * 200
    msg = rejections.describe("ConfigMap", "c", e)
    assert len(msg) <= rejections.MAX_MESSAGE and msg.endswith("…") and " wor…" not in msg


def test_shorten_cuts_at_a_word_boundary():
    assert rejections.shorten("alpha beta gamma", 12) == "alpha beta…"
    assert rejections.shorten("a\nb") == "a b"


def test_backoff_is_exponential_and_capped():
    delays = [backoff(r) for r in range(12)]
    assert delays[:4] == [2, 4, 8, 16]
    assert max(delays) == 60 and delays == sorted(delays)


def test_equal_values_are_told_apart_by_the_child_field_names():
    spec = {"serving": {"resources": {"requests": {"cpu": "4"}}, "replicas": {"min": 4}}}
    msg = rejections.describe("Deployment", "home-feed", _exc(BODY_422), spec)
    assert msg.startswith("spec.serving.resources.requests.cpu: "), msg


def test_only_new_or_changed_specs_are_judged():
    from recops_operator.webhook import needs_validation

    spec = {"region": "cn-hangzhou"}
    assert needs_validation({"spec": spec}, None)
    assert needs_validation({"spec": {**spec, "x": 1}}, {"spec": spec})
    assert not needs_validation({"spec": spec, "metadata": {"finalizers": ["f"]}}, {"spec": spec})
    assert not needs_validation({"spec": {"x": 2}, "metadata": {"deletionTimestamp": "t"}}, {"spec": spec})
