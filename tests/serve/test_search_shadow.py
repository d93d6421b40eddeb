"""Shadow traffic for catalogue search on real processes: stable recops-serve pods mirror /v1/search,
/v1/retrieve and /v1/visual-search to a real candidate serving its own search bundle (real Redis,
bundles vectorized by the real CLI, images real photographs), and record the top-K overlap of
product ids per endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from recops_operator.api.models import Rollout
from recops_operator.rollout.analysis import analyse, prometheus_query
from recops_operator.rollout.machine import Verdict
from recops_serve import shadow
from tests.search.catalog import write_catalog
from tests.search.photos import jpeg, photo, write_photo_catalog, write_table
from tests.support.prometheus_server import PrometheusServer, Target
from tests.support.redis_server import RedisServer, free_port
from tests.support.serving import ServerProc, metric, train

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
QUERIES = ("espresso beans", "frying pan", "organic milk", "running shoes", "green tea")
OVERLAP = "recops_shadow_topk_overlap_ratio"


def vectorize(catalog: Path, out: Path, version: str, *extra: str) -> None:
    cmd = ["vectorize", "--catalog", str(catalog), "--out", str(out), "--version", version, *extra]
    subprocess.run([str(BIN / "recops-serve"), *cmd], check=True, capture_output=True)


def shifted(src: Path, dst: Path, by: int) -> None:
    """The same catalogue under other product ids: a bundle whose answers share no id with ``src``'s."""
    table = pq.read_table(src)
    ids = pc.add(table["item_id"], by)
    pq.write_table(table.set_column(table.schema.get_field_index("item_id"), "item_id", ids), dst)


class Pods:
    """Real recops-serve processes on one Redis, each from its own config file."""

    def __init__(self, root: Path, redis_url: str, model: Path):
        self.root, self.redis_url, self.model, self.procs = root, redis_url, model, []

    def start(self, name: str, search: Path, **extra) -> ServerProc:
        config = self.root / f"{name}.json"
        cfg = {"model_uri": str(self.model), "search_uri": str(search), "reload_seconds": 0.5, **extra}
        config.write_text(json.dumps(cfg))
        proc = ServerProc(config, self.redis_url, self.root / f"{name}.log")
        self.procs.append(proc)
        return proc


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-shadow")
    write_catalog(root / "a.parquet", copies=2)
    shifted(root / "a.parquet", root / "b.parquet", 100_000)
    vectorize(root / "a.parquet", root / "sa", "sa")
    vectorize(root / "b.parquet", root / "sb", "sb")
    train(root / "m1", "m1", 20_000, "--no-tune")
    with RedisServer(root / "redis") as redis:
        pods = Pods(root, redis.url, root / "m1")
        try:
            same = pods.start("cand-same", root / "sa")
            other = pods.start("cand-other", root / "sb")
            mirror = {"shadow_percent": 100}
            yield {
                "same": (pods.start("stable-same", root / "sa", shadow_url=same.url, **mirror), same),
                "other": (pods.start("stable-other", root / "sa", shadow_url=other.url, **mirror), other),
                "root": root,
                "pods": pods,
            }
        finally:
            for p in pods.procs:
                p.stop()


def settle(server, name: str, want: float, **labels) -> float:
    """``name`` on the server once it reaches ``want`` (mirrors finish after the answer), or after 10 s."""
    deadline = time.monotonic() + 10
    while (got := metric(server, name, **labels)) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def drive(stable) -> None:
    for q in QUERIES:
        r = stable.get("/v1/search", q=q, k=5)
        assert r.status_code == 200, r.text
        r = stable.post("/v1/retrieve", {"query": q, "budget_tokens": 400, "k": 10})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("pair", "expected"), [("same", 1.0), ("other", 0.0)])
def test_search_and_retrieve_are_mirrored_with_their_overlap(pods, pair, expected):
    stable, cand = pods[pair]
    drive(stable)
    n = len(QUERIES)
    for route in ("search", "retrieve"):  # the mirrored requests reached the candidate, answered there
        assert settle(cand, "recops_http_requests_total", n, route=route, code="200") == n
    for endpoint in ("search", "retrieve"):
        assert settle(stable, f"{OVERLAP}_count", n, endpoint=endpoint) == n
        assert metric(stable, "recops_shadow_requests_total", endpoint=endpoint, outcome="ok") == n
        assert metric(stable, f"{OVERLAP}_sum", endpoint=endpoint) == pytest.approx(expected * n)
        # every one of them lands in the first bucket when disjoint, none does when identical
        zero = metric(stable, f"{OVERLAP}_bucket", endpoint=endpoint, le="0.0")
        assert zero == (n if expected == 0.0 else 0)
    # recommendations keep their own series (same model on both: identical answers)
    assert metric(stable, f"{OVERLAP}_count", endpoint="recommendations") == 0
    assert stable.get("/v1/recommendations", user_id="u1").status_code == 200
    assert settle(stable, f"{OVERLAP}_count", 1, endpoint="recommendations") == 1
    assert metric(stable, f"{OVERLAP}_sum", endpoint="recommendations") == 1.0


