"""The job's pure feature logic (no Flink): windows are whole minutes ending at the newest event,
older buckets fall out, stock goes to sold out, a replay gives the same hash (idempotent)."""

from __future__ import annotations

from recops_stream import features as f


def ev(ts: float, typ: str = "view", cat: int = 1, session: str = "s", user: str | None = None, **kw):
    return {
        "session_id": session,
        "user_id": user,
        "item_id": 7,
        "type": typ,
        "ts": ts,
        "category": cat,
        **kw,
    }


def test_windows_count_views_and_carts_per_category_over_5_and_30_minutes():
    t = 1_700_000_000.0
    events = [ev(t - 20 * 60), ev(t - 60, "add_to_cart"), ev(t, cat=2), ev(t - 10, "purchase", user="u")]
    got = f.recompute(events)
    s = got["recops:f:s:s"]
    assert "v5:1" not in s and s["v30:1"] == "1" and s["c5:1"] == s["c30:1"] == "1" and s["v5:2"] == "1"
    assert s["last_purchase_ts"] == f"{t - 10:.3f}" and s["as_of"] == f"{t:.3f}"
    assert got["recops:f:u:u"] == {"as_of": f"{t - 10:.3f}", "last_purchase_ts": f"{t - 10:.3f}"}
    assert f.recompute(events + events)["recops:f:s:s"]["v30:1"] == "2"  # counts, not a set
    assert f.recompute(list(reversed(events))) == got  # order-independent once all are seen


def test_prune_trending_and_stock():
    t = 1_700_000_000.0
    buckets = {f.minute(t - 31 * 60): {"view:1": 1}, f.minute(t): {"view:1": 2}}
    assert f.prune(buckets, t, 1800) == [f.minute(t - 31 * 60)]
    top = f.trending({f.minute(t): {1: 3.0, 2: 5.0}, f.minute(t - 3600): {3: 99.0}}, t, 1800, 10)
    assert top == [(2, 5.0), (1, 3.0)]
    stock = f.stock_after(None, {"type": "inventory", "stock": 2})
    stock = f.stock_after(stock, {"type": "purchase", "quantity": 2})
    assert stock == 0 and f.stock_after(None, {"type": "purchase"}) is None
    assert f.parse(b'{"session_id": "s", "item_id": "5", "ts": 1}')["item_id"] == 5
    assert f.parse(b"not json") is None and f.parse(b'{"item_id": 1, "ts": 1}') is None
