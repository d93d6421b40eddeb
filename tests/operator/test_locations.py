"""Every field that names a location is marked as one, and the one admission rule checks them all.

The walk covers every field of every model reachable from RecommenderServiceSpec: a new field
that looks like a location (by name or by pattern) and is not marked fails here, and a marked
field the rule does not reach fails the second test.
"""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel

from recops_operator.api import models as m
from recops_operator.api.semantics import image_registry, location_errors, path_tricks

LOOKS_LIKE_LOCATION = re.compile(
    r"((^|_)(uri|url|image|host|endpoint|registry|bucket|mirror|target|queue|address|server|cidrs)$)|^(events|catalog)$"
)
LOCATION_PATTERNS = {m.OSS_URI_PATTERN, m.DATA_URI_PATTERN, m.IMAGE_PATTERN}


def _models(t) -> list[type[BaseModel]]:
    """Models inside an annotation (X, X | None, list[X], ...)."""
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [t]
    return [sub for arg in typing.get_args(t) for sub in _models(arg)]


def walk(model: type[BaseModel], path: str = "spec", seen=None):
    seen = set() if seen is None else seen
    for name, field in model.model_fields.items():
        where = f"{path}.{field.alias or name}"
        yield where, name, field
        for sub in _models(field.annotation):
            if sub not in seen:
                seen.add(sub)
                yield from walk(sub, where, seen)


def _pattern(field) -> str | None:
    return next((getattr(x, "pattern", None) for x in field.metadata if getattr(x, "pattern", None)), None)


def test_every_location_looking_field_is_marked():
    unmarked = [
        where
        for where, name, field in walk(m.RecommenderServiceSpec)
        if (LOOKS_LIKE_LOCATION.search(name) or _pattern(field) in LOCATION_PATTERNS)
        and not _models(field.annotation)
        and m.location_of(field) is None
    ]
    assert not unmarked, f"mark these with models.Location (and make sure the rule fits): {unmarked}"


def test_the_rule_checks_every_marked_field():
    marked = {
        where: m.location_of(f).kind for where, _, f in walk(m.RecommenderServiceSpec) if m.location_of(f)
    }
    assert len(marked) >= 9, marked
    bad = {
        "oss": "oss://elsewhere-cn-shanghai/x/",
        "data": "oss://elsewhere-cn-shanghai/x/",
        "image": "docker.io/library/nginx:1",
        "endpoint": "http://169.254.169.254/",
        "host": "100.100.100.200",
        "cidr": ["169.254.0.0/16"],
        "model": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    }
    spec = {"region": "cn-hangzhou"}
    for where, kind in marked.items():
        node = spec
        keys = where.split(".")[1:]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = bad[kind]
    spec["serving"].setdefault("image", bad["image"])
    spec["model"].setdefault("version", "v1")
    spec["rollout"]["candidate"]["version"] = "v2"
    spec["training"]["checkpoint"].setdefault("uri", bad["oss"])
    spec["features"]["stream"]["kafka"] = {"bootstrapSecretRef": {"name": "kafka"}}
    spec["serving"]["featureStore"] = {"secretRef": {"name": "tair"}}  # features.stream writes there
    spec["search"]["assistant"]["model"] = "qwen-plus"
    errors = location_errors(m.RecommenderServiceSpec.model_validate(spec), {}, {})
    named = {e.split(":")[0].split("[")[0] for e in errors}  # list items: spec.x[0] -> spec.x
    assert named == set(marked), f"not checked: {set(marked) - named}; errors: {errors}"


@pytest.mark.parametrize(
    ("path", "trick"),
    [
        ("/a/../b", True),
        ("/a/./b", True),
        ("/a/%2e%2e/b", True),
        ("/a//b", True),
        ("/a\\b", True),
        ("/home-feed/", False),
        ("/a/b.parquet", False),
        ("", False),
    ],
)
def test_path_tricks(path, trick):
    assert (path_tricks(path) is not None) == trick


def test_registry_of_an_image():
    assert image_registry("nginx:1") == "docker.io"
    assert (
        image_registry("registry-vpc.cn-hangzhou.aliyuncs.com/recops/serve:1")
        == "registry-vpc.cn-hangzhou.aliyuncs.com"
    )
    assert image_registry("localhost:5000/x") == "localhost:5000"


