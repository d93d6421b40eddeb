"""Attribution by track and order value: what the rollout's business check and the lift panel read."""

from __future__ import annotations

import pytest

from tests.support.serving import metric

pytestmark = pytest.mark.integration


def test_purchase_value_and_the_answering_track_are_counted_and_checked(bundles, redis_server, make_server):
    key = "one-key-for-every-pod"
    canary, _ = make_server({"model_uri": str(bundles["v1"]), "track": "canary"}, redis_server.url, key)
    stable, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url, key)
    answer = canary.get("/v1/recommendations", user_id="u7").json()
    assert answer["attribution_token"].split(":")[:2] == [answer["arm"], "canary"]
    event = {
        "user_id": "u7",
        "item_id": 1,
        "type": "purchase",
        "attribution_token": answer["attribution_token"],
    }
    for bad, field in (
        ({"price": -1}, "price"),
        ({"price": float("1e300") * 10}, "price"),
        ({"price": "9.99"}, "price"),
        ({"price": 5, "quantity": 0}, "quantity"),
        ({"price": 5, "quantity": 2.5}, "quantity"),
        ({"price": 5, "quantity": True}, "quantity"),
    ):
        r = stable.post("/v1/events", {**event, **bad})
        assert r.status_code == 400 and f"events[0].{field}" in r.json()["error"], (bad, r.text)
    assert stable.post("/v1/events", {**event, "price": 12.5, "quantity": 3}).status_code == 200
    arm = answer["arm"]
    assert (
        metric(stable, "recops_attributed_events_total", arm=arm, type="purchase", answer_track="canary") == 1
    )
    assert metric(stable, "recops_attributed_events_total", answer_track="stable") == 0
    assert metric(stable, "recops_attributed_revenue_total", arm=arm, answer_track="canary") == 37.5
    assert (
        metric(stable, "recops_attributed_revenue_squared_total", arm=arm, answer_track="canary") == 37.5**2
    )
    # a view carries no order value, even with a price
    view = {**event, "type": "view", "price": 99.0}
    assert stable.post("/v1/events", view).status_code == 200
    assert metric(stable, "recops_attributed_revenue_total", arm=arm, answer_track="canary") == 37.5
