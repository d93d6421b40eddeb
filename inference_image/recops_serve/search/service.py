"""Hybrid catalogue search and assistant retrieval over a search bundle (``index.SearchBundle``).

Score of a chunk: ``alpha * cosine(query, chunk) + (1 - alpha) * bm25(query, chunk) / max bm25``
(the keyword score normalised by the query's best chunk, so both terms are in [0, 1]); candidates
are the union of the HNSW top ``candidates`` (faiss over the distinct chunk texts' vectors,
filtered inside the graph search by an ``IDSelectorBitmap`` of the vectors with at least one chunk
that passes the filters; each found vector expands to its passing chunks) and the BM25 top ``candidates`` (scores
masked by the same filter); the cosine of a keyword-only candidate is computed exactly from the
stored vector. A product scores as its best chunk. Filters: ``category`` (the catalogue's category
string, exact) and availability (unavailable products are never returned unless asked for).

``retrieve``: the best chunks, most relevant first, while their token count (the model tokenizer's)
fits ``budget_tokens``; each with its product id, title, category and text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from recops_serve.search.embed import Encoder, query_encoder
from recops_serve.search.index import SearchBundle, keyword_tokens

ALPHA = 0.5
CANDIDATES = 100
MAX_QUERY_CHARS = 1000
MAX_QUERY_TOKENS = 64  # the query's word pieces embedded (the rest is ignored); stated in the API


class SearchInputError(ValueError):
    """A query the service refuses (empty, too long, unknown category)."""


@dataclass
class Hit:
    chunk: int
    score: float
    cosine: float
    keyword: float


class SearchService:
    def __init__(self, bundle: SearchBundle, encoder: Encoder | None = None, alpha: float = ALPHA):
        import faiss

        faiss.omp_set_num_threads(1)  # one query at a time on the search thread: no OpenMP fan-out
        self.bundle = bundle
        self.encoder = encoder or query_encoder()
        self.alpha = alpha
        self._faiss = faiss
        b = bundle
        n = len(b.chunk_item)
        self._all = np.ones(n, bool)
        self._bitmaps: dict[tuple[int | None, bool], tuple[np.ndarray, object, np.ndarray]] = {}
        self._vocab = b.bm25.vocab_dict
        self.embed_query = lru_cache(maxsize=4096)(self._embed)

    # ------------------------------------------------------------------ filters
    def _filter(self, category: int | None, available_only: bool):
        key = (category, available_only)
        got = self._bitmaps.get(key)
        if got is None:
            b = self.bundle
            mask = b.chunk_available.copy() if available_only else self._all.copy()
            if category is not None:
                mask &= b.chunk_category == category
            vec_ok = np.bincount(b.chunk_vector[mask], minlength=b.vectors.shape[0]) > 0
            packed = np.packbits(vec_ok, bitorder="little")
            sel = self._faiss.IDSelectorBitmap(len(vec_ok), self._faiss.swig_ptr(packed))
            got = (mask, sel, packed)  # packed kept alive: the selector points into it
            if len(self._bitmaps) < 4096:
                self._bitmaps[key] = got
        return got

    def category_code(self, name: str) -> int:
        code = self.bundle.category_names.get(name)
        if code is None:
            raise SearchInputError(
                f"category {name!r} is not a category of search bundle {self.bundle.version}"
            )
        return code

    # ------------------------------------------------------------------ scoring
    def _embed(self, q: str) -> np.ndarray:
        ids = self.encoder.token_ids(q)[:MAX_QUERY_TOKENS]
        return self.encoder.encode_ids([ids])[0]

    def check_query(self, q: str) -> str:
        q = " ".join(q.split())
        if not q:
            raise SearchInputError("q must be a non-empty query")
        if len(q) > MAX_QUERY_CHARS:
            raise SearchInputError(f"q is {len(q)} characters, longer than the {MAX_QUERY_CHARS} limit")
        return q

    def keyword_scores(self, q: str, mask: np.ndarray | None = None) -> np.ndarray:
        toks = [t for t in keyword_tokens([q])[0] if t in self._vocab]
        if not toks:
            return np.zeros(len(self.bundle.chunk_item), np.float32)
        s = self.bundle.bm25.get_scores(toks)
        return s if mask is None else np.where(mask, s, 0)

    def hits(
        self,
        q: str,
        n: int,
        category: int | None = None,
        available_only: bool = True,
        alpha: float | None = None,
    ) -> list[Hit]:
        """The best ``n`` chunks by the hybrid score (alpha 1 = vector only, 0 = keyword only)."""
        alpha = self.alpha if alpha is None else alpha
        b = self.bundle
        mask, sel, _ = self._filter(category, available_only)
        cand = max(CANDIDATES, n)
        parts: list[np.ndarray] = []
        qv = None
        if alpha > 0:
            qv = self.embed_query(q)
            params = self._faiss.SearchParametersHNSW(sel=sel, efSearch=max(cand, b.index.hnsw.efSearch))
            _, ids = b.index.search(qv[None, :], cand, params=params)
            ptr, order = b.vector_chunks
            for v in ids[0][ids[0] >= 0].tolist():
                members = order[ptr[v] : ptr[v + 1]]
                parts.append(members[mask[members]][:n])  # same text: same score; n are enough
        kw = np.zeros(0, np.float32)
        top_kw = 0.0
        if alpha < 1:
            kw = self.keyword_scores(q, mask)
            top_kw = float(kw.max()) if kw.size else 0.0
            if top_kw > 0:
                k = min(cand, int(np.count_nonzero(kw)))
                parts.append(np.argpartition(-kw, k - 1)[:k])
        if not parts:
            return []
        idx = np.unique(np.concatenate(parts))
        if not idx.size:
            return []
        cos = (b.vectors[b.chunk_vector[idx]] @ qv) if qv is not None else np.zeros(len(idx), np.float32)
        key = kw[idx] / top_kw if top_kw > 0 else np.zeros(len(idx), np.float32)
        score = alpha * cos + (1 - alpha) * key
        order = np.argsort(-score, kind="stable")[:n]
        return [Hit(int(idx[o]), float(score[o]), float(cos[o]), float(key[o])) for o in order]

    def search(
        self,
        q: str,
        k: int,
        category: int | None = None,
        available_only: bool = True,
        alpha: float | None = None,
    ) -> list[dict]:
        """Top ``k`` products (a product scores as its best chunk)."""
        b = self.bundle
        out: list[dict] = []
        seen: set[int] = set()
        n = 4 * k
        while True:
            hits = self.hits(q, n, category, available_only, alpha)
            for h in hits:
                item = int(b.chunk_item[h.chunk])
                if item in seen:
                    continue
                seen.add(item)
                out.append(
                    {
                        "item_id": int(b.item_ids[item]),
                        "title": b.item_title[item],
                        "category": b.item_category[item],
                        "score": round(h.score, 6),
                    }
                )
                if len(out) == k:
                    return out
            if len(hits) < n or n >= 16 * k:  # exhausted, or many chunks per product: good enough
                return out
            out, seen, n = [], set(), n * 4

    def retrieve(
        self, q: str, budget_tokens: int, k: int, category: int | None = None, available_only: bool = True
    ) -> tuple[list[dict], int]:
        """Best chunks while they fit ``budget_tokens``; (chunks, tokens used)."""
        b = self.bundle
        used, out = 0, []
        for h in self.hits(q, k, category, available_only):
            t = int(b.chunk_tokens[h.chunk])
            if used + t > budget_tokens:
                continue  # a smaller chunk further down may still fit
            used += t
            item = int(b.chunk_item[h.chunk])
            out.append(
                {
                    "item_id": int(b.item_ids[item]),
                    "title": b.item_title[item],
                    "category": b.item_category[item],
                    "text": b.chunk_text[h.chunk],
                    "tokens": t,
                    "score": round(h.score, 6),
                }
            )
        return out, used
