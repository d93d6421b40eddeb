"""Offline quality through the served configuration, recomputed from the real datasets: the README
tables must hold. ``evaluate`` replays held-out cases through ``ranking.answer`` with the config
the server resolves (test_served_is_measured proves the server answers the same lists)."""

from __future__ import annotations

import pytest

from recops_serve.data import data_dir

RANKED = ("recall@20", "mrr@20", "ndcg@10")


def _present_or_skip(sub: str) -> None:
    if not (data_dir() / sub).exists():
        pytest.skip(f"{sub} not present at {data_dir()} (../shared/data; set RECOPS_DATA_DIR)")


def _served_beats_every_baseline(rows: dict[str, dict[str, float]]) -> None:
    served = rows["served"]
    for name, m in rows.items():
        if name.startswith("served") or not m:
            continue
        for metric in RANKED:
            assert served[metric] > m[metric], (name, metric, served[metric], m[metric])


@pytest.mark.slow
def test_completejourney_served_beats_every_baseline_on_both_protocols():
    from recops_serve.evaluate import baskets

    tables, b = baskets("completejourney")
    assert set(tables) == {"buy-again", "discovery"}
    assert set(tables["buy-again"]) >= {"popularity", "repeat", "als", "item-knn", "session-knn", "served"}
    for rows in tables.values():
        _served_beats_every_baseline(rows)
    # the rules cost something, and the table says how much (never free, never ruinous)
    ruled, served = tables["buy-again"]["served+rules"], tables["buy-again"]["served"]
    assert 0.5 * served["recall@20"] < ruled["recall@20"] <= served["recall@20"]
    assert b.manifest["serving"]["exclude"]["purchased"] is False  # measured: buy-again ranks better


@pytest.mark.slow
def test_diginetica_served_beats_every_baseline_and_srgnn():
    _present_or_skip("diginetica")
    from recops_serve.evaluate import clicks

    tables, b = clicks("diginetica", limit=8000)
    rows = tables["next-item"]
    assert set(rows) >= {"popularity", "repeat", "seq-rules", "sknn", "als (fold-in)", "served"}
    assert rows["served"]["cases"] == 8000
    _served_beats_every_baseline(rows)
    assert b.manifest["serving"]["exclude"]["seen"] is False  # measured: re-visits are common targets
    # the full split (README) gives the published-protocol figure; this prefix of it is close
    assert rows["served"]["recall@20"] > 0.47 and rows["served"]["mrr@20"] > 0.16


@pytest.mark.slow
def test_taobao_served_is_level_with_the_best_baseline_and_beats_the_rest():
    """The Taobao sample is a 2-hour slice (1.7 events per user): ~1,600 held-out clicks, so one standard
    error of P@20 is ~0.6 points. The served call must beat the weak baselines clearly and stay within two
    standard errors of the best one on every ranked metric (README: it does not beat repeat on MRR/NDCG)."""
    _present_or_skip("taobao-userbehavior-sample")
    import math

    from recops_serve.evaluate import clicks

    rows = clicks("taobao")[0]["next-item"]
    served, n = rows["served"], rows["served"]["cases"]
    # the stream job's signals replayed on the same cases: what they add is in the table, not assumed
    assert rows["served+stream"]["cases"] == n and rows["served+stream"]["per_case"].shape == (n, 3)
    for weak in ("popularity", "seq-rules", "als"):
        assert served["recall@20"] > rows[weak]["recall@20"] + 0.01, weak
    for metric in RANKED:
        best = max(rows[m][metric] for m in ("repeat", "sknn", "popularity", "seq-rules", "als"))
        se = math.sqrt(best * (1 - best) / n) if metric == "recall@20" else math.sqrt(best / n)
        assert served[metric] > best - 2 * se, (metric, served[metric], best)
