"""The versioned search bundle: everything ``/v1/search`` and ``/v1/retrieve`` read, in one directory.

Layout (``manifest.json`` written last, the directory published atomically like a model bundle):
``vectors.npy`` float32[u, d] unit vectors, one per **distinct** chunk text; ``index.faiss`` a
faiss HNSW graph over them (inner product = cosine; the ANN library candidate retrieval uses);
``chunks.parquet`` (``item`` = row in items, ``vector`` = row in vectors, ``text``, ``tokens``).
One vector per distinct text matters: a catalogue where thousands of products share a text
(sizes, colours, store brands) otherwise fills the graph with identical points, and HNSW then
misses most neighbours (completejourney: recall@10 0.61 through the graph vs 0.93 exact); ``items.parquet`` (``item_id``, ``title``, ``category``,
``available``, ``image_uri``); ``bm25/`` the keyword index over the chunk texts (bm25s);
``manifest.json``: version, embedding model and the sha256 of its weights, chunking, HNSW
parameters, counts and ``schema`` (a reader refuses another schema with ``SearchBundleError``).

Visual part (optional; ``manifest["visual"]`` says it is there): ``image_vectors.npy`` float32[m,
1280] unit EfficientNet-Lite0 embeddings, one per product whose image decoded; ``image_items.npy``
int32[m] their rows in ``items.parquet``; ``image_index.faiss`` a second HNSW graph (same library,
same parameters) over them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recops_contracts import storage

SCHEMA = "recops-search/1"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


class SearchBundleError(RuntimeError):
    """A search bundle is missing, incomplete or of another schema."""


def keyword_tokens(texts: list[str]) -> list[list[str]]:
    """The keyword analyser, shared by indexing and queries: bm25s' (lower case, words of 2+
    characters, English stop words removed)."""
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def build_hnsw(vectors: np.ndarray, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION):
    import faiss

    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_bundle(
    uri: str,
    manifest: dict[str, Any],
    vectors: np.ndarray,
    chunk_vector: np.ndarray,
    chunk_item: np.ndarray,
    chunk_text: list[str],
    chunk_tokens: np.ndarray,
    items: dict[str, list | np.ndarray],
    visual: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``visual``: (image vectors [m, d], their item rows [m]) for the image index, or None."""
    import bm25s
    import faiss

    final = storage.local_path(uri)
    tmp = storage.atomic_dir(final)
    t0 = time.perf_counter()
    np.save(tmp / "vectors.npy", vectors.astype(np.float32))
    index = build_hnsw(vectors)
    faiss.write_index(index, str(tmp / "index.faiss"))
    t_index = time.perf_counter() - t0
    pq.write_table(
        pa.table(
            {
                "item": pa.array(chunk_item.astype(np.int32)),
                "vector": pa.array(chunk_vector.astype(np.int32)),
                "text": pa.array(chunk_text, pa.string()),
                "tokens": pa.array(chunk_tokens.astype(np.int32)),
            }
        ),
        tmp / "chunks.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(np.asarray(items["item_id"], np.int64)),
                "title": pa.array(list(items["title"]), pa.string()),
                "category": pa.array(list(items["category"]), pa.string()),
                "available": pa.array(np.asarray(items["available"], bool)),
                "image_uri": pa.array(list(items["image_uri"]), pa.string()),
            }
        ),
        tmp / "items.parquet",
    )
    retriever = bm25s.BM25()
    retriever.index(keyword_tokens(chunk_text), show_progress=False)
    retriever.save(str(tmp / "bm25"), show_progress=False)
    full = {
        **manifest,
        "schema": SCHEMA,
        "n_items": len(items["item_id"]),
        "n_chunks": len(chunk_text),
        "n_vectors": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "hnsw": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH},
        "index_seconds": round(t_index, 2),
        "created_at": time.time(),
    }
    if visual is not None:
        image_vectors, image_items = visual
        np.save(tmp / "image_vectors.npy", image_vectors.astype(np.float32))
        np.save(tmp / "image_items.npy", image_items.astype(np.int32))
        faiss.write_index(build_hnsw(image_vectors), str(tmp / "image_index.faiss"))
        full["visual"] = {**full.get("visual", {}), "n_images": int(image_vectors.shape[0])}
        full["visual"]["dim"] = int(image_vectors.shape[1])
    (tmp / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True))
    storage.publish_dir(tmp, final)
    return full


