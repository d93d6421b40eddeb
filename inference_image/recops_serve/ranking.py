"""The one ranking call: the server, offline evaluation and the training gate all call ``answer``.

A ranked list is a blend of sources, each normalised to [0, 1] and weighted by the ``Blend``
the trainer tuned on the shop's own validation tail (stored in the bundle manifest):
* ``repeat``: items the shopper already touched (the session's, newest first, decayed by
  position; a known user's history by frequency and recency): re-consumption, "buy again";
* ``session_knn``: session kNN over training sessions (click-stream bundles, sessionknn.py);
* ``neighbours``: item neighbours of the recent clicks, weighted 1, 1/2, 1/3 ... by recency;
  ``history_neighbours``: for a known user without a session, of their ten heaviest history items;
* ``als``: a known user's ALS candidates: precomputed (``user_top``) or the top of the bundle's HNSW
  index for the user's vector, unavailable and excluded items filtered inside the search (ann.py);
  ``fold_in``: for an anonymous or cold shopper, the session folded in as an ALS user (one least-squares
  solve against the item factors), then the same index search;
* ``popularity``: time-decayed popularity as a prior; ``category_popularity``: the best sellers of
  the categories the session is browsing (its three latest items').
Then exclusions (seen / purchased: the spec, else the policy the trainer measured as better),
catalogue availability and excluded categories, the stream job's sold-out items (``Live``), the
context category, the new-item boost, the trending boost (``Live``: the Flink job's trending list
of the request's or the session's category), a cap per category, and a fill (trending, then
popularity per session category, then global). Each item carries its reason: model, session,
repeat, popular, boost, trending or fallback.

Per-call cost is bounded whatever the session or history length: at most ``session_length``
recent events, session kNN capped at its own sample sizes, a known user's ``MAX_HISTORY`` heaviest
items (the bundle stores each history heaviest first); exclusion still covers the whole history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from recops_contracts.serving import ServeConfig
from recops_serve import ann, sessionknn
from recops_serve.bundle import ModelBundle

NEW_ITEM_BOOST = 1.25
#: a trending candidate's score is multiplied by 1 + TREND_BOOST * (its trend score / the top one's)
TREND_BOOST = 0.5
POPULAR_CANDIDATES = 100
CATEGORY_CANDIDATES = 50
MAX_HISTORY = 200  # a known user's heaviest items the repeat source reads (bounds the per-call cost)
REASONS = ("model", "session", "repeat", "popular")
#: the blend's source weights (the other Blend fields are settings of a source)
SOURCES = (
    "repeat",
    "session_knn",
    "neighbours",
    "history_neighbours",
    "als",
    "fold_in",
    "popularity",
    "category_popularity",
)


@dataclass(frozen=True)
class Blend:
    """Source weights and session-model settings; the trainer's tuning picks these per shop."""

    repeat: float = 0.0
    session_knn: float = 1.0
    neighbours: float = 0.01  # of the session's clicks, behind session kNN (alone when it finds none)
    history_neighbours: float = 0.0  # of a known user's heaviest history items (no session)
    als: float = 1.0
    fold_in: float = 0.0  # the session folded in as an ALS user, for shoppers the bundle does not know
    popularity: float = 0.0
    category_popularity: float = 0.0  # best sellers of the session's latest categories
    repeat_decay: float = 0.7  # weight of the n-th newest own item: decay ** n
    knn_neighbours: int = sessionknn.NEIGHBOURS
    knn_sample: int = sessionknn.SAMPLE
    position_decay: float = sessionknn.POSITION_DECAY
    item_decay: float = sessionknn.ITEM_DECAY

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Blend:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RankConfig:
    """What one call needs, resolved once per (bundle, serving config)."""

    blend: Blend = field(default_factory=Blend)
    session_length: int = 10
    exclude_seen: bool = True
    exclude_purchased: bool = True
    boost_hours: float = 48.0
    fallback: str = "category-popularity"
    max_per_category: int | None = None
    allowed: np.ndarray | None = None  # bool[n]: available and not in an excluded category

    @classmethod
    def resolve(cls, b: ModelBundle, cfg: ServeConfig | None = None) -> RankConfig:
        """The serving config over the bundle's measured defaults (spec wins where it is set)."""
        cfg = cfg or ServeConfig()
        serving = b.manifest.get("serving") or {}
        measured = serving.get("exclude") or {}

        def pick(spec: bool | None, key: str) -> bool:
            return bool(spec) if spec is not None else bool(measured.get(key, True))

        seen, purchased = pick(cfg.exclude.seen, "seen"), pick(cfg.exclude.purchased, "purchased")
        policy = seen if serving.get("policy_axis") == "seen" else purchased
        blend = (serving.get("blend_if_excluded") or {}).get(str(policy).lower(), serving.get("blend"))
        return cls(
            blend=Blend.from_dict(blend),
            session_length=cfg.session_length,
            exclude_seen=seen,
            exclude_purchased=purchased,
            boost_hours=cfg.new_item_boost_hours,
            fallback=cfg.fallback_strategy,
            max_per_category=cfg.rules.max_per_category,
            allowed=allowed_items(b, cfg.rules.exclude_categories),
        )

    def with_blend(self, **changes: Any) -> RankConfig:
        return replace(self, blend=replace(self.blend, **changes))


