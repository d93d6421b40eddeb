"""Semantic admission rules the API server cannot express (served by the webhook).

Residency: every field marked with ``models.Location`` (object storage, data,
image registry, endpoint, host) is checked by one rule, ``location_errors``: in
``spec.region``, no credentials, no dot segments or other path tricks, no
link-local/metadata or public hosts where the field must be internal. Image
registries: ``registry[-vpc].<region>.aliyuncs.com`` or an enterprise ACR instance
from ``RECOPS_REGISTRY_REGIONS`` (``host=region,...``). A bucket's region is known when (a) the URI names the
endpoint (``oss://bucket.oss-<region>[-internal].aliyuncs.com/...``), (b) the
operator's bucket registry lists it (``RECOPS_BUCKET_REGIONS`` =
``bucket=region,...``, filled from the Pulumi stack outputs), or (c) the bucket
name ends with ``-<region>``. Anything else is rejected: a location we cannot
place is treated as outside the region. Prometheus must be in-cluster or the
region's ARMS endpoint; a model API (answer synthesis) in-cluster, private, the region's PAI-EAS
VPC endpoint or a host in ``RECOPS_MODEL_API_REGIONS``.

Placement: the rendered pod templates must keep inference off spot and training
on spot (``training.invariants.check_capacity_invariants``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from recops_operator.api.models import Location, RecommenderServiceSpec, location_of

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


def _host_regions(variable: str, env: Mapping[str, str] | None) -> dict[str, str]:
    raw = (env if env is not None else os.environ).get(variable, "")
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        host, _, region = item.partition("=")
        out[host.strip().lower()] = region.strip()
    return out


def registry_regions(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Enterprise ACR instances (and any other registry host) the operator knows the region of:
    ``RECOPS_REGISTRY_REGIONS`` = ``host=region,...``, registered the same way as buckets."""
    return _host_regions("RECOPS_REGISTRY_REGIONS", env)


