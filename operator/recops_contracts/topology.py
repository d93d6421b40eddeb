"""Node labels, taints and pod annotations that describe our target ACK cluster.

One source of truth shared by three parties that must never disagree:
the operator (where it places inference and training pods), the Pulumi infra
(the labels/taints it puts on the serving and spot node pools) and the local
test cluster (the KWOK fake nodes it creates). Stdlib only, so every component
can import it without pulling in kopf or pulumi.

Facts: ACK virtual nodes carry ``type=virtual-kubelet`` and the taint
``virtual-kubelet.io/provider=alibabacloud:NoSchedule``; ACK's CCM labels spot
ECS nodes with ``node.alibabacloud.com/spot-strategy``. Our own pool labels and
the spot taint are under ``recops.io/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"

#: Our pool label: which kind of capacity a node is.
CAPACITY_LABEL = "recops.io/capacity"
CAPACITY_ON_DEMAND = "on-demand"
CAPACITY_SPOT = "spot"

#: Label that ACK's cloud controller manager puts on ECS nodes, with the spot strategy.
ACK_SPOT_STRATEGY_LABEL = "node.alibabacloud.com/spot-strategy"
ACK_SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")
ACK_NO_SPOT = "NoSpot"

#: ECI virtual-kubelet node label.
ECI_NODE_LABEL_KEY = "type"
ECI_NODE_LABEL_VALUE = "virtual-kubelet"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: Effect = "NoSchedule"

    def as_k8s(self) -> dict[str, str]:
        """The taint as it appears in a Node's ``spec.taints``."""
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def toleration(self) -> dict[str, str]:
        """The exact-match toleration for this taint, as used in a pod spec."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


#: Taint on every node of the spot pool: only pods that tolerate it (training) land there.
SPOT_TAINT = Taint("recops.io/spot", "true", "NoSchedule")
#: Taint that ACK puts on ECI virtual nodes.
ECI_TAINT = Taint("virtual-kubelet.io/provider", "alibabacloud", "NoSchedule")


@dataclass(frozen=True)
class NodePoolProfile:
    """Labels and taints of one kind of node in the target cluster."""

    name: str
    labels: dict[str, str]
    taints: tuple[Taint, ...]


ON_DEMAND_POOL = NodePoolProfile(
    name="serving",
    labels={CAPACITY_LABEL: CAPACITY_ON_DEMAND, ACK_SPOT_STRATEGY_LABEL: ACK_NO_SPOT},
    taints=(),
)
SPOT_POOL = NodePoolProfile(
    name="training-spot",
    labels={CAPACITY_LABEL: CAPACITY_SPOT, ACK_SPOT_STRATEGY_LABEL: ACK_SPOT_STRATEGIES[0]},
    taints=(SPOT_TAINT,),
)
ECI_VIRTUAL_NODE = NodePoolProfile(
    name="eci",
    labels={ECI_NODE_LABEL_KEY: ECI_NODE_LABEL_VALUE},
    taints=(ECI_TAINT,),
)

# --- ECI pod annotations (they go on the pod template and only act at pod creation) ---
ECI_ANNOTATION_PREFIX = "k8s.aliyun.com/"
ECI_AUTO_IMAGE_CACHE = "k8s.aliyun.com/eci-auto-imc"
ECI_USE_SPECS = "k8s.aliyun.com/eci-use-specs"
ECI_IMAGE_SNAPSHOT_ID = "k8s.aliyun.com/eci-image-snapshot-id"
ECI_SPOT_STRATEGY = "k8s.aliyun.com/eci-spot-strategy"
ECI_SPOT_DURATION = "k8s.aliyun.com/eci-spot-duration"
ECI_SPOT_FALLBACK = "k8s.aliyun.com/eci-spot-fallback"
ECI_SPOT_RELEASE_STRATEGY = "k8s.aliyun.com/eci-spot-release-strategy"
ECI_WITH_EIP = "k8s.aliyun.com/eci-with-eip"

# --- Intranet-only Service annotations (Alibaba Cloud CCM) ---
SLB_ADDRESS_TYPE = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type"
SLB_INTRANET = "intranet"


def not_spot_node_affinity_terms() -> list[dict]:
    """Required node-affinity match expressions that keep a pod off spot capacity.

    Both our pool label and ACK's own spot-strategy label are checked, so a spot
    node created outside our pools is avoided too.
    """
    return [
        {"key": CAPACITY_LABEL, "operator": "NotIn", "values": [CAPACITY_SPOT]},
        {"key": ACK_SPOT_STRATEGY_LABEL, "operator": "NotIn", "values": list(ACK_SPOT_STRATEGIES)},
    ]


def spot_only_node_affinity_terms() -> list[dict]:
    """Required node-affinity match expressions that put a pod on the spot pool only."""
    return [{"key": CAPACITY_LABEL, "operator": "In", "values": [CAPACITY_SPOT]}]