@pytest.mark.parametrize(("pair", "verdict"), [("same", Verdict.PASS), ("other", Verdict.FAIL)])
def test_the_shadow_analysis_reads_search_overlap(pods, tmp_path, pair, verdict):
    """A real Prometheus scrapes the stable pod as the ServiceMonitor labels it; the rollout's shadow
    analysis fails a candidate whose search bundle answers with other products."""
    stable, _ = pods[pair]
    labels = {"namespace": "shop", "recsvc": "home-feed", "track": "stable"}
    with PrometheusServer(tmp_path / "prom", [Target(f"127.0.0.1:{stable.port}", labels)], "1s") as prom:
        prom.wait_for("count_over_time(up[1m]) >= 2", timeout=30)
        for _ in range(3):
            drive(stable)
        for n in range(25):
            assert stable.get("/v1/recommendations", user_id=f"u{n}").status_code == 200
        prom.wait_for('sum(recops_shadow_topk_overlap_ratio_count{endpoint="retrieve"}) >= 20', timeout=30)
        time.sleep(2.5)  # two more scrapes after the last mirror
        spec = Rollout.model_validate(
            {
                "candidate": {"version": "m2", "searchVersion": "s2"},
                "interval": "1m",
                "shadow": {"percent": 100},
                "analysis": {"minRequests": 20, "minShadowOverlap": 0.9},
            }
        )
        result = analyse(spec, "shop", "home-feed", shadowing=True, query=prometheus_query(prom.url))
        # search gets its own minimum, here at the overlap reached: a new embedding model may reorder
        own = spec.model_copy(deep=True)
        own.analysis.min_search_shadow_overlap = 1.0 if verdict == Verdict.PASS else 0.0
        relaxed = analyse(own, "shop", "home-feed", shadowing=True, query=prometheus_query(prom.url))
        own.analysis.min_shadow_overlap = 0.0  # recommendations' minimum no longer decides search
        own.analysis.min_search_shadow_overlap = 0.9
        strict = analyse(own, "shop", "home-feed", shadowing=True, query=prometheus_query(prom.url))
    checks = {c["name"]: c for c in result.checks}
    assert checks["shadow-search-topk-overlap"]["verdict"] == verdict, result.checks
    assert checks["shadow-search-topk-overlap"]["value"] == pytest.approx(
        1.0 if verdict == Verdict.PASS else 0.0
    )
    assert checks["shadow-topk-overlap"]["verdict"] == Verdict.PASS  # same model: recommendations agree
    assert result.verdict == verdict
    assert relaxed.verdict == Verdict.PASS, relaxed.checks  # "other" passes at its own minimum of 0
    assert strict.verdict == verdict, strict.checks  # 0.9 for search alone still fails disjoint answers


def test_a_dead_candidate_never_fails_the_primary(pods):
    """Mirrors to a port nobody listens on: every search still answers 200, the failures are counted."""
    stable, _ = pods["same"]
    config = Path(pods["root"]) / "stable-same.json"
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps({**cfg, "shadow_url": f"http://127.0.0.1:{free_port()}"}))
    time.sleep(1.5)  # the config is re-read every 0.5 s
    try:
        _dead_target_searches(stable)
    finally:
        config.write_text(json.dumps(cfg))


def _dead_target_searches(stable) -> None:
    before = metric(stable, "recops_shadow_requests_total", endpoint="search", outcome="error")
    for q in QUERIES:
        t0 = time.perf_counter()
        r = stable.get("/v1/search", q=q, k=5)
        assert r.status_code == 200 and r.json()["items"], r.text
        assert time.perf_counter() - t0 < 1.0
    errors = settle(
        stable, "recops_shadow_requests_total", before + len(QUERIES), endpoint="search", outcome="error"
    )
    assert errors == before + len(QUERIES)


