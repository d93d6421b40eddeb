"""The applier against a real API server: reads of watched kinds come from the cache that watch
events and apply responses keep current; ``fresh`` reads (the resync) see what the cache missed."""

from __future__ import annotations

import json

import pytest
from kubernetes import config

from recops_operator.apply import Applier

pytestmark = pytest.mark.integration


def _cm(ns: str, value: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cached", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "recops"}},
        "data": {"k": value},
    }


def test_cached_reads_fresh_reads_and_late_events(k8s_cluster, k8s_namespace):
    ns = k8s_namespace
    ap = Applier(config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig)))
    ap.watched = {("v1", "ConfigMap")}

    assert ap.apply(_cm(ns, "a"))  # created: the apply response is cached
    hits = ap.cache_hits
    assert not ap.apply(_cm(ns, "a"))  # unchanged, decided from the cache: no GET, no write
    assert ap.cache_hits == hits + 1
    first = ap.get(_cm(ns, "a"))

    # someone else edits it and no watch event reaches this applier: the cache is stale, a fresh
    # read (what the resync timer does) sees the edit and the apply repairs it
    k8s_cluster.kubectl("-n", ns, "patch", "cm", "cached", "-p", json.dumps({"data": {"k": "evil"}}))
    assert ap.get(_cm(ns, "a"))["data"]["k"] == "a"
    assert ap.get(_cm(ns, "a"), fresh=True)["data"]["k"] == "evil"
    assert ap.apply(_cm(ns, "a"))  # the fresh read refreshed the cache, so the drift is seen
    live = json.loads(k8s_cluster.kubectl("-n", ns, "get", "cm", "cached", "-o", "json").stdout)
    assert live["data"]["k"] == "a"

    # a late watch event (an older resourceVersion of the same object) does not replace newer state
    ap.observe(first)
    assert ap.get(_cm(ns, "a"))["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]

    # a deletion event drops the entry: the next read asks the API server
    k8s_cluster.kubectl("-n", ns, "delete", "cm", "cached")
    ap.observe(live, deleted=True)
    assert ap.get(_cm(ns, "a")) is None
    assert ap.apply(_cm(ns, "a"))  # recreated

    # kinds nobody watches are always read from the API server
    hits = ap.cache_hits
    ap.watched = set()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": ns}, "data": {}}
    assert ap.apply(secret) and not ap.apply(secret)
    assert ap.cache_hits == hits
