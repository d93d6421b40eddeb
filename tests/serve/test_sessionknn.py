"""Session kNN: the index, the scoring rules, the served path and its quality on real click streams."""

from __future__ import annotations

import numpy as np
import pytest

from recops_serve import ranking, sessionknn
from recops_serve.bundle import load_bundle
from recops_serve.sessionknn import SessionIndex


def index(sessions: list[list[int]], n_items: int) -> SessionIndex:
    """Sessions given in start-time order; codes are shuffled so build() must order them by time."""
    codes = np.array([7, 3, 9, 1, 5, 8, 2, 6][: len(sessions)])
    sess, item, ts = [], [], []
    for s, clicks in enumerate(sessions):
        for p, x in enumerate(clicks):
            sess.append(codes[s])
            item.append(x)
            ts.append(100.0 * s + p)
    a = sessionknn.build(np.array(sess), np.array(item), np.array(ts), n_items)
    return SessionIndex(**a)


def test_index_lists_the_newest_session_first_with_the_last_position():
    ix = index([[1, 2, 1], [3, 1], [2, 4]], n_items=5)
    assert ix.sess_ptr.tolist() == [0, 3, 5, 7]
    assert ix.sess_items.tolist() == [1, 2, 1, 3, 1, 2, 4], "sessions in time order, clicks in order"
    lo, hi = ix.item_sess_ptr[1], ix.item_sess_ptr[2]
    assert ix.item_sess[lo:hi].tolist() == [1, 0], "item 1: newest session first, one entry per session"
    assert ix.item_sess_pos[lo:hi].tolist() == [1, 2], "the last position of the item in each session"
    assert ix.item_sess_ptr[0] == ix.item_sess_ptr[1], "item 0 never seen"


def ranked(ix: SessionIndex, clicks: list[int]) -> list[int]:
    items, scores = sessionknn.score(ix, clicks)
    return items[np.argsort(-scores, kind="stable")].tolist()


def test_the_latest_click_leads():
    ix = index([[1, 2], [3, 4], [1, 2], [3, 4], [3, 4]], n_items=5)
    # item 3/4 sessions outnumber 1/2 sessions, yet the latest click decides
    top = ranked(ix, [3, 1])
    assert top.index(2) < top.index(4)
    top = ranked(ix, [1, 3])
    assert top.index(4) < top.index(2)


def test_items_near_the_matched_click_score_higher():
    ix = index([[5, 6, 7, 8, 9, 10, 11, 12]], n_items=13)
    items, scores = sessionknn.score(ix, [5])
    s = dict(zip(items.tolist(), scores.tolist(), strict=True))
    assert s[6] > s[8] > s[12] > 0


def test_unknown_items_and_empty_index_give_no_candidates():
    ix = index([[1, 2]], n_items=4)
    assert sessionknn.score(ix, [3])[0].size == 0
    empty = SessionIndex(**sessionknn.build(np.empty(0, int), np.empty(0, int), np.empty(0), 4))
    assert empty.empty and sessionknn.score(empty, [1])[0].size == 0


@pytest.mark.integration
def test_server_answers_an_anonymous_click_stream_from_session_knn(
    diginetica_bundle, redis_server, make_server
):
    out = diginetica_bundle
    b = load_bundle(str(out))
    assert not b.session_index.empty
    server, _ = make_server({"model_uri": str(out), "top_k": 20}, redis_server.url)
    clicks = [int(b.item_ids[b.sess_items[i]]) for i in range(int(b.sess_ptr[1]))][:3]
    assert len(clicks) >= 2
    for c in clicks:
        server.post("/v1/events", {"session_id": "anon-7", "item_id": c, "type": "view"})
    got = server.get("/v1/recommendations", session_id="anon-7").json()["items"]
    rank = ranking.RankConfig.resolve(b)
    expected = ranking.answer(b, rank, None, [b.item_index(c) for c in reversed(clicks)], 20)
    assert [i["item_id"] for i in got] == [int(b.item_ids[i]) for i in expected.items]
    assert got[0]["reason"] in ("session", "repeat")  # the session's own items may rank first
    assert "session" in {i["reason"] for i in got}
