"""Approximate nearest-neighbour candidate retrieval: an HNSW index over the ALS item factors.

The model's candidates for a shopper are the items with the largest inner product with the shopper's
vector (the bundle's user factors, or a session folded in: ``fold_in``). Brute force costs one pass over
the catalogue per request (~8 ms at 100k items, ~80 ms at 1 M on this machine's cores), so the bundle
ships an index: faiss ``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT`` inside an ``IndexIDMap`` whose ids
are the bundle's item indices (a catalogue subset could be indexed, and every answer is already an
item index). Unavailable and excluded items are filtered **inside** the search (``IDSelector``: a
bitmap of the allowed items and a batch of the shopper's excluded ones), so the index returns N
allowed items rather than N items of which some are dropped afterwards.

Why faiss, not hnswlib or usearch (measured here while choosing):
* filtered search: faiss has native ``IDSelector`` (bitmap / batch / and / not) inside the graph walk;
  hnswlib only a Python callback per visited node (slow), usearch none in its Python API;
* loading: faiss reads the index with ``IO_FLAG_MMAP_IFC``, so the vectors (the bulk) stay in the
  page cache, shared by the workers of a pod and across a hot swap; hnswlib always copies into RAM;
* maintenance and install: faiss-cpu ships a 3.11 wheel and is released regularly; hnswlib's last
  release is from 2023 with no wheel (it compiles, CPU-specific unless told not to);
* hnswlib was faster per query on unit vectors (9-13k vs ~5k q/s), but every one of our queries is
  filtered, and the speed we need (20x brute force at 1 M items) faiss reaches: ``python -m bench
  retrieval``. Deletion (hnswlib, usearch) does not matter: the index is rebuilt with every model.

Inner product over ALS factors with uneven norms is where HNSW recall drops. On the real factors here
(taobao+diginetica, 127,890 items: half the items have a norm below 1e-6, a few reach 6) a graph built
with inner product saturates at recall@100 ~0.6 (M=16) to ~0.8 (M=32, the norm-pruned items), whatever
``efSearch``: every node's links go to the same high-norm hubs, so mid-norm items are unreachable; the
"extra dimension" MIPS -> L2 transform and a cosine graph did worse. What works is the Möbius
transformation (Zhou et al., "Möbius Transformation for Fast Inner Product Search on Graph", NeurIPS
2019): the graph is built in L2 over ``x / |x|^2`` (which connects items by direction, the large norms
near each other), then its storage is swapped for the raw vectors and searched by inner product: recall@100
0.97 at M=32, efSearch=100 on those factors. The trainer picks the smallest ``efSearch`` whose recall@K
against exact search, on a sample of real users' vectors, clears the gate (``tune_ef``); the gate fails the
run below ``spec.training.retrieval.minRecall``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: graph degree and construction beam: ``python -m bench retrieval`` measured these on the real factors
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
#: search beams tried, smallest first; the trainer keeps the first whose recall clears the gate
EF_LADDER = (100, 200, 400, 800)
#: the bundle's index file (beside arrays.npz)
INDEX_FILE = "ann.faiss"
RECALL_SAMPLE = 1000


def _faiss():
    import faiss

    return faiss


def set_threads(n: int) -> None:
    """faiss' OpenMP threads: the trainer's CPUs to build; one in a server worker (a single query per call
    gains nothing from threads, and idle OpenMP threads spin)."""
    _faiss().omp_set_num_threads(max(1, int(n)))


@dataclass
class AnnIndex:
    """An id-mapped HNSW inner-product index; ``search`` filters inside the graph walk."""

    index: object  # faiss.IndexIDMap over faiss.IndexHNSWFlat
    ef_search: int = EF_LADDER[1]
    _bits: tuple[object, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = EF_LADDER[1],
        threads: int = 1,
    ) -> AnnIndex:
        faiss = _faiss()
        x = np.ascontiguousarray(vectors, np.float32)
        d = x.shape[1]
        ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        # the graph over the Möbius transform x / |x|^2 in L2 (a zero vector stays at the origin)
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)[:, None]
        mobius = np.ascontiguousarray(np.where(sq > 0, x / np.maximum(sq, 1e-300), 0.0), np.float32)
        index = faiss.IndexIDMap(faiss.IndexHNSWFlat(d, int(m)))
        hnsw = faiss.downcast_index(index.index)
        hnsw.hnsw.efConstruction = int(ef_construction)
        set_threads(threads)
        try:
            index.add_with_ids(mobius, ids)
        finally:
            set_threads(1)
        del mobius
        # ... searched by inner product over the raw vectors: swap the storage, then a serialise round trip
        # gives one self-owned index (as it will be read from the bundle)
        raw = faiss.IndexFlatIP(d)
        raw.add(x)
        hnsw.own_fields = False
        hnsw.storage = raw
        hnsw.metric_type = faiss.METRIC_INNER_PRODUCT
        hnsw.hnsw.is_similarity = True
        index.metric_type = faiss.METRIC_INNER_PRODUCT
        index = faiss.deserialize_index(faiss.serialize_index(index))
        return cls(index, int(ef_search))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    @property
    def m(self) -> int:
        return int(_faiss().downcast_index(self.index.index).hnsw.nb_neighbors(1))

    def ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def _allowed_bits(self, allowed: np.ndarray) -> np.ndarray:
        """The allowed mask packed for ``IDSelectorBitmap``; cached per mask object (one per RankConfig)."""
        if self._bits is None or self._bits[0] is not allowed:
            self._bits = (allowed, np.packbits(np.asarray(allowed, bool), bitorder="little"))
        return self._bits[1]

    @property
    def metric_is_inner_product(self) -> bool:
        return int(self.index.metric_type) == int(_faiss().METRIC_INNER_PRODUCT)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` item ids (int64, -1 pads) and inner products per query row, never an item outside
        ``allowed`` (bool over item ids) or in ``exclude`` (item ids)."""
        faiss = _faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        keep: list[object] = []  # faiss selectors hold raw pointers: keep their Python objects alive
        sel = None
        if allowed is not None:
            bits = self._allowed_bits(allowed)
            sel = faiss.IDSelectorBitmap(int(np.asarray(allowed).size), faiss.swig_ptr(bits))
            keep += [bits, sel]
        if exclude is not None and np.asarray(exclude).size:
            ex = np.ascontiguousarray(np.unique(np.asarray(exclude, np.int64)))
            batch = faiss.IDSelectorBatch(ex.size, faiss.swig_ptr(ex))
            neg = faiss.IDSelectorNot(batch)
            keep += [ex, batch, neg]
            sel = neg if sel is None else faiss.IDSelectorAnd(sel, neg)
        params = faiss.SearchParametersHNSW(efSearch=int(max(ef_search or self.ef_search, k)))
        if sel is not None:
            params.sel = sel
        scores, ids = self.index.search(q, int(k), params=params)
        del keep
        return ids, scores

    def save(self, path: str | Path) -> None:
        _faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, ef_search: int, *, mmap: bool = True) -> AnnIndex:
        """Read an index; with ``mmap`` the vectors are mapped from the file (``IO_FLAG_MMAP_IFC``), only
        the graph is read into memory. A loaded index answers one query per call (the server), so faiss
        is set to one OpenMP thread: with its default (every core) each search opens a parallel region
        (IndexIDMap's id translation) and, on a busy machine, waits for a descheduled OpenMP thread:
        ranking.answer p50 30-56 ms instead of 0.4-0.8 ms at 20k items under load average ~12."""
        faiss = _faiss()
        set_threads(1)
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        return cls(faiss.read_index(str(path), flags), int(ef_search))


