"""The shop data contract (docs/data.md): real Parquet and CSV files written with pyarrow in tmp_path."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from recops_serve import data
from recops_serve.datasource import DataError, export_builtin, load_source

BIN = Path(sys.executable).parent
DAY = 86400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def events(n: int, **over) -> pa.Table:
    """n valid events: 10 sessions, 7 items, every type, one per minute from T0."""
    cols = {
        "user_id": [f"u{i % 5}" if i % 3 else None for i in range(n)],
        "session_id": [f"s{i % 10}" for i in range(n)],
        "item_id": pa.array([100 + i % 7 for i in range(n)], pa.int64()),
        "type": [("view", "add_to_cart", "purchase")[i % 3] for i in range(n)],
        "ts": pa.array([float(T0 + 60 * i) for i in range(n)]),
    }
    cols.update(over)
    return pa.table(cols)


def write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def message(excinfo) -> str:
    return str(excinfo.value)


# ------------------------------------------------------------------------------ round trip


@pytest.fixture(scope="module")
def completejourney_slice(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = export_builtin("completejourney", str(out), limit_rows=50_000)
    return result, data.load("completejourney").head(50_000)


def interactions(ds) -> list[tuple]:
    rows = zip(
        ds.user_ids[ds.user].tolist(),
        ds.item_ids[ds.item].tolist(),
        ds.ts.tolist(),
        ds.event.tolist(),
        strict=True,
    )
    return sorted(rows)


def test_exported_completejourney_slice_loads_back_as_the_builtin(completejourney_slice):
    result, builtin = completejourney_slice
    out = Path(result["events"]).parent
    assert result["rows"] == 50_000 and result["catalog"] == str(out / "catalog.parquet")
    days = sorted(p.name for p in (out / "events").iterdir())
    assert days[0] == "dt=2017-01-01" and len(days) == 13
    assert all((out / "events" / d / "part-0.parquet").is_file() for d in days)

    ds = load_source(result["events"], result["catalog"])
    assert len(ds.item) == len(builtin.item) == ds.report.rows == 50_000 and ds.report.bad_rows == 0
    assert ds.user_ids.tolist() == builtin.user_ids.tolist()  # households are named users here
    assert ds.item_ids.tolist() == builtin.item_ids.tolist()
    assert interactions(ds) == interactions(builtin)
    mine = [ds.category_names[c] if c >= 0 else None for c in ds.item_category]
    theirs = [builtin.category_names[c] if c >= 0 else None for c in builtin.item_category]
    assert mine == theirs and ds.kind == "baskets" and not ds.sequential
    # completejourney's products table is the catalogue: one purchased product is missing from it
    assert ds.report.items_without_catalog == 1 and ds.report.examples["not_in_catalog"] == [
        "item_id=1093587"
    ]
    assert "not_in_catalog" not in ds.report.bad
    assert ds.item_available.sum() == ds.n_items - 1 and not ds.item_available[ds.item_ids == 1093587][0]
    assert ds.item_titles[ds.item_ids == 1004906][0] == "POTATOES RUSSET (BULK&BAG) (Private)"
    assert np.isnan(ds.item_created_at).all()
    assert ds.report.files[-1] == result["catalog"] and len(ds.report.files) == 14


def test_window_on_exported_partitions_reads_only_the_last_days(completejourney_slice):
    result, builtin = completejourney_slice
    ds = load_source(result["events"], window_days=3)
    # the newest partition is 2017-01-13, so the window is 2017-01-11 00:00 .. 2017-01-14 00:00 UTC
    start, end = 1_484_092_800, 1_484_352_000
    assert ds.ts.min() >= start and ds.ts.max() <= end
    assert len(ds.item) == int(((builtin.ts >= start) & (builtin.ts <= end)).sum()) == ds.report.rows
    assert [f.split("/")[-2] for f in ds.report.files] == [f"dt=2017-01-{d}" for d in (10, 11, 12, 13)]


def test_diginetica_exports_anonymous_sessions_with_synthetic_days(tmp_path):
    if not (data.data_dir() / "diginetica" / "train_sessions.csv.zst").exists():
        pytest.skip("diginetica not present under ../shared/data")
    result = export_builtin("builtin:diginetica", str(tmp_path), limit_rows=30_000)
    builtin = data.load("diginetica").head(30_000)
    ds = load_source(result["events"], result["catalog"])
    assert len(ds.item) == 30_000 and ds.kind == "clicks"
    assert ds.user_ids.tolist() == sorted("s:" + u for u in builtin.user_ids.tolist())
    assert ds.item_ids.tolist() == builtin.item_ids.tolist()
    # 60 s per session from 2016-01-01: same order, ~4.5 days for 6,533 sessions
    assert ds.ts.min() == pytest.approx(1_451_606_400 + builtin.ts.min() * 0.06, abs=1e-6)
    assert np.array_equal(np.argsort(ds.ts, kind="stable"), np.argsort(builtin.ts, kind="stable"))
    assert len(list((tmp_path / "events").iterdir())) == 5


def test_builtin_names_go_through_the_same_window_and_catalogue_code():
    if not (data.data_dir() / "taobao-userbehavior-sample").exists():
        pytest.skip("taobao not present under ../shared/data")
    full = load_source("builtin:taobao")
    assert full.kind == "clicks" and full.report.files == ["builtin:taobao"]
    assert (full.item_category >= 0).all() and len(full.category_names) == 3913
    assert full.item_available.all() and full.report.items_without_catalog == 0
    hour = load_source("builtin:taobao", "builtin:taobao", window_days=1, as_of=float(full.ts.min()) + 3600)
    assert 0 < len(hour.item) < len(full.item) and hour.ts.max() <= full.ts.min() + 3600
    assert hour.report.rows == len(hour.item)
    with pytest.raises(
        DataError, match=r"^builtin:taobao: no events in the last 1 days up to 2017-11-24 01:00:00 UTC$"
    ):
        load_source("builtin:taobao", window_days=1, as_of=float(full.ts.min()) - 2 * DAY)
    with pytest.raises(DataError, match="a built-in catalogue only goes with its own events"):
        load_source("builtin:taobao", "builtin:completejourney")


# ------------------------------------------------------------------------------- formats


def test_csv_plain_gz_and_zst_read_the_same_with_mixed_timestamps_and_anonymous_users(tmp_path):
    text = (
        b"user_id,session_id,item_id,type,ts,payload\n"
        b"u1,s1,10,view,1704067200,x\n"
        b",s2,11,view,2024-01-01T00:01:00Z,y\n"
        b"u1,s1,11,add_to_cart,2024-01-01T08:02:00+08:00,z\n"
        b",s2,10,purchase,2024-01-01 00:03:00.5,w\n"
    )
    (tmp_path / "e.csv").write_bytes(text)
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(text))
    (tmp_path / "e.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    loaded = [load_source(str(tmp_path / f)) for f in ("e.csv", "e.csv.gz", "e.csv.zst")]
    for ds in loaded:
        assert ds.ts.tolist() == [T0, T0 + 60, T0 + 120, T0 + 180.5]
        assert ds.user_ids.tolist() == ["s:s2", "u1"]  # no user_id: the session is the user
        assert ds.user.tolist() == [1, 0, 1, 0] and ds.session.tolist() == [0, 1, 0, 1]
        assert ds.item_ids.tolist() == [10, 11] and ds.event.tolist() == [0, 0, 1, 2]
        assert ds.kind == "clicks" and ds.report.rows == 4 and ds.report.bad_rows == 0
    assert loaded[2].report.files == [str(tmp_path / "e.csv.zst")]


def test_type_map_maps_source_types_and_unknown_types_are_counted(tmp_path):
    f = write(
        events(10, type=["pv", "cart", "buy", "fav", "view", "pv", "pv", "buy", "click", "pv"]),
        tmp_path / "e.parquet",
    )
    raw = load_source(str(f), max_bad_fraction=1.0)
    assert raw.report.bad == {"unknown_type": 9} and len(raw.item) == 1
    assert raw.report.examples["unknown_type"][0].startswith(
        "e.parquet: user_id=None session_id=s0 item_id=100 type=pv"
    )
    ds = load_source(
        str(f), type_map={"pv": "view", "cart": "add_to_cart", "buy": "purchase"}, max_bad_fraction=0.2
    )
    assert ds.report.bad == {"unknown_type": 2} and len(ds.item) == 8
    assert [x.split("type=")[1].split()[0] for x in ds.report.examples["unknown_type"]] == ["fav", "click"]
    assert ds.event.tolist() == [0, 1, 2, 0, 0, 0, 2, 0]
    with pytest.raises(
        DataError, match=r"^type_map: 'fav' -> 'like' is not one of view, add_to_cart, purchase$"
    ):
        load_source(str(f), type_map={"fav": "like"})


def test_timestamps_as_arrow_timestamps_and_numeric_strings_cast_item_ids(tmp_path):
    ts = pa.array([(T0 + 60 * i) * 1000 for i in range(6)], pa.timestamp("ms", tz="UTC"))
    f = write(events(6, ts=ts, item_id=pa.array([str(100 + i) for i in range(6)])), tmp_path / "e.parquet")
    ds = load_source(str(f))
    assert ds.ts.tolist() == [T0 + 60 * i for i in range(6)] and ds.item_ids.tolist() == list(range(100, 106))


def test_oss_uris_resolve_under_the_mounted_root(tmp_path, monkeypatch):
    write(events(6), tmp_path / "bucket" / "shop" / "events" / "part-0.parquet")
    monkeypatch.setenv("RECOPS_OSS_LOCAL_ROOT", str(tmp_path))
    ds = load_source("oss://bucket/shop/events")
    assert len(ds.item) == 6 and ds.report.files == ["oss://bucket/shop/events/part-0.parquet"]
    monkeypatch.delenv("RECOPS_OSS_LOCAL_ROOT")
    with pytest.raises(DataError, match="set RECOPS_OSS_LOCAL_ROOT"):
        load_source("oss://bucket/shop/events")


# ------------------------------------------------------------------- partitions and window


def partitioned(root: Path, days: int, per_day: int = 24) -> None:
    for d in range(days):
        t = [float(T0 + d * DAY + 3600 * h) for h in range(per_day)]
        write(events(per_day, ts=pa.array(t)), root / f"dt=2024-01-{d + 1:02d}" / "part-0.parquet")


def test_window_prunes_old_partitions_before_opening_them(tmp_path):
    root = tmp_path / "events"
    partitioned(root, 10)
    (root / "dt=2024-01-02" / "part-0.parquet").write_bytes(b"not parquet at all")  # read = failure
    (root / "dt=2024-01-05" / "_SUCCESS").write_bytes(b"")
    ds = load_source(str(root), window_days=3)
    # as_of = end of 2024-01-10 -> 2024-01-08 .. 2024-01-10 (dt widened by a day: 01-07 is opened)
    assert ds.ts.min() == T0 + 7 * DAY and ds.ts.max() == T0 + 9 * DAY + 23 * 3600
    assert len(ds.item) == ds.report.rows == 72
    assert [f.split("/")[-2] for f in ds.report.files] == [
        "dt=2024-01-07",
        "dt=2024-01-08",
        "dt=2024-01-09",
        "dt=2024-01-10",
    ]
    with pytest.raises(DataError, match=r"^.*/events/dt=2024-01-02/part-0.parquet: cannot read \("):
        load_source(str(root))


def test_explicit_as_of_filters_ts_inside_the_partitions_it_reads(tmp_path):
    root = tmp_path / "events"
    partitioned(root, 10)
    as_of = float(T0 + 4 * DAY + 12 * 3600)  # 2024-01-05 12:00
    ds = load_source(str(root), window_days=1, as_of=as_of)
    assert ds.ts.min() == as_of - DAY and ds.ts.max() == as_of and len(ds.item) == 25
    assert ds.report.rows == 25  # rows outside the window are neither read nor counted


def test_window_on_unpartitioned_data_ends_at_the_newest_event(tmp_path):
    t = [float(T0 + 3600 * h) for h in range(100)]
    f = write(events(100, ts=pa.array(t)), tmp_path / "e.parquet")
    ds = load_source(str(f), window_days=1)
    assert ds.ts.max() == T0 + 99 * 3600 and ds.ts.min() == T0 + 75 * 3600 and ds.report.rows == 25


def test_empty_window_fails(tmp_path):
    root = tmp_path / "events"
    partitioned(root, 3)
    with pytest.raises(DataError) as e:
        load_source(str(root), window_days=7, as_of=float(T0 + 40 * DAY))
    assert message(e) == f"{root}: no events in the last 7 days up to 2024-02-10 00:00:00 UTC"
    f = write(events(5), tmp_path / "one.parquet")
    with pytest.raises(DataError) as e:
        load_source(str(f), window_days=2, as_of=float(T0 - 10 * DAY))
    assert message(e) == f"{f}: no events in the last 2 days up to 2023-12-22 00:00:00 UTC"


# --------------------------------------------------------------------------------- bad data


def test_missing_required_columns_name_the_file_and_column(tmp_path):
    root = tmp_path / "events"
    write(events(5), root / "dt=2024-01-01" / "a.parquet")
    write(events(5).drop_columns(["ts", "session_id"]), root / "dt=2024-01-02" / "b.parquet")
    with pytest.raises(DataError) as e:
        load_source(str(root))
    assert message(e) == (
        f"{root}/dt=2024-01-02/b.parquet: missing required column session_id, ts (columns: user_id, item_id, type)"
    )


def test_wrong_column_types_fail_with_the_column_and_type(tmp_path):
    cases = {
        "sku": (
            events(4, item_id=["1", "2", "SKU-3", "4"]),
            "column item_id must be int64 or strings of digits, found 'SKU-3'",
        ),
        "float": (
            events(4, item_id=pa.array([1.0, 2.0, None, 4.0])),
            "column item_id has type double, expected int64 (pandas stores int columns with missing values as float: use Int64)",
        ),
        "bool": (
            events(4, ts=pa.array([True] * 4)),
            "column ts has type bool, expected unix seconds, an RFC 3339 string or a timestamp",
        ),
        "session": (
            events(4, session_id=pa.array([1.5] * 4)),
            "column session_id has type double, expected string",
        ),
        "ms": (
            events(4, ts=pa.array([T0 * 1000.0] * 4)),
            "column ts looks like milliseconds (median 1704067200000); the contract is unix seconds",
        ),
    }
    for case, (table, expected) in cases.items():
        f = write(table, tmp_path / f"{case}.parquet")
        with pytest.raises(DataError) as e:
            load_source(str(f))
        assert message(e) == f"{f}: {expected}", case
    (tmp_path / "sku.csv").write_text("session_id,item_id,type,ts\ns1,12,view,1\ns1,A-12,view,2\n")
    with pytest.raises(
        DataError, match=r"sku.csv: column item_id must be int64 or strings of digits, found 'A-12'$"
    ):
        load_source(str(tmp_path / "sku.csv"))


def test_unparseable_and_missing_fields_are_counted_with_examples(tmp_path):
    ts = ["2024-01-01T00:00:00Z", "yesterday", "1704067260", None, "2024-13-45T00:00:00Z"] * 2
    sess = ["s1", "s2", None, "s4", "s5"] * 2
    f = write(events(10, ts=pa.array(ts), session_id=pa.array(sess)), tmp_path / "e.parquet")
    ds = load_source(str(f), max_bad_fraction=0.9)
    assert ds.report.rows == 10 and len(ds.item) == 2
    assert ds.report.bad == {"unparseable_ts": 4, "missing_field": 4}
    assert [x.split("ts=")[1] for x in ds.report.examples["unparseable_ts"]] == [
        "yesterday",
        "2024-13-45T00:00:00Z",
        "yesterday",
    ]
    assert "e.parquet: " in ds.report.examples["missing_field"][0]
    assert "unparseable_ts=4" in ds.report.summary()


def test_thirty_percent_bad_fails_at_the_default_limit_and_passes_at_half(tmp_path):
    ts = pa.array([str(T0 + i) if i % 10 >= 3 else "not a time" for i in range(1000)])
    f = write(events(1000, ts=ts), tmp_path / "events.parquet")
    with pytest.raises(DataError) as e:
        load_source(str(f))
    assert message(e) == f"{f}: 30.0% of rows rejected (unparseable_ts=300 of 1000), above the 10% limit"
    ds = load_source(str(f), max_bad_fraction=0.5)
    assert ds.report.rows == 1000 and ds.report.bad_rows == 300 and len(ds.item) == 700
    assert ds.report.as_dict()["reasons"] == {"unparseable_ts": 300}


def test_duplicate_event_ids_are_dropped_across_files_and_counted(tmp_path):
    root = tmp_path / "events"
    write(events(5, event_id=["e1", "e2", "e3", "e4", "e5"]), root / "a.parquet")
    write(events(5, event_id=["e4", "e5", "e6", None, None]), root / "b.parquet")
    with pytest.raises(DataError, match=r"20.0% of rows rejected \(duplicate_event_id=2 of 10\)"):
        load_source(str(root))  # duplicates are rejected rows: they count toward the limit
    ds = load_source(str(root), max_bad_fraction=0.25)
    assert ds.report.rows == 10 and ds.report.bad == {"duplicate_event_id": 2} and len(ds.item) == 8
    assert [x.split()[0] for x in ds.report.examples["duplicate_event_id"]] == ["event_id=e4", "event_id=e5"]


def test_returns_are_rejected_by_quantity(tmp_path):
    f = write(events(10, quantity=pa.array([1, 2, 0, -1, None, 1, 1, 1, 1, 1])), tmp_path / "e.parquet")
    ds = load_source(str(f), max_bad_fraction=0.2)
    assert ds.report.bad == {"non_positive_quantity": 2} and len(ds.item) == 8


def test_no_files_and_unsupported_files_fail(tmp_path):
    with pytest.raises(DataError) as e:
        load_source(str(tmp_path / "nowhere"))
    assert message(e) == f"{tmp_path}/nowhere: no event files found (.parquet, .csv, .csv.gz or .csv.zst)"
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(DataError, match=r"e.json: unsupported file type"):
        load_source(str(tmp_path / "e.json"))
    write(events(3), tmp_path / "mixed" / "a.parquet")
    (tmp_path / "mixed" / "b.csv").write_text("session_id,item_id,type,ts\n")
    with pytest.raises(DataError, match=r"mixed: mixed file formats \(csv and parquet\)"):
        load_source(str(tmp_path / "mixed"))


# -------------------------------------------------------------------------------- catalogue


def test_catalogue_availability_categories_and_items_without_a_catalogue_row(tmp_path):
    f = write(events(14), tmp_path / "events.parquet")  # items 100..106
    catalog = pa.table(
        {
            "item_id": pa.array([100, 101, 102, 103, 104, 999, 101], pa.int64()),
            "category": ["Dairy > Milk", "Dairy > Milk", "Bakery", None, "7", "Toys", "Dairy > Cheese"],
            "title": ["Milk 1l", None, "Bread", "Mystery", "Thing", "Ball", "Cheddar"],
            "description": ["<b>fresh</b>"] * 7,
            "attributes": ['{"fat": "3.5%"}'] * 7,
            "created_at": ["2023-06-01T00:00:00Z", None, "1700000000", "soon", None, None, None],
            "available": [True, True, False, None, True, True, True],
            "image_uri": ["oss://img/1.jpg"] * 7,
        }
    )
    c = write(catalog, tmp_path / "catalog.parquet")
    ds = load_source(str(f), str(c))
    assert ds.item_ids.tolist() == [100, 101, 102, 103, 104, 105, 106]  # 999 has no events: not in the bundle
    assert ds.category_names == ["7", "Bakery", "Dairy > Cheese", "Dairy > Milk"]
    assert [ds.category_names[i] if i >= 0 else None for i in ds.item_category] == [
        "Dairy > Milk",
        "Dairy > Cheese",
        "Bakery",
        None,
        "7",
        None,
        None,
    ]  # 101 is listed twice: the last row wins
    assert ds.item_titles.tolist() == ["Milk 1l", "Cheddar", "Bread", "Mystery", "Thing", "", ""]
    assert ds.item_available.tolist() == [True, True, False, True, True, False, False]
    assert ds.item_created_at[0] == 1_685_577_600 and ds.item_created_at[2] == 1_700_000_000
    assert np.isnan(ds.item_created_at[[1, 3, 4, 5, 6]]).all()
    assert ds.report.items_without_catalog == 2 and ds.report.examples["not_in_catalog"] == [
        "item_id=105",
        "item_id=106",
    ]
    assert ds.report.bad_rows == 0 and len(ds.item) == 14  # they still train
    assert ds.report.examples["catalog_duplicate_item_id"] == [
        "item_id=101 listed 2 times (the last row wins)"
    ]
    assert "2 items not in the catalogue" in ds.report.summary()


def test_catalogue_csv_with_string_flags_and_a_missing_category_column(tmp_path):
    f = write(events(7), tmp_path / "events.parquet")
    (tmp_path / "catalog.csv").write_text("item_id,category,available\n100,a,false\n101,b,TRUE\n102,,\n")
    ds = load_source(str(f), str(tmp_path / "catalog.csv"))
    assert ds.item_available.tolist()[:3] == [False, True, True] and ds.item_category.tolist()[:3] == [
        0,
        1,
        -1,
    ]
    (tmp_path / "bad.csv").write_text("item_id,available\n100,maybe\n")
    with pytest.raises(DataError) as e:
        load_source(str(f), str(tmp_path / "bad.csv"))
    assert message(e) == f"{tmp_path}/bad.csv: missing required column category (columns: item_id, available)"
    (tmp_path / "flag.csv").write_text("item_id,category,available\n100,a,maybe\n")
    with pytest.raises(DataError, match=r"flag.csv: column available must be true/false, found 'maybe'$"):
        load_source(str(f), str(tmp_path / "flag.csv"))


# ---------------------------------------------------------------------------------- the CLI


def test_export_data_cli_writes_the_layout_or_exits_78(tmp_path):
    bad = subprocess.run(
        [str(BIN / "recops-serve"), "export-data", "builtin:nope", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 78 and "unknown dataset 'nope'" in bad.stderr
    if not (data.data_dir() / "taobao-userbehavior-sample").exists():
        pytest.skip("taobao not present under ../shared/data")
    ok = subprocess.run(
        [
            str(BIN / "recops-serve"),
            "export-data",
            "builtin:taobao",
            "--out",
            str(tmp_path / "tb"),
            "--limit-rows",
            "5000",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(ok.stdout)
    assert result == {
        "events": str(tmp_path / "tb" / "events"),
        "catalog": str(tmp_path / "tb" / "catalog.parquet"),
        "rows": 5000,
    }
    ds = load_source(result["events"], result["catalog"])
    assert len(ds.item) == 5000 and ds.kind == "clicks" and (ds.item_category >= 0).all()


def test_a_prefix_reads_every_file_it_names(tmp_path):
    for day in ("2024-01-01", "2024-01-02"):
        (tmp_path / f"events-{day}.csv").write_text("session_id,item_id,type,ts\ns1,1,purchase,1704067200\n")
    (tmp_path / "other.csv").write_text("nothing,here\n")
    ds = load_source(str(tmp_path / "events-"))
    assert ds.report.rows == 2 and ds.kind == "baskets"
    assert ds.report.files == [str(tmp_path / f"events-{d}.csv") for d in ("2024-01-01", "2024-01-02")]
