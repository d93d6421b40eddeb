"""Real-time session features in Redis/Tair: one list per user or session.

Each event is ``"<item_id>:<type>:<unix_ts>"`` pushed to ``recops:s:<id>`` (newest first), trimmed
to ``max_events`` and given the session TTL. A recommendation reads the newest events with one
``LRANGE``. Any Redis failure raises ``FeatureStoreDown`` so the caller serves without session
features (never a 5xx).

Sizing (issue #19): reads and writes go over one multiplexed connection (``redislink``): every
request's command is pipelined on the same socket, so none ever waits for a connection or fails for
lack of one, whatever the concurrency (the server's ``max_inflight`` bounds what is in flight). A
command unanswered after 2 s (generous: it also counts the event-loop lag of max_inflight requests,
so a Redis slowed by load still answers) fails as a slow Redis; a dead Redis is found by its refused
or reset connections, which fail at once; after 5 consecutive failures a circuit breaker turns the
outage into an immediate ``FeatureStoreDown`` (microseconds) and ``degraded`` makes that state
visible. ``client`` is a redis-py client on the same URL for the rest (pipelines of other reads).

Writes are idempotent by ``event_id``: one Lua call per slice of events (grouped by session) does ``SET NX EX`` on
``recops:e:<len(id)>:<id>:<event_id>`` (session TTL) and pushes the event only when that key was new, so a client that
retries after a 503 (the write may have landed) does not store the event twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from recops_serve import metrics
from recops_serve.redislink import RedisLink
from recops_serve.turns import Turn

PREFIX = "recops:s:"
#: ``recops:e:<len(sid)>:<sid>:<event_id>``: its own namespace, so no session id can name one
DEDUPE = "recops:e:"
#: events per Redis round trip (one Lua call): bounds the time one large batch holds the event
#: loop and Redis itself (a script runs alone); a slice's events come grouped by session, so a
#: session's events cost one LPUSH/LTRIM/EXPIRE together (the script's time is then mostly the
#: arguments: ~0.2 ms per slice measured, against ~0.6 ms for 64 events one by one before)
WRITE_SLICE = 256

# ARGV: ttl, max_events, then per session: list key, n, then n pairs (dedupe key, "" = no
# event_id; entry), oldest first. Returns one flag per event in that order: 1 stored, 0 a
# duplicate event_id. The new entries of a session are pushed in one LPUSH (the newest ends up
# first, as one push per event would leave them) and the list trimmed once.
_ADD = """
local ttl, cap, out, i = tonumber(ARGV[1]), tonumber(ARGV[2]), {}, 3
while i <= #ARGV do
  local key, last, push = ARGV[i], i + 2 * tonumber(ARGV[i + 1]), {}
  for j = i + 2, last, 2 do
    if ARGV[j] == '' or redis.call('SET', ARGV[j], '1', 'NX', 'EX', ttl) then
      push[#push + 1] = ARGV[j + 1]
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  if #push > 0 then
    redis.call('LPUSH', key, unpack(push))
    redis.call('LTRIM', key, 0, cap - 1)
    redis.call('EXPIRE', key, ttl)
  end
  i = last + 2
end
return out
"""
_ADD_SHA = hashlib.sha1(_ADD.encode()).hexdigest()


class FeatureStoreDown(RuntimeError):
    pass


class Event(NamedTuple):
    item_id: int
    type: str
    ts: float


class NewEvent(NamedTuple):
    """An event to store (validated by the caller)."""

    sid: str
    item_id: int
    type: str
    ts: float
    event_id: str | None = None


class Breaker:
    """Opens after ``threshold`` consecutive failures; while open every call fails at once; after
    ``cooldown`` seconds calls go through again and the first success closes it."""

    def __init__(self, threshold: int = 5, cooldown: float = 0.25):
        self.threshold, self.cooldown = threshold, cooldown
        self.failures = 0
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold and time.monotonic() < self.open_until

    def success(self) -> None:
        if self.failures:
            self.failures = 0
            metrics.fs_degraded.set(0)

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown
            metrics.fs_degraded.set(1)


class SessionStore:
    def __init__(
        self,
        url: str,
        ttl_seconds: int = 1800,
        max_events: int = 50,
        max_connections: int = 256,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
    ):
        self.ttl, self.max_events = ttl_seconds, max_events
        self.url, self.max_connections = url, max_connections
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.link = RedisLink(url, timeout=timeout, connect_timeout=connect_timeout)
        self.breaker = Breaker()
        self.last_error: str | None = None

    @cached_property
    def client(self) -> aioredis.Redis:
        """redis-py on the same URL (a bounded pool that waits for a free connection), for reads
        beyond the session list (e.g. ``streamfeatures.read``'s pipeline)."""
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout,  # waiting for a free connection
            socket_timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return aioredis.Redis(connection_pool=pool)

    @property
    def degraded(self) -> bool:
        """True while Redis is failing (features are off for every answer)."""
        return self.breaker.failures >= self.breaker.threshold

    def _check(self, op: str) -> None:
        if self.breaker.is_open:
            metrics.FS_ERR[op].inc()
            raise FeatureStoreDown(f"circuit open after {self.breaker.failures} failures: {self.last_error}")

    def _failed(self, op: str, e: Exception) -> FeatureStoreDown:
        metrics.FS_ERR[op].inc()
        self.breaker.failure()
        self.last_error = f"{type(e).__name__}: {e}"
        return FeatureStoreDown(self.last_error)

    async def recent(self, sid: str, n: int = 10) -> list[Event]:
        self._check("read")
        t0 = time.perf_counter()
        try:
            raw = await self.link.call("LRANGE", PREFIX + sid, 0, n - 1)
        except ResponseError as e:
            if not str(e).startswith("WRONGTYPE"):
                raise self._failed("read", e) from e
            metrics.fs_malformed.inc()  # Redis answered: a key that is not ours, healthy, no session
            raw = []
        except (RedisError, OSError) as e:
            raise self._failed("read", e) from e
        finally:
            metrics.FS_LAT["read"].observe(time.perf_counter() - t0)
        self.breaker.success()
        out = [ev for ev in map(_parse_entry, raw) if ev is not None]
        if len(out) != len(raw):
            metrics.fs_malformed.inc(len(raw) - len(out))
        if out:
            metrics.feature_age.observe(max(0.0, time.time() - out[0].ts))
        return out

    async def add(self, events: list[NewEvent]) -> list[int]:
        """Store events; returns per event 1 if stored, 0 if its ``event_id`` was already stored (a retry)."""
        fresh = [0] * len(events)
        async for where, flags in self.add_slices(events):
            for n, flag in zip(where, flags, strict=True):
                fresh[n] = flag
        return fresh

    async def add_slices(self, events: list[NewEvent]) -> AsyncIterator[tuple[list[int], list[int]]]:
        """Store events grouped by session, ``WRITE_SLICE`` per Lua call; yields per call the
        events' positions in ``events`` and their flags (1 stored, 0 a duplicate ``event_id``).
        A session's events keep their order (the list ends newest first, as one by one)."""
        self._check("write")
        turn = Turn()
        order = await _by_session(events, turn)
        for start in range(0, len(order), WRITE_SLICE):
            if turn.over():
                await turn.next()
            where = order[start : start + WRITE_SLICE]
            args = _slice_args(events, where, self.ttl, self.max_events)
            t0 = time.perf_counter()
            try:
                try:
                    flags = await self.link.call("EVALSHA", _ADD_SHA, 0, *args)
                except NoScriptError:  # a new or restarted Redis: load the script with this call
                    flags = await self.link.call("EVAL", _ADD, 0, *args)
            except (RedisError, OSError) as e:
                raise self._failed("write", e) from e
            finally:
                metrics.FS_LAT["write"].observe(time.perf_counter() - t0)
            self.breaker.success()
            yield where, flags

    async def close(self) -> None:
        await self.link.close()
        if "client" in self.__dict__:
            await self.client.aclose()


async def _by_session(events: list[NewEvent], turn: Turn, step: int = 512) -> list[int]:
    """The events' positions grouped by session, each session's in order (sessions in order of
    first appearance). Built ``step`` events at a time, giving the loop its turns: one ``sorted``
    of a 1 MiB batch's 18,500 events held the loop ~4 ms."""
    groups: dict[str, list[int]] = {}
    for lo in range(0, len(events), step):
        if turn.over():
            await turn.next()
        for n in range(lo, min(lo + step, len(events))):
            sid = events[n][0]
            if (group := groups.get(sid)) is None:
                groups[sid] = [n]
            else:
                group.append(n)
    order: list[int] = []
    for group in groups.values():
        order += group
        if turn.over():
            await turn.next()
    return order


def _slice_args(events: list[NewEvent], where: list[int], ttl: int, cap: int) -> list[str | int]:
    """``_ADD``'s ARGV for the events at ``where`` (sorted by session): per session its key, its
    count, then (dedupe key, entry) per event."""
    args: list[str | int] = [ttl, cap]
    current, count_at = None, 0
    for n in where:
        sid, item, typ, ts, event_id = events[n]
        if sid != current:
            if current is not None:
                args[count_at] = (len(args) - count_at - 1) >> 1
            current = sid
            args += (PREFIX + sid, 0)
            count_at = len(args) - 1
        args += (f"{DEDUPE}{len(sid)}:{sid}:{event_id}" if event_id else "", f"{item}:{typ}:{ts:.3f}")
    if current is not None:
        args[count_at] = (len(args) - count_at - 1) >> 1
    return args


def _parse_entry(entry: bytes) -> Event | None:
    """One stored entry, or None when it is not ours (a malformed key must not fail the session)."""
    try:
        item, typ, ts = entry.split(b":")
        return Event(int(item), typ.decode("ascii"), float(ts))
    except (ValueError, UnicodeDecodeError):
        return None
