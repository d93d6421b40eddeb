"""A large batch is validated in one inline pass and stored grouped by session, a slice of events
per Lua call (issue #19): what is stored is exactly what storing the events one by one would
leave, every event once, and the pass accepts and refuses exactly what ``Server._event`` does."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time

import httpx
import pytest
import redis

from recops_serve import features
from recops_serve.app import Attribution, BadRequest, Server
from recops_serve.features import NewEvent, SessionStore


def one_by_one(
    events: list[NewEvent], cap: int, stored_before: set
) -> tuple[dict[str, list[bytes]], list[int]]:
    """The reference: each event pushed alone (newest first, trimmed to ``cap``) unless its
    (session, event_id) was stored already."""
    seen, lists, flags = set(stored_before), {}, []
    for ev in events:
        if ev.event_id and (ev.sid, ev.event_id) in seen:
            flags.append(0)
            continue
        seen.add((ev.sid, ev.event_id))
        entry = f"{ev.item_id}:{ev.type}:{ev.ts:.3f}".encode()
        lists[ev.sid] = [entry, *lists.get(ev.sid, [])][:cap]
        flags.append(1)
    return lists, flags


@pytest.mark.integration
@pytest.mark.parametrize("slice_size", [1, 7, 256])
def test_grouped_writes_store_what_one_by_one_would(redis_server, monkeypatch, slice_size):
    """Sessions interleaved, some longer than the list cap, split across slices (slice of 7), repeated
    event_ids inside the batch and from an earlier batch: the lists and flags are the reference's."""
    monkeypatch.setattr(features, "WRITE_SLICE", slice_size)
    rnd = random.Random(slice_size)
    cap = 5
    events = [
        NewEvent(
            f"s{rnd.randrange(12)}",
            n,
            rnd.choice(("view", "add_to_cart", "purchase")),
            1000.0 + n,
            rnd.choice((None, f"e{rnd.randrange(60)}")),
        )
        for n in range(400)
    ]
    earlier = [NewEvent("s3", 9999, "view", 999.0, "e1"), NewEvent("s4", 9998, "view", 999.5, "e2")]
    want_lists, want_flags = one_by_one(earlier + events, cap, set())

    async def go() -> list[int]:
        store = SessionStore(redis_server.url, max_events=cap)
        try:
            assert await store.add(earlier) == [1, 1]
            return await store.add(events)
        finally:
            await store.close()

    assert asyncio.run(go()) == want_flags[2:]
    r = redis.Redis.from_url(redis_server.url)
    got = {k.decode()[len(features.PREFIX) :]: r.lrange(k, 0, -1) for k in r.scan_iter(f"{features.PREFIX}*")}
    assert got == want_lists
    assert 0 < sum(want_flags) < len(want_flags), "both stored and duplicate events were exercised"
    assert all(
        -1 < r.ttl(f"{features.PREFIX}{s}") <= 1800 and r.ttl(f"{features.PREFIX}{s}") > 0 for s in got
    )


def _value(rnd: random.Random):
    return rnd.choice(
        [
            None, True, False, 0, 1, -1, 5, 1 << 63, (1 << 63) - 1, 2.5, math.nan, math.inf, -math.inf, 1e308,
            "", "x", "view", "add_to_cart", "purchase", "VIEW", "a" * 128, "a" * 129, "5", [], ["view"], {}, {"a": 1},
        ]
    )  # fmt: skip


