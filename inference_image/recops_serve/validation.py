"""Held-out cases and their metrics, through the call the server makes.

A ``Case`` is what the server would see at one moment: the shopper's key (known user or not),
the newest events its session store holds (external item ids, newest first, trimmed to
``max_session_events`` like the store) and what the shopper did next. ``score`` runs every case
through ``ranking.answer`` with a ``RankConfig`` resolved exactly as the server resolves it, so a
figure measured here is a figure of what is served. Two protocols:

* next item (click streams): every event after the split whose key has an earlier event is a
  case; the target is that event's item (repeats allowed: a shopper may come back to an item);
* next basket (purchases, no sessions): every known user active after the split is one case; the
  targets are everything they bought after it (``discovery=True``: only items new to them).

The trainer tunes on validation tails of its own window (``validation_tails``, ``tune``);
``evaluate`` uses the same cases on test splits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from recops_serve import ranking
from recops_serve.bundle import ModelBundle
from recops_serve.data import Dataset

K = 20


@dataclass(frozen=True)
class Case:
    key: str  # the id the storefront sends (user_id, else session_id)
    session: tuple[int, ...]  # external item ids the store holds, newest first
    targets: frozenset[int]  # external item ids
    ts: float


def split_time(ds: Dataset, frac: float = 0.9) -> float:
    return float(np.quantile(ds.ts, frac)) if ds.ts.size else 0.0


def next_item_cases(
    ds: Dataset, t_split: float, max_events: int, limit: int | None = None, seed: int = 0
) -> list[Case]:
    """One case per event at or after ``t_split`` whose key had an earlier event (any time)."""
    order = np.lexsort((ds.ts, ds.user))
    users, items, ts = ds.user[order], ds.item_ids[ds.item[order]], ds.ts[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    ends = np.r_[starts[1:], users.size]
    cases: list[Case] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if ts[e - 1] < t_split or e - s < 2:
            continue
        key = str(ds.user_ids[users[s]])
        seq = items[s:e].tolist()
        for j in range(1, e - s):
            if ts[s + j] >= t_split:
                prefix = seq[max(0, j - max_events) : j][::-1]
                cases.append(Case(key, tuple(prefix), frozenset([seq[j]]), float(ts[s + j])))
    return sample(cases, limit, seed) if limit else cases


def basket_cases(
    ds: Dataset, t_split: float, discovery: bool = False, limit: int | None = None, seed: int = 0
) -> list[Case]:
    """One case per user active before and after ``t_split``: targets are what they bought after."""
    before = ds.ts < t_split
    hist: dict[int, set[int]] = {}
    for u, i in zip(ds.user[before].tolist(), ds.item[before].tolist(), strict=True):
        hist.setdefault(u, set()).add(i)
    targets: dict[int, set[int]] = {}
    for u, i in zip(ds.user[~before].tolist(), ds.item[~before].tolist(), strict=True):
        if u in hist and not (discovery and i in hist[u]):
            targets.setdefault(u, set()).add(i)
    users = sorted(targets)
    if limit and len(users) > limit:
        users = sorted(np.random.default_rng(seed).choice(users, limit, replace=False).tolist())
    ids = ds.item_ids
    return [Case(str(ds.user_ids[u]), (), frozenset(int(ids[i]) for i in targets[u]), t_split) for u in users]


def cases_for(ds: Dataset, t_split: float, max_events: int, limit: int | None = None) -> list[Case]:
    return (
        next_item_cases(ds, t_split, max_events, limit)
        if ds.sequential
        else basket_cases(ds, t_split, limit=limit)
    )


def validation_tails(
    ds: Dataset, fraction: float, want: int, max_events: int, max_folds: int = 3
) -> list[tuple[float, list[Case]]]:
    """Consecutive tails of ``fraction`` of the window, newest first, as (start time, cases in the
    tail whose targets the part before it knows). The newest alone when it holds ``want`` cases; a
    small shop's newest tail is too few cases to tell blends apart (one Taobao-sample tail: ~1,400
    cases, one hit = 0.07 points), so older tails are added while the total is below ``want``, up to
    ``max_folds``, each to be fitted on what came before it."""
    out: list[tuple[float, list[Case]]] = []
    window, total = ds, 0
    for f in range(1, max_folds + 1):
        start = split_time(ds, 1.0 - f * fraction)
        if f > 1:  # targets inside this tail only: the newer tails are not known yet at its end
            window = ds.take(ds.ts < out[-1][0])
        cases = _seen_before(window, start, cases_for(window, start, max_events))
        out.append((start, cases))
        total += len(cases)
        if total >= want:
            break
    return out


def _seen_before(ds: Dataset, start: float, cases: list[Case]) -> list[Case]:
    """Cases with their targets cut to items with an interaction before ``start`` (what a bundle
    fitted on that part can know: ``known_targets`` before the fit), cases left without one dropped."""
    seen = set(ds.item_ids[np.unique(ds.item[ds.ts < start])].tolist())
    out = []
    for c in cases:
        t = c.targets & seen
        if t:
            out.append(c if t == c.targets else replace(c, targets=frozenset(t)))
    return out


def sample(cases: list[Case], limit: int, seed: int = 0) -> list[Case]:
    """At most ``limit`` cases, drawn without replacement, in their original order."""
    if len(cases) <= limit:
        return cases
    pick = np.sort(np.random.default_rng(seed).choice(len(cases), limit, replace=False))
    return [cases[i] for i in pick.tolist()]


def known_targets(b: ModelBundle, cases: list[Case]) -> list[Case]:
    """Cases with their targets cut to items the bundle knows (cases left without one dropped)."""
    out = []
    for c in cases:
        t = frozenset(i for i in c.targets if b.item_index(i) is not None)
        if t:
            out.append(replace(c, targets=t))
    return out


def recommend(
    b: ModelBundle, cfg: ranking.RankConfig, case: Case, k: int = K, live: ranking.Live | None = None
) -> list[int]:
    """External item ids the server answers for ``case`` (the same steps as the HTTP handler);
    ``live``: the stream job's signals the server would read with it (streamreplay)."""
    session = ranking.session_items(b, list(case.session), cfg.session_length)
    cats = [int(b.item_category[i]) for i in session]
    r = ranking.answer(
        b, cfg, b.user_index(case.key), session, k, now=case.ts, session_categories=cats, live=live
    )
    return b.item_ids[r.items].tolist()


