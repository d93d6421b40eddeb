"""A lean Redis client for the serving hot path: ONE multiplexed connection per process.

Every command is written to the same socket as soon as it is made and its reply matched in order
(Redis answers a connection's commands in the order it received them), so concurrent requests
pipeline on the wire without taking a connection from a pool: no request ever waits for a
connection or fails for lack of one (the server's ``max_inflight`` bounds what is in flight). The
RESP encoding and parsing are hiredis' (C). Per command this costs a fraction of redis-py's
asyncio client (pool checkout and release, per-call timeout contexts, retry and event
machinery); measured in the README's serve bench.

Failures are ``OSError``s (``ConnectionError``, ``TimeoutError``): a refused or reset connection
fails at once (a dead Redis); a command unanswered after ``timeout`` seconds (a slow or stalled
Redis) aborts the connection, failing every command pending on it (their replies can no longer
be matched), and the next command reconnects. Error replies raise redis-py's exceptions
(``ResponseError``; ``NoScriptError`` for NOSCRIPT; ``BusyLoadingError``, ``AuthenticationError``
for a Redis that cannot serve), so callers keep one exception vocabulary.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, verified against the
system CAs unless ``?ssl_cert_reqs=none``) and ``unix:///path?db=N``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

#: error replies that mean "this Redis cannot serve now", raised as redis-py raises them
_UNAVAILABLE = {
    "LOADING": BusyLoadingError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "MASTERDOWN": RedisConnectionError,
}


def _error(reply: hiredis.ReplyError) -> RedisError:
    msg = str(reply)
    code = msg.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScriptError(msg)
    return _UNAVAILABLE.get(code, ResponseError)(msg)


class _Conn(asyncio.Protocol):
    """One connection: writes commands, matches replies to waiters in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        # (future, replies expected, replies so far (None for a single command), time sent)
        self.waiters: collections.deque[tuple[asyncio.Future, int, list | None, float]] = collections.deque()
        self.lost: BaseException | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiters = self.reader, self.waiters
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as e:  # not Redis on the other end: fail everything
                self.fail(ConnectionError(f"Redis protocol error: {e}"))
                self.transport.abort()
                return
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream can no longer be trusted
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                self.transport.abort()
                return
            fut, n, acc, _ = waiters[0]
            if acc is None:
                waiters.popleft()
                if not fut.done():  # a cancelled caller: its reply is dropped
                    if type(reply) is hiredis.ReplyError:
                        fut.set_exception(_error(reply))
                    else:
                        fut.set_result(reply)
            else:
                acc.append(_error(reply) if type(reply) is hiredis.ReplyError else reply)
                if len(acc) == n:
                    waiters.popleft()
                    if not fut.done():
                        fut.set_result(acc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.fail(self.lost or ConnectionError(f"Redis connection lost: {exc or 'closed by server'}"))

    def fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiters:
            fut = self.waiters.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)


class RedisLink:
    """``await link.call("LRANGE", key, 0, 9)``; ``await link.pipeline([cmd, ...])`` (one round trip,
    error replies returned in place as exceptions)."""

    def __init__(self, url: str, *, timeout: float = 2.0, connect_timeout: float = 2.0):
        self.timeout, self.connect_timeout = timeout, connect_timeout
        u = urlparse(url)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self._unix = u.path if u.scheme == "unix" else None
        if u.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {u.scheme!r} (redis://, rediss://, unix://)")
        self._host, self._port = u.hostname or "localhost", u.port or 6379
        self._ssl: ssl.SSLContext | None = None
        if u.scheme == "rediss":
            self._ssl = ssl.create_default_context()
            if q.get("ssl_cert_reqs", "").lower() in ("none", "cert_none"):
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        db = q.get("db") or (u.path.strip("/") if u.scheme != "unix" else "") or "0"
        self._hello: list[tuple] = []
        if u.password is not None:
            user = unquote(u.username) if u.username else None
            password = unquote(u.password)
            self._hello.append(("AUTH", user, password) if user else ("AUTH", password))
        if int(db):
            self._hello.append(("SELECT", int(db)))
        self._conn: _Conn | None = None
        self._connecting: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        if self._unix:
            make = loop.create_unix_connection(_Conn, self._unix)
        else:
            make = loop.create_connection(_Conn, self._host, self._port, ssl=self._ssl)
        try:
            _, conn = await asyncio.wait_for(make, self.connect_timeout)
        except TimeoutError:
            raise TimeoutError(f"Redis connect timed out after {self.connect_timeout:g} s") from None
        if self._hello:  # AUTH / SELECT before any command of a caller
            fut = loop.create_future()
            conn.transport.write(b"".join(hiredis.pack_command(c) for c in self._hello))
            conn.waiters.append((fut, len(self._hello), [], loop.time()))
            try:
                replies = await asyncio.wait_for(fut, self.timeout)
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
            except TimeoutError:
                conn.transport.abort()
                raise TimeoutError(f"Redis did not answer AUTH/SELECT within {self.timeout:g} s") from None
            except BaseException:
                conn.transport.abort()
                raise
        return conn

    async def _ready(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:  # one connect for all callers that arrive meanwhile
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, fut: asyncio.Future) -> None:
        self._connecting = None
        # exception() also marks a failure as retrieved (every waiting caller got it already)
        if not fut.cancelled() and fut.exception() is None:
            self._conn = fut.result()

    # ------------------------------------------------------------------ commands
    def _send(self, conn: _Conn, cmds: list[tuple] | None, cmd: tuple | None = None) -> asyncio.Future:
        """Write now; the future gets the reply (or the replies of ``cmds``, one round trip)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        now = loop.time()
        if cmd is not None:
            conn.transport.write(hiredis.pack_command(cmd))
            conn.waiters.append((fut, 1, None, now))
        else:
            conn.transport.write(b"".join(hiredis.pack_command(c) for c in cmds))
            conn.waiters.append((fut, len(cmds), [], now))
        if self._timer is None:
            self._timer = loop.call_at(now + self.timeout, self._watchdog)
        return fut

    def _watchdog(self) -> None:
        """One timer for all commands: the oldest unanswered one past ``timeout`` aborts the connection."""
        self._timer = None
        conn = self._conn
        if conn is None or conn.lost is not None or not conn.waiters:
            return
        loop = asyncio.get_running_loop()
        due = conn.waiters[0][3] + self.timeout
        if loop.time() >= due:
            conn.fail(TimeoutError(f"Redis did not answer within {self.timeout:g} s"))
            conn.transport.abort()
            return
        self._timer = loop.call_at(due, self._watchdog)

    async def call(self, *cmd: Any) -> Any:
        conn = await self._ready()
        return await self._send(conn, None, cmd)

    async def pipeline(self, cmds: list[tuple]) -> list[Any]:
        conn = await self._ready()
        return await self._send(conn, cmds)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None and self._conn.transport is not None:
            self._conn.fail(ConnectionError("Redis link closed"))
            self._conn.transport.close()
        self._conn = None
