"""A shopper simulator: real held-out sessions replayed against live servers, click by click.

Each simulated shopper walks one real test session (Diginetica): it posts its click, asks for
recommendations, and when the answer contains the item it really clicked next, it clicks that
recommendation: the next click is posted with the answer's ``attribution_token`` (so it counts
for the track and arm that answered). Which server answers follows ``route()``: the test passes
the rollout's live canary weight from the RecommenderService's status, as the router does.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np


def held_out_sessions(limit: int = 5000, min_length: int = 3, seed: int = 0) -> list[list[int]]:
    """Real Diginetica test sessions (external item ids, in click order), shuffled."""
    from recops_serve.data import load_diginetica

    ds = load_diginetica("test")
    order = np.lexsort((ds.ts, ds.user))
    users, items = ds.user[order], ds.item_ids[ds.item[order]]
    cuts = np.flatnonzero(np.diff(users)) + 1
    sessions = [s.tolist() for s in np.split(items, cuts) if s.size >= min_length]
    random.Random(seed).shuffle(sessions)
    return sessions[:limit]


class Shoppers:
    """Background shoppers; ``counts`` tells what happened (answers per server, attributed clicks)."""

    def __init__(
        self,
        sessions: list[list[int]],
        route: Callable[[], str],
        *,
        threads: int = 2,
        pause_s: float = 0.0,
        k: int = 20,
    ):
        self.sessions, self.route, self.pause_s, self.k = sessions, route, pause_s, k
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.next = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def _session(self) -> tuple[int, list[int]]:
        with self.lock:
            n = self.next
            self.next += 1
        return n, self.sessions[n % len(self.sessions)]

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.stop_flag.is_set():
                n, items = self._session()
                self._shop(c, f"sim-{n}", items)

    def _shop(self, c: httpx.Client, sid: str, items: list[int]) -> None:
        token = None  # the answer the next click came from, if it was recommended
        for j, item in enumerate(items):
            if self.stop_flag.is_set():
                return
            event = {"session_id": sid, "item_id": item, "type": "view"}
            if token:
                event["attribution_token"] = token
            c.post(f"{self.route()}/v1/events", json=event).raise_for_status()
            if j + 1 == len(items):
                return
            server = self.route()
            r = c.get(f"{server}/v1/recommendations", params={"session_id": sid, "k": self.k})
            r.raise_for_status()
            answer = r.json()
            self._count(f"answers:{server}")
            shown = {i["item_id"] for i in answer["items"]}
            token = answer["attribution_token"] if items[j + 1] in shown else None
            if token:
                self._count(f"clicks:{server}")
            if self.pause_s:
                time.sleep(self.pause_s)

    def __enter__(self) -> Shoppers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)
