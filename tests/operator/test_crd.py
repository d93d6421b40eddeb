"""The committed CRD is exactly what the pydantic models generate, and it is structural."""

from __future__ import annotations

from pathlib import Path

import yaml

from recops_operator.api import crd, models

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "recommenderservices.recops.io.yaml"


def test_committed_crd_matches_models() -> None:
    assert CRD_FILE.read_text() == crd.render_yaml(), (
        "crds/ drifted from the models: run `python -m recops_operator.api.crd > crds/recommenderservices.recops.io.yaml`"
    )


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_schema_is_structural_and_documented() -> None:
    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    for path, node in _walk(spec):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if path.endswith(".properties"):
            for name, prop in node.items():
                assert prop.get("description"), (
                    f"{path}.{name} has no description (kubectl explain would be empty)"
                )


def test_printer_columns_and_names() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (models.KIND, models.PLURAL, ["recsvc"])
    cols = [c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]]
    for expected in ("Ready", "Stable", "Candidate", "Weight", "Replicas", "Age"):
        assert expected in cols
    assert doc["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_an_explicit_null_that_differs_from_the_default_is_nullable() -> None:
    """targetCPUUtilization: null means "no CPU metric", not the default 60: without nullable the API
    server prunes the null and defaults it (and KWOK pods' unreadable CPU then holds every scale-down)."""
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    auto = spec["properties"]["serving"]["properties"]["autoscaling"]["properties"]
    assert auto["targetCPUUtilization"]["nullable"] is True
    assert auto["targetRequestsPerSecond"]["nullable"] is True
    assert "nullable" not in auto["prometheusURL"], "default null: absent and null are the same"
    nullable = [p for p, n in _walk(spec) if n.get("nullable")]
    assert all("default" in n for p, n in _walk(spec) if n.get("nullable")), nullable
    assert models.Autoscaling.model_validate({"targetCPUUtilization": None}).target_cpu_utilization is None
