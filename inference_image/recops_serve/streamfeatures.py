"""The stream job's signals on the serving side, read with the session list in ONE round trip.

What the Flink job writes (recops_stream.features, docs/stream.md): the session's window counts
(``recops:f:s:<id>``: ``v5:<category>`` views in the last 5 minutes, ...), the sold-out set
(``recops:soldout``) and a top list per category (``recops:trend:<category>``). ``read`` runs one Lua
script that returns the session's newest events, the window counts, the sold-out set and the
trending list of the request's category, or, without one, of the category the session viewed most
in the last 5 minutes (chosen inside Redis: no second round trip). ``live`` turns that into bundle
indices for ``ranking.answer``, which drops sold-out items and boosts trending ones, so the server
and any replay share the one ranking call.

Over the store's one multiplexed connection (``redislink``), as the session list's own read. Cost:
the script replaces the session list's ``LRANGE``; ``SMEMBERS`` grows with the sold-out set
(bounded in practice by its 7-day TTL). Standalone Redis/Tair: the script names keys it derives
(the trend key), which a cluster-mode proxy would refuse, as ``features._ADD`` does.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
from redis.exceptions import NoScriptError, RedisError, ResponseError

from recops_serve import metrics
from recops_serve.bundle import ModelBundle
from recops_serve.features import PREFIX, Event, FeatureStoreDown, SessionStore, _parse_entry
from recops_serve.ranking import Live

FEATURE_PREFIX = "recops:f:s:"
TREND_PREFIX = "recops:trend:"
SOLDOUT_KEY = "recops:soldout"
SOLDOUT_VERSION_KEY = "recops:soldout:v"  # a new random token with every change of the set (the job)
TREND_TOP = 50

# KEYS: session list, feature hash, sold-out set, its version. ARGV: n events, trend prefix, category
# ('' = the session's most viewed category over 5 min, from the hash), top n, the version of the
# caller's copy of the set. Returns {events, hash, sold-out set (false: unchanged since that
# version), trend (item, score, ...), category used, version (false: none)}.
_READ = """
local ev = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local feats = redis.call('HGETALL', KEYS[2])
local v = redis.call('GET', KEYS[4])
local sold = false
if (not v) or v ~= ARGV[5] then sold = redis.call('SMEMBERS', KEYS[3]) end
local cat, best = ARGV[3], 0
if cat == '' then
  for i = 1, #feats, 2 do
    if string.sub(feats[i], 1, 3) == 'v5:' then
      local n = tonumber(feats[i + 1]) or 0
      if n > best then best, cat = n, string.sub(feats[i], 4) end
    end
  end
end
local trend = {}
if cat ~= '' then
  trend = redis.call('ZREVRANGE', ARGV[2] .. cat, 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
end
return {ev, feats, sold, trend, cat, v}
"""
_READ_SHA = hashlib.sha1(_READ.encode()).hexdigest()


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


class _Cache:
    """What changes rarely while requests are many: the sold-out set (re-read only when its version
    token changed, so the set is not sent per request) and each category's trending list (parsed
    again only when its reply differs), each with its bundle indices."""

    def __init__(self) -> None:
        self.version: bytes | None = None
        self.sold: list[bytes] = []
        self.sold_for: tuple = (None, None)  # (bundle, members) the indices are of
        self.sold_idx = np.empty(0, np.int32)
        self.trend: dict[bytes, tuple] = {}  # category -> (bundle, reply, indices, scores)


CACHE = _Cache()


async def read(
    store: SessionStore, sid: str, n: int, category: int | None
) -> tuple[list[Event], StreamSignals]:
    """The session's newest ``n`` events and the stream signals, one round trip; FeatureStoreDown on
    error (the store's circuit breaker and metrics, as ``SessionStore.recent``)."""
    store._check("read")
    keys = (PREFIX + sid, FEATURE_PREFIX + sid, SOLDOUT_KEY, SOLDOUT_VERSION_KEY)
    cat_arg = "" if category is None else str(category)
    args = (n, TREND_PREFIX, cat_arg, TREND_TOP, CACHE.version or b"")
    t0 = time.perf_counter()
    try:
        try:
            res = await store.link.call("EVALSHA", _READ_SHA, 4, *keys, *args)
        except NoScriptError:  # a new or restarted Redis: load the script with this call
            res = await store.link.call("EVAL", _READ, 4, *keys, *args)
    except ResponseError as e:
        if "WRONGTYPE" not in str(e):
            raise store._failed("read", e) from e
        metrics.fs_malformed.inc()  # a key that is not ours: Redis is healthy, no signals
        return await _fallback(store, sid, n), StreamSignals()
    except (RedisError, OSError) as e:
        raise store._failed("read", e) from e
    finally:
        metrics.FS_LAT["read"].observe(time.perf_counter() - t0)
    store.breaker.success()
    raw, feats, sold, trend, cat, version = res
    if sold is not None:  # changed (or unversioned): the new members, and their version
        CACHE.sold, CACHE.version = sold, version
    events = [ev for ev in map(_parse_entry, raw) if ev is not None]
    if len(events) != len(raw):
        metrics.fs_malformed.inc(len(raw) - len(events))
    if events:
        metrics.feature_age.observe(max(0.0, time.time() - events[0].ts))
    sig = StreamSignals(soldout_raw=CACHE.sold, trend_raw=trend)
    try:
        sig.counts = {feats[i].decode(): float(feats[i + 1]) for i in range(0, len(feats), 2)}
        sig.category = int(cat) if cat else None
    except (ValueError, UnicodeDecodeError):  # not the job's layout: serve without the signals
        metrics.fs_malformed.inc()
        sig = StreamSignals(soldout_raw=CACHE.sold)
    return events, sig


async def _fallback(store: SessionStore, sid: str, n: int) -> list[Event]:
    try:
        return await store.recent(sid, n)
    except FeatureStoreDown:
        return []


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
    """Bundle indices of the signals (items the bundle does not know are skipped); converted once
    per change of the set / of a category's list, not per request."""
    if CACHE.sold_for[0] is not b or CACHE.sold_for[1] is not sig.soldout_raw:
        if CACHE.sold_for[0] is not b or CACHE.sold_for[1] != sig.soldout_raw:
            CACHE.sold_idx = np.asarray(_indices(b, sig.soldout_raw)[0], np.int32)
        CACHE.sold_for = (b, sig.soldout_raw)
    key = sig.category
    hit = CACHE.trend.get(key)
    if hit is None or hit[0] is not b or hit[1] != sig.trend_raw:
        t = sig.trend_raw
        idx, pos = _indices(b, t[0::2])
        try:
            scores = np.asarray([float(t[2 * p + 1]) for p in pos], np.float32)
        except ValueError:
            metrics.fs_malformed.inc()
            idx, scores = [], np.empty(0, np.float32)
        keep = scores > 0
        hit = CACHE.trend[key] = (b, t, np.asarray(idx, np.int32)[keep], scores[keep])
    return Live(soldout=CACHE.sold_idx, trending=hit[2], trend_scores=hit[3])