RANKED = ("recall@20", "mrr@20", "ndcg@10")


def score(
    b: ModelBundle, cfg: ranking.RankConfig, cases: list[Case], rec=None, per_case: bool = False
) -> dict[str, float]:
    """Recall@20 (P@20 / hit rate for one target), MRR@20, NDCG@10, coverage@20, per-call p50/p99.

    ``per_case``: also each case's (recall, reciprocal rank, NDCG) as ``"per_case"`` (an array),
    for paired comparisons of two configurations on the same cases (``paired``)."""
    rec = rec or (lambda case: recommend(b, cfg, case))
    each = np.zeros((len(cases), 3))
    seen: set[int] = set()
    took = np.empty(len(cases))
    for n, case in enumerate(cases):
        t0 = time.perf_counter()
        top = rec(case)[:K]
        took[n] = time.perf_counter() - t0
        seen.update(top)
        t = case.targets
        hits = [r for r, i in enumerate(top) if i in t]
        dcg = sum(1 / math.log2(r + 2) for r in hits if r < 10)
        each[n] = (
            len(hits) / min(len(t), K),
            1.0 / (hits[0] + 1) if hits else 0.0,
            dcg / sum(1 / math.log2(r + 2) for r in range(min(len(t), 10))),
        )
    recall, mrr, ndcg = each.sum(axis=0) if cases else (0.0, 0.0, 0.0)
    n = max(1, len(cases))
    extra = {"per_case": each} if per_case else {}
    return {
        **extra,
        "recall@20": recall / n,
        "mrr@20": mrr / n,
        "ndcg@10": ndcg / n,
        "coverage@20": len(seen) / max(1, b.n_items),
        "p50_ms": 1000 * float(np.percentile(took, 50)) if cases else math.nan,
        "p99_ms": 1000 * float(np.percentile(took, 99)) if cases else math.nan,
        "cases": len(cases),
    }


def paired(a: dict, b: dict) -> dict[str, tuple[float, float]]:
    """Per ranked metric, the mean of ``a - b`` over the same cases and its standard error."""
    d = a["per_case"] - b["per_case"]
    n = max(1, d.shape[0])
    se = d.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(3, math.nan)
    return {m: (float(d[:, j].mean()), float(se[j])) for j, m in enumerate(RANKED)}


# ----------------------------------------------------------------------------- tuning
def _objective(m: dict[str, float]) -> float:
    return m["recall@20"] + m["mrr@20"] + m["ndcg@10"]


