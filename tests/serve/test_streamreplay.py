"""The evaluation's replay of the stream job's signals (recops_serve.streamreplay): the session's
category from its views of the last 5 minutes before its newest event, the trending list of the
newest HOP window the watermark closed at that event (window [end - 30 min, end), ends on 10 s
slides, 5 s watermark delay, weights view 1 / add-to-cart 3 / purchase 5), nothing after the
request, and the list reaching the served call as the server's own ``ranking.Live``."""

from __future__ import annotations

import numpy as np
import pytest

from recops_serve.data import EVENT_TYPES, LoadReport, _recode
from recops_serve.ranking import RankConfig
from recops_serve.streamreplay import StreamReplay
from recops_serve.train import Checkpointer, Params, train_model
from recops_serve.validation import Case, recommend

V, C, P = (EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "purchase"))
T = 1_700_000_005.0  # the session's newest event (the request)
END = T - 5  # the newest window the watermark (T - 5 s) closed ends here (a 10 s slide end)


def shop():
    """Category A = items 1..3 (and 10..29 as background), B = items 4, 5 (and 30..49)."""
    rows = [  # (user, item, event, ts)
        ("s", 4, V, T - 400),  # B, but older than 5 minutes before T: not counted for the category
        ("s", 4, V, T - 360),
        ("s", 1, V, T - 100),
        ("s", 2, V, T),
        ("s", 5, C, T - 50),  # add-to-carts do not pick the category, views do
        ("s", 5, C, T - 40),
        ("s", 5, C, T - 30),
        ("o1", 3, V, END - 1799),  # inside the window (its start is inclusive)
        ("o1", 3, V, END - 1000),
        ("o2", 3, P, END - 100),
        ("o3", 1, C, END - 10),
        ("o4", 2, V, END),  # a window's end is exclusive: this belongs to the next one
        ("o5", 2, V, END - 1801),  # before the window
        ("o6", 2, V, T - 2),  # behind the watermark at T: not closed yet
        ("s", 4, V, T + 20),  # after the case (its target is clicked at T + 10): never counted, or
        ("s", 4, V, T + 25),  # the session's category would be B
        ("s", 4, V, T + 30),
        ("o7", 3, P, T + 30),
    ]
    rng = np.random.default_rng(0)
    for n in range(400):  # background traffic so the bundle has factors and neighbours to fit
        item = int(rng.integers(10, 50))
        rows.append((f"b{n % 60}", item, V, T - 20_000 - n * 37.0))
    users, items, events, ts = zip(*rows, strict=True)
    item_cat = {i: (0 if i <= 3 or 10 <= i < 30 else 1) for i in set(items)}
    return _recode("replay", users, items, events, ts, item_cat, ["A", "B"], LoadReport(rows=len(rows)))


@pytest.fixture(scope="module")
def replayed():
    ds = shop()
    b = train_model(
        ds, Params(factors=8, iterations=2), Checkpointer(None, 1e9), "t", tune=False, log=lambda m: None
    )
    return ds, b, StreamReplay(ds, b)


def case(ts: float = T + 10) -> Case:
    return Case("s", (2, 1, 5, 4), frozenset([3]), ts)


def test_category_is_the_most_viewed_of_the_five_minutes_before_the_newest_event(replayed):
    _, b, r = replayed
    cat, as_of = r.category(case())
    assert b.category_names[cat] == "A" and as_of == T
    # asked before the session's last click, the 5 minutes end at its add-to-cart at T - 30: A (item 1)
    cat, as_of = r.category(case(T - 1))
    assert b.category_names[cat] == "A" and as_of == T - 30
    # asked right after its first clicks, only B's views exist
    cat, _ = r.category(case(T - 300))
    assert b.category_names[cat] == "B"
    assert r.category(case(T - 401)) == (None, float("-inf"))  # no event before: no category


def test_trending_is_the_closed_window_with_the_jobs_weights(replayed):
    _, b, r = replayed
    a = b.category_names.index("A")
    got = r.trending(a, T)
    pairs = [(int(got[i]), float(got[i + 1])) for i in range(0, len(got), 2)]
    # item 3: view + view + purchase = 7; item 1: the session's view (T - 100) + add-to-cart = 4;
    # item 2's views at END, at END - 1801, at T - 2 and T are outside the closed window
    assert pairs == [(3, 7.0), (1, 4.0)]
    assert r.trending(a, T + 10) != got  # ten seconds on, the next window has closed


def test_signals_reach_the_served_call(replayed):
    _, b, r = replayed
    cfg = RankConfig.resolve(b)
    live = r.signals(case())
    assert sorted(b.item_ids[live.trending].tolist()) == [1, 3]
    off, on = (recommend(b, cfg, case(), k=b.n_items, live=x) for x in (None, live))
    # boosted (x 1.5 for the top one): the trending item moves up, nothing else moves
    assert 1 not in on  # the session's own item: excluded as seen, trending or not
    assert on.index(3) < off.index(3)
    assert [i for i in on if i != 3] == [i for i in off if i != 3]
