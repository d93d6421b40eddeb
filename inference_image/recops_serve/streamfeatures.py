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
TREND_TOP = 50

# KEYS: session list, feature hash, sold-out set. ARGV: n events, trend prefix, category ('' = the
# session's most viewed category over 5 min, from the hash), top n. Returns {events, hash, sold-out,
# trend (item, score, ...), category used}.
_READ = """
local ev = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local feats = redis.call('HGETALL', KEYS[2])
local sold = redis.call('SMEMBERS', KEYS[3])
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
return {ev, feats, sold, trend, cat}
"""
_READ_SHA = hashlib.sha1(_READ.encode()).hexdigest()


@dataclass
class StreamSignals:
    counts: dict[str, float] = field(default_factory=dict)  # v5:<cat>, c30:<cat>, last_purchase_ts, as_of
    soldout_raw: list[bytes] = field(default_factory=list)  # SMEMBERS as Redis sent it
    trending: dict[int, float] = field(default_factory=dict)  # item -> score, best first
    category: int | None = None  # whose trending list it is

    @property
    def soldout(self) -> set[int]:
        return {int(x) for x in self.soldout_raw}


async def read(
    store: SessionStore, sid: str, n: int, category: int | None
) -> tuple[list[Event], StreamSignals]:
    """The session's newest ``n`` events and the stream signals, one round trip; FeatureStoreDown on
    error (the store's circuit breaker and metrics, as ``SessionStore.recent``)."""
    store._check("read")
    keys = (PREFIX + sid, FEATURE_PREFIX + sid, SOLDOUT_KEY)
    args = (n, TREND_PREFIX, "" if category is None else str(category), TREND_TOP)
    t0 = time.perf_counter()
    try:
        try:
            res = await store.link.call("EVALSHA", _READ_SHA, 3, *keys, *args)
        except NoScriptError:  # a new or restarted Redis: load the script with this call
            res = await store.link.call("EVAL", _READ, 3, *keys, *args)
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
    raw, feats, sold, trend, cat = res
    events = [ev for ev in map(_parse_entry, raw) if ev is not None]
    if len(events) != len(raw):
        metrics.fs_malformed.inc(len(raw) - len(events))
    if events:
        metrics.feature_age.observe(max(0.0, time.time() - events[0].ts))
    sig = StreamSignals()
    try:
        sig.counts = {feats[i].decode(): float(feats[i + 1]) for i in range(0, len(feats), 2)}
        sig.soldout_raw = sold  # to indices in live(), once per change of the set
        sig.trending = {int(trend[i]): float(trend[i + 1]) for i in range(0, len(trend), 2)}
        sig.category = int(cat) if cat else None
    except (ValueError, UnicodeDecodeError):  # not the job's layout: serve without the signals
        metrics.fs_malformed.inc()
        sig = StreamSignals()
    return events, sig


async def _fallback(store: SessionStore, sid: str, n: int) -> list[Event]:
    try:
        return await store.recent(sid, n)
    except FeatureStoreDown:
        return []


#: (bundle, SMEMBERS reply, indices) of the last call: the set changes rarely, requests are many,
#: so an unchanged reply (same members in the same order) costs one list comparison, not a lookup each
_SOLD: list = [None, None, np.empty(0, np.int32)]


def live_soldout(b: ModelBundle, raw: list[bytes]) -> np.ndarray:
    if _SOLD[0] is b and _SOLD[1] == raw:
        return _SOLD[2]
    idx = []
    for x in raw:
        try:
            i = b.item_index(int(x))
        except ValueError:  # not an item id: not the job's, skipped
            metrics.fs_malformed.inc()
            continue
        if i is not None:
            idx.append(i)
    _SOLD[:] = [b, raw, np.asarray(idx, np.int32)]
    return _SOLD[2]


def live(b: ModelBundle, sig: StreamSignals) -> Live:
    """Bundle indices of the signals (items the bundle does not know are skipped)."""
    hot = [
        (i, s) for i, s in ((b.item_index(x), s) for x, s in sig.trending.items()) if i is not None and s > 0
    ]
    return Live(
        soldout=live_soldout(b, sig.soldout_raw),
        trending=np.asarray([i for i, _ in hot], np.int32),
        trend_scores=np.asarray([s for _, s in hot], np.float32),
    )
