"""``python -m bench visual-search``: visual search speed on this machine (printed tables).

1. Vectorization with ``--visual`` (``recops-serve vectorize`` as a process) of the evaluation's
   catalogue: 219 real photographs from ``skimage.data`` (recops_serve/search/visual_evaluate.py):
   wall and CPU seconds of the image pass, images per CPU-second (the job runs one thread).
2. ``POST /v1/visual-search`` on one recops-serve worker over that bundle: 512 px JPEG queries
   (each photograph resized so its longer side is 512, quality 90), one client connection, requests
   back to back: p50/p99 including upload, decode, resize, the EfficientNet-Lite0 forward pass, the
   HNSW search and the HTTP round trip; side by side, the same decode + embed + search in process
   (no HTTP), so the server's share is visible.
The load average is printed with each table: the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from threadpoolctl import threadpool_limits

from bench.search import BIN, CACHE, ROOT, _lat, _load, search_server

N_QUERIES = 200


def _queries() -> list[bytes]:
    from recops_serve.search.visual_evaluate import PHOTOS, jpeg, photo

    out = []
    for name in PHOTOS:
        img = Image.fromarray(photo(name))
        s = 512 / max(img.size)
        out.append(jpeg(img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BICUBIC)))
    return out


def _vectorize(tmp: Path) -> tuple[Path, list]:
    from recops_serve.search.visual_evaluate import write_catalog

    write_catalog(tmp / "photos")
    out = tmp / "visual"
    catalog = str(tmp / "photos" / "catalog.parquet")
    args = ["vectorize", "--catalog", catalog, "--out", str(out), "--version", "v1", "--visual"]
    r = subprocess.run(
        [str(BIN / "recops-serve"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    if r.returncode:
        raise RuntimeError(f"vectorize --visual failed: {r.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    v = manifest["visual"]
    n = v["images"]["embedded"]
    return out, [n, f"{v['embed_seconds']:.1f}", f"{n / v['embed_seconds']:.1f}"]


def run(table) -> None:
    sys.path.insert(0, str(ROOT))
    from recops_serve.search.image_decode import decode
    from recops_serve.search.index import load_search_bundle
    from recops_serve.search.visual import VisualSearchService
    from tests.support.serving import train

    with tempfile.TemporaryDirectory(prefix="recops-bench-visual-") as d:
        tmp = Path(d)
        bundle, vrow = _vectorize(tmp)
        table(
            f"vectorize --visual, one thread, real photographs ({_load()})",
            ["images", "image pass s", "images/s"],
            [vrow],
        )
        model = CACHE / "search-model"
        if not (model / "manifest.json").exists():
            train(model, "m1", 20_000, "--no-tune")
        with search_server(tmp, model, bundle) as url:
            qs = _queries()
            lat = []
            with httpx.Client(base_url=url, timeout=30) as c:
                for q in qs:  # warm up
                    c.post("/v1/visual-search", content=q, headers={"content-type": "image/jpeg"})
                for i in range(N_QUERIES):
                    t0 = time.perf_counter()
                    r = c.post("/v1/visual-search", params={"k": 10}, content=qs[i % len(qs)])
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
            svc = VisualSearchService(load_search_bundle(str(bundle)))
            local = []
            # one BLAS thread, as the server runs (recops-serve sets OPENBLAS_NUM_THREADS=1); threadpoolctl
            # (implicit's dependency) because numpy is already loaded in this process
            with threadpool_limits(1):
                for i in range(N_QUERIES):
                    t0 = time.perf_counter()
                    svc.search(svc.embed(decode(qs[i % len(qs)])), 10)
                    local.append(time.perf_counter() - t0)
            size = sum(map(len, qs)) // len(qs)
            rows = [
                ["POST /v1/visual-search (one worker)", N_QUERIES, *(f"{x:.1f}" for x in _lat(lat))],
                ["in process: decode + embed + search", N_QUERIES, *(f"{x:.1f}" for x in _lat(local))],
            ]
            table(
                f"visual search, 512 px JPEG queries (mean {size // 1024} KiB), 219 products, back to back ({_load()})",
                ["path", "requests", "p50 ms", "p99 ms"],
                rows,
            )
