"""The one shape every controller of the operator shares (serving, rollout, training, experiment).

One API client and one applier (whose read cache the serving child watches keep current), one
lock per RecommenderService (handlers run in kopf's thread pool; a sync and a reconcile of the
same service must not interleave), and one status writer. Each controller module exposes
``register(registry)``; the entry module (``main``) registers them all the same way.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from recops_operator.api.models import GROUP, PLURAL, VERSION
from recops_operator.apply import Applier

#: Children whose events trigger a serving reconcile and keep the applier's read cache current.
CHILD_WATCHES: tuple[tuple[tuple[str, ...], tuple[str, str]], ...] = (
    (("apps", "v1", "deployments"), ("apps/v1", "Deployment")),
    (("v1", "services"), ("v1", "Service")),
    (("v1", "configmaps"), ("v1", "ConfigMap")),
    (("autoscaling", "v2", "horizontalpodautoscalers"), ("autoscaling/v2", "HorizontalPodAutoscaler")),
    (("policy", "v1", "poddisruptionbudgets"), ("policy/v1", "PodDisruptionBudget")),
    (("batch", "v1", "cronjobs"), ("batch/v1", "CronJob")),
    (("networking.k8s.io", "v1", "ingresses"), ("networking.k8s.io/v1", "Ingress")),
    (("networking.k8s.io", "v1", "networkpolicies"), ("networking.k8s.io/v1", "NetworkPolicy")),
    (("flink.apache.org", "v1beta1", "flinkdeployments"), ("flink.apache.org/v1beta1", "FlinkDeployment")),
)

#: the platform's bucket claims: not children, but watched too (StorageReady reads them each reconcile)
CLAIM_KIND = ("v1", "PersistentVolumeClaim")


class Controller:
    """Shared clients, per-service locks and the status writer, built lazily and once."""

    def __init__(self) -> None:
        self._api: client.ApiClient | None = None
        self._applier: Applier | None = None
        self._build = threading.RLock()
        self._locks: defaultdict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)

    def api(self) -> client.ApiClient:
        """In-cluster config, else the kubeconfig."""
        with self._build:
            if self._api is None:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                self._api = client.ApiClient()
            return self._api

    def applier(self) -> Applier:
        with self._build:
            if self._applier is None:
                self._applier = Applier(self.api())
                # children, and the bucket claims StorageReady reads (handlers.on_bucket_claim)
                self._applier.watched = {kind for _, kind in CHILD_WATCHES} | {CLAIM_KIND}
            return self._applier

    def lock(self, namespace: str, name: str) -> threading.RLock:
        with self._build:
            return self._locks[(namespace, name)]

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return client.CustomObjectsApi(self.api()).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def write_status(
        self, namespace: str, name: str, status: dict[str, Any], api: client.ApiClient | None = None
    ) -> None:
        """Merge-patch ``status`` (keys with None are removed); counted as an API write. ``api``:
        a caller's own client (the training sync takes one, so tests can hand it theirs); with it,
        the controller's own client is never built (a test process may have no kubeconfig)."""
        client.CustomObjectsApi(api or self.api()).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
        with self._build:
            if self._applier is not None:  # counted where an applier counts writes (the operator)
                self._applier.writes += 1


CONTROLLER = Controller()
