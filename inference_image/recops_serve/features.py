"""Real-time session features in Redis/Tair: one list per user or session.

Each event is ``"<item_id>:<type>:<unix_ts>"`` pushed to ``recops:s:<id>`` (newest
first), trimmed to ``max_events`` and given the session TTL, in one pipelined round
trip. A recommendation reads the newest events with one ``LRANGE``. Any Redis
failure raises ``FeatureStoreDown`` so the caller serves without session features
(never a 5xx); the client has short timeouts so an outage costs milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recops_serve import metrics

PREFIX = "recops:s:"


class FeatureStoreDown(RuntimeError):
    pass


@dataclass(frozen=True)
class Event:
    item_id: int
    type: str
    ts: float


class SessionStore:
    def __init__(self, url: str, ttl_seconds: int = 1800, max_events: int = 50, timeout: float = 0.05):
        self.ttl, self.max_events = ttl_seconds, max_events
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    async def recent(self, sid: str, n: int = 10) -> list[Event]:
        t0 = time.perf_counter()
        try:
            raw = await self.client.lrange(PREFIX + sid, 0, n - 1)
        except (RedisError, OSError) as e:
            metrics.FS_ERR["read"].inc()
            raise FeatureStoreDown(str(e)) from e
        finally:
            metrics.FS_LAT["read"].observe(time.perf_counter() - t0)
        out = []
        for entry in raw:
            item, typ, ts = entry.decode().split(":")
            out.append(Event(int(item), typ, float(ts)))
        if out:
            metrics.feature_age.observe(max(0.0, time.time() - out[0].ts))
        return out

    async def add(self, events: list[tuple[str, int, str, float]]) -> None:
        """Store (sid, item_id, type, ts) events; one pipelined round trip for the batch."""
        t0 = time.perf_counter()
        try:
            pipe = self.client.pipeline(transaction=False)
            for sid, item, typ, ts in events:
                key = PREFIX + sid
                pipe.lpush(key, f"{item}:{typ}:{ts:.3f}")
                pipe.ltrim(key, 0, self.max_events - 1)
                pipe.expire(key, self.ttl)
            await pipe.execute()
        except (RedisError, OSError) as e:
            metrics.FS_ERR["write"].inc()
            raise FeatureStoreDown(str(e)) from e
        finally:
            metrics.FS_LAT["write"].observe(time.perf_counter() - t0)

    async def close(self) -> None:
        await self.client.aclose()
