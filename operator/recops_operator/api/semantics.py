"""Semantic admission rules the API server cannot express (served by the webhook).

Residency: every object-storage location and endpoint in a RecommenderService must
be in ``spec.region``. A bucket's region is known when (a) the URI names the
endpoint (``oss://bucket.oss-<region>[-internal].aliyuncs.com/...``), (b) the
operator's bucket registry lists it (``RECOPS_BUCKET_REGIONS`` =
``bucket=region,...``, filled from the Pulumi stack outputs), or (c) the bucket
name ends with ``-<region>``. Anything else is rejected: a location we cannot
place is treated as outside the region. Prometheus must be in-cluster or the
region's ARMS endpoint.

Placement: the rendered pod templates must keep inference off spot and training
on spot (``training.invariants.check_capacity_invariants``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from urllib.parse import urlparse

from recops_operator.api.models import RecommenderServiceSpec

_ENDPOINT = re.compile(r"^oss-(?P<region>[a-z]{2}-[a-z]+(?:-[0-9]+)?)(?:-internal)?\.aliyuncs\.com$")
_ARMS_HOST = re.compile(r"(^|\.)(?P<region>[a-z]{2}-[a-z]+(?:-[0-9]+)?)\.arms\.aliyuncs\.com$")
_IN_CLUSTER = re.compile(r"(\.svc(\.cluster\.local)?$)|(^localhost$)|(^127\.0\.0\.1$)|(^[a-z0-9-]+$)")


def bucket_registry(env: Mapping[str, str] | None = None) -> dict[str, str]:
    raw = (env if env is not None else os.environ).get("RECOPS_BUCKET_REGIONS", "")
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        bucket, _, region = item.partition("=")
        out[bucket.strip()] = region.strip()
    return out


def oss_region(uri: str, registry: Mapping[str, str]) -> tuple[str, str | None]:
    """(bucket, region or None when unknown) of an oss:// URI."""
    host = urlparse(uri).netloc
    bucket, _, endpoint = host.partition(".")
    if endpoint:
        m = _ENDPOINT.match(endpoint)
        return bucket, m.group("region") if m else None
    if bucket in registry:
        return bucket, registry[bucket]
    m = re.search(r"-([a-z]{2}-[a-z]+(?:-[0-9]+)?)$", bucket)
    return bucket, m.group(1) if m else None


def residency_errors(spec: RecommenderServiceSpec, registry: Mapping[str, str]) -> list[str]:
    errors: list[str] = []
    locations = [("spec.model.uri", spec.model.uri)]
    if spec.training:
        locations.append(("spec.training.checkpoint.uri", spec.training.checkpoint.uri))
        data = spec.training.data
        for field, uri in (
            ("spec.training.data.events", data.events),
            ("spec.training.data.catalog", data.catalog),
        ):
            if uri and uri.startswith("oss://"):
                locations.append((field, uri))
        if spec.training.dataset is not None:
            errors.append(
                "spec.training.dataset was replaced by spec.training.data: "
                "{events: builtin:NAME or oss://..., catalog: oss://...} (docs/data.md)"
            )
    for field, uri in locations:
        if "@" in urlparse(uri).netloc:
            errors.append(f"{field}: credentials must not be embedded in URIs; reference a Secret instead")
            continue
        bucket, region = oss_region(uri, registry)
        if region is None:
            errors.append(
                f"{field}: cannot tell the region of bucket '{bucket}': use an endpoint URI "
                f"(oss://{bucket}.oss-{spec.region}-internal.aliyuncs.com/...), name it *-{spec.region}, "
                "or add it to the operator's bucket registry"
            )
        elif region != spec.region:
            errors.append(
                f"{field}: bucket '{bucket}' is in {region}, outside spec.region {spec.region} (data residency)"
            )
    url = spec.rollout.prometheus_url
    if url:
        host = urlparse(url).hostname or ""
        arms = _ARMS_HOST.search(host)
        if arms and arms.group("region") != spec.region:
            errors.append(
                f"spec.rollout.prometheusURL: ARMS endpoint in {arms.group('region')}, outside spec.region {spec.region}"
            )
        elif not arms and not _IN_CLUSTER.search(host):
            errors.append(
                f"spec.rollout.prometheusURL: host '{host}' is neither in-cluster (*.svc) nor the {spec.region} ARMS endpoint"
            )
    return errors


_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity (the subset QUANTITY_PATTERN admits) as a number."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", text)
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(m.group(1)) * _SUFFIX[m.group(2)]


def resource_errors(spec: RecommenderServiceSpec) -> list[str]:
    """Requests above limits, in the spec's own words (the API server would say it of the Deployment)."""
    res = spec.serving.resources
    errors = []
    for name in ("cpu", "memory"):
        req, lim = getattr(res.requests, name), getattr(res.limits, name)
        if quantity(req) > quantity(lim):
            errors.append(
                f"spec.serving.resources.requests.{name} ({req}) exceeds spec.serving.resources.limits.{name} ({lim})"
            )
    return errors
