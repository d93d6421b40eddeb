"""The evaluation table of a built-in source, measured through the served configuration.

``python -m recops_serve.evaluate completejourney|diginetica|taobao`` trains a bundle exactly as
``recops-serve train`` does (validation tail, tuning, final fit) on the training part of a split,
then replays the test part as ``validation.Case``s through ``ranking.answer`` with the
``RankConfig`` the server resolves from that bundle and a ``ServeConfig``: the figures are the
served call's. Baselines run through the same call with a single source switched on (so they
get the same exclusions, availability and fill), except ALS fold-in on Diginetica (batch):
* completejourney (baskets; temporal split at the 90th time percentile): **buy-again** (every
  purchase after the split is a target, repeats included; served = the bundle's measured
  policy) and **discovery** (only items new to the household; served with the spec override
  ``exclude.purchased: true``, the configuration a "discover" placement would use);
* diginetica (the published SR-GNN split; every prefix of a test session predicts the next
  click; targets unknown to training are skipped as that protocol does);
* taobao (a 2-hour slice; temporal split at the 90th percentile; next item per user).
Rules rows show what merchandising rules cost in the ranked metrics. On click streams with real event
times (taobao) the row "served+stream" replays the stream job's signals (streamreplay: the session's
category of the last 5 minutes and its trending list) into the same call: "stream on minus off" is
their measured gain. Diginetica has no event times, baskets no sessions: no such row there.

``RECOPS_EVAL_RETRIEVAL=index`` trains with the ALS candidates served from the HNSW index (ann.py; the
default ``auto`` keeps precomputed candidates at these catalogue sizes) and adds the row "exact retrieval":
the same bundle and configuration with brute-force search in place of the index, so the paired difference
is what the approximate search costs. ``RECOPS_EVAL_FOLD_IN=0.1,0.5`` adds the served configuration with
the fold-in weight set to each value (click streams; anonymous sessions folded in as ALS users).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit's ALS wants one BLAS thread

import numpy as np

from recops_contracts.serving import MAX_SESSION_EVENTS, Rules, ServeConfig
from recops_serve import ranking, sessionknn
from recops_serve.bundle import ModelBundle
from recops_serve.data import Dataset, load, load_diginetica
from recops_serve.streamreplay import StreamReplay
from recops_serve.validation import (
    RANKED,
    Case,
    basket_cases,
    known_targets,
    next_item_cases,
    paired,
    recommend,
    split_time,
)
from recops_serve.validation import score as _score

ONLY = dict.fromkeys(ranking.SOURCES, 0.0)
RETRIEVAL = os.environ.get("RECOPS_EVAL_RETRIEVAL", "auto")
EXACT_ROW = "exact retrieval"
STREAM_ROW = "served+stream"  # the served call with the stream job's signals replayed (streamreplay)
#: RECOPS_EVAL_FOLD_IN=0.1,0.5: rows with the served blend's fold-in weight set to each value (the
#: question whether the default, 0 unless the trainer tuned it, is right); needs the bundle's index
FOLD_IN = [float(x) for x in os.environ.get("RECOPS_EVAL_FOLD_IN", "").split(",") if x.strip()]
SRGNN = {"recall@20": 0.5073, "mrr@20": 0.1759}
RULES = {
    "completejourney": Rules(
        exclude_categories=["COUPON/MISC ITEMS", "FUEL", "COUPONS/STORE & MFG"], max_per_category=2
    ),
    "taobao": Rules(max_per_category=3),
}


def score(b: ModelBundle, cfg: ranking.RankConfig, cases: list[Case], rec=None) -> dict:
    """``validation.score`` keeping each case's metrics, for the paired differences the tables print."""
    return _score(b, cfg, cases, rec, per_case=True)


def _only(cfg: ranking.RankConfig, **source) -> ranking.RankConfig:
    return cfg.with_blend(**{**ONLY, **source})


def _train(ds: Dataset, log=lambda m: None) -> ModelBundle:
    from recops_serve.train import Checkpointer, Params, train_model

    return train_model(ds, Params(retrieval=RETRIEVAL), Checkpointer(None, 1e9), "eval", log=log)


def _exact(b: ModelBundle) -> ModelBundle | None:
    """The bundle with brute-force retrieval in place of its index (None when the index does not serve)."""
    if b.ann is None or b.retrieval_mode != "index":
        return None
    manifest = {**b.manifest, "retrieval": {**b.manifest["retrieval"], "mode": "exact"}}
    return ModelBundle(manifest, b.arrays)


def _with_history(b: ModelBundle, cases: list[Case], n: int = 10) -> list[Case]:
    """Basket cases whose 'session' is the household's latest purchases (item-kNN / session-kNN)."""
    out = []
    for c in cases:
        u = b.user_index(c.key)
        hist = b.user_history(u) if u is not None else np.empty(0, np.int32)
        w = b.user_hist_w[b.user_hist_ptr[u] : b.user_hist_ptr[u + 1]] if u is not None else hist
        latest = hist[np.argsort(-w, kind="stable")][:n]
        out.append(replace(c, session=tuple(b.item_ids[latest].tolist())))
    return out


