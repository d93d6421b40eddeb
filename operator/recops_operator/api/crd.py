"""Generate the RecommenderService CRD from the pydantic models.

pydantic emits JSON Schema with ``$ref``/``$defs``, ``anyOf: [X, null]`` for
optionals and ``title`` keys; Kubernetes wants a *structural* OpenAPI v3 schema.
This module inlines references, turns optionals into plain (non-required)
properties and keeps descriptions, defaults, bounds, enums, patterns and the
``x-kubernetes-*`` extensions carried by ``json_schema_extra``. An optional whose
default is not null is ``nullable`` (an explicit null is kept, not defaulted).

``python -m recops_operator.api.crd > crds/recommenderservices.recops.io.yaml``
regenerates the committed file; ``tests/operator/test_crd.py`` fails on drift.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from recops_operator.api import models as m
from recops_operator.api.status import drop_none

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "properties",
    "items",
    "required",
    "additionalProperties",
}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unsupported union in schema: {node}")
        nullable = len(variants) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_structural(variants[0], defs), **rest}
        if merged.get("default", 0) is None:
            merged.pop("default")
        out = _structural(merged, defs)
        if nullable and "default" in out:
            # An explicit null that means something other than the default (targetCPUUtilization: null
            # = no CPU metric): without nullable the API server prunes the null and defaults the field.
            out["nullable"] = True
        return out
    if "const" in node:  # Literal with one value
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema's numeric form -> OpenAPI 3.0's boolean form.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in _KEEP:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    if isinstance(out.get("default"), dict):
        # Optional members are absent, not null, in a structural default.
        out["default"] = drop_none(out["default"])
    return out


def openapi_schema(model: type[m.Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    spec_schema = openapi_schema(m.RecommenderServiceSpec)
    status_schema = openapi_schema(m.RecommenderServiceStatus)
    printer = [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
        {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateVersion"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas.ready"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{m.PLURAL}.{m.GROUP}", "labels": {"app.kubernetes.io/part-of": "recops"}},
        "spec": {
            "group": m.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": m.KIND,
                "listKind": f"{m.KIND}List",
                "plural": m.PLURAL,
                "singular": m.SINGULAR,
                "shortNames": m.SHORT_NAMES,
                "categories": ["recops"],
            },
            "versions": [
                {
                    "name": m.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A real-time recommendation service: serving, spot training, rollouts and experiments.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `python -m recops_operator.api.crd` from recops_operator/api/models.py. Do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_NoAliases, sort_keys=False, width=120)


class _NoAliases(yaml.SafeDumper):
    """Repeated sub-schemas (enums shared by the typed status) written out, never as YAML anchors."""

    def ignore_aliases(self, data) -> bool:
        return True


def main() -> None:
    sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
