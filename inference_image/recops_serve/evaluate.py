"""Offline evaluation with a temporal split (the last 10% of time is the future).

Protocol (completejourney): train on interactions before the split time; for each
user active both before and after it, the targets are the items they bought after
the split and never before (discovery: the server excludes purchased items, so
re-purchases cannot be recommended). Recall@20, NDCG@10 and catalogue coverage@20
for popularity, ALS alone, item-kNN alone, session kNN over baskets (the household's last
10 purchases as the session) and the shipped blend (``ranking.recommend``, the very
function the server runs). Buy-again does not apply: re-purchases are not targets.
On Diginetica, the published SR-GNN protocol instead (``evaluate_sessions``).
``python -m recops_serve.evaluate [completejourney|diginetica]`` prints the table.
"""

from __future__ import annotations

import math
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit's ALS wants one BLAS thread

import numpy as np

from recops_serve import ranking, sessionknn
from recops_serve.data import Dataset, load


def _split(ds: Dataset, frac: float = 0.9) -> tuple[Dataset, dict[int, set[int]]]:
    t = float(np.quantile(ds.ts, frac))
    before = ds.ts < t
    train = Dataset(
        ds.name,
        ds.user[before],
        ds.item[before],
        ds.event[before],
        ds.ts[before],
        ds.user_ids,
        ds.item_ids,
        ds.item_category,
        ds.category_names,
        ds.report,
    )
    hist: dict[int, set[int]] = {}
    for u, i in zip(train.user.tolist(), train.item.tolist(), strict=True):
        hist.setdefault(u, set()).add(i)
    targets: dict[int, set[int]] = {}
    for u, i in zip(ds.user[~before].tolist(), ds.item[~before].tolist(), strict=True):
        if u in hist and i not in hist[u]:
            targets.setdefault(u, set()).add(i)
    return train, targets


def _metrics(recs: dict[int, list[int]], targets: dict[int, set[int]], n_items: int) -> dict[str, float]:
    recall, ndcg, seen = [], [], set()
    for u, rec in recs.items():
        t = targets[u]
        top20 = rec[:20]
        seen.update(top20)
        recall.append(len(t.intersection(top20)) / min(len(t), 20))
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(rec[:10]) if i in t)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(t), 10)))
        ndcg.append(dcg / idcg)
    return {
        "recall@20": float(np.mean(recall)),
        "ndcg@10": float(np.mean(ndcg)),
        "coverage@20": len(seen) / n_items,
    }


