"""OSS buckets reach the pods as mounted claims: which pod mounts which bucket, read-only or not,
and where ``recops_contracts.storage`` then finds an ``oss://`` URI (pure render, no cluster)."""

from __future__ import annotations

import pytest

from recops_contracts import storage
from recops_operator import oss
from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render import Owner, desired_objects
from recops_operator.render.search import render_search
from recops_operator.training.config import training_of
from recops_operator.training.render import render_pod_template
from tests.support.kube import service

OWNER = Owner(name="home-feed", namespace="recs", uid="u-1")


def spec_of(body: dict) -> RecommenderServiceSpec:
    return RecommenderServiceSpec.model_validate(body["spec"])


def _pod(objects, kind="Deployment"):
    obj = next(o for o in objects if o["kind"] == kind)
    return obj["spec"]["template"]["spec"]


def _oss_mounts(pod) -> dict[str, tuple[str, bool, bool]]:
    """mount path -> (claim, mount read-only, volume read-only) of the pod's bucket volumes."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in pod["containers"][0]["volumeMounts"]:
        pvc = volumes[m["name"]].get("persistentVolumeClaim")
        if pvc:
            out[m["mountPath"]] = (pvc["claimName"], m["readOnly"], pvc.get("readOnly", False))
    return out


def test_serving_pods_mount_the_model_and_search_buckets_read_only(monkeypatch):
    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    body = service(
        model__uri="oss://models-cn-hangzhou.oss-cn-hangzhou-internal.aliyuncs.com/home-feed/",
        search={"catalog": "oss://catalog-cn-hangzhou/products.parquet", "uri": "oss://search-cn-hangzhou/s/",
                "version": "v1"},
    )  # fmt: skip
    pod = _pod(desired_objects(OWNER, spec_of(body)))
    assert _oss_mounts(pod) == {
        "/mnt/oss/models-cn-hangzhou": (
            "recops-oss-models-cn-hangzhou",
            True,
            True,
        ),  # endpoint form: the bucket
        "/mnt/oss/search-cn-hangzhou": ("recops-oss-search-cn-hangzhou", True, True),
    }
    assert pod["containers"][0]["env"] == [{"name": storage.OSS_ROOT_ENV, "value": storage.OSS_ROOT}]


def test_training_reads_the_shop_data_and_writes_bundles_and_checkpoints(monkeypatch):
    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    body = service(
        training__data={"events": "oss://shop-data-cn-hangzhou/events/",
                        "catalog": "oss://shop-data-cn-hangzhou/catalog.parquet"},
    )  # fmt: skip
    body["metadata"]["namespace"], body["metadata"]["uid"] = "recs", "u-1"
    pod = render_pod_template(body, training_of(body["spec"]), "scheduled")["spec"]
    # the model bucket holds both the bundles and (the example's) checkpoints: mounted once, writable
    assert _oss_mounts(pod) == {
        "/mnt/oss/retail-models-cn-hangzhou": ("recops-oss-retail-models-cn-hangzhou", False, False),
        "/mnt/oss/shop-data-cn-hangzhou": ("recops-oss-shop-data-cn-hangzhou", True, True),
    }
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[storage.OSS_ROOT_ENV] == storage.OSS_ROOT
    assert storage.OSS_ROOT_ENV not in {e["name"] for e in pod["containers"][0]["env"][:-1]}  # once


def test_search_runs_read_the_catalogue_and_write_their_bundles(monkeypatch):
    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    body = service(search={"catalog": "oss://catalog-cn-hangzhou/p.parquet", "uri": "oss://search-cn-hangzhou/s/",
                           "schedule": "0 3 * * *"})  # fmt: skip
    job = render_search(OWNER, spec_of(body))[0]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert _oss_mounts(pod) == {
        "/mnt/oss/catalog-cn-hangzhou": ("recops-oss-catalog-cn-hangzhou", True, True),
        "/mnt/oss/search-cn-hangzhou": ("recops-oss-search-cn-hangzhou", False, False),
    }


def test_claims_lists_what_the_rendered_pods_mount_and_none_mode_mounts_nothing(monkeypatch):
    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    objects = desired_objects(OWNER, spec_of(service()))
    assert oss.claims(objects) == ["recops-oss-retail-models-cn-hangzhou"]
    monkeypatch.setenv(oss.MODE_ENV, "none")
    objects = desired_objects(OWNER, spec_of(service()))
    assert oss.claims(objects) == [] and "env" not in _pod(objects)["containers"][0]
    monkeypatch.setenv(oss.MODE_ENV, "csi")
    with pytest.raises(ValueError, match="RECOPS_OSS_VOLUMES='csi': expected one of claims, none"):
        oss.oss_volumes(["oss://b-cn-hangzhou/x"])


def test_local_and_builtin_uris_mount_nothing(monkeypatch):
    monkeypatch.delenv(oss.MODE_ENV, raising=False)
    assert oss.oss_volumes(["/data/events", "file:///x", "builtin:taobao", None]) == ([], [], [])


def test_the_mount_is_where_storage_resolves_the_uri(monkeypatch, tmp_path):
    """The path a pod reads (``OSS_ROOT/<bucket>/<key>``) for the plain and the endpoint URI forms."""
    monkeypatch.setenv(storage.OSS_ROOT_ENV, str(tmp_path))
    for uri in ("oss://b-cn-hangzhou/m/v1", "oss://b-cn-hangzhou.oss-cn-hangzhou-internal.aliyuncs.com/m/v1"):
        assert storage.local_path(uri) == tmp_path / "b-cn-hangzhou" / "m" / "v1"
        assert storage.claim_name(storage.bucket(uri)) == "recops-oss-b-cn-hangzhou"
    assert storage.bucket("/local/path") is None and storage.bucket("file:///x") is None
