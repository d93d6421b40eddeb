"""The serving hot path's Redis client (one multiplexed connection) against a real redis-server:
replies matched to their commands under concurrency, error replies as redis-py's exceptions, AUTH and
SELECT from the URL, and a stalled, dead and restarted Redis told apart."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError

from recops_serve.redislink import RedisLink

pytestmark = pytest.mark.integration


def run(coro):
    return asyncio.run(coro)


def test_concurrent_commands_get_their_own_replies(redis_server):
    async def go():
        link = RedisLink(redis_server.url)
        await link.call("DEL", "n")
        # 2,000 commands in flight on one connection, interleaved with commands of another shape
        incr = [link.call("INCR", "n") for _ in range(1000)]
        echo = [link.call("ECHO", f"e{i}") for i in range(1000)]
        got = await asyncio.gather(*(x for pair in zip(incr, echo, strict=True) for x in pair))
        assert got[0::2] == list(range(1, 1001))
        assert got[1::2] == [f"e{i}".encode() for i in range(1000)]
        # a pipeline: one round trip, an error reply in place, the replies after it still in step
        ok, wrong, value = await link.pipeline([("SET", "k", "v"), ("LPUSH", "k", "x"), ("GET", "k")])
        assert ok == b"OK" and value == b"v"
        assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
        await link.close()

    run(go())


def test_error_replies_raise_redis_py_exceptions(redis_server):
    async def go():
        link = RedisLink(redis_server.url)
        await link.call("SET", "s", "a string")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await link.call("LRANGE", "s", 0, 9)
        with pytest.raises(NoScriptError):
            await link.call("EVALSHA", "0" * 40, 0)
        assert await link.call("GET", "s") == b"a string", "the connection is still in step"
        await link.close()

    run(go())


def test_password_user_and_database_from_the_url(redis_server):
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "shop", "on", ">pw-1", "~*", "+@all")
    admin.config_set("requirepass", "pw-0")

    async def go():
        base = f"127.0.0.1:{redis_server.port}"
        for url in (f"redis://:pw-0@{base}/2", f"redis://shop:pw-1@{base}/2"):
            link = RedisLink(url)
            await link.call("SET", "where", url)
            assert await link.call("GET", "where") == url.encode()
            await link.close()
        assert redis.Redis(port=redis_server.port, password="pw-0", db=2).get("where") == url.encode()
        assert redis.Redis(port=redis_server.port, password="pw-0", db=0).get("where") is None
        with pytest.raises(AuthenticationError):
            await RedisLink(f"redis://:wrong@{base}/0").call("PING")
        with pytest.raises(ValueError, match="scheme"):
            RedisLink(f"http://{base}")

    run(go())


def test_a_stalled_redis_times_out_a_dead_one_fails_at_once_and_both_recover(redis_server):
    async def go():
        link = RedisLink(redis_server.url, timeout=0.5)
        assert await link.call("PING") == b"PONG"
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            results = await asyncio.gather(*(link.call("PING") for _ in range(20)), return_exceptions=True)
            waited = time.perf_counter() - t0
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert 0.4 < waited < 1.5, waited
        assert await link.call("PING") == b"PONG", "the next command reconnects"
        redis_server.stop()
        t0 = time.perf_counter()
        for _ in range(2):  # the connection that was open, then a refused connect
            with pytest.raises(ConnectionError):
                await link.call("PING")
        assert time.perf_counter() - t0 < 0.2, "a dead Redis fails at once"
        redis_server.start()
        assert await link.call("PING") == b"PONG"
        await link.close()

    run(go())
