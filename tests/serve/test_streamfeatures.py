"""The serving side of the stream signals against a real Redis: one pipelined read returns the session
list, the job's window counts, the sold-out set and the category's trending list; apply() drops
sold-out items and moves trending ones up."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from recops_serve import streamfeatures as sf
from recops_serve.features import FeatureStoreDown, NewEvent, SessionStore
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


def test_one_round_trip_read_and_apply(redis_server):
    async def go():
        store = SessionStore(redis_server.url)
        await store.add([NewEvent("s-1", 5, "view", 100.0), NewEvent("s-1", 6, "add_to_cart", 101.0)])
        c = store.client
        await c.hset("recops:f:s:s-1", mapping={"v5:3": 2, "as_of": "101.000"})
        await c.sadd("recops:soldout", "7", "9")
        await c.zadd("recops:trend:3", {"8": 5.0, "4": 1.0})
        events, sig = await sf.read(c, "s-1", 10, 3)
        assert [e.item_id for e in events] == [6, 5]
        assert sig.counts == {"v5:3": 2.0, "as_of": 101.0}
        assert sig.soldout == {7, 9} and sig.trending == {8: 5.0, 4: 1.0}
        _, none = await sf.read(c, "s-unknown", 10, None)
        assert none.counts == {} and none.trending == {}
        await store.close()
        down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.05)
        with pytest.raises(FeatureStoreDown):
            await sf.read(down, "s-1", 10, 3)
        await down.aclose()
        return sig

    sig = asyncio.run(go())
    ids, reasons = sf.apply([1, 7, 2, 3, 4, 5, 8, 9], ["model"] * 8, sig, 5)
    assert 7 not in ids and 9 not in ids
    # after dropping 7 and 9: 4 (place 3) and 8 (place 5) move up three places each
    assert ids == [4, 1, 2, 8, 3] and reasons == ["trending", "model", "model", "trending", "model"]
