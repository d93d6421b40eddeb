"""Visual search over a search bundle's image index: a photo in, visually similar products out.

The query image is decoded and cropped like the catalogue's (``image_decode``), embedded by the
same EfficientNet-Lite0 (``image_embed``) and searched in the bundle's image HNSW graph by inner
product (= cosine, unit vectors). Availability and ``category`` filter **inside** the graph walk
(faiss ``IDSelectorBitmap`` over the image rows that pass), as text search does, so k results come
back whenever k products pass. A product has one image, so each hit is one product.
"""

from __future__ import annotations

import numpy as np

from recops_serve.search.image_embed import ImageEncoder, default_image_encoder
from recops_serve.search.index import SearchBundle


class VisualSearchService:
    def __init__(self, bundle: SearchBundle, encoder: ImageEncoder | None = None):
        import faiss

        if bundle.image_index is None:
            raise ValueError(f"search bundle {bundle.version} has no image index (vectorize --visual)")
        faiss.omp_set_num_threads(1)
        self._faiss = faiss
        self.bundle = bundle
        self.encoder = encoder or default_image_encoder()
        self._filters: dict[tuple[int | None, bool], tuple[object, np.ndarray, int]] = {}

    @property
    def n_images(self) -> int:
        return int(self.bundle.image_index.ntotal)

    def _filter(self, category: int | None, available_only: bool):
        key = (category, available_only)
        got = self._filters.get(key)
        if got is None:
            b = self.bundle
            items = b.image_items
            ok = b.item_available[items].copy() if available_only else np.ones(len(items), bool)
            if category is not None:
                codes = np.array(
                    [b.category_names.get(c, -1) if c else -1 for c in b.item_category], np.int32
                )
                ok &= codes[items] == category
            packed = np.packbits(ok, bitorder="little")
            sel = self._faiss.IDSelectorBitmap(len(ok), self._faiss.swig_ptr(packed))
            got = (sel, packed, int(ok.sum()))  # packed kept alive: the selector points into it
            self._filters[key] = got
        return got

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [224, 224, 3] -> unit vector [1280]."""
        return self.encoder.embed(rgb[None])[0]

    def search(
        self, qv: np.ndarray, k: int, category: int | None = None, available_only: bool = True
    ) -> list[dict]:
        b = self.bundle
        sel, _, passing = self._filter(category, available_only)
        k = min(k, passing)
        if k <= 0:
            return []
        params = self._faiss.SearchParametersHNSW(sel=sel, efSearch=max(k, b.image_index.hnsw.efSearch))
        scores, ids = b.image_index.search(np.ascontiguousarray(qv[None, :], np.float32), k, params=params)
        out = []
        for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if i < 0:
                continue
            item = int(b.image_items[i])
            out.append(
                {
                    "item_id": int(b.item_ids[item]),
                    "title": b.item_title[item],
                    "category": b.item_category[item],
                    "score": round(float(s), 6),
                }
            )
        return out
