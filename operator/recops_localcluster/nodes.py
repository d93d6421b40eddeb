"""KWOK fake nodes shaped like our target ACK cluster.

Built from ``recops_contracts.topology`` so the test cluster, the operator and the
Pulumi node pools carry exactly the same labels and taints.
"""

from __future__ import annotations

from dataclasses import dataclass

from recops_contracts import topology as topo

DEFAULT_REGION = "cn-hangzhou"
DEFAULT_ZONES = ("cn-hangzhou-h", "cn-hangzhou-i", "cn-hangzhou-j")

_ECS_CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "200Gi"}
# A virtual node fronts a whole region's ECI capacity.
_ECI_CAPACITY = {"cpu": "2000", "memory": "8Ti", "pods": "5000", "ephemeral-storage": "20Ti"}


@dataclass(frozen=True)
class NodeSet:
    """How many fake nodes of each kind, spread round-robin over the zones."""

    on_demand: int = 3
    spot: int = 2
    eci: int = 1
    region: str = DEFAULT_REGION
    zones: tuple[str, ...] = DEFAULT_ZONES


def _node(name: str, profile: topo.NodePoolProfile, zone: str, region: str, capacity: dict[str, str]) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        topo.ZONE_LABEL: zone,
        topo.REGION_LABEL: region,
        "recops.io/local-pool": profile.name,
        **profile.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [t.as_k8s() for t in profile.taints]},
        "status": {"allocatable": dict(capacity), "capacity": dict(capacity)},
    }


def node_manifests(nodes: NodeSet = NodeSet()) -> list[dict]:
    """Node objects for on-demand, spot and ECI virtual nodes."""
    out: list[dict] = []
    for kind, count, profile, capacity in (
        ("ondemand", nodes.on_demand, topo.ON_DEMAND_POOL, _ECS_CAPACITY),
        ("spot", nodes.spot, topo.SPOT_POOL, _ECS_CAPACITY),
        ("eci", nodes.eci, topo.ECI_VIRTUAL_NODE, _ECI_CAPACITY),
    ):
        for i in range(count):
            zone = nodes.zones[i % len(nodes.zones)]
            out.append(_node(f"{kind}-{zone}-{i}", profile, zone, nodes.region, capacity))
    return out
