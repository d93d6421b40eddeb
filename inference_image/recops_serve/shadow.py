"""Mirrored (shadow) traffic: a stable pod sends a sample of its answered requests to the candidate
(``shadow_url``) and records how much of the candidate's top K it shares; the candidate's answer
is never returned to anyone.

Off the request path and bounded: a mirror is a task started once our own answer exists; at most
``shadow_max_inflight`` run at once per process and more are dropped (``outcome="dropped"``), so a slow or
dead candidate costs the primary a counter increment, never latency or an error. Each exchange
has one deadline (``TIMEOUT``). Endpoints: recommendations (item ids), search and visual search
(product ids) and retrieve (the product ids of the chunks, first occurrence order). A body over
``MAX_BODY`` (a visual search may upload up to 8 MiB) is not sent twice: it counts as ``dropped``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from urllib.parse import urlparse

import orjson

from recops_contracts.serving import ServeConfig
from recops_serve import metrics as m

TIMEOUT = 1.0
#: largest body mirrored: a 512 px JPEG is ~50 KiB; copying an 8 MiB upload would double its cost
MAX_BODY = 1 << 20
Ids = Callable[[dict], list[int]]
#: (method, path with query, body, content type of the body)
Request = tuple[str, str, bytes, str]


def item_ids(payload: dict) -> list[int]:
    """Ids of ``items`` (recommendations and search answers)."""
    return [i["item_id"] for i in payload["items"]]


def chunk_products(payload: dict) -> list[int]:
    """Product ids of retrieve's ``chunks``, each once, in rank order (a product has many chunks)."""
    return list(dict.fromkeys(c["item_id"] for c in payload["chunks"]))


def overlap(ours: list[int], theirs: list[int]) -> float:
    """Share of the top K both answered, K the shorter answer; two empty answers agree (1.0)."""
    if not ours and not theirs:
        return 1.0
    k = max(1, min(len(ours), len(theirs)))
    return len(set(ours[:k]) & set(theirs[:k])) / k


def _request(host: str, request: Request) -> bytes:
    method, target, body, content_type = request
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _exchange(url: str, request: Request) -> tuple[bytes, bytes]:
    """(status line, body) of one request to the candidate (Connection: close, read to EOF)."""
    dest = urlparse(url)
    reader, writer = await asyncio.open_connection(dest.hostname, dest.port or 80)
    try:
        writer.write(_request(dest.hostname or "", request))
        raw = await reader.read()
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], payload


class Mirror:
    """The in-flight mirrors of one process (strong references: a running task is never collected)."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        self.tasks: set[asyncio.Task] = set()

    def maybe(self, cfg: ServeConfig, endpoint: str, request: Request, ours: list[int], ids: Ids) -> None:
        """Mirror ``request`` to ``cfg.shadow_url`` with probability ``cfg.shadow_percent``/100 (a
        body over ``MAX_BODY`` is dropped); ``ours``: our answer's ids, ``ids`` reads the candidate's."""
        url = cfg.shadow_url
        if not url or not random.random() * 100 < cfg.shadow_percent:
            return
        if len(self.tasks) >= cfg.shadow_max_inflight or len(request[2]) > MAX_BODY:
            m.SHADOW[(endpoint, "dropped")].inc()
            return
        try:
            task = asyncio.get_running_loop().create_task(self._run(url, endpoint, request, ours, ids))
        except Exception:  # the primary answer is ready: the shadow never turns it into an error
            m.SHADOW[(endpoint, "error")].inc()
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, url: str, endpoint: str, request: Request, ours: list[int], ids: Ids) -> None:
        t0 = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(_exchange(url, request), self.timeout)
            if b" 200 " not in status + b" ":
                m.SHADOW[(endpoint, "error")].inc()
                return
            m.SHADOW_OVERLAP[endpoint].observe(overlap(ours, ids(orjson.loads(body))))
            m.SHADOW[(endpoint, "ok")].inc()
        except Exception:  # refused, timed out, not JSON: the candidate's problem, counted
            m.SHADOW[(endpoint, "error")].inc()
        finally:
            m.SHADOW_DELTA[endpoint].observe(time.perf_counter() - t0)
