"""Dataset loaders: the published verification figures, and bad rows counted per reason (never dropped silently)."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from recops_serve.data import (
    EVENT_TYPES,
    ITEM_ID_STRIDE,
    data_dir,
    load,
    load_completejourney,
    load_diginetica,
    load_taobao,
)

TAOBAO = "taobao-userbehavior-sample/UserBehavior_sample.csv.zst"


def _need(rel: str) -> None:
    if not (data_dir() / rel).exists():
        pytest.skip(f"{rel} not present under {data_dir()} (../shared/data; set RECOPS_DATA_DIR)")


def test_completejourney_counts_returns_as_rejected():
    ds = load_completejourney()
    assert ds.report.rows == 1_469_307
    assert ds.report.bad["non_positive_quantity"] > 0
    assert len(ds.item) == ds.report.rows - sum(ds.report.bad.values())
    assert set(np.unique(ds.event).tolist()) == {EVENT_TYPES.index("purchase")}
    assert not ds.sequential and (ds.item_category >= 0).mean() > 0.99


def test_diginetica_matches_its_readme():
    _need("diginetica/train_sessions.csv.zst")
    train, test = load_diginetica("train"), load_diginetica("test")
    assert (len(train.item), train.n_users) == (906_140, 186_670)
    assert (len(test.item), test.n_users) == (76_821, 15_963)
    assert train.sequential and sum(train.report.bad.values()) == 0


def test_taobao_matches_its_readme_and_maps_event_types():
    _need(TAOBAO)
    ds = load_taobao()
    assert ds.report.rows == 110_300 and sum(ds.report.bad.values()) == 0
    assert (ds.n_users, ds.n_items, len(ds.category_names)) == (66_454, 84_793, 3_913)
    counts = np.bincount(ds.event, minlength=3).tolist()
    assert counts == [98_361, 6_063 + 3_383, 2_493], "pv -> view, cart+fav -> add_to_cart, buy -> purchase"
    assert ds.sequential and (ds.item_category >= 0).all()


def test_taobao_bad_rows_are_counted_per_reason(tmp_path, monkeypatch):
    _need(TAOBAO)
    raw = zstandard.ZstdDecompressor().stream_reader(open(data_dir() / TAOBAO, "rb")).read()  # noqa: SIM115
    good = raw.decode().splitlines()[:1000]
    bad = ["1,2,3,pv", "x,2,3,pv,1511658000", "1,2,3,like,1511658000", "4,5,6,buy,not-a-time"]
    out = tmp_path / TAOBAO
    out.parent.mkdir(parents=True)
    out.write_bytes(zstandard.ZstdCompressor().compress("\n".join(good + bad).encode()))
    monkeypatch.setenv("RECOPS_DATA_DIR", str(tmp_path))
    ds = load_taobao()
    assert ds.report.rows == 1004 and len(ds.item) == 1000
    assert dict(ds.report.bad) == {
        "missing_fields": 1,
        "non_numeric_id_or_time": 2,
        "unknown_behavior_type": 1,
    }
    assert "4 rejected" in ds.report.summary()


def test_union_is_one_catalogue_of_both_shops_with_nothing_lost_or_merged():
    _need(TAOBAO)
    _need("diginetica/train_sessions.csv.zst")
    tb, dg = load_taobao(), load_diginetica("train")
    u = load("taobao+diginetica")
    assert u.n_items == tb.n_items + dg.n_items == 127_890  # the 100k+ catalogue of the serving bench
    assert u.n_users == tb.n_users + dg.n_users and len(u.item) == len(tb.item) + len(dg.item)
    assert u.report.rows == tb.report.rows + dg.report.rows and u.sequential
    # ids stay apart: the second shop's items are offset, users and categories carry the shop
    second = u.item_ids >= ITEM_ID_STRIDE
    assert set((u.item_ids[second] - ITEM_ID_STRIDE).tolist()) == set(dg.item_ids.tolist())
    assert set(u.item_ids[~second].tolist()) == set(tb.item_ids.tolist())
    assert all(x.startswith(("taobao:", "diginetica:")) for x in u.user_ids[::997].tolist())
    assert len(u.category_names) == len(tb.category_names) and (u.item_category[second] == -1).all()
    # each interaction keeps its item and category; each shop's clock is shifted to end together
    i = int(np.flatnonzero(~second[u.item])[0])
    j = int(np.flatnonzero(tb.item_ids == u.item_ids[u.item[i]])[0])
    assert u.category_names[u.item_category[u.item[i]]] == "taobao:" + tb.category_names[tb.item_category[j]]
    assert u.ts[second[u.item]].max() == u.ts[~second[u.item]].max() == tb.ts.max()
