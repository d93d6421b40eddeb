"""Capacity invariant of rendered pods: training only on spot, inference never on spot.

Called by the validating webhook on everything the operator would render for a
RecommenderService (and usable on any workload object), so a bad template is rejected at
admission with a specific message instead of being discovered on the bill or in an outage.

A pod template is *training* when it carries ``recops.io/component=training``; every
other template the operator renders serves traffic and counts as *inference*.

* Training is on spot when every required node-selector term confines it to the spot
  pool (``recops.io/capacity In [spot]`` / ACK spot-strategy label) while tolerating the
  spot taint, or confines it to ECI virtual nodes with an ECI spot strategy and without
  the pay-as-you-go fallback.
* Inference is off spot when it has no ECI spot strategy, does not tolerate the spot
  taint, and every required node-selector term either excludes the spot pool or confines
  it to ECI virtual nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recops_contracts import topology
from recops_operator.training import config as c


def pod_template_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod template of a workload object (Deployment, Job, CronJob, ...) or the template itself."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind == "Pod":
        return obj
    if "template" in spec:
        return spec["template"]
    if kind is None and "spec" in obj:
        return obj
    return None


def _display(obj: Mapping[str, Any], index: int) -> str:
    meta = obj.get("metadata") or {}
    kind = obj.get("kind") or "PodTemplate"
    return f"{kind}/{meta.get('name') or f'#{index}'}"


def _required_terms(pod_spec: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    """Required node-selector terms, with nodeSelector folded into every term (AND)."""
    node_selector = pod_spec.get("nodeSelector") or {}
    selector_exprs = [{"key": k, "operator": "In", "values": [v]} for k, v in node_selector.items()]
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = [t.get("matchExpressions") or [] for t in required.get("nodeSelectorTerms") or []]
    if not terms:
        return [selector_exprs]
    return [selector_exprs + list(t) for t in terms]


def _requires_in(exprs: Iterable[Mapping[str, Any]], key: str, allowed: Iterable[str]) -> bool:
    """The term only admits nodes whose ``key`` label is one of ``allowed``."""
    allowed = set(allowed)
    for e in exprs:
        if (
            e.get("key") == key
            and e.get("operator") == "In"
            and e.get("values")
            and set(e["values"]) <= allowed
        ):
            return True
    return False


def _excludes(exprs: Iterable[Mapping[str, Any]], key: str, banned: Iterable[str]) -> bool:
    """The term rejects every node whose ``key`` label is one of ``banned``."""
    banned = set(banned)
    for e in exprs:
        if e.get("key") != key:
            continue
        if e.get("operator") == "NotIn" and banned <= set(e.get("values") or []):
            return True
        if e.get("operator") == "In" and e.get("values") and not banned & set(e["values"]):
            return True
        if e.get("operator") == "DoesNotExist":
            return True
    return False


def _tolerates(tolerations: Iterable[Mapping[str, Any]], taint: topology.Taint) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint.effect):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint.key):
            return True
        if (
            t.get("key") == taint.key
            and t.get("operator", "Equal") == "Equal"
            and t.get("value") == taint.value
        ):
            return True
    return False


def _eci_only(exprs: list[Mapping[str, Any]]) -> bool:
    return _requires_in(exprs, topology.ECI_NODE_LABEL_KEY, [topology.ECI_NODE_LABEL_VALUE])


def _spot_pool_only(exprs: list[Mapping[str, Any]]) -> bool:
    return _requires_in(exprs, topology.CAPACITY_LABEL, [topology.CAPACITY_SPOT]) or _requires_in(
        exprs, topology.ACK_SPOT_STRATEGY_LABEL, topology.ACK_SPOT_STRATEGIES
    )


def _check_training(where: str, tpl: Mapping[str, Any]) -> list[str]:
    spec = tpl.get("spec") or {}
    ann = (tpl.get("metadata") or {}).get("annotations") or {}
    if spec.get("nodeName"):
        return [f"{where}: training pods must not set nodeName (it bypasses spot placement)"]
    eci_spot = ann.get(topology.ECI_SPOT_STRATEGY) in topology.ACK_SPOT_STRATEGIES
    errors = []
    if str(ann.get(topology.ECI_SPOT_FALLBACK, "false")).lower() == "true":
        errors.append(
            f"{where}: training must not set {topology.ECI_SPOT_FALLBACK}=true (falls back to on-demand ECI)"
        )
    tolerates_spot = _tolerates(spec.get("tolerations") or [], topology.SPOT_TAINT)
    for i, exprs in enumerate(_required_terms(spec)):
        if _spot_pool_only(exprs):
            if not tolerates_spot:
                errors.append(
                    f"{where}: training targets the spot pool but does not tolerate taint {topology.SPOT_TAINT.key}"
                )
        elif _eci_only(exprs):
            if not eci_spot:
                errors.append(
                    f"{where}: training on ECI virtual nodes needs annotation {topology.ECI_SPOT_STRATEGY} "
                    f"in {list(topology.ACK_SPOT_STRATEGIES)} (otherwise it runs on on-demand ECI)"
                )
        else:
            errors.append(
                f"{where}: training node-selector term {i} admits on-demand nodes; require "
                f"{topology.CAPACITY_LABEL} In [{topology.CAPACITY_SPOT}] or ECI virtual nodes with a spot strategy"
            )
    return errors


def _check_inference(where: str, tpl: Mapping[str, Any]) -> list[str]:
    spec = tpl.get("spec") or {}
    ann = (tpl.get("metadata") or {}).get("annotations") or {}
    errors = []
    if ann.get(topology.ECI_SPOT_STRATEGY) not in (None, "", "NoSpot"):
        errors.append(f"{where}: inference pods must not carry {topology.ECI_SPOT_STRATEGY} (spot ECI)")
    if _tolerates(spec.get("tolerations") or [], topology.SPOT_TAINT):
        errors.append(f"{where}: inference pods must not tolerate the spot taint {topology.SPOT_TAINT.key}")
    for i, exprs in enumerate(_required_terms(spec)):
        if _eci_only(exprs):
            continue
        if _spot_pool_only(exprs) or not _excludes(exprs, topology.CAPACITY_LABEL, [topology.CAPACITY_SPOT]):
            errors.append(
                f"{where}: inference node-selector term {i} admits spot nodes; require "
                f"{topology.CAPACITY_LABEL} NotIn [{topology.CAPACITY_SPOT}] or ECI virtual nodes"
            )
    return errors


#: batch components held to the training rule (spot only): training runs and catalogue vectorization
SPOT_COMPONENTS = (c.COMPONENT_TRAINING, "search")


def is_training(tpl: Mapping[str, Any]) -> bool:
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    return labels.get(c.COMPONENT_LABEL) in SPOT_COMPONENTS


def check_capacity_invariants(pod_templates: Iterable[Mapping[str, Any]]) -> list[str]:
    """Violations of "training only on spot, inference never on spot"; empty means OK.

    Accepts pod templates or whole workload objects (Deployment, StatefulSet, Job,
    CronJob, Pod); objects without a pod template (Service, HPA, ...) are skipped.
    """
    errors: list[str] = []
    for i, obj in enumerate(pod_templates):
        tpl = pod_template_of(obj)
        if tpl is None:
            continue
        where = _display(obj, i)
        errors += _check_training(where, tpl) if is_training(tpl) else _check_inference(where, tpl)
    return errors
