"""The evaluation's overlap line: how many cases any baseline hits, so a table where no blend can win
says so (Taobao's 2-hour sample: README)."""

import numpy as np

from recops_serve.evaluate import EXACT_ROW, print_overlap


def _row(hits: list[int]) -> dict:
    each = np.zeros((len(hits), 3))
    each[:, 0] = hits
    return {"per_case": each}


def test_union_of_baseline_hits_and_served_only_hits(capsys):
    rows = {
        "repeat": _row([1, 1, 0, 0, 0, 0]),
        "sknn": _row([1, 0, 1, 0, 0, 0]),
        "als": {},  # not run on this source
        "served": _row([1, 1, 0, 0, 1, 0]),
        "served+stream": _row([1, 1, 1, 1, 1, 1]),  # served variants are not baselines
        EXACT_ROW: _row([1, 1, 1, 1, 1, 1]),
        "fold_in=0.1 on served": _row([1, 1, 1, 1, 1, 1]),
    }
    print_overlap(rows)
    out = capsys.readouterr().out
    assert "best baseline 2, any baseline 3, served 3 (1 no baseline hits), of 6" in out
