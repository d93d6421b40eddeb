"""/v1/visual-search on a real recops-serve process (real Redis, a real model bundle, a search bundle
vectorized with ``--visual`` by the real CLI from real photographs, one broken and one missing)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from recops_serve.search.image_decode import MAX_IMAGE_BYTES
from recops_serve.search.index import load_search_bundle
from tests.search.photos import PHOTOS, jpeg, photo, write_photo_catalog, write_table
from tests.support.redis_server import RedisServer
from tests.support.serving import ServerProc, metric, train

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def vectorize(catalog: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [str(BIN / "recops-serve"), "vectorize", "--catalog", str(catalog), "--out", str(out)]
    env = {**os.environ, "RECOPS_OSS_LOCAL_ROOT": str(catalog.parent / "oss")}  # the mounted OSS root
    return subprocess.run(
        [*args, "--version", out.name, "--visual", *extra], capture_output=True, text=True, env=env
    )


def catalog_with_failures(root: Path) -> dict[int, dict]:
    rows = write_photo_catalog(root, unavailable=("gravel",))
    coins = next(r for r in rows.values() if r["title"] == "Photo coins")  # one image read through oss://
    (root / "oss" / "shop").mkdir(parents=True)
    Path(coins["image_uri"].removeprefix("file://")).rename(root / "oss" / "shop" / "coins.jpg")
    coins["image_uri"] = "oss://shop/coins.jpg"
    broken = root / "img" / "broken.jpg"
    broken.write_bytes(jpeg(photo("coffee"))[:2000])  # a truncated JPEG
    rows[900] = {**rows[101], "item_id": 900, "title": "broken", "image_uri": str(broken)}
    rows[901] = {**rows[101], "item_id": 901, "title": "missing", "image_uri": f"file://{root}/img/none.jpg"}
    rows[902] = {**rows[101], "item_id": 902, "title": "no image", "image_uri": None}
    write_table(root / "catalog.parquet", rows)
    return rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("visual")
    rows = catalog_with_failures(root)
    r = vectorize(root / "catalog.parquet", root / "v1", "--max-failed-images", "0.2")
    assert r.returncode == 0, r.stderr
    train(root / "m1", "m1", 20_000, "--no-tune")
    with RedisServer(root / "redis") as redis:
        config = root / "config.json"
        config.write_text(
            json.dumps({"model_uri": str(root / "m1"), "search_uri": str(root / "v1"), "reload_seconds": 0.5})
        )
        server = ServerProc(config, redis.url, root / "server.log")
        try:
            yield server, rows, root
        finally:
            server.stop()


def visual(server, body: bytes, **params) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/visual-search", params=params, content=body, timeout=30)


def test_bundle_has_the_image_index_and_reports_failures(stack):
    _, _, root = stack
    b = load_search_bundle(str(root / "v1"))
    report = b.manifest["visual"]["images"]
    assert report["items_with_image"] == len(PHOTOS) + 2
    assert (report["embedded"], report["broken"], report["missing"]) == (len(PHOTOS), 1, 1)
    assert any("item 900" in e and "truncated" in e for e in report["examples"]), report["examples"]
    assert any("item 901" in e for e in report["examples"])
    assert b.manifest["visual"]["model"]["name"] == "efficientnet-lite0"
    assert b.image_index.ntotal == len(PHOTOS) and b.image_vectors.shape == (len(PHOTOS), 1280)
    assert {int(b.item_ids[i]) for i in b.image_items} == {100 + i for i in range(len(PHOTOS))}


def test_too_many_broken_images_fail_the_job(stack, tmp_path):
    _, _, root = stack
    r = vectorize(root / "catalog.parquet", tmp_path / "v2")  # default threshold 5 %: 2 of 19 fail
    assert r.returncode == 78, r.stderr
    assert "missing or broken, more than 5%" in r.stderr
    assert not (tmp_path / "v2").exists()


def test_a_photo_finds_itself_and_its_variants(stack):
    server, rows, _ = stack
    by_name = {
        r["title"].removeprefix("Photo "): i for i, r in rows.items() if r["title"].startswith("Photo ")
    }
    for name in ("chelsea", "coffee", "astronaut", "camera", "brick"):
        img = photo(name)
        h, w = img.shape[:2]
        crop = img[h // 10 : h - h // 10, w // 10 : w - w // 10]
        for body in (jpeg(img, 60), jpeg(crop), jpeg(np.ascontiguousarray(np.fliplr(img)))):
            r = visual(server, body, k=5)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert items[0]["item_id"] == by_name[name], (name, items[:2])
            assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    # PNG works as well as JPEG
    buf = io.BytesIO()
    Image.fromarray(photo("rocket")).save(buf, "PNG")
    assert visual(server, buf.getvalue(), k=1).json()["items"][0]["item_id"] == by_name["rocket"]


def test_filters_category_and_availability(stack):
    server, rows, _ = stack
    body = jpeg(photo("gravel"))
    got = visual(server, body, k=100).json()["items"]
    gravel = next(i for i, r in rows.items() if r["title"] == "Photo gravel")
    assert gravel not in {i["item_id"] for i in got} and len(got) == len(PHOTOS) - 1
    got = visual(server, body, k=1, include_unavailable="true").json()["items"]
    assert got[0]["item_id"] == gravel
    got = visual(server, jpeg(photo("chelsea")), k=100, category="Grey").json()["items"]
    assert got and all(i["category"] == "Grey" for i in got)
    r = visual(server, body, category="Shoes")
    assert r.status_code == 400 and "Shoes" in r.json()["error"]


def _bomb() -> bytes:
    """A valid 1-bit PNG declaring 20000 x 20000 = 400 Mpx in a few KB."""
    w = h = 20000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w // 8) for _ in range(h)), 9)

    def chunk(t: bytes, d: bytes) -> bytes:
        return len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_bad_images_get_their_specific_4xx(stack):
    server, _, _ = stack
    before = metric(server, "recops_http_requests_total", route="visual_search", code="400")
    cases = [
        (b"", 400, "empty"),
        (b"this is not an image at all" * 10, 400, "not an image"),
        (jpeg(photo("coffee"))[:3000], 400, "truncated"),
        (_bomb(), 413, "decompression bomb"),
    ]
    for body, status, words in cases:
        r = visual(server, body)
        assert r.status_code == status, (words, r.status_code, r.text)
        assert words in r.json()["error"], r.text
    r = visual(server, b"\xff" * (MAX_IMAGE_BYTES + 1))
    assert r.status_code == 413 and str(MAX_IMAGE_BYTES) in r.json()["error"], r.text
    assert visual(server, jpeg(photo("coffee")), k="0").status_code == 400
    assert visual(server, jpeg(photo("coffee")), colour="red").status_code == 400
    r = httpx.get(f"{server.url}/v1/visual-search", timeout=5)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    after = metric(server, "recops_http_requests_total", route="visual_search", code="400")
    assert after - before == 5
    assert metric(server, "recops_http_requests_total", route="visual_search", code="413") >= 2
    assert metric(server, "recops_search_image_embed_seconds_count") > 0
    assert server.get("/readyz").status_code == 200  # nothing above hurt the server


def test_sigterm_in_the_image_pass_then_resume(tmp_path):
    from recops_serve.search.image_decode import decode
    from recops_serve.search.image_embed import default_image_encoder

    rows: dict[int, dict] = {}
    for copy in range(3):  # 51 images: several checkpoints apart
        for i, r in write_photo_catalog(tmp_path / f"c{copy}").items():
            rows[i + 1000 * copy] = {**r, "item_id": i + 1000 * copy}
    write_table(tmp_path / "catalog.parquet", rows)
    out, ckpt = tmp_path / "v1", tmp_path / "ckpt"
    args = ["--checkpoint", str(ckpt), "--checkpoint-interval", "0.2", "--resume"]
    cmd = [str(BIN / "recops-serve"), "vectorize", "--catalog", str(tmp_path / "catalog.parquet")]
    cmd += ["--out", str(out), "--version", "v1", "--visual", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (ckpt / "images" / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, proc.stdout.read()
    assert not out.exists()
    state = json.loads((ckpt / "images" / "state.json").read_text())
    assert 0 < state["next_row"] < len(rows)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"images: resuming at catalogue row {state['next_row']}" in r.stdout
    assert "resuming at" in r.stdout.split("images:")[0]  # the text pass was not redone either
    b = load_search_bundle(str(out))
    assert b.image_index.ntotal == len(rows) and b.manifest["visual"]["images"]["embedded"] == len(rows)
    enc = default_image_encoder()
    for i in (0, len(rows) - 1):  # before and after the preemption: the model's vectors of the files
        uri = rows[int(b.item_ids[b.image_items[i]])]["image_uri"]
        want = enc.embed(decode(Path(uri.removeprefix("file://")).read_bytes())[None])[0]
        np.testing.assert_allclose(b.image_vectors[i], want, atol=1e-5)
    assert not ckpt.exists()
