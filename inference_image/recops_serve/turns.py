"""Cooperative turns for one large event batch on the event loop.

A 1 MiB batch is ~100 ms of CPU; done in one go it would stall every other request. Each stage
(parse, validate, group, write) checks ``Turn.over()`` between small steps and, once the batch has
held the loop ``TURN_SECONDS``, awaits ``Turn.next()`` so every waiting request runs. By time, not
by count: the same bound on a fast idle machine and on busy shared cores.
"""

from __future__ import annotations

import asyncio
import time

#: the longest a large event batch holds the event loop before other requests get a turn: a GET
#: waits behind it two or three times (request, Redis reply, response), so this bounds their p99
TURN_SECONDS = 0.0005


class Turn:
    """A batch's share of the loop: ``over()`` once it held it ``TURN_SECONDS``; ``await next()``."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = time.perf_counter() + TURN_SECONDS

    def over(self) -> bool:
        return time.perf_counter() > self.until

    async def next(self) -> None:
        await asyncio.sleep(0)
        self.until = time.perf_counter() + TURN_SECONDS
