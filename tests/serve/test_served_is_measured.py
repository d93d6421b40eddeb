"""What is measured is what is served: held-out sessions replayed click by click through a real
server (real Redis) get exactly the answers the offline evaluation scores.

The offline side is ``validation.recommend`` (what ``evaluate`` and the trainer's tuning call) on
the ``Case`` the protocol builds; the server side is ``GET /v1/recommendations`` after each
``POST /v1/events``. Same bundle, same ServeConfig, so the lists must be equal, item for item.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from recops_contracts.serving import ServeConfig
from recops_serve import ranking
from recops_serve.bundle import load_bundle
from recops_serve.validation import Case, recommend

pytestmark = pytest.mark.integration


def _replay(server, b, cfg: ServeConfig, sessions: list[tuple[str, list[int]]], k: int = 20) -> int:
    """Post each session's clicks one by one; after each, compare the server's answer with offline."""
    rank = ranking.RankConfig.resolve(b, cfg)
    compared = 0
    for key, clicks in sessions:
        for n, item in enumerate(clicks):
            assert (
                server.post("/v1/events", {"session_id": key, "item_id": item, "type": "view"}).status_code
                == 200
            )
            served = [
                i["item_id"] for i in server.get("/v1/recommendations", session_id=key, k=k).json()["items"]
            ]
            case = Case(key, tuple(reversed(clicks[: n + 1])), frozenset(), time.time())
            assert served == recommend(b, rank, case, k), (key, n)
            compared += 1
    return compared


def test_completejourney_households_replayed_through_the_server(bundles, redis_server, make_server):
    """Known households (ALS, buy-again) plus their clicks, under the bundle's tuned configuration
    and under explicit rules: both equal the offline call."""
    b = load_bundle(str(bundles["v1"]))
    users = [str(b.user_ids[u]) for u in range(0, 400, 40)]
    sessions = [
        (u, [int(b.item_ids[i]) for i in b.user_history(b.user_index(u))[:6].tolist()] + [int(b.item_ids[3])])
        for u in users
    ]
    cfg = ServeConfig(model_uri=str(bundles["v1"]))
    server, _ = make_server(cfg.model_dump(mode="json", exclude_none=True), redis_server.url)
    assert _replay(server, b, cfg, sessions) == sum(len(c) for _, c in sessions)
    rules = {"exclude_categories": [b.category_names[0]], "max_per_category": 2}
    ruled = ServeConfig.model_validate({**cfg.model_dump(), "rules": rules})
    server2, _ = make_server(ruled.model_dump(mode="json", exclude_none=True), redis_server.url)
    renamed = [(f"r-{u}", clicks) for u, clicks in sessions]  # fresh session keys: anonymous shoppers
    assert _replay(server2, b, ruled, renamed) == sum(len(c) for _, c in renamed)
    # and the rules hold in what was served
    served = server2.get("/v1/recommendations", session_id=renamed[0][0], k=20).json()["items"]
    cats = [int(b.item_category[b.item_index(i["item_id"])]) for i in served]
    assert 0 not in cats and max(cats.count(c) for c in set(cats)) <= 2


def test_diginetica_test_sessions_replayed_through_the_server(diginetica_bundle, redis_server, make_server):
    from recops_serve.data import load_diginetica

    b = load_bundle(str(diginetica_bundle))
    assert b.manifest["serving"]["exclude"]["seen"] is False, (
        "click streams: coming back to an item is common"
    )
    test = load_diginetica("test")
    sessions: list[tuple[str, list[int]]] = []
    for u, sid in enumerate(test.user_ids[:400].tolist()):
        rows = np.flatnonzero(test.user == u)
        rows = rows[np.argsort(test.ts[rows], kind="stable")]
        clicks = [int(x) for x in test.item_ids[test.item[rows]] if b.item_index(int(x)) is not None]
        if len(clicks) >= 12:  # longer than the served session length: the cut must agree too
            sessions.append((f"dg-{sid}", clicks[:14]))
        if len(sessions) == 5:
            break
    assert sessions
    cfg = ServeConfig(model_uri=str(diginetica_bundle))
    server, _ = make_server(cfg.model_dump(mode="json", exclude_none=True), redis_server.url)
    assert _replay(server, b, cfg, sessions) >= 60