def test_digest_pinning_is_an_admission_policy(monkeypatch):
    spec = m.RecommenderServiceSpec.model_validate(
        {
            "region": "cn-hangzhou",
            "model": {"uri": "oss://m-cn-hangzhou/x/", "version": "v1"},
            "serving": {"image": "registry-vpc.cn-hangzhou.aliyuncs.com/r/serve:1"},
        }
    )
    assert location_errors(spec, {}, {}) == []
    monkeypatch.setenv("RECOPS_REQUIRE_IMAGE_DIGEST", "true")
    (err,) = location_errors(spec, {}, {})
    assert err.startswith("spec.serving.image: ") and "pinned by tag only" in err
    pinned = spec.model_copy(
        update={
            "serving": spec.serving.model_copy(update={"image": spec.serving.image + "@sha256:" + "a" * 64})
        }
    )
    assert location_errors(pinned, {}, {}) == []


def _with_assistant(endpoint: str) -> m.RecommenderServiceSpec:
    return m.RecommenderServiceSpec.model_validate(
        {
            "region": "cn-hangzhou",
            "model": {"uri": "oss://m-cn-hangzhou/x/", "version": "v1"},
            "serving": {"image": "registry-vpc.cn-hangzhou.aliyuncs.com/r/serve:1"},
            "search": {
                "catalog": "oss://c-cn-hangzhou/catalog/",
                "uri": "oss://m-cn-hangzhou/search/",
                "assistant": {"endpoint": endpoint, "model": "qwen2.5-7b-instruct"},
            },
        }
    )


@pytest.mark.parametrize(
    ("endpoint", "error"),
    [
        ("http://vllm.llm.svc:8000/v1", None),
        ("http://vllm.llm.svc.cluster.local/v1", None),
        ("http://10.0.3.7:8000/v1", None),
        ("http://1234567.vpc.cn-hangzhou.pai-eas.aliyuncs.com/api/predict/qwen/v1", None),
        (
            "http://1234567.vpc.cn-shanghai.pai-eas.aliyuncs.com/api/predict/qwen/v1",
            "model API '1234567.vpc.cn-shanghai.pai-eas.aliyuncs.com' is in cn-shanghai, outside spec.region cn-hangzhou",
        ),
        (
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            "model API 'dashscope-intl.aliyuncs.com' is in ap-southeast-1, outside spec.region cn-hangzhou",
        ),
        (
            # the public PAI-EAS endpoint of the right region is still the internet
            "https://1234567.cn-hangzhou.pai-eas.aliyuncs.com/api/predict/qwen/v1",
            "is neither in-cluster (*.svc), a private address, the cn-hangzhou PAI-EAS VPC endpoint",
        ),
        ("https://api.openai.com/v1", "host 'api.openai.com' is neither in-cluster"),
        ("http://8.8.8.8/v1", "host '8.8.8.8' is a public address"),
        ("http://169.254.169.254/v1", "link-local or the instance metadata service"),
        ("http://vllm.llm.svc/a/../v1", "path has a dot segment"),
    ],
)
def test_the_model_api_of_answer_synthesis_stays_in_the_vpc_and_the_region(endpoint, error):
    errors = location_errors(_with_assistant(endpoint), {}, {})
    if error is None:
        assert errors == []
    else:
        (got,) = errors
        assert got.startswith("spec.search.assistant.endpoint: ") and error in got, got


def test_a_registered_private_link_host_is_admitted_in_its_region(monkeypatch):
    host = "ep-1.dashscope.cn-hangzhou.privatelink.aliyuncs.com"
    spec = _with_assistant(f"https://{host}/compatible-mode/v1")
    (err,) = location_errors(spec, {}, {})
    assert "nor in RECOPS_MODEL_API_REGIONS" in err
    monkeypatch.setenv("RECOPS_MODEL_API_REGIONS", f"{host}=cn-hangzhou")
    assert location_errors(spec, {}, {}) == []
    monkeypatch.setenv("RECOPS_MODEL_API_REGIONS", f"{host}=cn-beijing")
    (err,) = location_errors(spec, {}, {})
    assert "is in cn-beijing, outside spec.region cn-hangzhou" in err


def test_model_api_credentials_belong_in_a_secret():
    with pytest.raises(ValueError, match="pattern"):  # the CRD pattern refuses user:pass@ already
        _with_assistant("https://user:sk-123@vllm.llm.svc/v1")
