"""Where bundles and checkpoints live: a local directory, ``file://`` or ``oss://``.

``oss://bucket/key`` resolves to ``$RECOPS_OSS_LOCAL_ROOT/bucket/key`` when that
variable is set (tests and the local demo: "object storage is a local directory
behind the same interface"; in the cluster an OSS volume (ossfs/CSI) is mounted at
that root). Without it an ``oss://`` URI is a clear error: this image does not
ship an OSS SDK, by design (no credentials in the pod; RRSA-mounted volume).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """A storage URI cannot be resolved or read."""


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "oss":
        root = os.environ.get("RECOPS_OSS_LOCAL_ROOT")
        if not root:
            raise StorageError(
                f"{uri}: set RECOPS_OSS_LOCAL_ROOT to the mounted OSS root (no OSS SDK in this image)"
            )
        return Path(root) / parsed.netloc / parsed.path.lstrip("/")
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
