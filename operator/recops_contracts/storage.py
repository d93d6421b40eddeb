"""Where bundles and checkpoints live: a local directory, ``file://`` or ``oss://``.

``oss://bucket/key`` (or ``oss://bucket.oss-<region>[-internal].aliyuncs.com/key``)
resolves to ``$RECOPS_OSS_LOCAL_ROOT/bucket/key`` when that variable is set. On ACK the
operator mounts each bucket a pod uses as an OSS CSI volume (ossfs, RRSA credentials held
by the CSI driver, never by the pod) from the claim ``claim_name(bucket)`` at
``OSS_ROOT/bucket`` and sets the variable to ``OSS_ROOT``; tests and the local demo point it
at a local directory ("object storage is a local directory behind the same interface").
Without it an ``oss://`` URI is a clear error: the images ship no OSS SDK, by design.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: where a pod sees its OSS buckets (one directory per bucket) and the variable that says so
OSS_ROOT = "/mnt/oss"
OSS_ROOT_ENV = "RECOPS_OSS_LOCAL_ROOT"
#: prefix of the PersistentVolumeClaim that mounts a bucket in a namespace (the chart's ``ossVolumes``)
CLAIM_PREFIX = "recops-oss-"


class StorageError(RuntimeError):
    """A storage URI cannot be resolved or read."""


def bucket(uri: str) -> str | None:
    """The bucket of an ``oss://`` URI (endpoint form included; bucket names have no dots), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "oss" or not parsed.netloc:
        return None
    return parsed.netloc.split(".", 1)[0]


def claim_name(bucket_name: str) -> str:
    """The PersistentVolumeClaim that mounts ``bucket_name`` (a DNS label: bucket names are)."""
    return CLAIM_PREFIX + bucket_name


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "oss":
        root = os.environ.get(OSS_ROOT_ENV)
        if not root:
            raise StorageError(
                f"{uri}: set {OSS_ROOT_ENV} to the mounted OSS root (no OSS SDK in this image)"
            )
        return Path(root) / str(bucket(uri)) / parsed.path.lstrip("/")
    raise StorageError(f"{uri}: unsupported scheme {parsed.scheme!r} (use a path, file:// or oss://)")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def read_json(uri: str) -> dict[str, Any]:
    try:
        return json.loads(local_path(uri).read_text())
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {uri}: {e}") from e


def atomic_dir(final: Path) -> Path:
    """A temp sibling of ``final`` to fill and then ``publish_dir`` (rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def publish_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
