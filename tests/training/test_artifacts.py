"""Reading bundle manifests and checkpoint times from a local store (file:// and paths)."""

from __future__ import annotations

import json
import os

from recops_operator.training import artifacts


def test_oss_uris_map_to_a_local_root_when_configured(tmp_path, monkeypatch):
    bundle = tmp_path / "retail-models-hz" / "home-feed" / "v1"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"metrics": {"ndcg@10": 0.3}}))
    monkeypatch.delenv("RECOPS_OSS_LOCAL_ROOT", raising=False)
    assert artifacts.read_manifest("oss://retail-models-hz/home-feed/v1") is None  # no adapter: fail closed
    monkeypatch.setenv("RECOPS_OSS_LOCAL_ROOT", str(tmp_path))
    assert artifacts.read_manifest("oss://retail-models-hz/home-feed/v1") == {"metrics": {"ndcg@10": 0.3}}


def test_manifest_metrics_and_checkpoint_time(tmp_path):
    bundle = tmp_path / "models" / "run-1"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(
        json.dumps({"version": "run-1", "metrics": {"ndcg@10": 0.2, "note": "x", "n": 3}})
    )
    assert artifacts.offline_metrics(artifacts.read_manifest(f"file://{bundle}")) == {
        "ndcg@10": 0.2,
        "n": 3.0,
    }
    assert artifacts.read_manifest(str(bundle))["version"] == "run-1"
    assert artifacts.read_manifest(f"file://{tmp_path}/missing") is None
    assert artifacts.offline_metrics({"version": "x"}) is None

    ckpt = tmp_path / "ckpt" / "run-1"
    assert artifacts.last_checkpoint_time(f"file://{ckpt}") is None
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "sub" / "state.npz").write_bytes(b"x")
    os.utime(ckpt / "sub" / "state.npz", (1_795_000_000, 1_795_000_000))
    assert artifacts.last_checkpoint_time(f"file://{ckpt}") == "2026-11-18T11:06:40Z"
    # the trainer's checkpoint manifest wins over file times
    (ckpt / "state.json").write_text(json.dumps({"step": 3, "saved_at": 1_795_000_060.5}))
    assert artifacts.last_checkpoint_time(f"file://{ckpt}") == "2026-11-18T11:07:40Z"
