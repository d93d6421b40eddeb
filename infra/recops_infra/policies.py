"""Policy rules as plain functions over (resource type, engine inputs): residency, security, cost/safety.

The same functions run in two places: the mock-based tests (over the inputs the
program registers) and the CrossGuard pack in ``infra/policy`` (``pulumi preview
--policy-pack infra/policy``), whose ``ResourceValidationPolicy``/``StackValidationPolicy``
wrappers are built by ``pulumi_policies()`` below. Props are camelCase, as the engine sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from recops_contracts import topology as topo

Props = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: Props


# ------------------------------------------------------------------ per-resource rules
def residency(r: Resource, region: str) -> list[str]:
    out: list[str] = []
    p = r.props
    if r.type == "pulumi:providers:alicloud" and p.get("region") not in (None, region):
        out.append(f"{r.name}: provider region {p.get('region')} is not the stack region {region}")
    for key in ("zoneId", "secondaryZoneId"):
        z = p.get(key)
        if isinstance(z, str) and not z.startswith(region):
            out.append(f"{r.name}: {key} {z} is outside {region}")
    if r.type == "alicloud:alikafka/instance:Instance" and not str(p.get("zoneId") or "").startswith(region):
        out.append(f"{r.name}: Kafka instance zone {p.get('zoneId')} is not in {region}")
    if r.type == "alicloud:oss/bucketReplication:BucketReplication":
        dest = (p.get("destination") or {}).get("location")
        if dest != f"oss-{region}":
            out.append(
                f"{r.name}: replicates to {dest}, outside oss-{region} (personal data must stay in region)"
            )
        if (p.get("destination") or {}).get("transferType") == "oss_acc":
            out.append(f"{r.name}: transfer acceleration routes data through the public edge")
    if r.type == "alicloud:oss/bucket:Bucket" and p.get("transferAcceleration"):
        out.append(f"{r.name}: transfer acceleration is not allowed (public edge)")
    return out


def security(r: Resource, region: str) -> list[str]:
    out: list[str] = []
    p = r.props
    if r.type == "alicloud:oss/bucketAcl:BucketAcl" and p.get("acl") != "private":
        out.append(f"{r.name}: bucket ACL {p.get('acl')!r} is not private")
    if r.type == "alicloud:oss/bucket:Bucket":
        sse = p.get("serverSideEncryptionRule") or {}
        if sse.get("sseAlgorithm") != "KMS" or not sse.get("kmsMasterKeyId"):
            out.append(f"{r.name}: bucket is not encrypted with a KMS key")
        if p.get("acl") not in (None, "private"):
            out.append(f"{r.name}: inline bucket ACL {p.get('acl')!r} is not private")
    if (
        r.type == "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock"
        and p.get("blockPublicAccess") is not True
    ):
        out.append(f"{r.name}: public access is not blocked")
    if r.type == "alicloud:ecs/securityGroupRule:SecurityGroupRule" and p.get("type") == "ingress":
        if p.get("cidrIp") in ("0.0.0.0/0", "::/0") or p.get("ipv6CidrIp") == "::/0":
            out.append(f"{r.name}: ingress from the whole internet")
        if p.get("nicType", "internet") != "intranet" and not p.get("sourceSecurityGroupId"):
            out.append(f"{r.name}: ingress rule is not intranet")
    if r.type == "alicloud:cs/managedKubernetes:ManagedKubernetes":
        if p.get("slbInternetEnabled") is not False:
            out.append(f"{r.name}: the API server has a public load balancer (set slbInternetEnabled=false)")
        for addon in p.get("addons") or []:
            if addon.get("name") == "nginx-ingress-controller" and "intranet" not in (
                addon.get("config") or ""
            ):
                out.append(f"{r.name}: ingress controller is internet-facing (inference must stay intranet)")
    if r.type == "alicloud:alikafka/instance:Instance":
        out.extend(_kafka_private(r))
    if r.type == "alicloud:ecs/instance:Instance" and float(p.get("internetMaxBandwidthOut") or 0) > 0:
        out.append(f"{r.name}: ECS instance has a public IP")
    return out


def _kafka_private(r: Resource) -> list[str]:
    """ApsaraMQ for Kafka: VPC only (deploy type 5, no public bandwidth), inside a vSwitch of the
    stack, encrypted at rest."""
    p, out = r.props, []
    try:
        vpc_only = float(p.get("deployType")) == 5  # the engine sends numbers as floats
    except (TypeError, ValueError):
        vpc_only = False
    if not vpc_only:
        out.append(
            f"{r.name}: Kafka instance has a public endpoint (deployType {p.get('deployType')}; 5 = VPC only)"
        )
    if float(p.get("eipMax") or 0) > 0:
        out.append(f"{r.name}: Kafka instance has public bandwidth (eipMax {p.get('eipMax')})")
    if not (p.get("vswitchId") or p.get("vswitchIds")):
        out.append(f"{r.name}: Kafka instance is in no vSwitch of the stack's VPC")
    if not p.get("kmsKeyId"):
        out.append(f"{r.name}: Kafka instance disks are not encrypted with a KMS key")
    return out


def _labels(p: Props) -> dict[str, str]:
    return {label.get("key"): label.get("value") for label in p.get("labels") or []}


def cost_safety(r: Resource, region: str) -> list[str]:
    out: list[str] = []
    p = r.props
    if r.type == "alicloud:cs/nodePool:NodePool":
        capacity = _labels(p).get(topo.CAPACITY_LABEL)
        spot = p.get("spotStrategy") not in (None, "NoSpot")
        taints = [{k: t.get(k) for k in ("key", "value", "effect")} for t in p.get("taints") or []]
        if capacity == topo.CAPACITY_SPOT:
            if not spot:
                out.append(f"{r.name}: training pool is not spot")
            if (
                str(p.get("onDemandBaseCapacity", "0")) != "0"
                or str(p.get("onDemandPercentageAboveBaseCapacity", "0")) != "0"
                or p.get("compensateWithOnDemand")
            ):
                out.append(f"{r.name}: training pool may fall back to on-demand capacity")
            if topo.SPOT_TAINT.as_k8s() not in taints:
                out.append(
                    f"{r.name}: spot pool lacks the {topo.SPOT_TAINT.key} taint (serving could land on it)"
                )
        elif spot:
            out.append(f"{r.name}: a non-training pool uses spot capacity (serving must never run on spot)")
        elif capacity != topo.CAPACITY_ON_DEMAND:
            out.append(f"{r.name}: node pool has no {topo.CAPACITY_LABEL} label")
    if r.type == "alicloud:ecs/ecsDisk:EcsDisk":
        role = (p.get("tags") or {}).get("role")
        if role == "feature-store" and p.get("performanceLevel") != "PL3":
            out.append(f"{r.name}: the feature-store disk must be ESSD PL3")
        if p.get("performanceLevel") == "PL3" and not 1261 <= float(p.get("size") or 0) <= 65536:
            out.append(f"{r.name}: a PL3 disk must be 1261-65536 GiB, got {p.get('size')}")
        if p.get("encrypted") is not True:
            out.append(f"{r.name}: disk is not encrypted")
    return out


RULES: dict[str, Callable[[Resource, str], list[str]]] = {
    "recops-residency": residency,
    "recops-security": security,
    "recops-cost-safety": cost_safety,
}


# ------------------------------------------------------------------ stack-level rules
def stack_rules(resources: Iterable[Resource], region: str) -> list[str]:
    res = list(resources)
    out: list[str] = []
    buckets = {r.props.get("bucket") for r in res if r.type == "alicloud:oss/bucket:Bucket"}
    blocked = {
        r.props.get("bucket")
        for r in res
        if r.type == "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock"
        and r.props.get("blockPublicAccess") is True
    }
    private = {
        r.props.get("bucket")
        for r in res
        if r.type == "alicloud:oss/bucketAcl:BucketAcl" and r.props.get("acl") == "private"
    }
    for b in sorted(x for x in buckets if x):
        if b not in blocked:
            out.append(f"bucket {b}: no BucketPublicAccessBlock")
        if b not in private:
            out.append(f"bucket {b}: no private BucketAcl")
    pools = [r for r in res if r.type == "alicloud:cs/nodePool:NodePool"]
    if pools and not any(_labels(r.props).get(topo.CAPACITY_LABEL) == topo.CAPACITY_SPOT for r in pools):
        out.append("no spot-only training pool")
    providers = [r for r in res if r.type == "pulumi:providers:alicloud"]
    if not providers:
        out.append("no explicit alicloud provider pinned to the stack region")
    return out


def check(resources: Iterable[Resource], region: str) -> list[str]:
    """Every violation in a stack (what the tests assert empty)."""
    res = list(resources)
    out = [msg for r in res for rule in RULES.values() for msg in rule(r, region)]
    return out + stack_rules(res, region)


# ------------------------------------------------------------------ CrossGuard wrappers
def pulumi_policies():
    """ResourceValidationPolicy/StackValidationPolicy objects for infra/policy/__main__.py."""
    from pulumi_policy import (
        EnforcementLevel,
        PolicyConfigSchema,
        ResourceValidationPolicy,
        StackValidationPolicy,
    )

    # The pack is configured per stack: --policy-pack-config with {"<policy>": {"region": "cn-hangzhou"}}.
    schema = PolicyConfigSchema(properties={"region": {"type": "string"}}, required=["region"])

    def region_of(args) -> str:
        return (args.get_config() or {}).get("region", "")

    def wrap(rule):
        def validate(args, report_violation):
            for msg in rule(Resource(args.resource_type, args.name, dict(args.props)), region_of(args)):
                report_violation(msg)

        return validate

    policies = [
        ResourceValidationPolicy(
            name=name,
            description=fn.__doc__ or name,
            validate=wrap(fn),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=schema,
        )
        for name, fn in RULES.items()
    ]

    def validate_stack(args, report_violation):
        region = (args.get_config() or {}).get("region", "")
        for msg in stack_rules(
            [Resource(r.resource_type, r.name, dict(r.props)) for r in args.resources], region
        ):
            report_violation(msg)

    policies.append(
        StackValidationPolicy(
            name="recops-stack",
            description="stack-wide residency/security invariants",
            validate=validate_stack,
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=schema,
        )
    )
    return policies
