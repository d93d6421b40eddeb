"""Reading what a training run produced: bundle manifest metrics and checkpoint times.

The inference image owns the formats (``recops_serve.bundle`` / ``recops_serve.storage``);
this module is the operator's read-only window on them. When the image's storage adapter
is importable it is used for every URI scheme; otherwise local paths and ``file://`` URIs
are read directly (tests, the local demo) and other schemes answer None, which the
closed loop treats as "cannot compare" (fail closed). ``RECOPS_OSS_LOCAL_ROOT`` maps
``oss://bucket/key`` to ``<root>/bucket/key`` (the local demo and tests: object storage is
"a local directory behind the same interface").
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CHECKPOINT_STATE_NAME = "state.json"


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    root = os.environ.get("RECOPS_OSS_LOCAL_ROOT")
    if parsed.scheme == "oss" and root:
        return Path(root) / parsed.netloc / parsed.path.lstrip("/")
    return None


def read_manifest(bundle_uri: str, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    """The JSON document ``name`` (default: the bundle manifest) under ``bundle_uri``, or None."""
    try:
        from recops_serve import storage  # type: ignore[attr-defined]

        reader = getattr(storage, "read_json", None)
        if reader is not None:
            return reader(f"{bundle_uri.rstrip('/')}/{name}")
    except ImportError:
        pass
    except Exception as exc:  # storage errors must not crash reconcile
        log.debug("cannot read %s under %s: %s", name, bundle_uri, exc)
        return None
    path = _local_path(bundle_uri)
    if path is None:
        return None
    try:
        return json.loads((path / name).read_text())
    except (OSError, ValueError) as exc:
        log.info("no readable manifest at %s: %s", path, exc)
        return None


def offline_metrics(manifest: dict[str, Any] | None) -> dict[str, float] | None:
    """Numeric offline metrics of a manifest (``metrics`` mapping), or None."""
    if not manifest or not isinstance(manifest.get("metrics"), dict):
        return None
    return {k: float(v) for k, v in manifest["metrics"].items() if isinstance(v, int | float)}


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_checkpoint_time(checkpoint_uri: str) -> str | None:
    """RFC 3339 time of the newest checkpoint under ``checkpoint_uri``.

    The trainer's checkpoint manifest (``state.json``, ``saved_at``) when readable; else the
    newest file's modification time (local stores).
    """
    state = read_manifest(checkpoint_uri, name=CHECKPOINT_STATE_NAME)
    if state and isinstance(state.get("saved_at"), int | float):
        return _rfc3339(float(state["saved_at"]))
    path = _local_path(checkpoint_uri)
    if path is None or not path.is_dir():
        return None
    newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=None)
    if newest is None:
        return None
    return _rfc3339(newest)