def evaluate_temporal(
    ds: Dataset, params=None, max_users: int = 1500, seed: int = 0
) -> dict[str, dict[str, float]]:
    from recops_serve.train import Checkpointer, Params, build_bundle

    params = params or Params()
    train, targets = _split(ds)
    users = sorted(targets)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    targets = {u: targets[u] for u in users}
    b = build_bundle(train, params, Checkpointer(None, 1e9), "eval", log=lambda m: None)
    k = 20
    out: dict[str, dict[str, float]] = {}

    def run(name, fn):
        out[name] = _metrics({u: fn(u) for u in users}, targets, ds.n_items)

    run("popularity", lambda u: ranking.popularity(b, u, k).items.tolist())

    def als_only(u):
        hist = set(b.user_history(u).tolist())
        return [i for i in b.user_top[u].tolist() if i not in hist][:k]

    def knn_only(u):
        hist = b.user_history(u)
        scores: dict[int, float] = {}
        for it in hist.tolist():
            for n, s in zip(b.neighbors[it].tolist(), b.neighbor_scores[it].tolist(), strict=True):
                if n >= 0:
                    scores[n] = scores.get(n, 0.0) + s
        hs = set(hist.tolist())
        return [i for i, _ in sorted(scores.items(), key=lambda kv: -kv[1]) if i not in hs][:k]

    # session kNN over baskets (household-days); the "session" is the household's last 10 purchases
    six = sessionknn.SessionIndex(
        **sessionknn.build(
            train.user.astype(np.int64) * 100_000 + (train.ts // 86400).astype(np.int64),
            train.item,
            train.ts,
            train.n_items,
        )
    )
    order = np.lexsort((train.ts, train.user))
    last: dict[int, list[int]] = {}
    for u, i in zip(train.user[order].tolist(), train.item[order].tolist(), strict=True):
        last.setdefault(u, []).append(i)

    def session_knn(u):
        items, scores = sessionknn.score(six, last.get(u, [])[-10:])
        hs = set(b.user_history(u).tolist())
        return [i for i in items[np.argsort(-scores, kind="stable")].tolist() if i not in hs][:k]

    run("als", als_only)
    run("item-knn", knn_only)
    run("session-knn", session_knn)
    run("shipped", lambda u: ranking.recommend(b, u, [], k).items.tolist())
    return out


def _top(scored: tuple[np.ndarray, np.ndarray], k: int = 20) -> list[int]:
    items, scores = scored
    return items[np.argsort(-scores, kind="stable")[:k]].tolist()


def evaluate_sessions(max_pairs: int | None = None) -> dict[str, dict[str, float]]:
    """SR-GNN protocol on Diginetica: every prefix of a test session predicts its next item over
    all training items (repeats allowed); P@20 (= Recall@20 = hit rate, one target), MRR@20,
    NDCG@10 and coverage@20 on the session alone (anonymous). Models: popularity, repeat (the
    session's own items, latest first: buy-again's analogue for anonymous sessions), ALS (12
    sweeps on training sessions, each test prefix folded in as a new user), plain SKNN
    (session-rec's tuned Diginetica setting: 100 neighbours of 500 recent sessions, cosine),
    sequential rules (the item-neighbour path) and the shipped ``ranking.recommend`` (STAN session
    kNN), each with its per-call latency (ALS folds in all prefixes in one batch: no per-call figure)."""
    from recops_serve.bundle import ModelBundle
    from recops_serve.data import load_diginetica
    from recops_serve.train import Checkpointer, Params, build_bundle

    train = load_diginetica("train")
    test = load_diginetica("test")
    b = build_bundle(train, Params(iterations=2), Checkpointer(None, 1e9), "eval", log=lambda m: None)
    rules = ModelBundle(b.manifest, {**b.arrays, "sess_ptr": np.zeros(1, np.int64)})  # index off
    top_pop = b.pop_global[:20].tolist()
    six = b.session_index
    pairs = _session_pairs(test, b)
    pairs = pairs[:max_pairs] if max_pairs else pairs
    als = iter(_als_fold_in(train, [prefix for prefix, _ in pairs]))

    def repeat(prefix: list[int]) -> list[int]:
        own = list(dict.fromkeys(prefix))[:20]
        return own + [i for i in top_pop if i not in own][: 20 - len(own)]

    models = {
        "popularity": lambda prefix: top_pop,
        "repeat": repeat,
        "als": lambda prefix: next(als),
        "seq-rules": lambda prefix: ranking.recommend(
            rules, None, prefix, 20, exclude_purchased=False, exclude_seen=False
        ).items.tolist(),
        "sknn": lambda prefix: _top(
            sessionknn.score(
                six, prefix[::-1], neighbours=100, sample=500, position_decay=np.inf, item_decay=np.inf
            )
        ),
        "shipped": lambda prefix: ranking.recommend(
            b, None, prefix, 20, exclude_purchased=False, exclude_seen=False
        ).items.tolist(),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in models.items():
        hits, rr, ndcg, took, seen = 0, 0.0, 0.0, [], set()
        for prefix, target in pairs:
            t0 = time.perf_counter()
            rec = fn(prefix)[:20]
            took.append(time.perf_counter() - t0)
            seen.update(rec)
            if target in rec:
                rank = rec.index(target)
                hits += 1
                rr += 1.0 / (rank + 1)
                ndcg += 1.0 / math.log2(rank + 2) if rank < 10 else 0.0
        batch = name == "als"
        out[name] = {
            "P@20": 100 * hits / len(pairs),
            "MRR@20": 100 * rr / len(pairs),
            "NDCG@10": 100 * ndcg / len(pairs),
            "coverage@20": len(seen) / b.n_items,
            "p50_ms": math.nan if batch else 1000 * float(np.percentile(took, 50)),
            "p99_ms": math.nan if batch else 1000 * float(np.percentile(took, 99)),
            "pairs": len(pairs),
        }
    return out


def _session_pairs(test: Dataset, b) -> list[tuple[list[int], int]]:
    """(prefix, next item) for every prefix of every test session; prefix most recent click first,
    as the server passes it; items unknown to training are skipped in prefixes and as targets."""
    order = np.lexsort((test.ts, test.user))
    users, items = test.user[order], test.item_ids[test.item[order]]
    pairs: list[tuple[list[int], int]] = []
    start = 0
    for end in [*list(np.flatnonzero(np.diff(users)) + 1), len(users)]:
        seq = [b.item_index(int(x)) for x in items[start:end]]
        start = end
        for t in range(1, len(seq)):
            if seq[t] is not None:
                pairs.append(([i for i in reversed(seq[:t]) if i is not None], seq[t]))
    return pairs


def _als_fold_in(train: Dataset, prefixes: list[list[int]], k: int = 20) -> list[list[int]]:
    """ALS (implicit, the trainer's settings, 12 sweeps) on training sessions; each prefix is solved
    as a new user against the fixed item factors (implicit's batch ``recalculate_user``)."""
    import implicit
    import scipy.sparse as sp

    from recops_serve.train import Params, interaction_matrix, train_threads

    p = Params()
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=p.factors,
        regularization=p.regularization,
        iterations=p.iterations,
        random_state=p.seed,
        num_threads=train_threads(),
        calculate_training_loss=False,
    )
    model.fit(interaction_matrix(train), show_progress=False)
    rows = np.repeat(np.arange(len(prefixes)), [len(x) for x in prefixes])
    cols = np.fromiter((i for x in prefixes for i in x), np.int64, rows.size)
    q = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(len(prefixes), train.n_items))
    q.sum_duplicates()
    q.data[:] = 1.0
    ids, _ = model.recommend(
        np.arange(len(prefixes)), q, N=k, recalculate_user=True, filter_already_liked_items=False
    )
    return ids.tolist()


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "completejourney"
    if name == "diginetica":
        t0 = time.time()
        res = evaluate_sessions()
        n = res["shipped"]["pairs"]
        print(f"dataset: diginetica (SR-GNN split, {n} prefix->next pairs, {time.time() - t0:.0f}s)")
        print(
            f"{'model':12} {'P@20':>7} {'MRR@20':>7} {'NDCG@10':>8} {'cov@20':>7} {'p50 ms':>7} {'p99 ms':>7}"
        )
        for model, m in res.items():
            print(
                f"{model:12} {m['P@20']:7.2f} {m['MRR@20']:7.2f} {m['NDCG@10']:8.2f} {m['coverage@20']:7.4f}"
                f" {m['p50_ms']:7.3f} {m['p99_ms']:7.3f}"
            )
        print(f"{'SR-GNN':12} {50.73:7.2f} {17.59:7.2f}   (published, same split)")
        return 0
    t0 = time.time()
    res = evaluate_temporal(load(name))
    print(
        f"dataset: {name} (temporal split at the 90th time percentile; discovery targets; {time.time() - t0:.0f}s)"
    )
    print(f"{'model':12} {'recall@20':>10} {'ndcg@10':>10} {'coverage@20':>12}")
    for model, m in res.items():
        print(f"{model:12} {m['recall@20']:10.4f} {m['ndcg@10']:10.4f} {m['coverage@20']:12.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
