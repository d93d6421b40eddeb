"""A large event batch is parsed in pieces (the event loop is never held for one 1 MiB parse), with
exactly the meaning and the errors of parsing the whole body at once."""

from __future__ import annotations

import asyncio
import json
import random

import orjson
import pytest

from recops_serve import app, turns
from recops_serve.app import BadRequest, parse_events


def whole(body: bytes):
    """What one orjson.loads of the body means (the reference), or "refused"."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "refused"
    items = doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
    return items if isinstance(items, list) and items else "refused"


def pieces(body: bytes):
    try:
        return asyncio.run(parse_events(body))
    except BadRequest:
        return "refused"


def batch(n: int, sep: tuple[str, str] = (",", ":")) -> bytes:
    events = [{"session_id": f"s{i}", "item_id": i, "type": "view"} for i in range(n)]
    return json.dumps({"events": events}, separators=sep).encode()


def test_a_large_batch_is_parsed_in_pieces_with_the_loop_free_between(monkeypatch):
    body = batch(18_000)
    assert len(body) < 1 << 20
    want = whole(body)
    loads, ticks = [], []
    real = orjson.loads
    monkeypatch.setattr(turns, "TURN_SECONDS", 0.0)  # a turn after every piece (by time: any machine)
    monkeypatch.setattr(app.orjson, "loads", lambda b: loads.append(len(b)) or real(b))

    async def go():
        async def ticker():
            while True:
                await asyncio.sleep(0)
                ticks.append(len(loads))

        t = asyncio.create_task(ticker())
        items = await parse_events(body)
        t.cancel()
        return items

    assert asyncio.run(go()) == want
    assert len(loads) >= len(body) // app.SPLIT_BYTES, "one piece per SPLIT_BYTES"
    assert max(loads) < 2 * app.SPLIT_BYTES, "no parse of the whole body"
    # (the ticker first runs after the first piece, and nothing needs to run after the last)
    assert len(set(ticks)) >= len(loads) - 2, "other tasks ran between the pieces"


@pytest.mark.parametrize("sep", [(",", ":"), (", ", ": ")])
def test_pieces_mean_what_the_whole_body_means_also_for_hostile_bodies(monkeypatch, sep):
    """Cuts every ~64 bytes (so every body below is cut many times), on well-formed batches, on
    bodies built to put a cut inside a string, a nested object or after a trailing comma, and on
    3,000 random mutations: the answer (the events, or a refusal) is always the whole parse's."""
    monkeypatch.setattr(app, "SPLIT_BYTES", 64)
    good = batch(60, sep)
    cases = [
        good,
        b" \r\n" + good + b" \t\n",
        good[:-2] + b",]}",  # trailing comma
        good[:-1] + b',"x":1}',  # another key after the array
        good[:-2] + b'],"events":[{"a":1}]}',  # the key twice
        b'{"events":[' + b'{"a":"},{"},' * 20 + b"{}]}",  # "}," inside strings
        b'{"events":[' + b'{"p":{"a":1},"b":2},' * 20 + b"{}]}",  # nested objects
        b'{"events":[' + b"{}," * 40 + b"]}",
        b'{"events":[' + b"1," * 60 + b"2]}",
        b'{"events":[]}' + b" " * 100,
        b'{"events":[{"a":1}\x0c]}' + b" " * 80,  # not JSON whitespace
        b'\x0c{"events":[{"a":1}]}' + b" " * 80,
        b'{"events":[{"a":"\xff"}' + b',{"b":1}' * 20 + b"]}",  # invalid UTF-8 in a later piece
    ]
    rnd = random.Random(19)
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            i, ch = rnd.randrange(len(b)), rnd.choice(b'{}[],:" \\ax0\t\n')
            op = rnd.random()
            if op < 0.4:
                b[i] = ch
            elif op < 0.7:
                b.insert(i, ch)
            else:
                del b[i]
        cases.append(bytes(b))
    refused = 0
    for body in cases:
        want = whole(body)
        assert pieces(body) == want, body[:200]
        refused += want == "refused"
    assert 100 < refused < len(cases) - 100, "both outcomes were exercised"