def baskets(name: str = "completejourney", ds: Dataset | None = None, max_users: int = 1500):
    ds = ds or load(name)
    t = split_time(ds)
    train = ds.take(ds.ts < t).compact()
    b = _train(train)
    served = ranking.RankConfig.resolve(b, ServeConfig())
    discover = ranking.RankConfig.resolve(b, ServeConfig(exclude={"purchased": True, "seen": True}))
    rules = RULES.get(name.split("-")[0])
    tables: dict[str, dict[str, dict[str, float]]] = {}
    # session kNN over baskets (household-days), the household's latest purchases as the session
    days = train.user.astype(np.int64) * 100_000 + (train.ts // 86400).astype(np.int64)
    basket_ix = ModelBundle(
        b.manifest, {**b.arrays, **sessionknn.build(days, train.item, train.ts, train.n_items)}
    )
    for protocol, discovery, cfg in (("buy-again", False, served), ("discovery", True, discover)):
        cases = known_targets(b, basket_cases(ds, t, discovery=discovery, limit=max_users))
        hist_cases = _with_history(b, cases)
        rows = {
            "popularity": score(b, _only(cfg, popularity=1.0), cases),
            "als": score(b, _only(cfg, als=1.0), cases),
            "item-knn": score(b, _only(cfg, neighbours=1.0), hist_cases),
            "session-knn": score(basket_ix, _only(cfg, session_knn=1.0), hist_cases),
        }
        if not discovery:  # buy-again's own baseline: the household's items by frequency x recency
            rows["repeat"] = score(b, replace(_only(cfg, repeat=1.0), exclude_purchased=False), cases)
        rows["served"] = score(b, cfg, cases)
        if (exact := _exact(b)) is not None:
            rows[EXACT_ROW] = score(exact, cfg, cases)
        if rules:
            with_rules = ranking.RankConfig.resolve(
                b, ServeConfig(exclude=_exclude_of(cfg), rules=rules.model_dump())
            )
            rows["served+rules"] = score(b, with_rules, cases)
        tables[protocol] = rows
    return tables, b


def _exclude_of(cfg: ranking.RankConfig) -> dict[str, bool]:
    return {"seen": cfg.exclude_seen, "purchased": cfg.exclude_purchased}


def split(name: str) -> tuple[Dataset, Dataset, float]:
    """(train, test, split time) of a built-in source: Diginetica's published split, else temporal."""
    if name == "diginetica":
        return load_diginetica("train"), load_diginetica("test"), -math.inf
    ds = load(name)
    t = split_time(ds)
    return ds.take(ds.ts < t).compact(), ds, t


def clicks(name: str, limit: int | None = None):
    """Next-item protocol: diginetica's SR-GNN split, or a temporal split of another click stream."""
    train, test, t = split(name)
    b = _train(train)
    cfg = ranking.RankConfig.resolve(b, ServeConfig())
    cases = known_targets(b, next_item_cases(test, t, MAX_SESSION_EVENTS))
    if limit:
        cases = cases[:limit]
    rules_only = ModelBundle(b.manifest, {**b.arrays, "sess_ptr": np.zeros(1, np.int64)})  # index off
    rows = {
        "popularity": score(b, _only(cfg, popularity=1.0), cases),
        "repeat": score(b, replace(_only(cfg, repeat=1.0), exclude_seen=False), cases),
        "seq-rules": score(rules_only, _only(cfg, neighbours=1.0), cases),
        "sknn": score(
            b,
            _only(cfg, session_knn=1.0, knn_neighbours=100, knn_sample=500).with_blend(
                position_decay=math.inf, item_decay=math.inf
            ),
            cases,
        ),
    }
    if name == "diginetica":  # anonymous sessions: each prefix folded in as a new ALS user
        als = _als_fold_in(train, b, cfg, cases)
        rows["als (fold-in)"] = score(b, cfg, cases, rec=lambda c: als[c])
    else:
        rows["als"] = score(b, _only(cfg, als=1.0), cases)
    rows["served"] = score(b, cfg, cases)
    if name != "diginetica":  # real event times: the stream job's signals can be replayed
        replay = StreamReplay(test, b)
        rows[STREAM_ROW] = score(b, cfg, cases, rec=lambda c: recommend(b, cfg, c, live=replay.signals(c)))
    if (exact := _exact(b)) is not None:
        rows[EXACT_ROW] = score(exact, cfg, cases)
    for w in FOLD_IN:  # the served configuration with anonymous sessions folded in at weight w
        if w != cfg.blend.fold_in:
            rows[f"fold_in={w:g} on served"] = score(b, cfg.with_blend(fold_in=w), cases)
    long = [c for c in cases if len(c.session) >= cfg.session_length]
    rows["served, long sessions"] = score(b, cfg, long) if long else {}
    rules = RULES.get(name)
    if rules:
        rows["served+rules"] = score(
            b,
            ranking.RankConfig.resolve(b, ServeConfig(exclude=_exclude_of(cfg), rules=rules.model_dump())),
            cases,
        )
    return {"next-item": rows}, b


def _als_fold_in(
    train: Dataset, b: ModelBundle, cfg, cases: list[Case], k: int = 20
) -> dict[Case, list[int]]:
    """ALS (implicit, the trainer's settings) on training sessions; each prefix (the served session
    length) solved as a new user against the fixed item factors (implicit's ``recalculate_user``)."""
    import scipy.sparse as sp

    from recops_serve.train import fitted_als

    model = fitted_als(train)
    # the bundle and ``train`` index items alike (both from the training part); map through ids
    pos = {int(x): i for i, x in enumerate(train.item_ids)}
    prefixes = [[pos[x] for x in c.session[: cfg.session_length] if x in pos] for c in cases]
    rows = np.repeat(np.arange(len(prefixes)), [len(x) for x in prefixes])
    cols = np.fromiter((i for x in prefixes for i in x), np.int64, rows.size)
    q = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(len(prefixes), train.n_items))
    q.sum_duplicates()
    q.data[:] = 1.0
    ids, _ = model.recommend(
        np.arange(len(prefixes)), q, N=k, recalculate_user=True, filter_already_liked_items=False
    )
    return {c: train.item_ids[row].tolist() for c, row in zip(cases, ids, strict=True)}


