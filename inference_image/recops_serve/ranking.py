"""The one ranking function: offline evaluation and the server both call ``recommend``.

Known users get their ALS candidates (normalised to [0, 1]); the session's recent
items add candidates, so a click changes the next answer: from session kNN when the
bundle was trained on click streams (sessionknn.py), else from item neighbours with
a recency weight (the most recent click counts most); the context category filters; new
items get a boost; unavailable and (optionally) purchased items are excluded;
whatever is missing is filled from category, then global popularity. Each item
carries its reason: model, session, boost or fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recops_serve import sessionknn
from recops_serve.bundle import ModelBundle

SESSION_WEIGHT = 1.0
MODEL_WEIGHT = 1.0
NEW_ITEM_BOOST = 1.25
FILL_WEIGHT = 0.01  # item neighbours ranked behind session-kNN candidates


@dataclass(frozen=True)
class Ranked:
    items: np.ndarray  # item indices, best first
    reasons: list[str]
    fallback: str | None  # why fallback items were needed (None when the model filled the list)


def recommend(
    b: ModelBundle,
    uidx: int | None,
    session_items: list[int],
    k: int,
    *,
    category: int | None = None,
    now: float | None = None,
    boost_hours: float = 48.0,
    exclude_purchased: bool = True,
    session_categories: list[int] | None = None,
    exclude_seen: bool = True,
) -> Ranked:
    parts_items: list[np.ndarray] = []
    parts_scores: list[np.ndarray] = []
    parts_src: list[np.ndarray] = []
    if uidx is not None:
        top, sc = b.user_top[uidx], b.user_top_scores[uidx]
        keep = top >= 0
        top, sc = top[keep], sc[keep]
        if sc.size:
            parts_items.append(top)
            parts_scores.append(MODEL_WEIGHT * sc / max(float(sc.max()), 1e-9))
            parts_src.append(np.zeros(top.size, np.int8))
    six = b.session_index
    knn_found = 0
    if session_items and not six.empty:  # click-stream bundle: session kNN over training sessions
        cand, sc = sessionknn.score(six, session_items[: sessionknn.MAX_SESSION][::-1])
        knn_found = cand.size
        if sc.size:
            parts_items.append(cand)
            parts_scores.append(SESSION_WEIGHT * sc / max(float(sc.max()), 1e-9))
            parts_src.append(np.ones(cand.size, np.int8))
    if session_items and knn_found < k + len(session_items):
        # item neighbours of the 10 latest clicks, weighted 1, 1/2, 1/3, ... by recency; behind the
        # session-kNN candidates when those exist but are too few (sparse sessions), else on their own
        recent = session_items[:10]
        nb = b.neighbors[recent]
        keep = nb >= 0
        weight = SESSION_WEIGHT / np.arange(1.0, len(recent) + 1.0, dtype=np.float32)
        sc = (b.neighbor_scores[recent] * weight[:, None])[keep]
        if knn_found and sc.size:
            sc = FILL_WEIGHT * sc / max(float(sc.max()), 1e-9)
        parts_items.append(nb[keep])
        parts_scores.append(sc)
        parts_src.append(np.ones(sc.size, np.int8))
    if parts_items:
        items = np.concatenate(parts_items)
        scores = np.concatenate(parts_scores).astype(np.float32)
        src = np.concatenate(parts_src)
        uniq, inv = np.unique(items, return_inverse=True)
        # bincount is the fast scatter-add (ufunc.at is an order of magnitude slower)
        agg = np.bincount(inv, weights=scores, minlength=uniq.size).astype(np.float32)
        from_session = np.bincount(inv, weights=src, minlength=uniq.size) > 0
        items, scores = uniq, agg
    else:
        items = np.empty(0, np.int32)
        scores = np.empty(0, np.float32)
        from_session = np.empty(0, bool)

    mask = b.item_available[items] if items.size else np.empty(0, bool)
    banned = list(session_items) if exclude_seen else []
    if exclude_purchased and uidx is not None:
        banned.extend(b.user_history(uidx).tolist())
    if banned and items.size:  # items are sorted (np.unique): binary search beats np.isin here
        ban = np.asarray(banned, dtype=items.dtype)
        at = np.searchsorted(items, ban)
        hit = at < items.size
        hit[hit] = items[at[hit]] == ban[hit]
        mask[at[hit]] = False
    if category is not None and items.size:
        mask &= b.item_category[items] == category
    items, scores, from_session = items[mask], scores[mask], from_session[mask]
    boosted = np.zeros(items.size, bool)
    if boost_hours > 0 and items.size and now is not None:
        boosted = b.item_first_seen[items] >= now - boost_hours * 3600.0
        scores = np.where(boosted, scores * NEW_ITEM_BOOST, scores)
    if items.size > k:
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
    else:
        top = np.argsort(-scores, kind="stable")
    out = items[top]
    reasons = ["boost" if boosted[i] else ("session" if from_session[i] else "model") for i in top]
    fallback = None
    if out.size < k:
        fallback = "cold_start" if uidx is None and not session_items else "sparse_candidates"
        seen = set(out.tolist()) | set(banned)
        fill: list[int] = []
        cats = [category] if category is not None else list(dict.fromkeys(session_categories or []))
        pools = [b.category_popular(c) for c in cats if c is not None and c >= 0]
        if category is None:
            pools.append(b.pop_global)
        for pool in pools:
            for it in pool[: k * 4].tolist():
                if it not in seen and b.item_available[it]:
                    seen.add(it)
                    fill.append(it)
                    if out.size + len(fill) >= k:
                        break
            if out.size + len(fill) >= k:
                break
        out = np.concatenate([out, np.asarray(fill, dtype=out.dtype if out.size else np.int32)])
        reasons += ["fallback"] * len(fill)
    return Ranked(out.astype(np.int32), reasons, fallback)


def popularity(
    b: ModelBundle, uidx: int | None, k: int, *, category: int | None = None, exclude_purchased: bool = True
) -> Ranked:
    """The holdout arm's baseline: popularity only (per category when a context is given)."""
    pool = b.category_popular(category) if category is not None else b.pop_global
    banned = set(b.user_history(uidx).tolist()) if (exclude_purchased and uidx is not None) else set()
    out = [i for i in pool[: k * 4 + len(banned)].tolist() if i not in banned and b.item_available[i]][:k]
    return Ranked(np.asarray(out, dtype=np.int32), ["fallback"] * len(out), "holdout")