def allowed_items(b: ModelBundle, exclude_categories: list[str]) -> np.ndarray:
    """Available items outside the excluded categories (a name matches itself and its sub-paths)."""
    ok = b.item_available.copy()
    if exclude_categories:
        names = b.category_names
        wanted = [c.strip().lower() for c in exclude_categories]
        banned = np.array(
            [any(n.lower() == w or n.lower().startswith(w + " >") for w in wanted) for n in names] + [False],
            bool,
        )
        ok &= ~banned[b.item_category]  # -1 (unknown) indexes the trailing False
    return ok


@dataclass(frozen=True)
class Live:
    """The stream job's signals for one call, as bundle indices (streamfeatures.live): never
    recommend ``soldout``; boost ``trending`` (best first, ``trend_scores`` > 0) and fill with it.
    ``trend_table``: ``trend_table(trending, trend_scores)``, made once per list by the caller that
    keeps the list (None: made per call)."""

    soldout: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    trending: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    trend_scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    trend_table: tuple[np.ndarray, np.ndarray] | None = None


def trend_table(trending: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trending items sorted (the first of repeated ones) and each one's boost factor share
    (its score / the top score, float32): what the boost looks candidates up in."""
    order = np.argsort(trending, kind="stable")
    items, rel = trending[order], scores[order] / max(float(scores.max()), 1e-9)
    first = np.ones(items.size, bool)
    first[1:] = items[1:] != items[:-1]
    return items[first], rel[first]


#: (rank config, sold-out array, that config with the sold-out items not allowed): one per set
_SOLD_CFG: tuple = (None, None, None)


def _without_soldout(b: ModelBundle, cfg: RankConfig, soldout: np.ndarray) -> RankConfig:
    """``cfg`` whose allowed mask also excludes ``soldout``: made once per (config, set), so a call
    looks its candidates up in one mask instead of searching them for hundreds of banned items."""
    global _SOLD_CFG
    held_cfg, held_sold, out = _SOLD_CFG
    if held_cfg is not cfg or held_sold is not soldout:
        allowed = (cfg.allowed if cfg.allowed is not None else b.item_available).copy()
        allowed[soldout] = False
        out = replace(cfg, allowed=allowed)
        _SOLD_CFG = (cfg, soldout, out)
    return out


@dataclass(frozen=True)
class Ranked:
    items: np.ndarray  # item indices, best first
    reasons: list[str]
    fallback: str | None  # why fallback items were needed (None when the blend filled the list)


def session_items(b: ModelBundle, item_ids: list[int], length: int) -> list[int]:
    """Bundle indices of a session's newest ``length`` events (newest first); unknown items skipped
    after the cut, exactly as the server reads its ``length`` newest events from the store."""
    out = []
    for x in item_ids[:length]:
        i = b.item_index(x)
        if i is not None:
            out.append(i)
    return out


def _norm(sc: np.ndarray, w: float) -> np.ndarray:
    return (w * sc / max(float(sc.max()), 1e-9)).astype(np.float32) if sc.size else sc.astype(np.float32)


def _neighbours(b: ModelBundle, anchors: list[int], weight: float, code: int):
    """Neighbours of ``anchors`` (most important first), weighted 1, 1/2, 1/3 ... by rank."""
    nb = b.neighbors[anchors]
    keep = nb >= 0
    rank = 1.0 / np.arange(1.0, len(anchors) + 1.0, dtype=np.float32)
    return nb[keep], _norm((b.neighbor_scores[anchors] * rank[:, None])[keep], weight), code


def fold_in(b: ModelBundle, session: list[int]) -> np.ndarray:
    """The session's ALS vector (newest first, repeats counted as the trainer's log1p weights)."""
    items, counts = np.unique(np.asarray(session, np.int64), return_counts=True)
    reg = float((b.manifest.get("params") or {}).get("regularization", 0.05))
    return ann.fold_in(b.item_factors, items, np.log1p(counts), reg, b.gram)


def retrieve(b: ModelBundle, cfg: RankConfig, q: np.ndarray, banned: np.ndarray):
    """Top candidates for vector ``q`` among allowed, non-banned items: the index, else brute force."""
    n = int((b.manifest.get("retrieval") or {}).get("candidates", 100))
    allowed = cfg.allowed if cfg.allowed is not None else b.item_available
    if b.ann is not None and b.retrieval_mode != "exact":
        ids, sc = b.ann.search(q, n, allowed=allowed, exclude=banned)
    else:
        ids, sc = ann.exact_top(b.item_factors, q, n, allowed=allowed, exclude=banned)
    keep = ids[0] >= 0
    return ids[0][keep].astype(np.int32), np.maximum(sc[0][keep], 0.0)


def _model(b: ModelBundle, cfg: RankConfig, uidx: int | None, session: list[int], banned: np.ndarray):
    """ALS candidates: a known user's precomputed ones or the index's for their vector; a shopper the
    bundle does not know gets the session folded in (blend ``fold_in``)."""
    bl = cfg.blend
    if uidx is not None:
        if bl.als <= 0:
            return None
        if b.user_top.shape[1]:
            top, sc = b.user_top[uidx], b.user_top_scores[uidx]
            keep = top >= 0
            return top[keep], _norm(sc[keep], bl.als), 0
        q, w = b.user_vector(uidx), bl.als
    elif session and bl.fold_in > 0:
        q, w = fold_in(b, session), bl.fold_in
    else:
        return None
    if q is None:
        return None
    items, sc = retrieve(b, cfg, q, banned)
    return items, _norm(sc, w), 0


def _sources(
    b: ModelBundle, cfg: RankConfig, uidx: int | None, session: list[int], k: int, banned: np.ndarray
):
    """(items, scores, reason code) per blend source; reason codes index REASONS."""
    bl = cfg.blend
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    model = _model(b, cfg, uidx, session, banned)
    if model is not None:
        out.append(model)
    if bl.repeat > 0:
        if session and not cfg.exclude_seen:
            own = np.asarray(session, np.int32)
            out.append((own, _norm(bl.repeat_decay ** np.arange(own.size, dtype=np.float32), bl.repeat), 2))
        if uidx is not None and not cfg.exclude_purchased:  # heaviest first in the bundle: a bounded prefix
            lo, hi = int(b.user_hist_ptr[uidx]), int(b.user_hist_ptr[uidx + 1])
            hi = min(hi, lo + MAX_HISTORY)
            out.append((b.user_hist[lo:hi], _norm(b.user_hist_w[lo:hi], bl.repeat), 2))
    knn_found = 0
    six = b.session_index
    if session and not six.empty and bl.session_knn > 0:
        cand, sc = sessionknn.score(
            six,
            session[: sessionknn.MAX_SESSION][::-1],
            neighbours=bl.knn_neighbours,
            sample=bl.knn_sample,
            position_decay=bl.position_decay,
            item_decay=bl.item_decay,
        )
        knn_found = cand.size
        out.append((cand, _norm(sc, bl.session_knn), 1))
    # item neighbours of the recent clicks: behind session-kNN candidates when those exist, and in
    # their place (at the session weight) when session kNN finds nothing (sparse or basket bundles)
    w = bl.neighbours if knn_found else max(bl.neighbours, bl.session_knn)
    if session and w > 0:
        out.append(_neighbours(b, session[:10], w, 1))
    elif not session and uidx is not None and bl.history_neighbours > 0:  # "because you bought"
        lo, hi = int(b.user_hist_ptr[uidx]), int(b.user_hist_ptr[uidx + 1])
        out.append(_neighbours(b, b.user_hist[lo : min(hi, lo + 10)].tolist(), bl.history_neighbours, 0))
    if session and bl.category_popularity > 0:  # what sells in the categories being browsed now
        cats = list(dict.fromkeys(int(c) for c in b.item_category[session[:3]] if c >= 0))
        for rank, c in enumerate(cats):
            top = b.category_popular(c)[:CATEGORY_CANDIDATES]
            sc = 1.0 / (1.0 + np.arange(top.size, dtype=np.float32)) / (1.0 + rank)
            out.append((top, (bl.category_popularity * sc).astype(np.float32), 3))
    if bl.popularity > 0 and out:  # a prior behind personal sources; alone it is the fallback
        top = b.pop_global[:POPULAR_CANDIDATES]
        out.append((top, _norm(b.item_pop[top], bl.popularity), 3))
    return out


def answer(
    b: ModelBundle,
    cfg: RankConfig,
    uidx: int | None,
    session: list[int],
    k: int,
    *,
    category: int | None = None,
    now: float | None = None,
    session_categories: list[int] | None = None,
    live: Live | None = None,
) -> Ranked:
    """Top ``k`` for a (known or anonymous) shopper; ``session`` newest first (``session_items``);
    ``live``: the stream job's sold-out and trending items (None: none, e.g. offline replay)."""
    session = session[: cfg.session_length]
    banned = _banned(b, cfg, uidx, session)
    fill_cfg = cfg  # the fill takes the sold-out items as banned ones (its pool bound counts them)
    sold = live.soldout if live is not None and live.soldout.size else None
    if sold is not None:  # sold out now: never a candidate, never a fill
        cfg = _without_soldout(b, cfg, sold)
    parts = _sources(b, cfg, uidx, session, k, banned)
    if parts:
        items = np.concatenate([p[0] for p in parts]).astype(np.int32)
        scores = np.concatenate([p[1] for p in parts])
        codes = np.concatenate([np.full(p[0].size, p[2], np.int8) for p in parts])
    else:
        items, scores, codes = np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.int8)
    uniq, inv = np.unique(items, return_inverse=True)
    # bincount is the fast scatter-add (ufunc.at is an order of magnitude slower)
    agg = np.bincount(inv, weights=scores, minlength=uniq.size).astype(np.float32)
    # reason: the source that contributed most to the item's score
    best = np.zeros(uniq.size, np.float32)
    reason = np.zeros(uniq.size, np.int8)
    for code in range(len(REASONS)):
        sel = codes == code
        if sel.any():
            contrib = np.bincount(inv[sel], weights=scores[sel], minlength=uniq.size)
            better = contrib > best
            best[better], reason[better] = contrib[better], code
    items, scores = uniq, agg
    mask = _allowed(b, cfg, items, banned, category)
    items, scores, reason = items[mask], scores[mask], reason[mask]
    boosted = np.zeros(items.size, bool)
    if cfg.boost_hours > 0 and items.size and now is not None:
        boosted = b.item_first_seen[items] >= now - cfg.boost_hours * 3600.0
        scores = np.where(boosted, scores * NEW_ITEM_BOOST, scores)
    hot = np.zeros(items.size, bool)
    if live is not None and live.trending.size and items.size:  # items: sorted (np.unique)
        t_items, rel = live.trend_table or trend_table(live.trending, live.trend_scores)
        at = np.minimum(np.searchsorted(items, t_items), items.size - 1)
        found = items[at] == t_items
        at = at[found]
        hot[at] = True
        scores = scores.astype(np.float32)  # a copy: boosted in place
        scores[at] = scores[at] * (1.0 + TREND_BOOST * rel[found])
    order = _top(scores, k if cfg.max_per_category is None else min(items.size, 4 * k))
    order = _capped(b, items, order, cfg.max_per_category, k, {})
    out = items[order]
    reasons = ["trending" if hot[i] else "boost" if boosted[i] else REASONS[reason[i]] for i in order]
    fallback = None
    if out.size < k:
        fallback = "cold_start" if uidx is None and not session else "sparse_candidates"
        pools = [live.trending] if live is not None and live.trending.size else []
        if sold is not None:
            banned = np.concatenate([banned, sold.astype(np.int32)])
        fill, n_hot = _fill(b, fill_cfg, out, banned, category, session_categories, k, pools)
        out = np.concatenate([out, np.asarray(fill, np.int32)]).astype(np.int32)
        reasons += ["trending"] * n_hot + ["fallback"] * (len(fill) - n_hot)
    return Ranked(out.astype(np.int32), reasons, fallback)


