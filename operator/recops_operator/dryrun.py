"""Admission proves the children valid: every object the spec implies is server-side applied with
``dryRun=All`` (same field manager and force as the real apply), so anything the API server or its
admission chain would refuse later is refused now -- for every present and future field, without
a list of cases.

"Every object the spec implies" is the reconcile's render, plus the on-demand training Job and the
candidate track of a rollout (rendered as if one were in progress), since those appear later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from recops_operator import rejections
from recops_operator.api.models import Candidate, RecommenderServiceSpec
from recops_operator.api.status import Phase, RolloutStatus
from recops_operator.apply import FIELD_MANAGER
from recops_operator.render import Owner, RenderContext, desired_objects
from recops_operator.training.render import training_admission_objects

log = logging.getLogger(__name__)
PROBE_VERSION = "admission-probe"

#: (object) -> None; raises ApiException when the API server refuses it.
DryRun = Callable[[dict[str, Any]], None]


def implied_objects(owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    """Every child this spec can lead to, each once (by apiVersion, kind, name, content)."""
    objs = desired_objects(owner, spec, ctx) + training_admission_objects(owner, spec)
    rollout = spec.rollout
    cand = rollout.candidate or Candidate(version=PROBE_VERSION)
    probing = spec.model_copy(update={"rollout": rollout.model_copy(update={"candidate": cand})})
    live = RolloutStatus(
        phase=Phase.PROGRESSING, step_index=0, weight=rollout.steps[0], candidate=cand.version
    )
    objs += desired_objects(owner, probing, dataclasses.replace(ctx, rollout=live))
    seen: set[str] = set()
    out = []
    for obj in objs:
        key = json.dumps(obj, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(obj)
    return out


def rejected_children(
    objs: list[dict[str, Any]], dry_run: DryRun, spec_body: dict[str, Any] | None
) -> list[str]:
    """One message per child the API server refuses (empty: all would be accepted)."""
    errors: list[str] = []
    for obj in objs:
        try:
            dry_run(obj)
        except ApiException as e:
            kind, name = obj["kind"], obj["metadata"]["name"]
            log.warning("admission dry-run of %s %s refused: %s %s", kind, name, e.status, e.body)
            errors.append(rejections.describe(kind, name, e, spec_body))
    return errors


def applier_dry_run(applier: Any) -> DryRun:
    """Dry-run through the operator's applier (its discovery cache and credentials)."""

    def run(obj: dict[str, Any]) -> None:
        res = applier.resource(obj["apiVersion"], obj["kind"])
        res.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            dry_run="All",
        )

    return run