@dataclass
class SearchBundle:
    path: Path
    manifest: dict[str, Any]
    vectors: np.ndarray
    chunk_item: np.ndarray
    chunk_vector: np.ndarray
    chunk_tokens: np.ndarray
    chunk_text: list[str]
    item_ids: np.ndarray
    item_title: list[str]
    item_category: list[str | None]
    item_available: np.ndarray
    index: Any
    bm25: Any
    image_vectors: np.ndarray | None = None
    image_items: np.ndarray | None = None
    image_index: Any = None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @cached_property
    def category_names(self) -> dict[str, int]:
        names = sorted({c for c in self.item_category if c})
        return {c: i for i, c in enumerate(names)}

    @cached_property
    def chunk_category(self) -> np.ndarray:
        codes = np.array([self.category_names.get(c, -1) if c else -1 for c in self.item_category], np.int32)
        return codes[self.chunk_item] if len(codes) else np.zeros(0, np.int32)

    @cached_property
    def chunk_available(self) -> np.ndarray:
        return self.item_available[self.chunk_item]

    @cached_property
    def vector_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR: the chunks of each vector (ptr[u + 1], chunk ids in chunk order)."""
        order = np.argsort(self.chunk_vector, kind="stable")
        ptr = np.zeros(self.vectors.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(self.chunk_vector, minlength=self.vectors.shape[0]), out=ptr[1:])
        return ptr, order


def load_search_bundle(uri: str) -> SearchBundle:
    import bm25s
    import faiss

    path = storage.local_path(uri)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise SearchBundleError(f"cannot load search bundle at {uri}: {e}") from e
    if manifest.get("schema") != SCHEMA:
        raise SearchBundleError(f"search bundle {uri}: schema {manifest.get('schema')!r}, expected {SCHEMA}")
    try:
        vectors = np.load(path / "vectors.npy", mmap_mode="r")
        chunks = pq.read_table(path / "chunks.parquet")
        items = pq.read_table(path / "items.parquet")
        index = faiss.read_index(str(path / "index.faiss"))
        bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
    except Exception as e:  # OSError, ArrowInvalid, faiss RuntimeError on a corrupt file
        raise SearchBundleError(f"corrupt search bundle at {uri}: {type(e).__name__}: {e}") from e
    n_chunks, n_items = chunks.num_rows, items.num_rows
    n_vec = vectors.shape[0]
    if index.ntotal != n_vec or manifest.get("n_chunks") != n_chunks or manifest.get("n_vectors") != n_vec:
        raise SearchBundleError(f"search bundle {uri}: vectors, index and chunks disagree in size")
    chunk_item, chunk_vector = chunks["item"].to_numpy(), chunks["vector"].to_numpy()
    if n_chunks and (int(chunk_item.min()) < 0 or int(chunk_item.max()) >= n_items):
        raise SearchBundleError(f"search bundle {uri}: chunks point outside the items table")
    if n_chunks and (int(chunk_vector.min()) < 0 or int(chunk_vector.max()) >= n_vec):
        raise SearchBundleError(f"search bundle {uri}: chunks point outside the vectors")
    ef = int(manifest.get("hnsw", {}).get("efSearch", HNSW_EF_SEARCH))
    index.hnsw.efSearch = ef
    image_vectors = image_items = image_index = None
    if manifest.get("visual"):
        try:
            image_vectors = np.load(path / "image_vectors.npy", mmap_mode="r")
            image_items = np.load(path / "image_items.npy").astype(np.int64)
            image_index = faiss.read_index(str(path / "image_index.faiss"))
        except Exception as e:
            raise SearchBundleError(
                f"corrupt image index in search bundle {uri}: {type(e).__name__}: {e}"
            ) from e
        m = image_vectors.shape[0]
        if image_index.ntotal != m or len(image_items) != m or manifest["visual"].get("n_images") != m:
            raise SearchBundleError(f"search bundle {uri}: image vectors, index and items disagree in size")
        if m and (int(image_items.min()) < 0 or int(image_items.max()) >= n_items):
            raise SearchBundleError(f"search bundle {uri}: images point outside the items table")
        image_index.hnsw.efSearch = ef
    return SearchBundle(
        path=path,
        manifest=manifest,
        vectors=vectors,
        chunk_item=chunk_item.astype(np.int64),
        chunk_vector=chunk_vector.astype(np.int64),
        chunk_tokens=chunks["tokens"].to_numpy(),
        chunk_text=chunks["text"].to_pylist(),
        item_ids=items["item_id"].to_numpy(),
        item_title=items["title"].to_pylist(),
        item_category=items["category"].to_pylist(),
        item_available=items["available"].to_numpy(zero_copy_only=False).astype(bool),
        index=index,
        bm25=bm25,
        image_vectors=image_vectors,
        image_items=image_items,
        image_index=image_index,
    )
