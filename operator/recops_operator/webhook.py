"""Validating admission for RecommenderService: the semantic rules the CRD schema cannot hold.

Schema and CEL already ran when this is called; here we re-validate with the
pydantic models (same source), check residency (``api.semantics``), render the
pod templates to prove inference stays off spot and training stays on it, and
finally have the API server dry-run every child (``dryrun``): a spec whose children
would be refused is refused at apply. A rejection names every problem at once.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from recops_operator.api.models import GROUP, PLURAL, VERSION, RecommenderServiceSpec
from recops_operator.api.semantics import bucket_registry, residency_errors, resource_errors
from recops_operator.controller import CONTROLLER
from recops_operator.dryrun import DryRun, applier_dry_run, implied_objects, rejected_children
from recops_operator.render import Owner, RenderContext, autoscaling
from recops_operator.training.invariants import check_capacity_invariants

HANDLER_ID = "validate-recsvc"


def problems(
    body: dict[str, Any], dry_run: DryRun | None = None, ctx: RenderContext | None = None
) -> list[str]:
    """Every reason to reject ``body`` (empty when it is acceptable). With ``dry_run``, the rendered
    children are also validated by the API server (only once the spec itself is sound)."""
    try:
        spec = RecommenderServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        return [f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
    errors = residency_errors(spec, bucket_registry()) + resource_errors(spec)
    meta = body.get("metadata") or {}
    owner = Owner(
        name=meta.get("name") or meta.get("generateName") or "x",
        namespace=meta.get("namespace") or "default",
        uid=meta.get("uid") or "admission",
    )
    ctx = ctx or RenderContext(monitoring_available=False)
    try:
        objs = implied_objects(owner, spec, ctx)
    except ValueError as e:  # e.g. a training spec the renderer cannot express
        return [*errors, str(e)]
    errors.extend(check_capacity_invariants(objs))
    if dry_run is not None and not errors:
        errors.extend(rejected_children(objs, dry_run, body.get("spec")))
    return errors


def needs_validation(body: Any, old: Any | None) -> bool:
    """Only a new or changed spec is judged: metadata-only updates (kopf's finalizer and annotations,
    labels) and anything on an object being deleted pass, so a rule added later, or a child that can
    no longer be applied (a terminating namespace), never blocks removing a finalizer."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return old is None or (old.get("spec") or {}) != (body.get("spec") or {})


def validate(body: kopf.Body, namespace: str | None = None, old: kopf.Body | None = None, **_: Any) -> None:
    if not needs_validation(body, old):
        return
    obj = dict(body)
    obj["metadata"] = {**(obj.get("metadata") or {}), "namespace": namespace or body.metadata.namespace}
    ap = CONTROLLER.applier()
    ctx = RenderContext(
        monitoring_available=ap.has_kind("monitoring.coreos.com/v1", "ServiceMonitor"),
        mesh_available=ap.has_kind("networking.istio.io/v1", "VirtualService"),
        # what reconcile renders, so the ScaledObject (not the plain HPA) is dry-run where KEDA runs
        keda_available=ap.has_kind(autoscaling.KEDA_API, autoscaling.SCALED_OBJECT),
        flink_available=ap.has_kind("flink.apache.org/v1beta1", "FlinkDeployment"),  # dry-run it too
        prometheus_url=os.environ.get("RECOPS_PROMETHEUS_URL"),
        now=dt.datetime.now(dt.UTC),
    )
    errors = problems(obj, applier_dry_run(ap), ctx)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the admission webhook's validating handler in ``registry``."""
    kopf.on.validate(
        GROUP, VERSION, PLURAL, id=HANDLER_ID, operations=["CREATE", "UPDATE"], registry=registry
    )(validate)


def self_signed(host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway serving certificate for a local webhook (the chart provides real ones)."""
    from recops_operator import tls  # cryptography: only local runs make their own certificate

    key = tls.new_key()
    subject = tls.name(host)
    cert = tls.certificate(subject, key, subject, ca=True).add_extension(
        tls.alt_names(["localhost", host]), critical=False
    )
    d = Path(tempfile.mkdtemp(prefix="recops-webhook-"))
    tls.write_cert(d / "tls.crt", tls.sign(cert, key))
    tls.write_key(d / "tls.key", key)
    return d / "tls.crt", d / "tls.key"
