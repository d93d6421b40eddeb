""" "Exclude purchased" bans what a shopper bought, not what they looked at.

On a click stream the user's history holds views and carts too; banning all of it took every
item a known shopper had ever viewed out of their recommendations (on the Taobao sample, the next
click is a re-visit of such an item in a tenth of the cases). The trainer now writes the purchases
apart (``user_bought``); a basket bundle, where every event is a purchase, bans the history as before.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recops_contracts.serving import ServeConfig
from recops_serve import ranking
from recops_serve.bundle import ModelBundle
from recops_serve.datasource import load_source
from recops_serve.train import Checkpointer, Params, train_model

T0 = 1_700_000_000.0
VIEWED, BOUGHT = 101, 102


def shop(tmp_path: Path, types: tuple[str, str], others: str = "view") -> ModelBundle:
    """40 shoppers with 8 ``others`` events each over 12 items; then shopper u0 does ``types`` on
    VIEWED and BOUGHT."""
    rows = [
        (f"u{u}", 100 + (u * 5 + j) % 12, others, T0 + 60 * (u * 8 + j)) for u in range(40) for j in range(8)
    ]
    end = rows[-1][3]
    rows += [("u0", VIEWED, types[0], end + 60), ("u0", BOUGHT, types[1], end + 120)]
    table = pa.table(
        {
            "user_id": [r[0] for r in rows],
            "session_id": [f"{r[0]}-s" for r in rows],
            "item_id": pa.array([r[1] for r in rows], pa.int64()),
            "type": [r[2] for r in rows],
            "ts": pa.array([r[3] for r in rows]),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    ds = load_source(str(tmp_path / "events.parquet"))
    params = Params(factors=8, iterations=2, candidates=10)
    return train_model(ds, params, Checkpointer(None, 1e9), "v1", tune=False, log=lambda *_: None)


def answer(b, purchased: bool) -> list[int]:
    cfg = ranking.RankConfig.resolve(b, ServeConfig(exclude={"seen": False, "purchased": purchased}))
    session = ranking.session_items(b, [BOUGHT, VIEWED], cfg.session_length)  # the store's newest first
    r = ranking.answer(b, cfg, b.user_index("u0"), session, 10, now=T0)
    return b.item_ids[r.items].tolist()


def test_a_click_stream_bans_the_purchase_and_keeps_the_viewed_item(tmp_path):
    b = shop(tmp_path, ("view", "purchase"))
    assert b.item_ids[b.user_purchases(b.user_index("u0"))].tolist() == [BOUGHT]
    assert {VIEWED, BOUGHT} <= set(b.item_ids[b.user_history(b.user_index("u0"))].tolist())
    top = answer(b, purchased=True)
    assert BOUGHT not in top and VIEWED in top
    assert {VIEWED, BOUGHT} <= set(answer(b, purchased=False))  # re-purchases allowed: both


def test_a_basket_bundle_bans_the_whole_history_as_before(tmp_path):
    b = shop(tmp_path, ("purchase", "purchase"), others="purchase")
    assert "user_bought" not in b.arrays  # every event a purchase: the history is the purchases
    top = answer(b, purchased=True)
    assert VIEWED not in top and BOUGHT not in top
