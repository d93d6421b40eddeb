"""Kubernetes Events that aggregate: a repeated identical failure bumps one Event's count.

kopf.event/kopf.warn create a new Event per call, so a failure retried by the backoff and by
child-triggered reconciles produced one Event per attempt (8 in 25 s). Here the Event's name is
derived from (object uid, type, reason, message): the first occurrence creates it with count 1,
every repeat patches count+1 and lastTimestamp on the same Event, as kubelet's recorder does.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from recops_operator.status import now

log = logging.getLogger(__name__)
COMPONENT = "recops-operator"
_lock = threading.Lock()


def event_name(body: dict[str, Any], type_: str, reason: str, message: str) -> str:
    """Deterministic per (object, type, reason, message): identical repeats share one Event."""
    meta = body["metadata"]
    digest = hashlib.sha256(f"{meta.get('uid')}|{type_}|{reason}|{message}".encode()).hexdigest()[:16]
    return f"{meta['name'][:200]}.{digest}"


def record(api: client.ApiClient, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Create the Event, or bump its count when the same one exists. Never raises: an Event is
    a courtesy, status is the record."""
    meta = body["metadata"]
    ns, name = meta["namespace"], event_name(body, type_, reason, message)
    core = client.CoreV1Api(api)
    ts = now()
    with _lock:
        try:
            try:
                live = core.read_namespaced_event(name, ns)
            except ApiException as e:
                if e.status != 404:
                    raise
                live = None
            if live is not None:
                core.patch_namespaced_event(
                    name, ns, {"count": int(live.count or 1) + 1, "lastTimestamp": ts}
                )
                return
            core.create_namespaced_event(
                ns,
                {
                    "metadata": {"name": name, "namespace": ns},
                    "involvedObject": {
                        "apiVersion": body.get("apiVersion"),
                        "kind": body.get("kind"),
                        "name": meta["name"],
                        "namespace": ns,
                        "uid": meta.get("uid"),
                    },
                    "type": type_,
                    "reason": reason,
                    "message": message[:1024],
                    "count": 1,
                    "firstTimestamp": ts,
                    "lastTimestamp": ts,
                    "source": {"component": COMPONENT},
                    "reportingComponent": COMPONENT,
                },
            )
        except ApiException as e:
            log.warning("could not record event %s on %s/%s: %s", reason, ns, meta["name"], e.reason)
