"""One region's stack. ``build()`` is what ``infra/__main__.py`` runs under ``pulumi up``.

Stack outputs (the one documented place the operator's Helm values come from):
``region``; ``kubeconfigRef`` (how to fetch credentials: the cluster id for
``aliyun cs GET /k8s/<id>/user_config``); ``buckets`` (models, checkpoints, images);
``bucketRegions`` (the operator's RECOPS_BUCKET_REGIONS registry value);
``tairEndpointSecret`` (name of the Kubernetes Secret the platform team creates
with the Tair URL; never the password itself); ``kafka`` (instance id, topic, consumer
group, and ``bootstrapSecret``: the Secret to create with the instance's VPC endpoint, which
spec.features.stream.kafka.bootstrapSecretRef names); ``prometheusUrl`` (ARMS HTTP API,
looked up after creation); ``roles`` (RAM roles for the trainer/serving SAs).
"""

from __future__ import annotations

import pulumi
import pulumi_alicloud as ali

from recops_infra import components
from recops_infra.config import StackConfig, from_pulumi


def build(cfg: StackConfig | None = None) -> dict[str, object]:
    cfg = cfg or from_pulumi()  # validated before any resource exists
    provider = ali.Provider("regional", region=cfg.region)
    opts = pulumi.ResourceOptions(provider=provider)
    net = components.Network("net", cfg, opts)
    storage = components.Storage("data", cfg, opts)
    components.FeatureStore("features", cfg, net, storage.key, opts)
    stream = components.Clickstream("clickstream", cfg, net, storage.key, opts)
    cluster = components.Cluster("ack", cfg, net, storage.key, opts)
    ids = components.Identities("iam", cfg, cluster, storage, opts)
    outputs: dict[str, object] = {
        "region": cfg.region,
        "kubeconfigRef": cluster.cluster.id.apply(
            lambda i: f"aliyun cs GET /k8s/{i}/user_config --PrivateIpAddress true"
        ),
        "buckets": {p: b.bucket for p, b in storage.buckets.items()},
        "bucketRegions": ",".join(
            f"{cfg.bucket_prefix}-{p}-{cfg.region}={cfg.region}" for p in components.Storage.PURPOSES
        ),
        "tairEndpointSecret": "tair-credentials",
        "kafka": {
            "instanceId": stream.instance.id,
            "topic": cfg.kafka.topic,
            "consumerGroup": cfg.kafka.consumer_group,
            "bootstrapSecret": "kafka-bootstrap",
        },
        "prometheusUrl": f"https://{cfg.region}.arms.aliyuncs.com:9443/api/v1/prometheus",
        "roles": {k: r.role_name for k, r in ids.roles.items()},
    }
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
