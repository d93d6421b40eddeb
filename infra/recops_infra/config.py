"""Typed stack configuration, validated before any resource is declared.

A bad value fails ``pulumi preview`` at once with the key's name, instead of a
half-declared stack or a provider error minutes later.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from recops_contracts import stream as stream_contract

PROJECT = "recops-infra"
REGION_PATTERN = r"^[a-z]{2}-[a-z]+(-[0-9]+)?$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Pool(_Model):
    instance_types: Annotated[list[str], Field(min_length=1, max_length=10)]
    min_size: Annotated[int, Field(ge=0, le=1000)]
    max_size: Annotated[int, Field(ge=1, le=1000)]

    @model_validator(mode="after")
    def _bounds(self) -> Pool:
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} > maxSize {self.max_size}")
        return self


class Tair(_Model):
    instance_class: Annotated[str, Field(pattern=r"^tair\.scm\.")]  # persistent memory
    shard_count: Annotated[int, Field(ge=2, le=32)] = 2


class FeatureDisk(_Model):
    size_gb: int
    performance_level: Literal["PL3"] = "PL3"

    @field_validator("size_gb")
    @classmethod
    def _pl3_size(cls, v: int) -> int:
        if not 1261 <= v <= 65536:
            raise ValueError(f"an ESSD PL3 disk must be 1261-65536 GiB, got {v}")
        return v


class Kafka(_Model):
    """ApsaraMQ for Kafka: the clickstream topic and the stream job's consumer group (recops_contracts.stream)."""

    io_max_spec: Annotated[str, Field(pattern=r"^alikafka\.hw\.[0-9a-z]+$")] = "alikafka.hw.2xlarge"
    spec_type: Literal["normal", "professional", "professionalForHighRead"] = "professional"
    disk_size_gb: Annotated[int, Field(ge=500, le=96000)] = 500
    partitions: Annotated[int, Field(ge=1, le=360)] = 24
    topic: Annotated[str, Field(pattern=r"^[a-zA-Z0-9._-]{3,64}$")] = stream_contract.DEFAULT_TOPIC
    consumer_group: Annotated[str, Field(pattern=r"^[a-zA-Z0-9._-]{3,64}$")] = stream_contract.DEFAULT_GROUP


class StackConfig(_Model):
    region: Annotated[str, Field(pattern=REGION_PATTERN)]
    zones: Annotated[list[str], Field(min_length=2, max_length=5)]
    vpc_cidr: str
    account_id: Annotated[str, Field(pattern=r"^[0-9]{10,20}$")]
    bucket_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,30}$")]
    archive_after_days: Annotated[int, Field(ge=30, le=3650)] = 90
    break_glass_role: Annotated[str, Field(min_length=1, max_length=64)]
    serving_pool: Pool
    spot_pool: Pool
    tair: Tair
    feature_disk: FeatureDisk
    kafka: Kafka = Kafka()
    cluster_spec: Literal["ack.pro.small", "ack.pro.xlarge", "ack.pro.2xlarge"] = "ack.pro.small"
    allow_cross_region_replication: Literal[False] = False  # personal data never leaves the region

    @field_validator("zones")
    @classmethod
    def _zones_in_region(cls, zones: list[str], info) -> list[str]:
        region = info.data.get("region", "")
        bad = [z for z in zones if not z.startswith(region)]
        if bad:
            raise ValueError(f"zones {bad} are not in region {region}")
        return zones

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v)
        if not net.is_private or not 8 <= net.prefixlen <= 16:
            raise ValueError(f"vpcCidr {v} must be a private /8-/16 (room for nodes and pods)")
        return v

    def subnets(self) -> tuple[list[str], list[str]]:
        """Per-zone node (/20) and pod (/18) vswitch CIDRs carved from the VPC CIDR."""
        net = ipaddress.ip_network(self.vpc_cidr)
        pods = list(net.subnets(new_prefix=18))
        nodes = list(pods[-1].subnets(new_prefix=20))
        n = len(self.zones)
        if n > len(pods) - 1:
            raise ValueError(f"vpcCidr {self.vpc_cidr} is too small for {n} zones")
        return [str(c) for c in nodes[:n]], [str(c) for c in pods[:n]]


class ConfigError(ValueError):
    """The stack configuration is invalid; the message names the key."""


def parse(raw: dict) -> StackConfig:
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{PROJECT}:{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines)) from None


def from_pulumi() -> StackConfig:
    import pulumi

    cfg = pulumi.Config(PROJECT)
    raw: dict = {}
    for name, field in StackConfig.model_fields.items():
        key = field.alias or name
        value = cfg.get(key)
        if value is not None and field.annotation is not str:
            with contextlib.suppress(ValueError):  # structured values arrive as JSON text
                value = json.loads(value)
        if value is not None:
            raw[key] = value
    return parse(raw)
