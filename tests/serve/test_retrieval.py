"""ANN candidate retrieval (recops_serve.ann): the recall gate, filtered search, the bundle's memory-mapped
index, ALS fold-in for cold sessions, index-mode serving, and the training stage failing on low recall."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recops_serve import ann, ranking
from recops_serve.bundle import BundleError, load_bundle
from recops_serve.train import Params, RecallGateFailed, retrieval_index
from tests.support.serving import BIN, train


def uneven(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """ALS-like vectors: a low-rank spectrum and norms spread over orders of magnitude."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * np.linspace(2.0, 0.1, d, dtype=np.float32)
    return x * np.exp(rng.normal(-2.0, 1.5, n)).astype(np.float32)[:, None]


def test_recall_gate_passes_a_good_index_and_fails_a_bad_one():
    items, users = uneven(6000), uneven(400, seed=1)
    good, section = retrieval_index(items, users, Params(candidates=50))
    assert section["recall_at_k"] >= 0.95 and section["k"] == 50 and good.ntotal == 6000
    # a degenerate graph (2 links, construction beam 2) searched with the smallest beam cannot reach it
    bad = Params(candidates=50, hnsw_m=2, hnsw_ef_construction=2, ef_ladder=(1,))
    with pytest.raises(RecallGateFailed, match=r"recall@50 0\.\d+ < spec.training.retrieval.minRecall 0.95"):
        retrieval_index(items, users, bad)


def test_exact_top_is_the_brute_force_answer():
    items, q = uneven(500), uneven(3, seed=2)
    ids, scores = ann.exact_top(items, q, 10)
    ref = np.argsort(-(q @ items.T), axis=1)[:, :10]
    assert (ids == ref).all()
    assert np.allclose(scores, np.take_along_axis(q @ items.T, ref, 1))


def test_filtered_search_never_returns_excluded_or_unavailable_items():
    items, users = uneven(5000), uneven(200, seed=3)
    index = ann.AnnIndex.build(items)
    rng = np.random.default_rng(4)
    allowed = rng.random(5000) > 0.3
    # the items each query would rank first: excluding them must change the answer, not leak them
    for q in users[:50]:
        top, _ = ann.exact_top(items, q, 20)
        exclude = top[0][:15]
        ids, _ = index.search(q, 50, allowed=allowed, exclude=exclude)
        got = ids[0][ids[0] >= 0]
        assert got.size == 50  # the search returns 50 allowed items, not 50 minus the filtered ones
        assert allowed[got].all()
        assert not np.isin(got, exclude).any()
        ref, _ = ann.exact_top(items, q, 50, allowed=allowed, exclude=exclude)
        assert np.intersect1d(got, ref[0]).size >= 45


def test_bundle_round_trip_memory_maps_the_index(bundles, tmp_path):
    b = load_bundle(str(bundles["v1"]))
    r = b.manifest["retrieval"]
    assert b.ann is not None and r["mode"] == "precomputed" and r["recall_at_k"] >= r["min_recall"] == 0.95
    assert (
        b.ann.ntotal == b.n_items and b.ann.d == b.item_factors.shape[1] and b.ann.ef_search == r["ef_search"]
    )
    index_file = str(Path(bundles["v1"]).resolve() / ann.INDEX_FILE)
    assert any(index_file in line for line in Path("/proc/self/maps").read_text().splitlines())
    in_ram = ann.AnnIndex.load(index_file, r["ef_search"], mmap=False)
    q = b.item_factors[:20]
    assert (b.ann.search(q, 30)[0] == in_ram.search(q, 30)[0]).all()

    # an index of another model (other dimension) or a truncated file is refused: the server keeps its bundle
    bad = tmp_path / "b"
    shutil.copytree(bundles["v1"], bad)
    ann.AnnIndex.build(np.random.default_rng(0).random((b.n_items, 8), np.float32)).save(bad / ann.INDEX_FILE)
    with pytest.raises(BundleError, match="dimension 8"):
        load_bundle(str(bad))
    data = (Path(bundles["v1"]) / ann.INDEX_FILE).read_bytes()
    (bad / ann.INDEX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        load_bundle(str(bad))


def test_fold_in_gives_model_candidates_for_a_cold_session(bundles):
    b = load_bundle(str(bundles["v1"]))
    cfg = ranking.RankConfig.resolve(b)
    cold = ranking.session_items(b, b.item_ids[b.pop_global[5:9]].tolist(), 10)
    only = {s: 0.0 for s in ranking.SOURCES}
    without = ranking.answer(b, cfg.with_blend(**{**only, "als": 1.0}), None, cold, 20)
    assert "model" not in without.reasons  # an anonymous session had no model candidates before
    folded = ranking.answer(b, cfg.with_blend(**{**only, "fold_in": 1.0}), None, cold, 20)
    assert folded.reasons.count("model") == 20 and folded.fallback is None
    # the candidates are the folded-in vector's best items (exact), seen items excluded
    q = ranking.fold_in(b, cold)
    best, _ = ann.exact_top(b.item_factors, q, 40, allowed=cfg.allowed, exclude=np.asarray(cold))
    assert np.intersect1d(folded.items, best[0]).size >= 16
    assert not np.isin(folded.items, cold).any()


def test_fold_in_is_the_als_solve_for_a_new_user():
    import implicit
    import scipy.sparse as sp

    x = sp.random(300, 400, density=0.05, format="csr", random_state=1, dtype=np.float32)
    x.data = np.log1p(np.ceil(x.data * 3)).astype(np.float32)
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=16, regularization=0.05, iterations=3, random_state=1, num_threads=1
    )
    model.fit(x, show_progress=False)
    row = x[7]
    ref = model.recalculate_user(0, row)
    got = ann.fold_in(model.item_factors, row.indices, row.data, 0.05)
    assert np.allclose(got, ref, atol=1e-5)