def search_space(sequential: bool, fold_in: bool = False) -> list[tuple[str, list]]:
    """Coordinate-descent axes over the blend, most decisive first; ``fold_in`` (bundles whose index
    serves) adds the weight of the session folded in as an ALS user."""
    axes: list[tuple[str, list]] = [("repeat", [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])]
    if sequential:
        axes += [
            ("repeat_decay", [0.5, 0.7, 0.9]),
            ("neighbours", [0.0, 0.01, 0.1, 0.5]),
            ("als", [0.0, 0.25, 1.0]),
            ("knn_neighbours", [100, 500]),
            ("position_decay", [1.225, 2.5, 5.0]),
            ("popularity", [0.0, 0.05]),
            ("category_popularity", [0.0, 0.2, 0.5, 1.0]),
            ("repeat", [0.25, 0.5, 1.0, 2.0, 4.0]),  # again, now that the other weights moved
        ]
        if fold_in:  # last: the time budget goes to the decisive axes first
            axes += [("fold_in", [0.0, 0.1, 0.5])]
    else:
        axes += [
            ("als", [0.25, 0.5, 1.0, 2.0]),
            ("history_neighbours", [0.0, 0.01, 0.05, 0.1, 0.3]),
            ("popularity", [0.0, 0.05, 0.2]),
        ]
    return axes


def policy_axis(sequential: bool) -> str:
    """The exclusion that decides re-consumption: seen items in click streams, purchases in baskets."""
    return "seen" if sequential else "purchased"


def with_policy(cfg: ranking.RankConfig, axis: str, exclude: bool) -> ranking.RankConfig:
    return replace(cfg, exclude_seen=exclude) if axis == "seen" else replace(cfg, exclude_purchased=exclude)


@dataclass(frozen=True)
class Fold:
    """One validation tail: the bundle fitted on the window before it, its cases (baskets: also the
    discovery cases the excluding policy is tuned on) and that bundle's resolved configuration."""

    bundle: ModelBundle
    cases: list[Case]
    new_only: list[Case] | None
    base: ranking.RankConfig

    def config(self, cfg: ranking.RankConfig) -> ranking.RankConfig:
        """``cfg``'s blend and exclusions on this fold's bundle (its own availability masks)."""
        return replace(
            self.base, blend=cfg.blend, exclude_seen=cfg.exclude_seen, exclude_purchased=cfg.exclude_purchased
        )

    def on(self, discovery: bool) -> list[Case]:
        return self.new_only if discovery and self.new_only else self.cases


def pooled(folds: list[Fold], cfg: ranking.RankConfig, discovery: bool = False) -> dict[str, float]:
    """``score``'s ranked metrics and coverage over every fold's cases, weighted by case count."""
    parts = [(score(f.bundle, f.config(cfg), f.on(discovery)), len(f.on(discovery))) for f in folds]
    n = max(1, sum(w for _, w in parts))
    keys = ("recall@20", "mrr@20", "ndcg@10", "coverage@20")
    return {k: sum(m[k] * w for m, w in parts) / n for k in keys} | {"cases": n}


def tune(
    folds: list[Fold],
    sequential: bool,
    budget_seconds: float,
    done: dict[str, float],
    checkpoint=lambda: None,
    fold_in: bool = False,
) -> tuple[dict[bool, ranking.RankConfig], bool, dict[str, float]]:
    """Bounded coordinate descent over the blend on the validation ``folds`` (their pooled
    objective), once with re-consumed items excluded and once with them allowed; returns the best
    config per policy, the better policy, info.

    Baskets tune the excluding policy on discovery targets (``Fold.new_only``: items new to the
    household), what it can recommend; the better policy is then chosen on ``cases`` for both.

    ``done`` maps a trial's key to its objective and is kept in the checkpoint, so a resumed run
    skips finished trials (same cases, same bundles: same result). Stops when the budget (CPU
    seconds of this process) is spent.
    """
    base = folds[0].base
    axis = policy_axis(sequential)
    t0 = time.process_time()  # the budget is CPU seconds (train._tuned): load elsewhere does not count
    stopped = "searched"

    def objective(cfg: ranking.RankConfig, discovery: bool = False) -> float:
        key = ("new:" if discovery else "") + _key(cfg)
        if key not in done:
            done[key] = _objective(pooled(folds, cfg, discovery))
            checkpoint()
        return done[key]

    best: dict[bool, ranking.RankConfig] = {}
    for exclude in (True, False):
        discovery = exclude and any(f.new_only for f in folds)
        tag = "new:" if discovery else ""
        cfg = with_policy(base, axis, exclude)
        objective(cfg, discovery)
        for name, values in search_space(sequential, fold_in):
            for v in values:
                trial = cfg.with_blend(**{name: v})
                if tag + _key(trial) not in done and time.process_time() - t0 > budget_seconds:
                    stopped = "budget"
                    break
                if objective(trial, discovery) > objective(cfg, discovery) + 1e-9:
                    cfg = trial
        best[exclude] = cfg
    winner = objective(best[True]) >= objective(best[False])
    return best, winner, {"trials": len(done), "stopped": stopped, "folds": len(folds)}


def _key(cfg: ranking.RankConfig) -> str:
    bl = cfg.blend.as_dict()
    return (
        ",".join(f"{k}={bl[k]}" for k in sorted(bl))
        + f",seen={cfg.exclude_seen},purchased={cfg.exclude_purchased}"
    )