def model_api_regions(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Model API hosts the platform team vouches for (a PrivateLink endpoint's domain):
    ``RECOPS_MODEL_API_REGIONS`` = ``host=region,...``."""
    return _host_regions("RECOPS_MODEL_API_REGIONS", env)


_ACR_HOST = re.compile(r"^registry(?:-vpc|-intl)?\.(?P<region>[a-z]{2}-[a-z]+(?:-[0-9]+)?)\.aliyuncs\.com$")
#: Alibaba Cloud's instance metadata service, besides the link-local range.
_METADATA_HOSTS = {"100.100.100.200", "metadata.google.internal", "169.254.169.254"}


def _marked_values(model: BaseModel, path: str) -> Iterator[tuple[str, Location, str]]:
    """(spec path, marker, value) of every set, Location-marked field, recursing into sub-models."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{path}.{field.alias or name}"
        marker = location_of(field)
        if marker is not None and isinstance(value, str):
            yield where, marker, value
        elif marker is not None and isinstance(value, list):
            for i, item in enumerate(value):
                yield f"{where}[{i}]", marker, str(item)
        elif isinstance(value, BaseModel):
            yield from _marked_values(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _marked_values(item, f"{where}[{i}]")


def path_tricks(path: str) -> str | None:
    """Why a URI path could name another place than it reads as (None: it cannot)."""
    decoded = unquote(path)
    if decoded != path and re.search(r"%2e|%2f|%5c", path, re.I):
        return "percent-encoded '.', '/' or '\\'"
    if "\\" in decoded or re.search(r"[\x00-\x1f\s]", decoded):
        return "a backslash, whitespace or control character"
    segments = decoded.split("/")
    if any(seg in (".", "..") for seg in segments):
        return "a dot segment ('.' or '..')"
    if "//" in decoded.lstrip("/"):
        return "an empty path segment ('//')"
    return None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _forbidden_host(host: str) -> str | None:
    """Link-local/metadata hosts are never a location; an IP literal must be private."""
    ip = _ip(host)
    if host in _METADATA_HOSTS or (ip is not None and ip.is_link_local):
        return f"host '{host}' is link-local or the instance metadata service"
    if ip is not None and not (ip.is_private or ip.is_loopback):
        return f"host '{host}' is a public address; this must be internal"
    return None


def image_registry(image: str) -> str:
    """The registry host of an image reference (Docker Hub when the first part is no host)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def _check_oss(field: str, uri: str, region: str, buckets: Mapping[str, str]) -> str | None:
    parsed = urlparse(uri)
    if "@" in parsed.netloc:
        return f"{field}: credentials must not be embedded in URIs; reference a Secret instead"
    trick = path_tricks(parsed.path)
    if trick:
        return f"{field}: '{uri}' has {trick}; name the object by its plain path"
    bucket, where = oss_region(uri, buckets)
    if where is None:
        return (
            f"{field}: cannot tell the region of bucket '{bucket}': use an endpoint URI "
            f"(oss://{bucket}.oss-{region}-internal.aliyuncs.com/...), name it *-{region}, "
            "or add it to the operator's bucket registry"
        )
    if where != region:
        return f"{field}: bucket '{bucket}' is in {where}, outside spec.region {region} (data residency)"
    return None


def require_digest(env: Mapping[str, str] | None = None) -> bool:
    """Admission policy ``RECOPS_REQUIRE_IMAGE_DIGEST``: images only by digest (a tag can be moved)."""
    return (env if env is not None else os.environ).get("RECOPS_REQUIRE_IMAGE_DIGEST", "").lower() in (
        "1",
        "true",
        "yes",
    )


def _check_image(
    field: str, image: str, region: str, registries: Mapping[str, str], digest: bool = False
) -> str | None:
    if digest and "@sha256:" not in image:
        return f"{field}: '{image}' is pinned by tag only; this cluster requires image@sha256:<digest>"
    host = image_registry(image)
    if "@" in image.split("@sha256:")[0]:
        return f"{field}: credentials must not be embedded in image references"
    trick = path_tricks("/" + image.partition("/")[2])
    if trick:
        return f"{field}: '{image}' has {trick}"
    m = _ACR_HOST.match(host)
    where = m.group("region") if m else registries.get(host)
    if where is None:
        return (
            f"{field}: cannot tell the region of registry '{host}': pull from "
            f"registry-vpc.{region}.aliyuncs.com, or add an enterprise ACR instance to the operator's "
            "registry list (RECOPS_REGISTRY_REGIONS)"
        )
    if where != region:
        return f"{field}: registry '{host}' is in {where}, outside spec.region {region} (data residency)"
    return None


def _url_problem(field: str, url: str) -> tuple[str, str | None]:
    """(its host, what makes a URL no location at all: credentials, a metadata/public IP, path tricks)."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    if parsed.username or parsed.password or "@" in parsed.netloc:
        return host, f"{field}: credentials must not be embedded in URLs; reference a Secret instead"
    bad = _forbidden_host(host) or (f"path has {t}" if (t := path_tricks(parsed.path)) else None)
    return host, f"{field}: {bad}" if bad else None


def _check_endpoint(field: str, url: str, region: str) -> str | None:
    host, bad = _url_problem(field, url)
    if bad:
        return bad
    arms = _ARMS_HOST.search(host)
    if arms and arms.group("region") != region:
        return f"{field}: ARMS endpoint in {arms.group('region')}, outside spec.region {region}"
    if not arms and not _IN_CLUSTER.search(host) and not (_ip(host) and _ip(host).is_private):
        return f"{field}: host '{host}' is neither in-cluster (*.svc) nor the {region} ARMS endpoint"
    return None


_PAI_EAS_VPC = re.compile(r"\.vpc\.(?P<region>[a-z]{2}-[a-z]+(?:-[0-9]+)?)\.pai-eas\.aliyuncs\.com$")
#: Model Studio's public OpenAI-compatible hosts and their regions: reached over the internet
_MODEL_STUDIO = {
    "dashscope.aliyuncs.com": "cn-beijing",
    "dashscope-intl.aliyuncs.com": "ap-southeast-1",
    "dashscope-us.aliyuncs.com": "us-east-1",
    "cn-hongkong.dashscope.aliyuncs.com": "cn-hongkong",
}


def _check_model_api(field: str, url: str, region: str, known: Mapping[str, str]) -> str | None:
    """An OpenAI-compatible model API the shoppers' questions may go to: inside the VPC and in
    ``region``: in-cluster, a private address, the region's PAI-EAS VPC endpoint, or a host the
    platform team registered (``RECOPS_MODEL_API_REGIONS``)."""
    host, bad = _url_problem(field, url)
    if bad:
        return bad
    eas = _PAI_EAS_VPC.search(host)
    where = known.get(host) or (eas.group("region") if eas else None) or _MODEL_STUDIO.get(host)
    if where is not None and where != region:
        return f"{field}: model API '{host}' is in {where}, outside spec.region {region} (data residency)"
    if host in known or eas or _IN_CLUSTER.search(host) or (_ip(host) and _ip(host).is_private):
        return None
    if host in _MODEL_STUDIO:
        return (
            f"{field}: '{host}' is Model Studio's public internet endpoint; use a PrivateLink endpoint "
            "registered in RECOPS_MODEL_API_REGIONS, or a PAI-EAS VPC endpoint"
        )
    return (
        f"{field}: host '{host}' is neither in-cluster (*.svc), a private address, the {region} "
        "PAI-EAS VPC endpoint (*.vpc.<region>.pai-eas.aliyuncs.com) nor in RECOPS_MODEL_API_REGIONS"
    )


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # Alibaba Cloud's service range (internal OSS, ...)


def _check_cidr(field: str, cidr: str) -> str | None:
    """A range pods may reach: private or the cloud's service range; never link-local (the renderer
    also carves the metadata service out of every range that contains it)."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        return f"{field}: '{cidr}' is not a network address range ({e})"
    if not (net.is_private or net.subnet_of(_SHARED)):
        return f"{field}: '{cidr}' includes public addresses; only internal ranges are allowed"
    if net.is_link_local or net.overlaps(ipaddress.ip_network("169.254.0.0/16")):
        return f"{field}: '{cidr}' includes link-local addresses (instance metadata)"
    return None


def _check_host(field: str, host: str) -> str | None:
    bad = _forbidden_host(host.lower())
    return f"{field}: {bad}" if bad else None


def location_errors(
    spec: RecommenderServiceSpec,
    buckets: Mapping[str, str],
    registries: Mapping[str, str] | None = None,
) -> list[str]:
    """The one residency-and-safety rule, over every Location-marked field of the spec."""
    registries = registry_regions() if registries is None else registries
    digest = require_digest()
    model_apis = model_api_regions()
    errors: list[str] = []
    for field, marker, value in _marked_values(spec, "spec"):
        if marker.kind in ("oss", "data"):
            err = _check_oss(field, value, spec.region, buckets) if value.startswith("oss://") else None
        elif marker.kind == "image":
            err = _check_image(field, value, spec.region, registries, digest)
        elif marker.kind == "endpoint":
            err = _check_endpoint(field, value, spec.region)
        elif marker.kind == "cidr":
            err = _check_cidr(field, value)
        elif marker.kind == "model":
            err = _check_model_api(field, value, spec.region, model_apis)
        else:
            err = _check_host(field, value)
        if err:
            errors.append(err)
    return errors


def residency_errors(
    spec: RecommenderServiceSpec,
    registry: Mapping[str, str],
    registries: Mapping[str, str] | None = None,
) -> list[str]:
    """Every location rule, plus the removed free-form dataset field."""
    errors = location_errors(spec, registry, registries)
    if spec.training and spec.training.dataset is not None:
        errors.append(
            "spec.training.dataset was replaced by spec.training.data: "
            "{events: builtin:NAME or oss://..., catalog: oss://...} (docs/data.md)"
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