def _banned(b: ModelBundle, cfg: RankConfig, uidx: int | None, session: list[int]) -> np.ndarray:
    banned = [np.asarray(session, np.int32)] if cfg.exclude_seen else []
    if cfg.exclude_purchased and uidx is not None:
        banned.append(b.user_purchases(uidx))
    return np.concatenate(banned) if banned else np.empty(0, np.int32)


def _allowed(b: ModelBundle, cfg: RankConfig, items, banned, category) -> np.ndarray:
    allowed = cfg.allowed if cfg.allowed is not None else b.item_available
    mask = allowed[items] if items.size else np.empty(0, bool)
    if banned.size and items.size:  # items are sorted (np.unique): binary search beats np.isin here
        at = np.searchsorted(items, banned)
        hit = at < items.size
        hit[hit] = items[at[hit]] == banned[hit]
        mask[at[hit]] = False
    if category is not None and items.size:
        mask &= b.item_category[items] == category
    return mask


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    if scores.size > n:
        top = np.argpartition(-scores, n - 1)[:n]
        return top[np.argsort(-scores[top], kind="stable")]
    return np.argsort(-scores, kind="stable")


def _capped(b: ModelBundle, items, order, cap: int | None, k: int, counts: dict[int, int]) -> np.ndarray:
    """The first ``k`` of ``order`` with at most ``cap`` items per category (``counts`` carries on)."""
    if cap is None:
        return order[:k]
    keep = []
    for i in order.tolist():
        c = int(b.item_category[items[i]])
        if c >= 0 and counts.get(c, 0) >= cap:
            continue
        counts[c] = counts.get(c, 0) + 1
        keep.append(i)
        if len(keep) == k:
            break
    return np.asarray(keep, np.int64)


