"""The stream job's signals on the serving side (not wired into ``app.recommendations`` yet: that
handler is being rewritten; the hook is two calls, see docs/stream.md).

``read`` fetches, in ONE pipelined round trip, the session list ``features.SessionStore`` reads today
plus what the Flink job writes (recops_stream.features): the session's window counts
(``recops:f:s:<id>``), the sold-out set and the trending list of the request's category.
``apply`` then drops sold-out items and moves trending ones up a few places, without scores, so it
composes with any ranking. Library: redis-py's asyncio client, the one the server already uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.exceptions import RedisError

from recops_serve.features import PREFIX, Event, FeatureStoreDown

FEATURE_PREFIX = "recops:f:s:"
TREND_PREFIX = "recops:trend:"
SOLDOUT_KEY = "recops:soldout"


@dataclass
class StreamSignals:
    counts: dict[str, float] = field(default_factory=dict)  # v5:<cat>, c30:<cat>, last_purchase_ts, as_of
    soldout: set[int] = field(default_factory=set)
    trending: dict[int, float] = field(default_factory=dict)  # item -> score, request category


async def read(client, sid: str, n: int, category: int | None) -> tuple[list[Event], StreamSignals]:
    """The session's newest ``n`` events and the stream signals, one round trip; FeatureStoreDown on error."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lrange(PREFIX + sid, 0, n - 1)
        pipe.hgetall(FEATURE_PREFIX + sid)
        pipe.smembers(SOLDOUT_KEY)
        if category is not None:
            pipe.zrevrange(f"{TREND_PREFIX}{category}", 0, 49, withscores=True)
        res = await pipe.execute()
    except (RedisError, OSError) as e:
        raise FeatureStoreDown(str(e)) from e
    events = []
    for entry in res[0]:
        item, typ, ts = entry.decode().split(":")
        events.append(Event(int(item), typ, float(ts)))
    sig = StreamSignals(
        counts={k.decode(): float(v) for k, v in res[1].items()},
        soldout={int(x) for x in res[2]},
        trending={int(i): float(s) for i, s in res[3]} if category is not None else {},
    )
    return events, sig


def apply(
    ids: list[int], reasons: list[str], sig: StreamSignals, k: int, boost_places: int = 3
) -> tuple[list[int], list[str]]:
    """Drop sold-out items; a trending item moves ``boost_places`` up (reason ``trending``); stable."""
    kept = [(i, r) for i, r in zip(ids, reasons, strict=True) if i not in sig.soldout]
    keyed = []
    for pos, (i, r) in enumerate(kept):
        hot = i in sig.trending
        keyed.append((pos - boost_places - 0.5 if hot else pos, i, "trending" if hot else r))
    keyed.sort(key=lambda t: t[0])
    return [i for _, i, _ in keyed[:k]], [r for _, _, r in keyed[:k]]
