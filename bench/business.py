"""The business check, simulated: how often a canary is promoted, rolled back or still open.

Many canaries per cell, each looked at every interval by the very decision function the operator
runs (``rollout.sequential.compare`` through ``simulate``) until it decides. Traffic and the
stable conversion rate are stated in the title; the candidate converts ``1 - drop`` as often.
The row at 0 % drop is the false-rollback rate, which must stay at or below 1 - confidence.
Printed by ``python -m bench rollout`` (before the live part) and ``python -m bench business``.
"""

from __future__ import annotations

import itertools
import os
import statistics

import numpy as np

from recops_operator.rollout.sequential import simulate

RATES = (100.0, 1000.0)  # recommendations per second to the service
BASE = 0.05  # add-to-cart per recommendation on stable
INTERVAL_S = 60
LOOKS = 30
MAX_DROP = 0.05
CONFIDENCE = 0.95
RUNS = int(os.environ.get("RECOPS_BENCH_SIM_RUNS", "400"))


def run(table) -> None:
    rng = np.random.default_rng(20261202)
    rows = []
    for rate, drop, weight in itertools.product(RATES, (0.0, 0.02, 0.05, 0.10), (0.02, 0.10, 0.25)):
        out = [
            simulate(
                drop=drop,
                weight=weight,
                requests_per_look=rate * INTERVAL_S,
                base_rate=BASE,
                looks=LOOKS,
                max_relative_drop=MAX_DROP,
                confidence=CONFIDENCE,
                min_samples=1000,
                rng=rng,
            )
            for _ in range(RUNS)
        ]
        share = {v: 100 * sum(o.verdict == v for o in out) / RUNS for v in ("Pass", "Fail", "Inconclusive")}
        decided = [o.looks * INTERVAL_S / 60 for o in out if o.verdict != "Inconclusive"]
        rows.append(
            [
                f"{rate:g}",
                f"{100 * drop:g}%",
                f"{100 * weight:g}%",
                f"{share['Pass']:.1f}",
                f"{share['Fail']:.1f}",
                f"{share['Inconclusive']:.1f}",
                f"{statistics.median(decided):.0f}" if decided else "-",
            ]
        )
    table(
        f"rollout business check (simulated, {RUNS} canaries per row): stable add-to-cart "
        f"{BASE:g} per answer, interval {INTERVAL_S}s, {LOOKS} looks; maxRelativeDrop {MAX_DROP:g}, "
        f"confidence {CONFIDENCE:g} (false rollback at 0% drop must be <= {100 * (1 - CONFIDENCE):g}%)",
        [
            "answers/s",
            "true drop",
            "canary weight",
            "passed %",
            "rolled back %",
            "inconclusive %",
            "median min to decide",
        ],
        rows,
    )
