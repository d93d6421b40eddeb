"""The serving side of the stream signals against a real Redis: one script call returns the session
list, the job's window counts, the sold-out set and the trending list (of the request's category, or
of the session's most viewed one); ranking.answer never returns a sold-out item and moves trending
ones up; the server does both with stream_features on and neither with it off."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import redis

from recops_serve import ranking
from recops_serve import streamfeatures as sf
from recops_serve.bundle import load_bundle
from recops_serve.features import FeatureStoreDown, NewEvent, SessionStore
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


def test_one_round_trip_read(redis_server):
    sf.CACHE = sf._Cache()  # this process's copy of the sold-out set belongs to another Redis

    async def go():
        store = SessionStore(redis_server.url)
        await store.add([NewEvent("s-1", 5, "view", 100.0), NewEvent("s-1", 6, "add_to_cart", 101.0)])
        c = redis.asyncio.Redis.from_url(redis_server.url)
        await c.hset("recops:f:s:s-1", mapping={"v5:3": 2, "v5:4": 1, "as_of": "101.000"})
        await c.sadd("recops:soldout", "7", "9")
        await c.zadd("recops:trend:3", {"8": 5.0, "4": 1.0})
        await c.zadd("recops:trend:4", {"2": 1.0})
        events, sig = await sf.read(store, "s-1", 10, 4)  # the request's category wins
        assert [e.item_id for e in events] == [6, 5]
        assert sig.counts == {"v5:3": 2.0, "v5:4": 1.0, "as_of": 101.0}
        assert sig.soldout == {7, 9} and sig.trending == {2: 1.0} and sig.category == 4
        _, derived = await sf.read(store, "s-1", 10, None)  # else the most viewed over 5 min
        assert derived.category == 3 and list(derived.trending.items()) == [(8, 5.0), (4, 1.0)]
        _, none = await sf.read(store, "s-unknown", 10, None)
        assert none.counts == {} and none.trending == {} and none.category is None
        assert none.soldout == {7, 9}
        # versioned (as the job writes it): the set is sent again only when its token changed
        await c.set("recops:soldout:v", "t1")
        assert (await sf.read(store, "s-1", 10, None))[1].soldout == {7, 9}
        assert sf.CACHE.version == b"t1"
        await c.sadd("recops:soldout", "11")  # a change without a new token is not seen...
        assert (await sf.read(store, "s-1", 10, None))[1].soldout == {7, 9}
        await c.set("recops:soldout:v", "t2")  # ...the job always writes one in the same MULTI
        assert (await sf.read(store, "s-1", 10, None))[1].soldout == {7, 9, 11}
        await c.delete("recops:soldout:v")
        await c.set("recops:soldout", "x")  # not the job's layout: healthy Redis, no signals
        evs, bad = await sf.read(store, "s-1", 10, 3)
        assert [e.item_id for e in evs] == [6, 5] and bad.soldout == set()
        await c.aclose()
        await store.close()
        down = SessionStore(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.05)
        with pytest.raises(FeatureStoreDown):
            await sf.read(down, "s-1", 10, 3)
        await down.close()

    asyncio.run(go())


def test_answer_drops_soldout_and_boosts_trending(bundles):
    b = load_bundle(str(bundles["v1"]))
    rank = ranking.RankConfig.resolve(b)
    cat = int(np.bincount(b.item_category[b.item_category >= 0]).argmax())
    base = ranking.answer(b, rank, None, [], 10, category=cat)
    top, low = int(base.items[0]), int(base.items[-1])
    outside = next(int(i) for i in b.category_popular(cat)[10:] if i not in base.items)
    live = ranking.Live(
        soldout=np.asarray([top], np.int32),
        trending=np.asarray([outside, low], np.int32),
        trend_scores=np.asarray([9.0, 3.0], np.float32),
    )
    got = ranking.answer(b, rank, None, [], 10, category=cat, live=live)
    assert top not in got.items
    assert got.items[:2].tolist() == [outside, low] and got.reasons[:2] == ["trending", "trending"]
    hold = ranking.popularity(b, rank, None, 10, category=cat, live=live)
    assert top not in hold.items  # sold out is never recommended, holdout arm included
    # a session: trending candidates of the blend are boosted, sold-out ones dropped
    session = [int(i) for i in base.items[3:6]]
    plain = ranking.answer(b, rank, None, session, 10)
    hot = int(plain.items[5])
    sig = ranking.Live(
        soldout=plain.items[:1].astype(np.int32),
        trending=np.asarray([hot], np.int32),
        trend_scores=np.asarray([1.0], np.float32),
    )
    boosted = ranking.answer(b, rank, None, session, 10, live=sig)
    assert int(plain.items[0]) not in boosted.items
    pos = boosted.items.tolist().index(hot)
    assert pos < 5 and boosted.reasons[pos] == "trending"


def test_server_reads_them_in_the_served_call(bundles, make_server, redis_server):
    b = load_bundle(str(bundles["v1"]))
    cat = int(np.bincount(b.item_category[b.item_category >= 0]).argmax())
    on, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    off, _ = make_server({"model_uri": str(bundles["v1"]), "stream_features": False}, redis_server.url)

    def items(server, sid):
        r = server.get("/v1/recommendations", session_id=sid, category=cat, k=10)
        assert r.status_code == 200, r.text
        return [(x["item_id"], x["reason"]) for x in r.json()["items"]]

    before = items(on, "s-a")
    assert before == items(off, "s-a")
    top = before[0][0]
    outside = next(int(b.item_ids[i]) for i in b.category_popular(cat)[20:])
    r = redis.Redis.from_url(redis_server.url)
    r.sadd("recops:soldout", top)
    r.zadd(f"recops:trend:{cat}", {outside: 4.0})
    got = items(on, "s-b")
    assert top not in [i for i, _ in got]  # the set is checked with every call: gone at once
    deadline = time.monotonic() + 10  # the trending list: within stream_trend_ttl_seconds (1 s)
    while got[0] != (outside, "trending") and time.monotonic() < deadline:
        time.sleep(0.1)
        got = items(on, "s-b")
    assert got[0] == (outside, "trending") and top not in [i for i, _ in got]
    assert items(off, "s-b") == before  # off: the session list only


def _calls(r: redis.Redis, cmd: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{cmd}", {}).get("calls", 0))


def test_trending_lists_and_the_set_are_not_sent_per_request(redis_server):
    """Per request only the session list, the window counts and the set's version travel; a trending
    list is read once per ``trend_ttl`` (once for all concurrent requests), the set once per version."""
    sf.CACHE = sf._Cache()
    r = redis.Redis.from_url(redis_server.url)
    r.hset("recops:f:s:s-1", mapping={"v5:3": 2, "v5:4": 5})  # s-1 views category 4 most
    r.zadd("recops:trend:4", {"8": 5.0})
    r.sadd("recops:soldout", "7")
    r.set("recops:soldout:v", "t1")

    async def go():
        store = SessionStore(redis_server.url)
        r.execute_command("CONFIG", "RESETSTAT")
        got = await asyncio.gather(*(sf.read(store, "s-1", 10, None, 30.0) for _ in range(20)))
        sigs = [sig for _, sig in got]
        assert {s.category for s in sigs} == {4} and all(s.trending == {8: 5.0} for s in sigs)
        assert all(s.soldout == {7} for s in sigs)
        assert _calls(r, "zrevrange") == 1 and _calls(r, "smembers") == 1 and _calls(r, "get") == 20
        r.zadd("recops:trend:4", {"9": 9.0})  # within the ttl: the kept list, nothing sent
        r.sadd("recops:soldout", "11")
        r.set("recops:soldout:v", "t2")  # a new version: the next call reads the set again
        _, sig = await sf.read(store, "s-1", 10, None, 30.0)
        assert sig.trending == {8: 5.0} and sig.soldout == {7, 11}
        _, sig = await sf.read(store, "s-1", 10, 4, 30.0)  # the request's category: the same list
        assert sig.trending == {8: 5.0} and _calls(r, "zrevrange") == 1 and _calls(r, "smembers") == 2
        await asyncio.sleep(0.1)  # past a short ttl the list is read again, in the same round trip
        _, sig = await sf.read(store, "s-1", 10, 4, 0.05)
        assert sig.trending == {9: 9.0, 8: 5.0} and _calls(r, "zrevrange") == 2
        _, sig = await sf.read(store, "s-1", 10, 4, 0.0)  # 0: with every request
        assert _calls(r, "zrevrange") == 3
        await store.close()

    asyncio.run(go())
