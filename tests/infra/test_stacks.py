"""Every shipped stack under Pulumi's official mocks: inventory, key arguments, and the policies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pulumi
import pytest
import yaml

from recops_contracts import topology as topo
from recops_infra import policies
from recops_infra.config import PROJECT, ConfigError, parse

INFRA = Path(__file__).resolve().parents[2] / "infra"
STACKS = sorted(INFRA.glob("Pulumi.*-*.yaml"))


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.seen: list[policies.Resource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.seen.append(policies.Resource(args.typ, args.name, dict(args.inputs)))
        outputs = dict(args.inputs)
        if args.typ == "alicloud:cs/managedKubernetes:ManagedKubernetes":
            outputs["rrsaMetadata"] = {
                "ramOidcProviderArn": "acs:ram::1:oidc-provider/ack-rrsa-c1",
                "rrsaOidcIssuerUrl": "https://oidc",
            }
        return [args.name + "-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def stack_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["config"]


def project_config(cfg: dict) -> dict:
    return {k.split(":", 1)[1]: v for k, v in cfg.items() if k.startswith(PROJECT + ":")}


def run_stack(cfg: dict) -> list[policies.Resource]:
    """Declare the whole program under mocks and return what it registered."""
    mocks = Mocks()
    # pulumi's mocks run on the current event loop; a test that ran asyncio.run() before left none
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=cfg[f"{PROJECT}:region"], preview=False)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()})
    from recops_infra.stack import build

    done: list[bool] = []

    @pulumi.runtime.test
    def declare():
        outputs = build()
        return pulumi.Output.all(*[o for o in outputs.values() if isinstance(o, pulumi.Output)]).apply(
            lambda _: done.append(True)
        )

    declare()
    assert done
    return mocks.seen


@pytest.fixture(scope="module", params=STACKS, ids=lambda p: p.stem.split(".", 1)[1])
def stack(request):
    cfg = stack_config(request.param)
    return cfg[f"{PROJECT}:region"], run_stack(cfg)


def by_type(resources, typ):
    return [r for r in resources if r.type == typ]


def test_three_regions_are_shipped():
    regions = {stack_config(p)[f"{PROJECT}:region"] for p in STACKS}
    assert {"cn-hangzhou", "cn-shanghai", "ap-southeast-1"} <= regions
    for p in STACKS:
        cfg = stack_config(p)
        assert cfg["alicloud:region"] == cfg[f"{PROJECT}:region"]
        assert cfg["pulumi:disable-default-providers"] == ["alicloud"]


def test_inventory_and_key_arguments(stack):
    region, res = stack
    providers = by_type(res, "pulumi:providers:alicloud")
    assert len(providers) == 1 and providers[0].props["region"] == region
    assert len(by_type(res, "alicloud:vpc/network:Network")) == 1
    switches = by_type(res, "alicloud:vpc/switch:Switch")
    assert len(switches) == 6 and all(s.props["zoneId"].startswith(region) for s in switches)
    buckets = by_type(res, "alicloud:oss/bucket:Bucket")
    assert {b.props["bucket"].split("-")[2] for b in buckets} == {"models", "checkpoints", "images"}
    for b in buckets:
        assert b.props["serverSideEncryptionRule"]["sseAlgorithm"] == "KMS"
        assert b.props["versioning"]["status"] == "Enabled"
        assert b.props["lifecycleRules"][0]["transitions"][0] == {"days": 90.0, "storageClass": "Archive"}
        assert b.props["bucket"].endswith(region)
    tair = by_type(res, "alicloud:redis/tairInstance:TairInstance")
    assert len(tair) == 1 and tair[0].props["instanceType"] == "tair_scm"
    disk = by_type(res, "alicloud:ecs/ecsDisk:EcsDisk")[0].props
    assert disk["performanceLevel"] == "PL3" and disk["size"] >= 1261 and disk["encrypted"] is True
    ack = by_type(res, "alicloud:cs/managedKubernetes:ManagedKubernetes")[0].props
    assert ack["slbInternetEnabled"] is False and ack["enableRrsa"] is True
    assert {"ack-virtual-node", "arms-prometheus"} <= {a["name"] for a in ack["addons"]}
    roles = {r.props["roleName"] for r in by_type(res, "alicloud:ram/role:Role")}
    assert roles == {f"recops-training-{region}", f"recops-serving-{region}", f"recops-oss-mount-{region}"}
    mount = next(r for r in by_type(res, "alicloud:ram/role:Role") if "oss-mount" in r.props["roleName"])
    trust = json.loads(mount.props["assumeRolePolicyDocument"])["Statement"][0]["Condition"]["StringEquals"]
    assert trust["oidc:sub"] == "system:serviceaccount:ack-csi-fuse:csi-fuse-ossfs", "only the ossfs client"
    for role in by_type(
        res, "alicloud:ram/role:Role"
    ):  # "*" is literal under StringEquals: any namespace needs StringLike
        cond = json.loads(role.props["assumeRolePolicyDocument"])["Statement"][0]["Condition"]
        assert not any("*" in v for v in cond["StringEquals"].values()), cond
    serving_policy = next(
        p for p in by_type(res, "alicloud:ram/policy:Policy") if "serving" in p.props["policyName"]
    )
    actions = {
        a for st in json.loads(serving_policy.props["policyDocument"])["Statement"] for a in st["Action"]
    }
    assert "oss:PutObject" not in actions and "oss:GetObject" in actions, "serving reads models only"


def test_clickstream_kafka_is_vpc_only_in_region_with_topic_and_group(stack):
    region, res = stack
    (kafka,) = by_type(res, "alicloud:alikafka/instance:Instance")
    k = kafka.props
    assert k["deployType"] == 5 and "eipMax" not in k, "VPC only: no public endpoint"
    assert k["zoneId"].startswith(region) and k["name"] == f"recops-clickstream-{region}"
    (net,) = by_type(res, "alicloud:vpc/network:Network")
    (sg,) = by_type(res, "alicloud:ecs/securityGroup:SecurityGroup")
    assert k["vpcId"] == f"{net.name}-id" and k["vswitchId"] == f"net-nodes-{k['zoneId']}-id"
    assert k["securityGroup"] == f"{sg.name}-id" and k["kmsKeyId"] == "data-key-id"
    assert k["enableAutoTopic"] == "disable"
    cfg = project_config(stack_config(INFRA / f"Pulumi.{region}.yaml"))["kafka"]
    (topic,) = by_type(res, "alicloud:alikafka/topic:Topic")
    assert topic.props == {**topic.props, "instanceId": f"{kafka.name}-id", "topic": cfg["topic"]}
    assert topic.props["partitionNum"] == cfg["partitions"]
    (group,) = by_type(res, "alicloud:alikafka/consumerGroup:ConsumerGroup")
    assert (
        group.props["instanceId"] == f"{kafka.name}-id" and group.props["consumerId"] == cfg["consumerGroup"]
    )
    rule = next(
        r for r in by_type(res, "alicloud:ecs/securityGroupRule:SecurityGroupRule") if "9092" in r.name
    )
    assert rule.props["cidrIp"] == project_config(stack_config(INFRA / f"Pulumi.{region}.yaml"))["vpcCidr"]


def test_partitions_come_from_the_stack_config():
    cfg = stack_config(STACKS[0])
    cfg[f"{PROJECT}:kafka"] = {"partitions": 48, "topic": "shop.events"}
    res = run_stack(cfg)
    (topic,) = by_type(res, "alicloud:alikafka/topic:Topic")
    assert (topic.props["partitionNum"], topic.props["topic"]) == (48, "shop.events")


def test_node_pools_match_the_operator_topology(stack):
    _, res = stack
    pools = {p.props["nodePoolName"]: p.props for p in by_type(res, "alicloud:cs/nodePool:NodePool")}
    spot, serving = pools["recops-training-spot"], pools["recops-serving"]
    labels = lambda p: {label["key"]: label["value"] for label in p["labels"]}  # noqa: E731
    assert labels(spot)[topo.CAPACITY_LABEL] == topo.SPOT_POOL.labels[topo.CAPACITY_LABEL]
    assert spot["taints"] == [t.as_k8s() for t in topo.SPOT_POOL.taints]
    assert spot["spotStrategy"] in topo.ACK_SPOT_STRATEGIES
    assert labels(serving)[topo.CAPACITY_LABEL] == topo.ON_DEMAND_POOL.labels[topo.CAPACITY_LABEL]
    assert serving["spotStrategy"] == topo.ACK_NO_SPOT and serving.get("taints", []) == []


def test_shipped_stacks_pass_every_policy(stack):
    region, res = stack
    assert policies.check(res, region) == []


NONCOMPLIANT = [
    (
        "residency",
        "alicloud:oss/bucketReplication:BucketReplication",
        {"bucket": "b", "destination": {"bucket": "x", "location": "oss-us-west-1"}},
        "outside oss-",
    ),
    ("residency", "pulumi:providers:alicloud", {"region": "us-west-1"}, "is not the stack region"),
    ("residency", "alicloud:vpc/switch:Switch", {"zoneId": "cn-beijing-a"}, "outside"),
    ("security", "alicloud:oss/bucketAcl:BucketAcl", {"bucket": "b", "acl": "public-read"}, "is not private"),
    ("security", "alicloud:oss/bucket:Bucket", {"bucket": "b"}, "not encrypted with a KMS key"),
    (
        "security",
        "alicloud:ecs/securityGroupRule:SecurityGroupRule",
        {"type": "ingress", "cidrIp": "0.0.0.0/0", "nicType": "intranet"},
        "whole internet",
    ),
    (
        "security",
        "alicloud:cs/managedKubernetes:ManagedKubernetes",
        {"slbInternetEnabled": True},
        "public load balancer",
    ),
    (
        "security",
        "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock",
        {"bucket": "b", "blockPublicAccess": False},
        "not blocked",
    ),
    (
        "cost",
        "alicloud:cs/nodePool:NodePool",
        {"labels": [{"key": topo.CAPACITY_LABEL, "value": "spot"}], "spotStrategy": "NoSpot", "taints": []},
        "training pool is not spot",
    ),
    (
        "cost",
        "alicloud:cs/nodePool:NodePool",
        {"labels": [{"key": topo.CAPACITY_LABEL, "value": "on-demand"}], "spotStrategy": "SpotAsPriceGo"},
        "serving must never run on spot",
    ),
    (
        "cost",
        "alicloud:cs/nodePool:NodePool",
        {
            "labels": [{"key": topo.CAPACITY_LABEL, "value": "spot"}],
            "spotStrategy": "SpotAsPriceGo",
            "onDemandBaseCapacity": "1",
            "taints": [topo.SPOT_TAINT.as_k8s()],
        },
        "fall back to on-demand",
    ),
    (
        "cost",
        "alicloud:ecs/ecsDisk:EcsDisk",
        {"performanceLevel": "PL1", "size": 100, "encrypted": True, "tags": {"role": "feature-store"}},
        "must be ESSD PL3",
    ),
    (
        "cost",
        "alicloud:ecs/ecsDisk:EcsDisk",
        {"performanceLevel": "PL3", "size": 500, "encrypted": True},
        "1261-65536 GiB",
    ),
    (
        "security",
        "alicloud:alikafka/instance:Instance",
        {"deployType": 4, "eipMax": 10, "vswitchId": "vsw", "kmsKeyId": "k", "zoneId": "cn-hangzhou-h"},
        "public endpoint (deployType 4",
    ),
    (
        "security",
        "alicloud:alikafka/instance:Instance",
        {"deployType": 5, "eipMax": 10, "vswitchId": "vsw", "kmsKeyId": "k", "zoneId": "cn-hangzhou-h"},
        "public bandwidth",
    ),
    (
        "security",
        "alicloud:alikafka/instance:Instance",
        {"deployType": 5, "kmsKeyId": "k", "zoneId": "cn-hangzhou-h"},
        "in no vSwitch",
    ),
    (
        "residency",
        "alicloud:alikafka/instance:Instance",
        {"deployType": 5, "vswitchId": "vsw", "kmsKeyId": "k", "zoneId": "cn-shanghai-b"},
        "outside cn-hangzhou",
    ),
]


@pytest.mark.parametrize(
    "kind,typ,props,message", NONCOMPLIANT, ids=[f"{c[0]}-{c[3][:20]}" for c in NONCOMPLIANT]
)
def test_each_policy_fails_on_a_noncompliant_variant(kind, typ, props, message):
    msgs = policies.check([policies.Resource(typ, "bad", props)], "cn-hangzhou")
    assert any(message in m for m in msgs), msgs


def test_noncompliant_stack_variant_is_caught(stack):
    region, res = stack
    tampered = [
        policies.Resource(r.type, r.name, {**r.props, "acl": "public-read"})
        if r.type == "alicloud:oss/bucketAcl:BucketAcl"
        else r
        for r in res
    ]
    tampered = [
        r for r in tampered if r.type != "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ]
    msgs = policies.check(tampered, region)
    assert any("is not private" in m for m in msgs) and any("no BucketPublicAccessBlock" in m for m in msgs)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("zones", ["cn-hangzhou-h", "cn-beijing-a"], "recops-infra:zones"),
        ("vpcCidr", "8.8.0.0/16", "recops-infra:vpcCidr"),
        ("featureDisk", {"sizeGb": 500}, "recops-infra:featureDisk.sizeGb"),
        (
            "spotPool",
            {"instanceTypes": ["ecs.c7.large"], "minSize": 5, "maxSize": 2},
            "recops-infra:spotPool",
        ),
        ("allowCrossRegionReplication", True, "recops-infra:allowCrossRegionReplication"),
    ],
)
def test_bad_config_fails_before_any_resource_naming_the_key(key, value, message):
    raw = project_config(stack_config(STACKS[0]))
    raw[key] = value
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert message in str(e.value)


def test_policy_pack_wrappers_use_the_same_rules():
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

    by_name = {p.name: p for p in policies.pulumi_policies()}
    assert set(by_name) == {*policies.RULES, "recops-stack"}
    opts = PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    args = ResourceValidationArgs(
        "alicloud:oss/bucketAcl:BucketAcl",
        {"acl": "public-read", "bucket": "b"},
        "urn:x",
        "acl",
        opts,
        None,
        {"region": "cn-hangzhou"},
    )
    violations: list[str] = []
    by_name["recops-security"].validate(args, lambda msg, urn=None: violations.append(msg))
    assert violations == ["acl: bucket ACL 'public-read' is not private"]