def run(name: str, limit: int | None = None):
    return baskets(name)[0] if name == "completejourney" else clicks(name, limit)[0]


def print_tables(name: str, tables: dict[str, dict[str, dict[str, float]]], seconds: float) -> None:
    for protocol, rows in tables.items():
        n = rows["served"]["cases"]
        print(
            f"\n{name}, {protocol} protocol ({n} cases, {seconds:.0f}s; served = ranking.answer, ServeConfig)"
        )
        print(
            f"{'model':24} {'P@20':>7} {'MRR@20':>7} {'NDCG@10':>8} {'cov@20':>7} {'p50 ms':>7} {'p99 ms':>7}"
        )
        for model, m in rows.items():
            if m:
                print(
                    f"{model:24} {100 * m['recall@20']:7.2f} {100 * m['mrr@20']:7.2f} {100 * m['ndcg@10']:8.2f}"
                    f" {m['coverage@20']:7.4f} {m['p50_ms']:7.3f} {m['p99_ms']:7.3f}"
                )
        if name == "diginetica":
            print(f"{'SR-GNN (published)':24} {100 * SRGNN['recall@20']:7.2f} {100 * SRGNN['mrr@20']:7.2f}")
        print_paired(rows)


def print_paired(rows: dict[str, dict]) -> None:
    """served minus each baseline on the same cases, with a 95% interval (1.96 paired standard errors);
    then what the stream job's signals add to the served call (on minus off)."""
    served = rows["served"]
    print(f"{'served minus':24} {'P@20':>15} {'MRR@20':>15} {'NDCG@10':>15}   (same cases, +- 1.96 SE)")
    for model, m in rows.items():
        if model.startswith("served") or not m or "per_case" not in m:
            continue
        print(f"{model:24} {_cells(paired(served, m))}")
    if STREAM_ROW in rows:
        print(f"{'stream on minus off':24} {_cells(paired(rows[STREAM_ROW], served))}")
    print_overlap(rows)


def print_overlap(rows: dict[str, dict]) -> None:
    """How far apart the methods can be at all: the cases (a target in the top 20) that any baseline
    hits, and the served call's own. When the union is barely above the best baseline, no blend of
    these sources can beat it by more than that, whatever the tuning."""
    served = rows["served"]["per_case"][:, 0] > 0
    base = [
        m["per_case"][:, 0] > 0
        for model, m in rows.items()
        if m and "per_case" in m and not model.startswith(("served", "fold_in")) and model != EXACT_ROW
    ]
    if not base:
        return
    best, union = max(int(b.sum()) for b in base), np.logical_or.reduce(base)
    print(
        f"cases with a target in the top 20: best baseline {best}, any baseline {int(union.sum())}, "
        f"served {int(served.sum())} ({int((served & ~union).sum())} no baseline hits), of {served.size}"
    )


def _cells(d: dict[str, tuple[float, float]]) -> str:
    return " ".join(f"{100 * d[k][0]:+7.2f} +-{196 * d[k][1]:5.2f}" for k in RANKED)


SOURCES = ("completejourney", "diginetica", "taobao")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m recops_serve.evaluate",
        description="The evaluation table of built-in sources, measured through the served configuration.",
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help=f"built-in source(s) to evaluate: {', '.join(SOURCES)} (default: completejourney)",
    )
    names = p.parse_args(argv).sources or ["completejourney"]
    if unknown := [n for n in names if n not in SOURCES]:  # (choices= rejects an empty nargs="*")
        p.error(f"unknown source {unknown[0]!r}: choose from {', '.join(SOURCES)}")
    for name in names:
        t0 = time.time()
        tables = run(name)
        print_tables(name, tables, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