def _event(rnd: random.Random, now: float, tokens: list[str]):
    """A mostly-plausible event with one to three fields perturbed (or not an object at all)."""
    if rnd.random() < 0.03:
        return _value(rnd)
    ev = {
        rnd.choice(("session_id", "user_id")): f"s{rnd.randrange(50)}",
        "item_id": rnd.randrange(1000),
        "type": rnd.choice(("view", "add_to_cart", "purchase")),
    }
    if rnd.random() < 0.5:
        ev["ts"] = now + rnd.uniform(-2, 2) * 86400 if rnd.random() < 0.5 else int(now) - rnd.randrange(100)
    if rnd.random() < 0.5:
        ev["event_id"] = f"e{rnd.randrange(10**6)}"
    if rnd.random() < 0.2:
        ev["price"] = rnd.choice((1.5, 10, -1, "3"))
    if rnd.random() < 0.1:
        ev["attribution_token"] = rnd.choice(tokens)
    for _ in range(rnd.randint(0, 3)):
        key = rnd.choice(("session_id", "user_id", "item_id", "type", "ts", "event_id", "attribution_token"))
        if rnd.random() < 0.2:
            ev.pop(key, None)
        else:
            ev[key] = _value(rnd)
    return ev


def reference(server: Server, ev, now: float, window: float):
    try:
        return server._event(ev, now, window)
    except BadRequest as e:
        return f"refused: {e}"


def one_pass(server: Server, ev, now: float, window: float):
    parsed, credits = [], []
    try:
        server._validate([ev], 0, 1, now, window, parsed, credits)
    except BadRequest as e:
        assert str(e).startswith("events[0]"), e
        return f"refused: {str(e)[len('events[0]') :]}"
    return parsed[0], credits[0]


@pytest.mark.parametrize("window", [86400.0, math.inf])
def test_the_one_pass_validator_accepts_and_refuses_exactly_what_the_rule_does(window):
    """20,000 fuzzed events (wrong types, bools for ints, NaN/inf, out-of-range ids and times,
    over-long ids, purchases, genuine and forged tokens): the inline pass gives the very
    NewEvent (same field types) and credit, or the very error, of ``Server._event``."""
    server = Server()
    server.tokens = Attribution(b"k" * 32, "stable", 3600)
    now = time.time()
    tokens = [server.tokens.issue("model", "v1", now), "model:stable:v1:0:0:forged", "holdout", 7]
    rnd = random.Random(19)
    outcomes = {"plain": 0, "other": 0, "refused": 0}
    for _ in range(20_000):
        ev = _event(rnd, now, tokens)
        want = reference(server, ev, now, window)
        got = one_pass(server, ev, now, window)
        assert got == want, ev
        if isinstance(want, tuple):
            assert [type(x) for x in got[0]] == [type(x) for x in want[0]], ev
            plain = want[0].type != "purchase" and want[1] is None and "attribution_token" not in ev
            outcomes["plain" if plain else "other"] += 1
        else:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 1000, outcomes


N = 10_500  # events that fit in 1 MiB with a float ts and an event_id each


@pytest.mark.integration
def test_a_1_mib_batch_is_stored_completely_and_exactly_once(bundles, redis_server, make_server):
    """A real server and Redis: every event of a ~1 MiB batch (with event_ids, 500 interleaved
    sessions) is in its session's list once, in order (newest first); posting it again stores none."""
    server, _ = make_server({"model_uri": str(bundles["v1"]), "max_session_events": 50}, redis_server.url)
    now = time.time()
    events = [
        {
            "session_id": f"big{n % 500}",
            "item_id": n,
            "type": "view",
            "ts": now - n / 1000,
            "event_id": f"id{n}",
        }
        for n in range(N)
    ]
    body = json.dumps({"events": events}, separators=(",", ":")).encode()
    assert 1_000_000 < len(body) <= 1 << 20
    r = redis.Redis.from_url(redis_server.url)
    want = {f"big{s}": [n for n in reversed(range(s, N, 500))] for s in range(500)}
    for attempt in range(2):
        resp = httpx.post(f"{server.url}/v1/events", content=body, timeout=60)
        assert resp.status_code == 200, resp.text
        assert resp.json() == ({"stored": N} if attempt == 0 else {"stored": 0, "duplicates": N})
        got = {
            sid: [int(e.split(b":")[0]) for e in r.lrange(f"{features.PREFIX}{sid}", 0, -1)] for sid in want
        }
        assert got == want
    assert sum(1 for _ in r.scan_iter(f"{features.DEDUPE}*", count=5000)) == N
