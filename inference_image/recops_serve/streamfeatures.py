"""The stream job's signals on the serving side, read with the session list in ONE round trip.

What the Flink job writes (recops_stream.features, docs/stream.md): the session's window counts
(``recops:f:s:<id>``: ``v5:<category>`` views in the last 5 minutes, ...), the sold-out set
(``recops:soldout``, with a new version token ``recops:soldout:v`` at every change) and a top list
per category (``recops:trend:<category>``, rewritten every HOP slide: 10 s of event time). ``read``
returns the session's newest events, the window counts, the sold-out set and the trending list of
the request's category, or, without one, of the category the session viewed most in the last 5
minutes. ``live`` turns that into bundle indices for ``ranking.answer``, which drops sold-out items
and boosts trending ones, so the server and any replay share the one ranking call.

Cost (measured, README's serve bench): one pipelined round trip of plain commands over the store's
multiplexed connection (``redislink``): ``LRANGE`` (the session list, as with the features off),
``HGETALL`` and ``GET`` of the set's version, about 3 us of Redis time. What changes rarely is not
sent per request: the sold-out set is re-read only when its version changed (checked on every
call, so a sold-out item is never served after the job marked it), and a category's trending list
is kept in process for ``trend_ttl`` seconds (``stream_trend_ttl_seconds``, default 1 s: an answer
uses a list at most that much older than Redis's). The Lua script this replaces (the four reads in
one ``EVALSHA``) cost ~40 us of Redis time per call, ~25 of them the trending list's
``ZREVRANGE ... WITHSCORES`` (formatting 50 doubles) and its trip through Lua.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from redis.exceptions import RedisError, ResponseError

from recops_contracts import stream as stream_contract
from recops_serve import metrics
from recops_serve.bundle import ModelBundle
from recops_serve.features import PREFIX, Event, SessionStore, _parse_entry
from recops_serve.ranking import Live, trend_table

FEATURE_PREFIX = "recops:f:s:"
TREND_PREFIX = "recops:trend:"
SOLDOUT_KEY = "recops:soldout"
SOLDOUT_VERSION_KEY = "recops:soldout:v"  # a new random token with every change of the set (the job)
TREND_TOP = stream_contract.TREND_TOP_N
#: categories whose trending lists are kept (more: the cache starts again; the job writes one per category)
TREND_CACHE_MAX = 10_000


@dataclass
class StreamSignals:
    counts: dict[str, float] = field(default_factory=dict)  # v5:<cat>, c30:<cat>, last_purchase_ts, as_of
    soldout_raw: list[bytes] = field(default_factory=list)  # the set's members as Redis sent them
    trend_raw: list[bytes] = field(default_factory=list)  # ZREVRANGE WITHSCORES: item, score, ...
    category: int | None = None  # whose trending list it is

    @property
    def soldout(self) -> set[int]:
        return {int(x) for x in self.soldout_raw}

    @property
    def trending(self) -> dict[int, float]:
        t = self.trend_raw
        return {int(t[i]): float(t[i + 1]) for i in range(0, len(t), 2)}


UNREAD = object()


class _Cache:
    """What changes rarely while requests are many: the sold-out set (re-read only when its version
    token changed) and each category's trending list (re-read after ``trend_ttl``), each with its
    bundle indices; a read that several concurrent requests need is made once (``pending``)."""

    def __init__(self) -> None:
        # of ``sold``: None = the set had no version (then read with every call); UNREAD: not read yet
        self.version: bytes | object | None = UNREAD
        self.sold: list[bytes] = []
        self.sold_for: tuple = (None, None)  # (bundle, members) the indices are of
        self.sold_idx = np.empty(0, np.int32)
        self.lists: dict[int, tuple[float, list]] = {}  # category -> (monotonic time read, reply)
        self.pending: dict[object, asyncio.Future] = {}  # ("sold", version) / ("trend", category)
        self.trend: dict[int | None, tuple] = {}  # category -> (bundle, reply, indices, scores)


CACHE = _Cache()


def _ours(reply):
    """A reply, None for a key that is not ours (WRONGTYPE: Redis is healthy); other errors raise."""
    if isinstance(reply, RedisError):
        if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
            return None
        raise reply
    return reply


def _fresh(category: int | None, now: float, ttl: float) -> list | None:
    if category is None:
        return []
    hit = CACHE.lists.get(category)
    return hit[1] if hit is not None and now - hit[0] < ttl else None


def _trend_cmd(category: int) -> tuple:
    return ("ZREVRANGE", f"{TREND_PREFIX}{category}", 0, TREND_TOP - 1, "WITHSCORES")


def _keep_trend(category: int, reply, now: float) -> list:
    if isinstance(reply, ResponseError):
        if "WRONGTYPE" not in str(reply):
            raise reply
        metrics.fs_malformed.inc()  # a key that is not ours: no trending list
        reply = []
    if len(CACHE.lists) >= TREND_CACHE_MAX:
        CACHE.lists.clear()
    CACHE.lists[category] = (now, reply)
    return reply


def _keep_sold(version: bytes | None, reply) -> list:
    if isinstance(reply, ResponseError):
        if "WRONGTYPE" not in str(reply):
            raise reply
        metrics.fs_malformed.inc()  # not the job's layout: no sold-out items
        reply = []
    CACHE.sold, CACHE.version = reply, version
    return reply


async def _fetch(cmd: tuple, store: SessionStore, keep):
    try:
        reply = await store.link.call(*cmd)
    except ResponseError as e:  # keep() takes a wrong-type key's error reply, raises the others
        reply = e
    return keep(reply)


async def _once(key: tuple, cmd: tuple, store: SessionStore, keep) -> list:
    """``keep(reply)`` of ``cmd``: one call for all the concurrent requests that need it."""
    fut = CACHE.pending.get(key)
    if fut is None:
        fut = CACHE.pending[key] = asyncio.ensure_future(_fetch(cmd, store, keep))
        fut.add_done_callback(lambda f: CACHE.pending.pop(key, None) if CACHE.pending.get(key) is f else None)
    return await asyncio.shield(fut)


def _category(counts: dict[str, float]) -> str:
    """The category with the most ``v5:`` views (the first of equals; '' when none is above 0)."""
    cat, best = "", 0.0
    for name, n in counts.items():
        if n > best and name.startswith("v5:"):
            best, cat = n, name[3:]
    return cat


async def read(
    store: SessionStore, sid: str, n: int, category: int | None, trend_ttl: float = 1.0
) -> tuple[list[Event], StreamSignals]:
    """The session's newest ``n`` events and the stream signals, one round trip (a second one only
    to refresh the sold-out set after a change or a derived category's expired trending list);
    FeatureStoreDown on error (the store's circuit breaker and metrics, as ``SessionStore.recent``)."""
    store._check("read")
    now = time.monotonic()
    cmds = [
        ("LRANGE", PREFIX + sid, 0, n - 1),
        ("HGETALL", FEATURE_PREFIX + sid),
        ("GET", SOLDOUT_VERSION_KEY),
    ]
    with_sold = CACHE.version is None  # the set has no version: read it with every call
    if with_sold:
        cmds.append(("SMEMBERS", SOLDOUT_KEY))
    trend = _fresh(category, now, trend_ttl)
    if trend is None:  # the request's category, its list expired: in the same round trip
        cmds.append(_trend_cmd(category))
    t0 = time.perf_counter()
    try:
        res = await store.link.pipeline(cmds)
        raw, feats, version = (_ours(r) for r in res[:3])
        if with_sold:
            _keep_sold(version, res[3])
        elif version != CACHE.version:  # first read, the set changed or lost its version: read it
            await _once(("sold", version), ("SMEMBERS", SOLDOUT_KEY), store, lambda r: _keep_sold(version, r))
        if trend is None:
            trend = _keep_trend(category, res[-1], now)
    except (RedisError, OSError) as e:
        raise store._failed("read", e) from e
    finally:
        metrics.FS_LAT["read"].observe(time.perf_counter() - t0)
    store.breaker.success()
    if raw is None or feats is None:  # a session key that is not ours: Redis is healthy
        metrics.fs_malformed.inc()
    events = [ev for ev in map(_parse_entry, raw or ()) if ev is not None]
    if raw and len(events) != len(raw):
        metrics.fs_malformed.inc(len(raw) - len(events))
    if events:
        metrics.feature_age.observe(max(0.0, time.time() - events[0].ts))
    sig = StreamSignals(soldout_raw=CACHE.sold)
    feats = feats or []
    try:
        sig.counts = {feats[i].decode(): float(feats[i + 1]) for i in range(0, len(feats), 2)}
        cat = str(category) if category is not None else _category(sig.counts)
        sig.category = int(cat) if cat else None
    except (ValueError, UnicodeDecodeError):  # not the job's layout: serve without the signals
        metrics.fs_malformed.inc()
        return events, StreamSignals(soldout_raw=CACHE.sold)
    if category is None and sig.category is not None:
        trend = _fresh(sig.category, now, trend_ttl)
        if trend is None:
            c = sig.category
            try:
                trend = await _once(("trend", c), _trend_cmd(c), store, lambda r: _keep_trend(c, r, now))
            except (RedisError, OSError) as e:
                raise store._failed("read", e) from e
    sig.trend_raw = trend
    return events, sig


def _indices(b: ModelBundle, ids: list[bytes]) -> tuple[list[int], list[int]]:
    """Bundle indices of ``ids`` and their positions (unknown items skipped, malformed counted)."""
    idx, pos = [], []
    for p, x in enumerate(ids):
        try:
            i = b.item_index(int(x))
        except ValueError:  # not an item id: not the job's
            metrics.fs_malformed.inc()
            continue
        if i is not None:
            idx.append(i)
            pos.append(p)
    return idx, pos


def live(b: ModelBundle, sig: StreamSignals) -> Live:
    """Bundle indices of the signals (items the bundle does not know are skipped) and the trending
    list's lookup table; made once per change of the set / of a category's list, not per request."""
    if CACHE.sold_for[0] is not b or CACHE.sold_for[1] is not sig.soldout_raw:
        if CACHE.sold_for[0] is not b or CACHE.sold_for[1] != sig.soldout_raw:
            CACHE.sold_idx = np.asarray(_indices(b, sig.soldout_raw)[0], np.int32)
        CACHE.sold_for = (b, sig.soldout_raw)
    key = sig.category
    hit = CACHE.trend.get(key)
    if hit is None or hit[0] is not b or (hit[1] is not sig.trend_raw and hit[1] != sig.trend_raw):
        t = sig.trend_raw
        idx, pos = _indices(b, t[0::2])
        try:
            scores = np.asarray([float(t[2 * p + 1]) for p in pos], np.float32)
        except ValueError:
            metrics.fs_malformed.inc()
            idx, scores = [], np.empty(0, np.float32)
        keep = scores > 0
        items, scores = np.asarray(idx, np.int32)[keep], scores[keep]
        table = trend_table(items, scores) if items.size else None
        hit = CACHE.trend[key] = (b, t, items, scores, table)
    return Live(soldout=CACHE.sold_idx, trending=hit[2], trend_scores=hit[3], trend_table=hit[4])
