"""spec.search through the real operator process and the real control plane: the vectorization
CronJob and the serving config appear; bad values are refused at apply with specific messages."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.kube import Operator, apply, feature_store_secret, get, service, wait_for

pytestmark = pytest.mark.integration

SEARCH = {
    "catalog": "oss://retail-data-cn-hangzhou/catalog/",
    "uri": "oss://retail-models-cn-hangzhou/search/",
    "schedule": "0 3 * * *",
    "version": "s-2026-12-01",
}


@pytest.fixture
def operator(k8s_cluster, k8s_namespace, tmp_path) -> Iterator[Operator]:
    feature_store_secret(k8s_cluster, k8s_namespace)
    op = Operator(k8s_cluster, k8s_namespace, tmp_path / "operator.log").start()
    try:
        yield op
    finally:
        op.stop()


def test_search_renders_the_cronjob_and_the_serving_config(k8s_cluster, k8s_namespace, operator):
    ns = k8s_namespace
    apply(k8s_cluster, ns, service(search=SEARCH))
    cron = wait_for(lambda: get(k8s_cluster, ns, "cronjob", "home-feed-vectorize"), what="vectorize CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["recops.io/component"] == "search"
    assert pod["spec"]["containers"][0]["args"][:3] == ["vectorize", "--catalog", SEARCH["catalog"]]

    def config():
        for cm in (get(k8s_cluster, ns, "configmaps") or {}).get("items", []):
            text = (cm.get("data") or {}).get("config.json")
            if text and json.loads(text).get("track") == "stable":
                return json.loads(text)
        return None

    cfg = wait_for(lambda: (c := config()) and c.get("search_uri") and c, what="search_uri in the config")
    assert cfg["search_uri"] == "oss://retail-models-cn-hangzhou/search/s-2026-12-01"
    # removing spec.search removes the CronJob (owned and garbage-collected like every child)
    apply(k8s_cluster, ns, service())
    wait_for(lambda: get(k8s_cluster, ns, "cronjob", "home-feed-vectorize") is None, what="CronJob removed")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"alpha": 2}, "spec.search.alpha"),
        ({"capacity": "on-demand"}, "spec.search.capacity"),
        ({"catalog": "oss://retail-data-cn-shanghai/catalog/"}, "outside spec.region cn-hangzhou"),
        ({"uri": "oss://key:secret@retail-models-cn-hangzhou/x/"}, "spec.search.uri"),
    ],
)
def test_bad_search_specs_are_refused(k8s_cluster, k8s_namespace, operator, change, needle):
    r = apply(k8s_cluster, k8s_namespace, service(search={**SEARCH, **change}), check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
