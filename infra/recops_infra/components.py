"""ComponentResources for one region: network, storage, feature store, clickstream, cluster, identities.

Every resource takes the stack's explicit regional provider through the component's
``opts`` (default providers are disabled in every ``Pulumi.<region>.yaml``), so
nothing can silently land in another region. Node-pool labels and taints come from
``recops_contracts.topology``: the operator, the test cluster and these pools agree.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_alicloud as ali

from recops_contracts import topology as topo
from recops_infra.config import StackConfig


def _tags(cfg: StackConfig, role: str) -> dict[str, str]:
    return {"app": "recops", "role": role, "residency": cfg.region}


class Network(pulumi.ComponentResource):
    """VPC sized for many pods, per-zone node and pod vswitches, an intranet-only security group."""

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions):
        super().__init__("recops:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = ali.vpc.Network(
            f"{name}-vpc",
            vpc_name=f"recops-{cfg.region}",
            cidr_block=cfg.vpc_cidr,
            tags=_tags(cfg, "network"),
            opts=child,
        )
        node_cidrs, pod_cidrs = cfg.subnets()
        self.node_vswitches = [
            ali.vpc.Switch(
                f"{name}-nodes-{z}",
                vpc_id=self.vpc.id,
                zone_id=z,
                cidr_block=c,
                vswitch_name=f"recops-nodes-{z}",
                tags=_tags(cfg, "nodes"),
                opts=child,
            )
            for z, c in zip(cfg.zones, node_cidrs, strict=True)
        ]
        self.pod_vswitches = [
            ali.vpc.Switch(
                f"{name}-pods-{z}",
                vpc_id=self.vpc.id,
                zone_id=z,
                cidr_block=c,
                vswitch_name=f"recops-pods-{z}",
                tags=_tags(cfg, "pods"),
                opts=child,
            )
            for z, c in zip(cfg.zones, pod_cidrs, strict=True)
        ]
        self.security_group = ali.ecs.SecurityGroup(
            f"{name}-sg",
            vpc_id=self.vpc.id,
            security_group_name=f"recops-{cfg.region}",
            inner_access_policy="Accept",
            tags=_tags(cfg, "network"),
            opts=child,
        )
        # Only the VPC itself may reach inference and the feature store: no 0.0.0.0/0 ingress.
        for port in ("443/443", "6379/6379", "8080/8080"):
            ali.ecs.SecurityGroupRule(
                f"{name}-in-{port.split('/')[0]}",
                security_group_id=self.security_group.id,
                type="ingress",
                ip_protocol="tcp",
                port_range=port,
                cidr_ip=cfg.vpc_cidr,
                nic_type="intranet",
                policy="accept",
                priority=1,
                opts=child,
            )
        self.register_outputs({"vpc_id": self.vpc.id})


class Storage(pulumi.ComponentResource):
    """Private, KMS-encrypted, versioned OSS buckets with archive lifecycle and a deny-delete policy."""

    PURPOSES = ("models", "checkpoints", "images")

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions):
        super().__init__("recops:infra:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = ali.kms.Key(
            f"{name}-key",
            description=f"RecOps data key for {cfg.region}",
            key_spec="Aliyun_AES_256",
            protection_level="HSM",
            pending_window_in_days=30,
            automatic_rotation="Enabled",
            rotation_interval="365d",
            deletion_protection="Enabled",
            tags=_tags(cfg, "storage"),
            opts=child,
        )
        self.buckets: dict[str, ali.oss.Bucket] = {}
        for purpose in self.PURPOSES:
            bucket_name = f"{cfg.bucket_prefix}-{purpose}-{cfg.region}"
            b = ali.oss.Bucket(
                f"{name}-{purpose}",
                bucket=bucket_name,
                storage_class="Standard",
                redundancy_type="ZRS",
                server_side_encryption_rule=ali.oss.BucketServerSideEncryptionRuleArgs(
                    sse_algorithm="KMS", kms_master_key_id=self.key.id
                ),
                versioning=ali.oss.BucketVersioningArgs(status="Enabled"),
                lifecycle_rules=[
                    ali.oss.BucketLifecycleRuleArgs(
                        id="archive",
                        enabled=True,
                        prefix="",
                        transitions=[
                            ali.oss.BucketLifecycleRuleTransitionArgs(
                                days=cfg.archive_after_days, storage_class="Archive"
                            )
                        ],
                        noncurrent_version_transitions=[
                            ali.oss.BucketLifecycleRuleNoncurrentVersionTransitionArgs(
                                days=cfg.archive_after_days, storage_class="Archive"
                            )
                        ],
                    )
                ],
                tags=_tags(cfg, purpose),
                opts=child,
            )
            ali.oss.BucketAcl(f"{name}-{purpose}-acl", bucket=b.bucket, acl="private", opts=child)
            ali.oss.BucketPublicAccessBlock(
                f"{name}-{purpose}-pab", bucket=b.bucket, block_public_access=True, opts=child
            )
            policy = {
                "Version": "1",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": ["*"],
                        "Action": ["oss:DeleteObject", "oss:DeleteObjectVersion", "oss:DeleteBucket"],
                        "Resource": [
                            f"acs:oss:*:{cfg.account_id}:{bucket_name}",
                            f"acs:oss:*:{cfg.account_id}:{bucket_name}/*",
                        ],
                        "Condition": {
                            "StringNotEquals": {
                                "acs:PrincipalARN": [f"acs:ram::{cfg.account_id}:role/{cfg.break_glass_role}"]
                            }
                        },
                    }
                ],
            }
            ali.oss.BucketPolicy(
                f"{name}-{purpose}-policy", bucket=b.bucket, policy=json.dumps(policy), opts=child
            )
            self.buckets[purpose] = b
        self.register_outputs({p: b.bucket for p, b in self.buckets.items()})


class Clickstream(pulumi.ComponentResource):
    """ApsaraMQ for Kafka in the stack's VPC only (deploy type 5: no public endpoint), its disks
    encrypted with the stack's KMS key; the clickstream topic and the stream job's consumer group."""

    #: ApsaraMQ for Kafka deploy types: 4 = internet and VPC, 5 = VPC only
    VPC_ONLY = 5
    PORT = "9092/9092"  # the VPC (PLAINTEXT) endpoint

    def __init__(
        self, name: str, cfg: StackConfig, net: Network, key: ali.kms.Key, opts: pulumi.ResourceOptions
    ):
        super().__init__("recops:infra:Clickstream", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        k = cfg.kafka
        self.instance = ali.alikafka.Instance(
            f"{name}-kafka",
            name=f"recops-clickstream-{cfg.region}",
            deploy_type=self.VPC_ONLY,
            paid_type="PostPaid",
            spec_type=k.spec_type,
            io_max_spec=k.io_max_spec,
            disk_type=1,  # SSD
            disk_size=k.disk_size_gb,
            vpc_id=net.vpc.id,
            vswitch_id=net.node_vswitches[0].id,
            zone_id=cfg.zones[0],
            security_group=net.security_group.id,
            kms_key_id=key.id,
            enable_auto_topic="disable",  # topics are declared here, not created by a typo
            tags=_tags(cfg, "clickstream"),
            opts=child,
        )
        ali.ecs.SecurityGroupRule(
            f"{name}-in-9092",
            security_group_id=net.security_group.id,
            type="ingress",
            ip_protocol="tcp",
            port_range=self.PORT,
            cidr_ip=cfg.vpc_cidr,
            nic_type="intranet",
            policy="accept",
            priority=1,
            opts=child,
        )
        self.topic = ali.alikafka.Topic(
            f"{name}-topic",
            instance_id=self.instance.id,
            topic=k.topic,
            partition_num=k.partitions,
            remark="RecOps clickstream (docs/stream.md), keyed by session",
            tags=_tags(cfg, "clickstream"),
            opts=child,
        )
        self.group = ali.alikafka.ConsumerGroup(
            f"{name}-group",
            instance_id=self.instance.id,
            consumer_id=k.consumer_group,
            remark="RecOps stream job (FlinkDeployment)",
            tags=_tags(cfg, "clickstream"),
            opts=child,
        )
        self.register_outputs({"instance_id": self.instance.id, "topic": k.topic})


class FeatureStore(pulumi.ComponentResource):
    """Tair persistent-memory instance in the region, plus a PL3 ESSD for a high-IOPS local store."""

    def __init__(
        self, name: str, cfg: StackConfig, net: Network, key: ali.kms.Key, opts: pulumi.ResourceOptions
    ):
        super().__init__("recops:infra:FeatureStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.tair = ali.redis.TairInstance(
            f"{name}-tair",
            instance_type="tair_scm",
            engine_version="1.0",
            instance_class=cfg.tair.instance_class,
            shard_count=cfg.tair.shard_count,
            vpc_id=net.vpc.id,
            vswitch_id=net.node_vswitches[0].id,
            zone_id=cfg.zones[0],
            secondary_zone_id=cfg.zones[1],
            payment_type="PayAsYouGo",
            tair_instance_name=f"recops-features-{cfg.region}",
            security_ips=cfg.vpc_cidr,
            vpc_auth_mode="Open",
            ssl_enabled="Enable",
            tde_status="enabled",
            tags=_tags(cfg, "feature-store"),
            opts=child,
        )
        self.disk = ali.ecs.EcsDisk(
            f"{name}-essd",
            zone_id=cfg.zones[0],
            category="cloud_essd",
            performance_level=cfg.feature_disk.performance_level,
            size=cfg.feature_disk.size_gb,
            encrypted=True,
            kms_key_id=key.id,
            disk_name=f"recops-feature-cache-{cfg.region}",
            payment_type="PayAsYouGo",
            delete_auto_snapshot=False,
            tags=_tags(cfg, "feature-store"),
            opts=child,
        )
        self.register_outputs({"tair_id": self.tair.id})


class Cluster(pulumi.ComponentResource):
    """ACK Pro with a private API server, RRSA, ECI virtual nodes, an on-demand serving pool and a spot-only training pool."""

    def __init__(
        self, name: str, cfg: StackConfig, net: Network, key: ali.kms.Key, opts: pulumi.ResourceOptions
    ):
        super().__init__("recops:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = ali.cs.ManagedKubernetes(
            f"{name}-ack",
            name=f"recops-{cfg.region}",
            cluster_spec=cfg.cluster_spec,
            vswitch_ids=[s.id for s in net.node_vswitches],
            pod_vswitch_ids=[s.id for s in net.pod_vswitches],
            service_cidr="192.168.0.0/16",
            new_nat_gateway=True,
            slb_internet_enabled=False,
            enable_rrsa=True,
            deletion_protection=True,
            security_group_id=net.security_group.id,
            encryption_provider_key=key.id,
            addons=[
                {"name": "terway-eniip"},
                {"name": "csi-plugin"},
                {"name": "csi-provisioner"},
                {"name": "arms-prometheus"},
                {"name": "ack-node-problem-detector", "config": "{}"},
                {"name": "ack-virtual-node"},
                {
                    "name": "nginx-ingress-controller",
                    "config": json.dumps({"IngressSlbNetworkType": "intranet"}),
                },
            ],
            tags=_tags(cfg, "cluster"),
            opts=child,
        )
        common = {
            "cluster_id": self.cluster.id,
            "vswitch_ids": [s.id for s in net.node_vswitches],
            "security_group_ids": [net.security_group.id],
            "image_type": "AliyunLinux3",
            "system_disk_category": "cloud_essd",
            "system_disk_size": 120,
            "system_disk_encrypted": True,
            "system_disk_kms_key": key.id,
            "install_cloud_monitor": True,
            "update_nodes": True,
        }
        self.serving_pool = ali.cs.NodePool(
            f"{name}-serving",
            node_pool_name="recops-serving",
            instance_types=cfg.serving_pool.instance_types,
            instance_charge_type="PostPaid",
            spot_strategy="NoSpot",
            labels=[
                {"key": k, "value": v}
                for k, v in topo.ON_DEMAND_POOL.labels.items()
                if k != topo.ACK_SPOT_STRATEGY_LABEL
            ],
            taints=[t.as_k8s() for t in topo.ON_DEMAND_POOL.taints],
            scaling_config={
                "enable": True,
                "min_size": cfg.serving_pool.min_size,
                "max_size": cfg.serving_pool.max_size,
                "type": "cpu",
            },
            multi_az_policy="BALANCE",
            tags=_tags(cfg, "serving"),
            opts=child,
            **common,
        )
        self.spot_pool = ali.cs.NodePool(
            f"{name}-spot",
            node_pool_name="recops-training-spot",
            instance_types=cfg.spot_pool.instance_types,
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo",
            spot_instance_pools=min(len(cfg.spot_pool.instance_types), 10),
            spot_instance_remedy=True,
            on_demand_base_capacity="0",
            on_demand_percentage_above_base_capacity="0",
            compensate_with_on_demand=False,
            multi_az_policy="COST_OPTIMIZED",
            labels=[
                {"key": k, "value": v}
                for k, v in topo.SPOT_POOL.labels.items()
                if k != topo.ACK_SPOT_STRATEGY_LABEL
            ],
            taints=[t.as_k8s() for t in topo.SPOT_POOL.taints],
            scaling_config={
                "enable": True,
                "min_size": cfg.spot_pool.min_size,
                "max_size": cfg.spot_pool.max_size,
                "type": "spot",
            },
            tags=_tags(cfg, "training"),
            opts=child,
            **common,
        )
        self.register_outputs({"cluster_id": self.cluster.id})


def _oidc_condition(meta: dict | None, subject: str) -> dict:
    """RRSA trust: this cluster's issuer and audience, and the ServiceAccount ``subject``; a subject
    with ``*`` (any namespace) under StringLike, since StringEquals compares literally."""
    exact = {"oidc:aud": "sts.aliyuncs.com", "oidc:iss": (meta or {}).get("rrsa_oidc_issuer_url", "")}
    if "*" in subject:
        return {"StringEquals": exact, "StringLike": {"oidc:sub": subject}}
    return {"StringEquals": {**exact, "oidc:sub": subject}}


class Identities(pulumi.ComponentResource):
    """RAM roles assumed through RRSA: training reads data and writes checkpoints/models; serving reads models."""

    def __init__(
        self, name: str, cfg: StackConfig, cluster: Cluster, storage: Storage, opts: pulumi.ResourceOptions
    ):
        super().__init__("recops:infra:Identities", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        b = {p: f"{cfg.bucket_prefix}-{p}-{cfg.region}" for p in Storage.PURPOSES}

        def arn(bucket: str) -> list[str]:
            return [f"acs:oss:*:{cfg.account_id}:{bucket}", f"acs:oss:*:{cfg.account_id}:{bucket}/*"]

        read = ["oss:GetObject", "oss:ListObjects", "oss:GetBucketInfo"]
        grants = {
            "training": [
                {"Effect": "Allow", "Action": read, "Resource": arn(b["models"]) + arn(b["checkpoints"])},
                {
                    "Effect": "Allow",
                    "Action": ["oss:PutObject"],
                    "Resource": [arn(b["models"])[1], arn(b["checkpoints"])[1]],
                },
            ],
            "serving": [{"Effect": "Allow", "Action": read, "Resource": arn(b["models"])}],
            # the OSS CSI driver's mounts (the chart's ossVolumes roleName): pods hold no credentials and
            # reach a bucket only through a claim, read-only unless its volume is writable
            "oss-mount": [
                {"Effect": "Allow", "Action": read, "Resource": [a for p in b.values() for a in arn(p)]},
                {
                    "Effect": "Allow",
                    "Action": ["oss:PutObject", "oss:DeleteObject"],
                    "Resource": [arn(b["models"])[1], arn(b["checkpoints"])[1]],
                },
            ],
        }
        # who assumes each role through RRSA: the pods' ServiceAccounts (any namespace), and for mounts
        # the ossfs client's ServiceAccount, whose namespace ACK fixes (ack-csi-fuse)
        subjects = {
            "training": "system:serviceaccount:*:recops-trainer",
            "serving": "system:serviceaccount:*:recops-serve",
            "oss-mount": "system:serviceaccount:ack-csi-fuse:csi-fuse-ossfs",
        }
        self.roles: dict[str, ali.ram.Role] = {}
        for who, statements in grants.items():
            subject = subjects[who]
            trust = cluster.cluster.rrsa_metadata.apply(
                lambda meta, subject=subject: json.dumps(
                    {
                        "Version": "1",
                        "Statement": [
                            {
                                "Action": "sts:AssumeRole",
                                "Effect": "Allow",
                                "Principal": {"Federated": [(meta or {}).get("ram_oidc_provider_arn", "")]},
                                "Condition": _oidc_condition(meta, subject),
                            }
                        ],
                    }
                )
            )
            role = ali.ram.Role(
                f"{name}-{who}",
                role_name=f"recops-{who}-{cfg.region}",
                assume_role_policy_document=trust,
                max_session_duration=3600,
                opts=child,
            )
            statements = [
                *statements,
                {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": ["*"]},
            ]
            pol = ali.ram.Policy(
                f"{name}-{who}-policy",
                policy_name=f"recops-{who}-{cfg.region}",
                policy_document=json.dumps({"Version": "1", "Statement": statements}),
                opts=child,
            )
            ali.ram.RolePolicyAttachment(
                f"{name}-{who}-attach",
                role_name=role.role_name,
                policy_name=pol.policy_name,
                policy_type="Custom",
                opts=child,
            )
            self.roles[who] = role
        self.register_outputs({})
