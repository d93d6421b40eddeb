"""OSS buckets as volumes: each bucket a pod reads or writes, mounted from its claim.

The images ship no OSS SDK and pods hold no credentials: on ACK a bucket is an OSS CSI volume
(``ossplugin.csi.alibabacloud.com``, ossfs with RRSA) whose PersistentVolume and claim the
platform team creates per namespace (the chart's ``ossVolumes``, docs/install.md). A pod gets the
claim ``recops-oss-<bucket>`` at ``/mnt/oss/<bucket>`` and ``RECOPS_OSS_LOCAL_ROOT=/mnt/oss``,
read-only unless the pod writes there (training output, checkpoints, search bundles).
``RECOPS_OSS_VOLUMES=none`` leaves the pods without them, for clusters that provide the root
another way: the local cluster, whose object storage is a local directory and whose KWOK pods
run no code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from recops_contracts import storage

MODE_ENV = "RECOPS_OSS_VOLUMES"
MODES = ("claims", "none")


def mode() -> str:
    """``claims`` (the default: mount each bucket's claim) or ``none``; anything else is an error."""
    value = os.environ.get(MODE_ENV, "claims")
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


class OssVolumes(NamedTuple):
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: list[dict[str, str]]


def oss_volumes(read: Iterable[str | None], write: Iterable[str | None] = ()) -> OssVolumes:
    """Volumes, mounts and env for the buckets of the ``read`` and ``write`` URIs (non-OSS URIs and
    None are skipped). A bucket in both is mounted once, writable. Sorted by bucket: the same
    spec always renders the same pod template."""
    writable = {b for b in map(storage.bucket, filter(None, write)) if b}
    buckets = sorted(writable | {b for b in map(storage.bucket, filter(None, read)) if b})
    if mode() == "none" or not buckets:
        return OssVolumes([], [], [])
    volumes, mounts = [], []
    for name in buckets:
        ro = name not in writable
        volume = f"oss-{name}"[:63]
        claim = {"claimName": storage.claim_name(name)}
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {**claim, "readOnly": True} if ro else claim}
        )
        mounts.append({"name": volume, "mountPath": f"{storage.OSS_ROOT}/{name}", "readOnly": ro})
    return OssVolumes(volumes, mounts, [{"name": storage.OSS_ROOT_ENV, "value": storage.OSS_ROOT}])


def claims(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """The bucket claims the pod templates of ``objects`` mount (sorted, once each)."""
    return sorted({c for obj in objects for c in _claims(obj)})


def _claims(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        pvc = node.get("persistentVolumeClaim")
        if isinstance(pvc, Mapping) and str(pvc.get("claimName", "")).startswith(storage.CLAIM_PREFIX):
            yield pvc["claimName"]
        for value in node.values():
            yield from _claims(value)
    elif isinstance(node, list):
        for value in node:
            yield from _claims(value)