@pytest.fixture(scope="module")
def index_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "b"
    train(out, "idx", 60_000, "--retrieval", "index", "--no-tune")
    return out


def test_index_mode_serves_known_users_from_the_index_without_precomputed_candidates(index_bundle):
    b = load_bundle(str(index_bundle))
    assert b.retrieval_mode == "index" and b.user_top.shape == (b.user_ids.size, 0)
    assert b.arrays["user_factors"].shape == (b.user_ids.size, b.item_factors.shape[1])
    cfg = ranking.RankConfig.resolve(b)
    als = cfg.with_blend(**{**{s: 0.0 for s in ranking.SOURCES}, "als": 1.0})
    checked = 0
    for u in range(0, b.user_ids.size, max(1, b.user_ids.size // 25)):
        hist = b.user_history(u)
        r = ranking.answer(b, als, u, [], 20)
        model = r.items[np.asarray(r.reasons) == "model"]
        assert model.size == 20
        if cfg.exclude_purchased:
            assert not np.isin(model, hist).any()
        q = b.user_vector(u)
        banned = hist if cfg.exclude_purchased else np.empty(0, np.int32)
        best, _ = ann.exact_top(b.item_factors, q, 20, allowed=cfg.allowed, exclude=banned)
        checked += np.intersect1d(model, best[0]).size
    assert checked >= 0.9 * 20 * 25


def test_training_stage_fails_below_the_recall_threshold_and_keeps_the_old_bundle(bundles, tmp_path):
    out = tmp_path / "serving"
    shutil.copytree(bundles["v1"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [
            str(BIN / "recops-serve"),
            "train",
            "--events",
            "builtin:completejourney",
            "--limit-rows",
            "60000",
            "--no-tune",
            "--out",
            str(out),
            "--version",
            "bad-index",
            "--hnsw-m",
            "2",
            "--ef-ladder",
            "1",
            "--min-recall",
            "0.995",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "RECOPS_TERMINATION_LOG": str(term)},
    )
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert "spec.training.retrieval.minRecall 0.995" in proc.stderr
    assert "minRecall" in term.read_text()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "manifest.json").read_text())["version"] == "v1"


@pytest.mark.integration
def test_an_index_bundle_hot_swaps_under_load_without_failed_requests(
    index_bundle, redis_server, make_server, tmp_path
):
    """Known users answered from the index (a search per request) while the server swaps to another
    index-mode bundle: every request a 200 with model candidates; afterwards the new bundle's index answers."""
    import asyncio
    import time

    import httpx

    v2 = tmp_path / "idx2"
    shutil.copytree(index_bundle, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    (v2 / "manifest.json").write_text(json.dumps({**manifest, "version": "idx2"}))
    ids = load_bundle(str(index_bundle)).user_ids
    users = [str(u) for u in ids[:: max(1, ids.size // 50)]]
    server, config = make_server({"model_uri": str(index_bundle)}, redis_server.url)

    async def load(n: int, stop_at: float) -> list[tuple[int, str, int]]:
        out = []
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
            while time.monotonic() < stop_at:
                n += 1
                r = await c.get("/v1/recommendations", params={"user_id": users[n % len(users)], "k": 20})
                body = r.json() if r.status_code == 200 else {}
                model = sum(i["reason"] == "model" for i in body.get("items", []))
                out.append((r.status_code, body.get("model_version", ""), model))
        return out

    async def swap_during_load() -> list[tuple[int, str, int]]:
        stop_at = time.monotonic() + 5
        task = asyncio.gather(*(load(7 * i, stop_at) for i in range(4)))
        await asyncio.sleep(1.5)
        config.write_text(json.dumps({"model_uri": str(v2), "reload_seconds": 0.5}))
        return [x for part in await task for x in part]

    answers = asyncio.run(swap_during_load())
    assert answers and {code for code, _, _ in answers} == {200}, answers[:5]
    assert all(model > 0 for _, _, model in answers), "an answer without model (index) candidates"
    versions = [v for _, v, _ in answers]
    assert versions[0] == "idx" and "idx2" in versions, set(versions)
    after = server.get("/v1/recommendations", user_id=users[0], k=20).json()
    assert after["model_version"] == "idx2" and any(i["reason"] == "model" for i in after["items"])