def _fill(
    b: ModelBundle, cfg: RankConfig, out, banned, category, session_categories, k, first=()
) -> tuple[list[int], int]:
    """Fill: the ``first`` pools (trending), then popularity (per context / session category, then
    global), under the same rules. Returns the items and how many came from ``first``."""
    allowed = cfg.allowed if cfg.allowed is not None else b.item_available
    seen = set(out.tolist()) | set(banned.tolist())
    counts: dict[int, int] = {}
    if cfg.max_per_category is not None:
        for it in out.tolist():
            c = int(b.item_category[it])
            counts[c] = counts.get(c, 0) + 1
    fill: list[int] = []
    if category is not None:
        cats = [category]
    elif cfg.fallback == "category-popularity":
        cats = list(dict.fromkeys(session_categories or []))
    else:
        cats = []
    pools = [b.category_popular(c) for c in cats if c is not None and c >= 0]
    if category is None:
        pools.append(b.pop_global)
    n_first = 0
    for p, pool in enumerate([*first, *pools]):
        for it in pool[: k * 4 + len(seen)].tolist():
            c = int(b.item_category[it])
            if it in seen or not allowed[it] or (category is not None and c != category):
                continue
            if cfg.max_per_category is not None and c >= 0 and counts.get(c, 0) >= cfg.max_per_category:
                continue
            seen.add(it)
            counts[c] = counts.get(c, 0) + 1
            fill.append(it)
            n_first += p < len(first)
            if out.size + len(fill) >= k:
                return fill, n_first
    return fill, n_first


def popularity(
    b: ModelBundle,
    cfg: RankConfig,
    uidx: int | None,
    k: int,
    *,
    category: int | None = None,
    live: Live | None = None,
) -> Ranked:
    """The holdout arm's baseline: popularity only (per category when a context is given), same rules
    (sold-out items excluded too; no trending boost: the baseline stays the baseline)."""
    banned = b.user_purchases(uidx) if (cfg.exclude_purchased and uidx is not None) else np.empty(0, np.int32)
    if live is not None and live.soldout.size:
        banned = np.concatenate([banned, live.soldout.astype(np.int32)])
    base = replace(cfg, fallback="popularity")
    fill, _ = _fill(b, base, np.empty(0, np.int32), banned, category, None, k)
    return Ranked(np.asarray(fill, np.int32), ["fallback"] * len(fill), "holdout")
