"""In-process cost of the served ranking call, per built-in dataset (``python -m bench ranking``).

The call timed is ``validation.recommend``: exactly what the HTTP handler runs after its Redis read
(session cut to ``session_length``, id lookups, ``ranking.answer`` with the bundle's tuned
``RankConfig``, external ids out). Cases are the evaluation's held-out cases (the shops' real
sessions and households), so session and history lengths are the real ones; the longest 1% of
histories/sessions get their own row. Side by side: the same call with the untuned default blend.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np

from recops_contracts.serving import MAX_SESSION_EVENTS, ServeConfig
from recops_serve import ranking
from recops_serve.data import DatasetUnavailable
from recops_serve.validation import basket_cases, next_item_cases, recommend


def _cases(name: str):
    from recops_serve.evaluate import _train, split
    from recops_serve.validation import known_targets

    train, test, t = split(name)
    b = _train(train)
    cases = (
        next_item_cases(test, t, MAX_SESSION_EVENTS, limit=20_000)
        if train.sequential
        else basket_cases(test, t)
    )
    return b, known_targets(b, cases)


def _time(b, cfg, cases) -> np.ndarray:
    for c in cases[:200]:  # warm: lookup tables, caches
        recommend(b, cfg, c)
    gc.collect()
    gc.disable()
    try:
        took = np.empty(len(cases))
        for n, c in enumerate(cases):
            t0 = time.perf_counter()
            recommend(b, cfg, c)
            took[n] = time.perf_counter() - t0
    finally:
        gc.enable()
    return took * 1000


def bench_ranking(table) -> None:
    rows = []
    names = os.environ.get("RECOPS_BENCH_DATASETS", "completejourney,diginetica,taobao").split(",")
    for name in names:
        try:
            b, cases = _cases(name)
        except DatasetUnavailable as e:
            rows.append([name, "skipped", str(e)[:60], "", "", "", ""])
            continue
        served = ranking.RankConfig.resolve(b, ServeConfig())
        untuned = ranking.RankConfig(allowed=served.allowed)
        size = np.array(
            [
                len(c.session) + (b.user_history(u).size if (u := b.user_index(c.key)) is not None else 0)
                for c in cases
            ]
        )
        long = size >= np.percentile(size, 99)
        for label, cfg in (("served (tuned)", served), ("untuned default", untuned)):
            ms = _time(b, cfg, cases)
            rows.append(
                [
                    name,
                    label,
                    f"{len(cases):,}",
                    f"{np.percentile(ms, 50):.3f}",
                    f"{np.percentile(ms, 99):.3f}",
                    f"{np.percentile(ms[long], 99):.3f} ({int(size[long].min())}+ events)",
                    f"{ms.max():.2f}",
                ]
            )
    table(
        "ranking: in-process per-call cost of the served call (validation.recommend), one thread",
        ["dataset", "config", "calls", "p50 ms", "p99 ms", "p99 longest 1% ms", "max ms"],
        rows,
    )
