"""Publish the job's committed archive part files as Parquet in the data contract's layout.

The job's SQL filesystem sink (exactly once) stages the click events as JSON lines in
``events/_staging/`` (ignored by readers: leading ``_``): a part file (``part-<uuid>-<subtask>-<n>``)
becomes visible only when the checkpoint that covers it completes, and a restart from a checkpoint
rolls the in-progress file (hidden, ``.part-...``) back to it. Flink's Parquet writer needs Hadoop on
the classpath and its bucket assigners partition by processing time, so this step publishes each
committed file as ``events/dt=YYYY-MM-DD/<part name>.parquet`` (UTC day of ``ts``, one file per day
present in it), then deletes it. The output names derive from the input name and are written
atomically (tmp + rename), so a crash between the two steps only rewrites the same files: no loss,
no duplicate. Lines go through ``features.parse`` (the job's own validity rules).
Library: pyarrow (already the project's Parquet library; the Flink venv has it too).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recops_stream.features import CLICK_TYPES, parse

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("item_id", pa.int64()),
        ("type", pa.string()),
        ("ts", pa.float64()),
        ("quantity", pa.float64()),
        ("price", pa.float64()),
        ("category", pa.int64()),
        ("attribution_token", pa.string()),
    ]
)


def committed(events_dir: Path) -> list[Path]:
    staging = events_dir / "_staging"
    if not staging.exists():
        return []
    # committed part files: ``part-<uuid>-<subtask>-<n>``; in-progress ones are hidden (``.part-...``)
    return sorted(p for p in staging.rglob("part-*") if p.is_file() and not p.name.startswith("."))


def publish(part: Path, events_dir: Path) -> int:
    rows: dict[str, list[dict]] = {}
    for line in part.read_text().splitlines():
        ev = parse(line) if line.strip() else None
        if ev is not None and ev["type"] in CLICK_TYPES:  # the topic's click events, as the job reads them
            day = datetime.fromtimestamp(float(ev["ts"]), UTC).strftime("%Y-%m-%d")
            if ev.get("event_id") is not None:
                ev["event_id"] = str(ev["event_id"])
            rows.setdefault(day, []).append(ev)
    for day, evs in rows.items():
        cols = {n: [ev.get(n) for ev in evs] for n in SCHEMA.names}
        table = pa.table(cols, schema=SCHEMA)
        out = events_dir / f"dt={day}" / f"{part.parent.name}-{part.stem}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out)
    part.unlink()
    return sum(len(v) for v in rows.values())


def compact(events_dir: Path) -> int:
    """Publish every committed part file; returns the number of events published."""
    return sum(publish(p, events_dir) for p in committed(events_dir))


def read_archive(events_dir: Path) -> pa.Table:
    files = sorted(p for p in events_dir.glob("dt=*/*.parquet") if not p.name.startswith("."))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in files])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="publish the stream job's committed archive files as Parquet")
    p.add_argument("events_dir", help="the archive's events/ directory: a path, file:// or oss:// (mounted)")
    p.add_argument("--interval", type=float, default=0, help="repeat every N seconds (0: once)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Compact once or every ``--interval`` s; ``oss://`` resolves through the mounted bucket
    (recops_contracts.storage), as in the operator's archive CronJob."""
    from recops_contracts import storage

    a = parser().parse_args(argv)
    try:
        events_dir = storage.local_path(a.events_dir)
    except storage.StorageError as e:  # one line (the termination message), exit 1
        raise SystemExit(f"recops_stream.archive: {e}") from None
    while True:
        compact(events_dir)
        if not a.interval:
            return
        time.sleep(a.interval)


if __name__ == "__main__":
    main()
