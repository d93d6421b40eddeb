"""Validation tails: a small shop's newest tail alone holds too few cases to tell blends apart, so
older tails join it (each to be fitted on what came before it); a tail with enough cases is used
alone. Real data: the Taobao sample (three ~11-minute tails) and completejourney."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recops_contracts.serving import MAX_SESSION_EVENTS
from recops_serve.data import data_dir, load
from recops_serve.validation import validation_tails


def _taobao():
    if not (data_dir() / "taobao-userbehavior-sample").exists():
        pytest.skip(f"taobao-userbehavior-sample not present at {data_dir()} (../shared/data)")
    return load("taobao")


def test_a_short_tail_adds_older_tails_each_holding_only_its_own_known_targets():
    ds = _taobao()
    tails = validation_tails(ds, 0.1, 4000, MAX_SESSION_EVENTS)
    assert len(tails) == 3, [len(c) for _, c in tails]
    starts = [s for s, _ in tails]
    assert starts == sorted(starts, reverse=True)
    for (start, cases), end in zip(tails, [math.inf, *starts[:-1]], strict=True):
        assert cases and all(start <= c.ts < end for c in cases)
        # a target the part before the tail never saw is no test of a blend: cut before sampling
        before = set(ds.item_ids[np.unique(ds.item[ds.ts < start])].tolist())
        assert all(c.targets and c.targets <= before for c in cases)
    assert sum(len(c) for _, c in tails[:2]) < 4000  # the third was needed


def test_a_tail_with_enough_cases_is_used_alone():
    ds = _taobao()
    (_, cases), *rest = validation_tails(ds, 0.1, 1000, MAX_SESSION_EVENTS)
    assert not rest and len(cases) >= 1000


def test_baskets_get_older_tails_too():
    ds = load("completejourney")
    one = validation_tails(ds, 0.1, 100, MAX_SESSION_EVENTS)
    many = validation_tails(ds, 0.1, 10**9, MAX_SESSION_EVENTS, max_folds=2)
    assert len(one) == 1 and len(many) == 2
    assert one[0][0] == many[0][0] > many[1][0]
    assert len(many[0][1]) == len(one[0][1])  # the newest tail is the same either way


def test_the_trainers_defaults_add_tails_only_where_the_newest_is_short():
    """completejourney's newest tail (2,086 households) is tuned on alone, as before older tails
    existed; the Taobao sample's (~1,400 clicks) gets the one before it."""
    from recops_serve.train import Params
    from recops_serve.validation import split_time

    p = Params()
    for ds, n in ((load("completejourney"), 1), (_taobao(), 2)):
        train = ds.take(ds.ts < split_time(ds)).compact()  # the evaluation's training part
        tails = validation_tails(train, p.validation_fraction, p.validation_min_cases, MAX_SESSION_EVENTS)
        assert len(tails) == n, (ds.name, [len(c) for _, c in tails])
