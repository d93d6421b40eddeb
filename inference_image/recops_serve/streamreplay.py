"""The stream job's signals recomputed from an event history, so the evaluation can measure them.

What the server asks the job's Redis keys for (streamfeatures.read) is, for one request: the
session's ``v5:<category>`` view counts (the 5-minute window ending at the session's newest event)
and, for the category viewed most there, the trending list of the newest 30-minute HOP window the
watermark has closed (window ends on 10 s slides; score = view 1, add-to-cart 3, purchase 5; top
50). ``StreamReplay.signals`` computes the same two things for a ``validation.Case`` from the events
before it, with the job's constants (recops_contracts.stream), and hands them to
``streamfeatures.live``, the server's own conversion into ``ranking.Live``: the replayed answer
goes through the served call with the signals the server would have read.

The request is replayed at the session's newest event (the answer shown after that click), so
events that came after it, the target's included, are never in a window. Sold-out items come from
``inventory`` events, which no built-in source has: the replay has none (the gain measured is the
trending boost and fill). Needs real event times: Diginetica's "time" is a position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recops_contracts import stream as contract
from recops_serve.bundle import ModelBundle
from recops_serve.data import EVENT_TYPES, Dataset
from recops_serve.ranking import Live
from recops_serve.streamfeatures import StreamSignals, _category, live
from recops_serve.validation import Case

VIEW = EVENT_TYPES.index("view")
CATEGORY_WINDOW_S = contract.WINDOWS[0][1]


@dataclass
class _Events:
    """One group of events (a session's, or a category's), sorted by time."""

    ts: np.ndarray
    item: np.ndarray  # external item ids
    event: np.ndarray
    category: np.ndarray  # the bundle's category index (-1: unknown)


def _groups(key: np.ndarray, ev: _Events) -> dict:
    """``ev`` split by ``key``, each group sorted by time (one sort; the groups are views of it)."""
    order = np.lexsort((ev.ts, key))
    k = key[order]
    cols = [a[order] for a in (ev.ts, ev.item, ev.event, ev.category)]
    cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, k.size]
    return {
        k[s].item(): _Events(*(c[s:e] for c in cols))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    }


class StreamReplay:
    """The job's per-session counts and per-category trending lists over ``ds``, for ``b``'s cases."""

    def __init__(self, ds: Dataset, b: ModelBundle) -> None:
        self.b = b
        code = {name: i for i, name in enumerate(b.category_names)}
        ds_to_b = np.asarray([code.get(n, -1) for n in ds.category_names] + [-1], np.int32)
        cat = ds_to_b[ds.item_category[ds.item]]  # item_category -1 -> the appended -1
        ev = _Events(ds.ts, ds.item_ids[ds.item], ds.event, cat)
        self.sessions = _groups(ds.user_ids[ds.user], ev)
        self.categories = _groups(cat, ev)
        self.weights = np.asarray([contract.TREND_WEIGHTS[t] for t in EVENT_TYPES], np.float64)
        self._trend: dict[tuple[int, float], list[bytes]] = {}

    def category(self, case: Case) -> tuple[int | None, float]:
        """The session's most-viewed category in the 5 minutes up to its newest event before the
        case (None: no view with a known category), and that event's time."""
        s = self.sessions.get(case.key)
        n = int(np.searchsorted(s.ts, case.ts, "left")) if s is not None else 0
        if n == 0:
            return None, -math.inf
        as_of = float(s.ts[n - 1])
        lo = (math.floor(as_of / 60) - CATEGORY_WINDOW_S // 60 + 1) * 60  # whole minutes, as the job
        m = slice(int(np.searchsorted(s.ts, lo, "left")), n)
        cats = s.category[m][(s.event[m] == VIEW) & (s.category[m] >= 0)]
        if cats.size == 0:
            return None, as_of
        # the server's own choice (streamfeatures._category) over the hash the writer sorts by field
        counts: dict[str, float] = {}
        for c in sorted(cats.tolist(), key=lambda c: f"v5:{c}"):
            counts[f"v5:{c}"] = counts.get(f"v5:{c}", 0.0) + 1.0
        return int(_category(counts)), as_of

    def trending(self, category: int, at: float) -> list[bytes]:
        """The newest closed window's top list of ``category`` at time ``at``, as ZREVRANGE WITHSCORES."""
        slide = contract.TREND_SLIDE_SECONDS
        end = math.floor((at - contract.WATERMARK_DELAY_SECONDS) / slide) * slide
        key = (category, end)
        if key not in self._trend:
            self._trend[key] = self._top(category, end - contract.TREND_WINDOW_SECONDS, end)
        return self._trend[key]

    def _top(self, category: int, start: float, end: float) -> list[bytes]:
        g = self.categories.get(category)
        if g is None:
            return []
        m = slice(int(np.searchsorted(g.ts, start, "left")), int(np.searchsorted(g.ts, end, "left")))
        items, inv = np.unique(g.item[m], return_inverse=True)
        score = np.bincount(inv, weights=self.weights[g.event[m]], minlength=items.size)
        top = np.lexsort((items, -score))[
            : contract.TREND_TOP_N
        ]  # score desc, then item id (the SQL's order)
        out: list[bytes] = []
        for i in top.tolist():
            out += [str(int(items[i])).encode(), repr(float(score[i])).encode()]
        return out

    def signals(self, case: Case) -> Live:
        """``ranking.Live`` for the case, through the server's own ``streamfeatures.live``."""
        c, as_of = self.category(case)
        if c is None:
            return live(self.b, StreamSignals())
        return live(self.b, StreamSignals(trend_raw=self.trending(c, as_of), category=c))
