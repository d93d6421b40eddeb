"""Server-side apply of desired objects, skipping objects that already match.

Steady state must make no API writes, so before applying we read the live object
and skip the PATCH when every field we own already has the desired value
(``is_subset``). Server-side apply (field manager ``recops``, force) makes the
write itself idempotent and repairs drift on the fields we own.

Reads of the kinds the operator watches come from a cache that the watch events
(and our own apply responses) keep current, so an event-driven reconcile does not
GET every child again; ``fresh=True`` (the periodic resync) reads the API server.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from recops_operator.rejections import ChildRejected

FIELD_MANAGER = "recops"
log = logging.getLogger(__name__)


def is_subset(desired: Any, live: Any) -> bool:
    """True when every value in ``desired`` is present and equal in ``live``.

    Lists must have the same length and match element-wise (ordering is meaningful
    for containers, env, ports). Quantities and ints that the API server normalises
    (e.g. "1" vs 1) compare as strings.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        # The API server drops empty maps/lists and nulls, so "absent" matches them.
        return all(is_subset(v, live[k]) if k in live else v in ({}, [], None) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, x) for d, x in zip(desired, live, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired == live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return desired == live
    return str(desired) == str(live)


@dataclass
class ApplyResult:
    written: int = 0
    unchanged: int = 0
    skipped_kinds: tuple[str, ...] = ()


class Applier:
    """Applies objects through the dynamic client; counts writes (benchmarks and tests read them)."""

    # Handlers run in a thread pool and the dynamic client's discovery cache is not
    # thread-safe (concurrent first lookups corrupt it), so lookups are serialised and
    # memoised; absent kinds are re-checked after a minute (CRDs can be installed later).
    MISSING_TTL = 60.0

    def __init__(self, api: client.ApiClient):
        self._lock = threading.Lock()
        with self._lock:
            self.dyn = dynamic.DynamicClient(api)
        self._found: dict[tuple[str, str], Any] = {}
        self._missing: dict[tuple[str, str], float] = {}
        self.writes = 0
        self.watched: set[tuple[str, str]] = set()  # (apiVersion, kind) kept current by watch events
        self._cache: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.cache_hits = 0

    def resource(self, api_version: str, kind: str):
        key = (api_version, kind)
        res = self._found.get(key)
        if res is not None:
            return res
        with self._lock:
            if key in self._missing and time.monotonic() - self._missing[key] < self.MISSING_TTL:
                raise ResourceNotFoundError(f"{api_version}/{kind} not served")
            try:
                res = self.dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                self._missing[key] = time.monotonic()
                self.dyn.resources.invalidate_cache()
                raise
            self._found[key] = res
            self._missing.pop(key, None)
            return res

    def has_kind(self, api_version: str, kind: str) -> bool:
        try:
            self.resource(api_version, kind)
            return True
        except ResourceNotFoundError:
            return False

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """A watch event (or apply response) for a watched kind: remember the newest state."""
        key = _key(obj)
        if key[:2] not in self.watched:
            return
        if deleted:
            self._cache.pop(key, None)
            return
        old = self._cache.get(key)
        if old is None or not _older(obj, old):  # a late event must not replace a newer apply response
            # managedFields are most of an object's size and no reader of the cache needs them
            meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            self._cache[key] = {**obj, "metadata": meta}

    def get(self, obj: dict[str, Any], fresh: bool = False) -> dict[str, Any] | None:
        key = _key(obj)
        if not fresh and key in self._cache:
            self.cache_hits += 1
            return self._cache[key]
        res = self.resource(obj["apiVersion"], obj["kind"])
        try:
            live = res.get(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace")).to_dict()
        except NotFoundError:
            self._cache.pop(key, None)
            return None
        self.observe(live)
        return live

    def apply(self, obj: dict[str, Any], fresh: bool = False) -> bool:
        """Apply one object; returns True when a write was made."""
        live = self.get(obj, fresh)
        if live is not None and is_subset(_comparable(obj), live):
            return False
        res = self.resource(obj["apiVersion"], obj["kind"])
        out = res.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        self.observe(out.to_dict())
        self.writes += 1
        log.info("applied %s %s/%s", obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        return True

    def apply_all(self, objs: list[dict[str, Any]], fresh: bool = False) -> ApplyResult:
        """Apply in order; the first rejection raises ``ChildRejected`` naming that child."""
        result = ApplyResult()
        for obj in objs:
            try:
                wrote = self.apply(obj, fresh)
            except ChildRejected:
                raise
            except ApiException as e:
                raise ChildRejected(obj, e) from e
            if wrote:
                result.written += 1
            else:
                result.unchanged += 1
        return result

    def cached(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The watch-fed copy of ``obj`` without an API call (None: not seen, or a kind not watched)."""
        return self._cache.get(_key(obj))

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        self._cache.pop((api_version, kind, namespace, name), None)
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace)
            self.writes += 1
            return True
        except (NotFoundError, ApiException):
            return False


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def _older(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether ``new`` is an older version of the object than ``old``. resourceVersions are opaque,
    but the API server's are etcd revisions; anything else (or a replaced object) counts as newer."""
    a, b = new["metadata"].get("resourceVersion", ""), old["metadata"].get("resourceVersion", "")
    same_object = new["metadata"].get("uid") == old["metadata"].get("uid")
    return same_object and a.isdigit() and b.isdigit() and int(a) < int(b)


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a desired object the API server echoes back unchanged."""
    meta = {k: v for k, v in obj["metadata"].items() if k in ("labels", "annotations", "ownerReferences")}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    out["metadata"] = meta
    return out