def exact_top(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top ``k`` (ids int64, scores), the same contract as ``AnnIndex.search``:
    the reference for the recall gate and the ``exact`` retrieval mode."""
    y = np.asarray(vectors, np.float32)
    q = np.atleast_2d(np.asarray(queries, np.float32))
    k = min(int(k), y.shape[0])
    ids = np.full((q.shape[0], k), -1, np.int64)
    out = np.full((q.shape[0], k), -np.inf, np.float32)
    bad = None
    if allowed is not None or (exclude is not None and np.asarray(exclude).size):
        bad = np.zeros(y.shape[0], bool) if allowed is None else ~np.asarray(allowed, bool)
        if exclude is not None and np.asarray(exclude).size:
            bad[np.asarray(exclude, np.int64)] = True
    for lo in range(0, q.shape[0], chunk):
        s = q[lo : lo + chunk] @ y.T
        if bad is not None:
            s[:, bad] = -np.inf
        top = (
            np.argpartition(-s, k - 1, axis=1)[:, :k]
            if k < y.shape[0]
            else np.tile(np.arange(k), (len(s), 1))
        )
        sc = np.take_along_axis(s, top, 1)
        order = np.argsort(-sc, axis=1, kind="stable")
        top, sc = np.take_along_axis(top, order, 1), np.take_along_axis(sc, order, 1)
        valid = np.isfinite(sc)
        ids[lo : lo + chunk] = np.where(valid, top, -1)
        out[lo : lo + chunk] = sc
    return ids, out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of item ids, -1 pads ignored)."""
    hits, total = 0, 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += np.intersect1d(f[f >= 0], t).size
        total += t.size
    return hits / total if total else 1.0


def sample_queries(user_factors: np.ndarray, n: int = RECALL_SAMPLE, seed: int = 0) -> np.ndarray:
    """Real users' vectors (a seeded sample): what the recall gate measures on."""
    m = user_factors.shape[0]
    rows = np.random.default_rng(seed).choice(m, size=min(n, m), replace=False) if m else np.empty(0, int)
    return np.asarray(user_factors[np.sort(rows)], np.float32)


@dataclass(frozen=True)
class Tuned:
    ef_search: int
    recall: float
    k: int
    queries: int
    by_ef: dict[int, float]
    build_seconds: float


def tune_ef(
    index: AnnIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    target: float,
    ladder: tuple[int, ...] = EF_LADDER,
) -> tuple[int, float, dict[int, float]]:
    """The smallest ``efSearch`` of ``ladder`` whose recall@k on ``queries`` reaches ``target`` (else the
    largest tried, with its recall: the caller's gate decides); also every beam's recall."""
    k = min(k, index.ntotal)
    if queries.shape[0] == 0 or k == 0:
        return ladder[0], 1.0, {}
    truth, _ = exact_top(vectors, queries, k)
    by_ef: dict[int, float] = {}
    for ef in ladder:
        found, _ = index.search(queries, k, ef_search=ef)
        by_ef[ef] = round(recall(found, truth), 4)
        if by_ef[ef] >= target:
            return ef, by_ef[ef], by_ef
    return ladder[-1], by_ef[ladder[-1]], by_ef


def build_tuned(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    target: float,
    *,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ladder: tuple[int, ...] = EF_LADDER,
    threads: int = 1,
) -> tuple[AnnIndex, Tuned]:
    """Build over ``vectors`` (ids = row numbers), then pick efSearch on ``queries`` (``tune_ef``)."""
    t0 = time.monotonic()
    index = AnnIndex.build(vectors, m=m, ef_construction=ef_construction, threads=threads)
    built = time.monotonic() - t0
    ef, rec, by_ef = tune_ef(index, vectors, queries, k, target, ladder)
    index.ef_search = ef
    return index, Tuned(ef, rec, min(k, index.ntotal), int(queries.shape[0]), by_ef, round(built, 2))


def fold_in(
    item_factors: np.ndarray,
    items: np.ndarray,
    confidence: np.ndarray,
    regularization: float,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """ALS fold-in: the user vector that a least-squares sweep would give a new user with these
    interactions, against the fixed item factors (implicit's ``recalculate_user``):
    ``(YᵀY + λI + Σ (c_i - 1) y_i y_iᵀ) x = Σ c_i y_i``. ``gram`` is YᵀY (precompute it: d x d)."""
    y = np.asarray(item_factors, np.float32)
    d = y.shape[1]
    g = (y.T.astype(np.float64) @ y.astype(np.float64)) if gram is None else gram
    ys = y[np.asarray(items, np.int64)].astype(np.float64)
    c = np.asarray(confidence, np.float64)
    a = g + regularization * np.eye(d) + (ys.T * (c - 1.0)) @ ys
    rhs = ys.T @ c
    return np.linalg.solve(a, rhs).astype(np.float32)
