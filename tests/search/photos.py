"""Real photographs for the visual search tests: the ones the evaluation uses (``skimage.data``,
shipped in scikit-image's wheel), written as a product catalogue of image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recops_serve.search.visual_evaluate import PHOTOS, jpeg, photo

__all__ = ["PHOTOS", "jpeg", "photo", "write_photo_catalog", "write_table"]


def write_photo_catalog(root: Path, names=PHOTOS, unavailable: tuple[str, ...] = ()) -> dict[int, dict]:
    """One product per photo (a JPEG under root/img), category Colour or Grey; item_id 100 + i."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows: dict[int, dict] = {}
    for i, name in enumerate(names):
        rgb = photo(name)
        path = root / "img" / f"{name}.jpg"
        path.write_bytes(jpeg(rgb))
        grey = bool(np.all(rgb[..., 0] == rgb[..., 1]))
        rows[100 + i] = {
            "item_id": 100 + i,
            "category": "Grey" if grey else "Colour",
            "title": f"Photo {name}",
            "available": name not in unavailable,
            "image_uri": f"file://{path}",
        }
    return rows


def write_table(path: Path, rows: dict[int, dict]) -> None:
    cols = next(iter(rows.values())).keys()
    table = pa.table({k: [r[k] for r in rows.values()] for k in cols})
    table = table.set_column(0, "item_id", pa.array(table["item_id"].to_pylist(), pa.int64()))
    pq.write_table(table, path)
