"""Reading what a training run produced: bundle manifest metrics and checkpoint times.

The formats and their URIs are the shared contract (``recops_contracts.training`` names the
files, ``recops_contracts.storage`` resolves ``oss://`` and local URIs, the same code the
trainer writes with); this module is the operator's read-only window on them. A URI that cannot
be resolved or read answers None, which the closed loop treats as "cannot compare" (fail closed).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from recops_contracts import storage
from recops_contracts.training import CHECKPOINT_STATE_NAME, MANIFEST_NAME

log = logging.getLogger(__name__)


def read_manifest(bundle_uri: str, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    """The JSON document ``name`` (default: the bundle manifest) under ``bundle_uri``, or None."""
    try:
        return storage.read_json(storage.join(bundle_uri, name))
    except storage.StorageError as exc:  # storage errors must not crash reconcile
        log.info("no readable %s under %s: %s", name, bundle_uri, exc)
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
    try:
        path = storage.local_path(checkpoint_uri)
    except storage.StorageError:
        return None
    if not path.is_dir():
        return None
    newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=None)
    if newest is None:
        return None
    return _rfc3339(newest)