def test_mirrors_beyond_the_in_flight_bound_are_dropped_and_counted(pods):
    """A candidate slower than the burst: at most shadow_max_inflight mirrors run, the rest are
    dropped (counted), and the primary answers are not held up by any of them."""
    root = pods["root"]
    slow = pods["pods"].start("cand-slow", root / "sa", fault_latency_ms=800)
    stable = pods["pods"].start(
        "stable-bounded", root / "sa", shadow_url=slow.url, shadow_percent=100, shadow_max_inflight=2
    )
    n = 12

    async def burst() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(base_url=stable.url, timeout=5) as c:

            async def one(i: int) -> tuple[int, float]:
                t0 = time.perf_counter()
                r = await c.get("/v1/recommendations", params={"user_id": f"b{i}"})
                return r.status_code, time.perf_counter() - t0

            return await asyncio.gather(*(one(i) for i in range(n)))

    answers = asyncio.run(burst())
    assert all(code == 200 for code, _ in answers)
    assert max(t for _, t in answers) < 0.8  # none waited for the 800 ms candidate
    outcome = {o: 0.0 for o in ("ok", "error", "dropped")}
    deadline = time.monotonic() + 10
    while sum(outcome.values()) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        for o in outcome:
            outcome[o] = metric(stable, "recops_shadow_requests_total", endpoint="recommendations", outcome=o)
    assert sum(outcome.values()) == n, outcome
    assert outcome["dropped"] >= n - 4, outcome  # 2 in flight; a slow burst may let a second pair in


PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "camera")


@pytest.fixture(scope="module")
def visual_pods(pods):
    """A stable pod mirroring to a candidate, both on a search bundle with an image index (five
    photos, one unavailable: only ``include_unavailable=true`` finds it)."""
    root = pods["root"] / "visual"
    rows = write_photo_catalog(root, PHOTO_NAMES, unavailable=("rocket",))
    write_table(root / "catalog.parquet", rows)
    vectorize(root / "catalog.parquet", root / "va", "va", "--visual")
    cand = pods["pods"].start("vcand", root / "va")
    stable = pods["pods"].start("vstable", root / "va", shadow_url=cand.url, shadow_percent=100)
    return stable, cand


def visual(server, body: bytes, kind: str, **params) -> httpx.Response:
    headers = {"content-type": kind}
    return httpx.post(
        f"{server.url}/v1/visual-search", params=params, content=body, headers=headers, timeout=30
    )


def test_visual_search_is_mirrored_with_the_clients_query_and_a_size_cap(visual_pods):
    """The candidate is asked the same question (the query string too: the unavailable photo is found
    only with include_unavailable); an image over the cap is answered but not mirrored (dropped)."""
    stable, cand = visual_pods
    body = jpeg(photo("rocket"))
    params = {"k": "1", "include_unavailable": "true"}
    answer = visual(stable, body, "image/jpeg", **params)
    assert answer.status_code == 200, answer.text
    assert settle(stable, f"{OVERLAP}_count", 1, endpoint="visual_search") == 1
    assert metric(stable, "recops_shadow_requests_total", endpoint="visual_search", outcome="ok") == 1
    assert metric(stable, f"{OVERLAP}_sum", endpoint="visual_search") == 1.0
    assert metric(cand, "recops_http_requests_total", route="visual_search", code="200") == 1
    assert answer.json() == visual(cand, body, "image/jpeg", **params).json()  # what it would answer alone
    noise = np.random.default_rng(7).integers(0, 256, (720, 720, 3), dtype=np.uint8)
    big = _png(noise)
    assert len(big) > shadow.MAX_BODY
    r = visual(stable, big, "image/png", k="3")
    assert r.status_code == 200 and len(r.json()["items"]) == 3, r.text
    assert settle(stable, "recops_shadow_requests_total", 1, endpoint="visual_search", outcome="dropped") == 1
    time.sleep(0.5)
    assert metric(stable, f"{OVERLAP}_count", endpoint="visual_search") == 1
    assert metric(cand, "recops_http_requests_total", route="visual_search", code="200") == 2  # ours only


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_a_mirrored_post_says_the_clients_content_type():
    """The bytes the candidate reads: an image goes with its own type, not application/json."""
    raw = shadow._request("cand", ("POST", "/v1/visual-search?k=3", b"\x89PNG", "image/png"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /v1/visual-search?k=3 HTTP/1.1"
    assert b"Content-Type: image/png" in head.split(b"\r\n") and b"Content-Length: 4" in head.split(b"\r\n")
    assert body == b"\x89PNG"
