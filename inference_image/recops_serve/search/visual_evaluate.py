"""Visual search quality on real photographs: near-duplicate retrieval, top-1 / top-5, embed time.

Catalogue: the real photographs scikit-image ships inside its wheel (``skimage.data``, no download;
scikit-image is a dev dependency: ``pip install -e '.[dev]'``): 17 scenes (cat, coffee, astronaut,
rocket, Hubble field, microscopy, retina, camera man, moon, coins, brick, grass, gravel, page, text,
cell, clock) plus both views of the stereo motorcycle pair (a deliberately hard near-duplicate
distractor: the right view must not beat the left) and the 200 LFW faces (25x25 px, upscaled) as
distractors: 219 products, each a JPEG file. The catalogue goes through the real job
(``vectorize --visual``), queries through the serving path (JPEG bytes -> ``image_decode.decode``
-> ``VisualSearchService``). Queries per scene (18 scenes: the 17 and the left motorcycle): a
centre crop (70 %), an off-centre crop (60 % from the top-left), rotations of 10 and 90 degrees, a
horizontal flip, JPEG recompression at quality 20, colour jitter (brightness 1.3, contrast 0.7,
saturation 0.5) and grey. A query is right at top-1 when its source product ranks first.

``python -m recops_serve.search.visual_evaluate [--out DIR]``
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "cell",
    "clock",
)


def photo(name: str) -> np.ndarray:
    """A bundled photograph as uint8 RGB (grey ones replicated to 3 channels)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        img = getattr(skimage.data, name)()
    return img if img.ndim == 3 else np.stack([img] * 3, axis=-1)


def faces() -> list[np.ndarray]:
    import skimage.data

    out = []
    for f in skimage.data.lfw_subset():
        g = np.asarray(
            Image.fromarray((f * 255).astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
        )
        out.append(np.stack([g] * 3, axis=-1))
    return out


def jpeg(rgb: np.ndarray | Image.Image, quality: int = 90) -> bytes:
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(rgb: np.ndarray) -> dict[str, bytes]:
    """The query transforms of one photograph, as the JPEG bytes a shopper would upload."""
    img = Image.fromarray(rgb)
    w, h = img.size

    def crop(frac: float, corner: bool) -> Image.Image:
        cw, ch = int(w * frac), int(h * frac)
        left, top = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
        return img.crop((left, top, left + cw, top + ch))

    jitter = ImageEnhance.Color(ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.3)).enhance(0.7))
    return {
        "crop 70% centre": jpeg(crop(0.7, False)),
        "crop 60% corner": jpeg(crop(0.6, True)),
        "rotate 10": jpeg(img.rotate(10, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))),
        "rotate 90": jpeg(img.rotate(90, expand=True)),
        "flip": jpeg(ImageOps.mirror(img)),
        "jpeg q20": jpeg(img, 20),
        "colour jitter": jpeg(jitter.enhance(0.5)),
        "grey": jpeg(ImageOps.grayscale(img)),
    }


def write_catalog(root: Path) -> dict[int, str]:
    """The catalogue parquet + image files; item_id -> photo name (faces: ``face N``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "img").mkdir(parents=True, exist_ok=True)
    images: dict[str, np.ndarray] = {n: photo(n) for n in (*PHOTOS, "motorcycle_left", "motorcycle_right")}
    images |= {f"face {i}": f for i, f in enumerate(faces())}
    names: dict[int, str] = {}
    rows = {"item_id": [], "category": [], "title": [], "image_uri": []}
    for i, (name, rgb) in enumerate(images.items()):
        path = root / "img" / f"{i}.jpg"
        path.write_bytes(jpeg(rgb))
        names[1000 + i] = name
        rows["item_id"].append(1000 + i)
        rows["category"].append("face" if name.startswith("face") else "scene")
        rows["title"].append(f"Photo {name}")
        rows["image_uri"].append(str(path))
    pq.write_table(
        pa.table({**rows, "item_id": pa.array(rows["item_id"], pa.int64())}), root / "catalog.parquet"
    )
    return names


def evaluate(root: Path, log=print) -> dict:
    from recops_serve.search.image_decode import decode
    from recops_serve.search.index import load_search_bundle
    from recops_serve.search.vectorize import vectorize
    from recops_serve.search.visual import VisualSearchService

    names = write_catalog(root)
    result = vectorize(
        str(root / "catalog.parquet"), str(root / "bundle"), "eval", visual=True, log=lambda m: None
    )
    svc = VisualSearchService(load_search_bundle(str(root / "bundle")))
    item_of = {n: i for i, n in names.items()}
    per: dict[str, list[int]] = {}
    embed_ms: list[float] = []
    embed_cpu_ms: list[float] = []
    for name in (*PHOTOS, "motorcycle_left"):
        for kind, body in variants(photo(name)).items():
            t0, c0 = time.perf_counter(), time.process_time()
            qv = svc.embed(decode(body))
            embed_ms.append((time.perf_counter() - t0) * 1000)
            embed_cpu_ms.append((time.process_time() - c0) * 1000)
            got = [i["item_id"] for i in svc.search(qv, 5)]
            rank = got.index(item_of[name]) if item_of[name] in got else 99
            per.setdefault(kind, []).append(rank)
    visual = result["visual"]
    return {
        "catalogue": len(names),
        "per": per,
        "embed_ms": embed_ms,
        "embed_cpu_ms": embed_cpu_ms,
        "index_images_per_s": visual["images"]["embedded"] / max(visual["embed_seconds"], 1e-9),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recops_serve.search.visual_evaluate", description=__doc__)
    p.add_argument("--out", help="work directory (default: a temporary one)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    # one BLAS thread, as the server and the vectorize job run (numpy may be loaded already)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        r = evaluate(Path(args.out or tmp))
    print(f"catalogue: {r['catalogue']} real photographs (skimage.data), queries: 18 scenes x 8 transforms")
    print(f"{'query transform':<18} {'n':>3} {'top-1':>6} {'top-5':>6}")
    all_ranks: list[int] = []
    for kind, ranks in r["per"].items():
        a = np.asarray(ranks)
        all_ranks += ranks
        print(f"{kind:<18} {len(a):>3} {np.mean(a == 0):>6.3f} {np.mean(a < 5):>6.3f}")
    a = np.asarray(all_ranks)
    print(f"{'all':<18} {len(a):>3} {np.mean(a == 0):>6.3f} {np.mean(a < 5):>6.3f}")
    ms, cpu = np.asarray(r["embed_ms"]), np.asarray(r["embed_cpu_ms"])
    print(
        f"query decode+embed (one image, one thread): wall p50 {np.percentile(ms, 50):.1f} ms, "
        f"p99 {np.percentile(ms, 99):.1f} ms; CPU p50 {np.percentile(cpu, 50):.1f} ms; "
        f"vectorize: {r['index_images_per_s']:.1f} images/s; load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
