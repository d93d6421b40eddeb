"""Loading and training at scale (``python -m bench train-scale``): time and peak RSS per 10 M events.

The shop's data path end to end: ``datasource.load_source`` on Hive-partitioned Parquet, and
``recops-serve train --events --catalog`` on the same files, at 1x, 10x and 50x of a real dataset
(completejourney by default; RECOPS_SCALE_DATASET picks another builtin). The 1x files are
``export_builtin``'s; a k-x copy replicates every day's rows k times with the users renamed
(``<id>~j``) and times shifted by j seconds, and keeps the items and the catalogue as they are, so
the catalogue keeps its real size and only users and events grow. These files are for scale only,
never for quality (the replicas are copies). They live in a temp dir outside the repo and are
removed afterwards.

Every measurement is its own child process; peak RSS is the child's VmHWM (/proc, polled; not
``getrusage``, which would count the pages of this large parent a child is forked from), and includes
the interpreter and imports (the "idle" row: the same child loading nothing); "MB / 10M" is
(peak - idle) per 10 M events. Each cell is capped at RECOPS_SCALE_BUDGET_S seconds (600): a run
past it is stopped (SIGTERM) and shown as "> 600 s" with the stage it reached, and a size whose
estimate (linear in events from the previous size) is above twice the cap is not started; both say
so. A last row loads the 1x files with a wide ``payload`` column added (1 KiB a row, a column the
contract does not read): its peak RSS matches the 1x row, i.e. the column is never materialised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCALES = (1, 10, 50)
PAYLOAD_BYTES = 1024


def _replicate(base: Path, out: Path, k: int, payload: int = 0) -> int:
    """``base`` (an exported events dir) with every day's rows k times: users ``<id>~j``, ts + j s."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = 0
    for day in sorted(p for p in base.iterdir() if p.name.startswith("dt=")):
        t = pa.concat_tables(pq.read_table(f) for f in sorted(day.glob("*.parquet")))
        n = t.num_rows
        j = np.repeat(np.arange(k, dtype=np.int64), n)
        suffix = pa.array(np.where(j > 0, np.char.add("~", j.astype(str)), ""))
        big = pa.concat_tables([t] * k)
        cols = {
            "event_id": pc.add(pc.multiply(pa.array(j), 10**10), big["event_id"]),
            "user_id": pc.binary_join_element_wise(big["user_id"], suffix, ""),
            "session_id": pc.binary_join_element_wise(big["session_id"], suffix, ""),
            "item_id": big["item_id"],
            "type": big["type"],
            "ts": _shift(big["ts"], j),
        }
        if payload:
            pad = "x" * (payload - 24)
            cols["payload"] = pc.binary_join_element_wise(pad, pc.cast(cols["event_id"], pa.string()), "")
        (out / day.name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), out / day.name / "part-0.parquet")
        rows += n * k
    return rows


def _hwm_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Run:
    seconds: float
    peak_mb: float
    out: str
    finished: bool  # False: stopped at the budget

    @property
    def stage(self) -> str:
        """Where a stopped train run was: its last progress line."""
        lines = [x for x in self.out.splitlines() if x.startswith("progress ")]
        return lines[-1].split(" t=")[0].removeprefix("progress ") if lines else "loading"


def _shift(ts, seconds):
    """``ts`` (unix seconds or an Arrow timestamp) plus ``seconds`` (int64 per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(ts.type):
        per_s = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[ts.type.unit]
        return pc.add(ts.cast(pa.int64()), pa.array(seconds * per_s)).cast(ts.type)
    return pc.add(ts, pa.array(seconds).cast(ts.type))


def _child(args: list[str], budget: float) -> Run:
    """One child process (its own session), polled for its peak RSS, stopped past ``budget`` s."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        peak, finished = 0.0, True
        while proc.poll() is None:
            peak = max(peak, _hwm_mb(proc.pid))
            if time.perf_counter() - t0 > budget:
                finished = False
                os.killpg(proc.pid, signal.SIGTERM)  # train: exit 143 at the next step
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if finished and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[1:4])} exited {proc.returncode}: {text.strip().splitlines()[-3:]}"
        )
    return Run(seconds, peak, text, finished)


def _load(events: Path | None, catalog: Path, budget: float) -> tuple[Run, dict]:
    run = _child([sys.executable, "-m", "bench.train_scale", "load", str(events or ""), str(catalog)], budget)
    if not run.finished:
        return run, {}
    info = json.loads(run.out.strip().splitlines()[-1])
    run.seconds, run.peak_mb = info["seconds"], max(run.peak_mb, info["peak_mb"])  # the child's own figures
    return run, info


def _train(events: Path, catalog: Path, out: Path, budget: float) -> Run:
    args = ["--events", str(events), "--catalog", str(catalog), "--out", str(out), "--version", "scale"]
    return _child([str(BIN / "recops-serve"), "train", *args], budget)


def _train_supports_events() -> bool:
    help_text = subprocess.run(
        [str(BIN / "recops-serve"), "train", "--help"], capture_output=True, text=True
    ).stdout
    return "--events" in help_text


def _per_10m(value: float, events: int) -> str:
    return f"{value * 1e7 / events:,.1f}"


class _Cells:
    """Budget bookkeeping for one measured column (load or train): skip, stop, or measure."""

    def __init__(self, what: str, budget: float, idle_mb: float, notes: list[str]) -> None:
        self.what, self.budget, self.idle_mb, self.notes = what, budget, idle_mb, notes
        self.last: tuple[int, float] | None = None  # (events, seconds) of the last finished run

    def skip(self, label: str, n: int) -> bool:
        if self.last is None:
            return False
        estimate = self.last[1] * n / self.last[0]
        if estimate <= 2 * self.budget:
            return False
        self.notes.append(
            f"{label} {self.what}: not run, ~{estimate:,.0f} s estimated from {self.last[0]:,} events "
            f"(over the {self.budget:.0f} s cap; RECOPS_SCALE_BUDGET_S raises it)"
        )
        return True

    def cells(self, label: str, n: int, run: Run) -> list[str]:
        if not run.finished:
            self.notes.append(f"{label} {self.what}: stopped at the {self.budget:.0f} s cap, in {run.stage}")
            return [f"> {self.budget:.0f}", f"{run.peak_mb:,.0f}+", "", ""]
        self.last = (n, run.seconds)
        mb = max(run.peak_mb - self.idle_mb, 0.0)
        return [f"{run.seconds:.1f}", f"{run.peak_mb:,.0f}", _per_10m(run.seconds, n), _per_10m(mb, n)]


def run(dataset: str | None = None, scales: tuple[int, ...] = SCALES, budget_s: float | None = None) -> None:
    from bench.common import table
    from recops_serve.datasource import export_builtin

    dataset = dataset or os.environ.get("RECOPS_SCALE_DATASET", "completejourney")
    budget = budget_s or float(os.environ.get("RECOPS_SCALE_BUDGET_S", "600"))
    work = Path(tempfile.mkdtemp(prefix="recops-train-scale-"))  # under $TMPDIR, never the repo
    notes: list[str] = []
    rows: list[list[str]] = []
    try:
        base = export_builtin(dataset, str(work / "base"))
        base_events, catalog = Path(base["events"]), Path(base["catalog"])
        idle, _ = _load(None, catalog, budget)
        rows.append(["idle (imports only)", "0", "", "", "", f"{idle.peak_mb:,.0f}", "", "", "", "", "", ""])
        loads = _Cells("load", budget, idle.peak_mb, notes)
        trains = _Cells("train", budget, idle.peak_mb, notes)
        train_ok = _train_supports_events()
        if not train_ok:
            notes.append("train: this recops-serve train has no --events yet; train columns left empty")
        for k in scales:
            label = f"{k}x"
            events = base_events if k == 1 else work / f"x{k}" / "events"
            n = base["rows"] if k == 1 else _replicate(base_events, events, k)
            row = [label, f"{n:,}"]
            if loads.skip(label, n):
                rows.append([*row, "", "", "not run", "", "", "", "not run", "", "", ""])
                continue
            load, info = _load(events, catalog, budget)
            row += [f"{info.get('users', 0):,}", f"{info.get('items', 0):,}", *loads.cells(label, n, load)]
            if not train_ok:
                row += ["", "", "", ""]
            elif trains.skip(label, n):
                row += ["not run", "", "", ""]
            else:
                row += trains.cells(label, n, _train(events, catalog, work / f"bundle-{k}", budget))
                shutil.rmtree(work / f"bundle-{k}", ignore_errors=True)
            rows.append(row)
            if k != 1:
                shutil.rmtree(work / f"x{k}", ignore_errors=True)
        wide = work / "payload" / "events"
        n = _replicate(base_events, wide, 1, payload=PAYLOAD_BYTES)
        load, info = _load(wide, catalog, budget)
        label = f"1x + {PAYLOAD_BYTES} B payload column"
        rows.append(
            [
                label,
                f"{n:,}",
                f"{info.get('users', 0):,}",
                f"{info.get('items', 0):,}",
                *loads.cells(label, n, load),
                "",
                "",
                "",
                "",
            ]
        )
        notes.append(
            f"payload: {n * PAYLOAD_BYTES / 2**20:,.0f} MiB in memory if it were read; only the contract's "
            "columns are projected"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table(
        f"train-scale: {dataset} replicated k times (users renamed, ts + j s; same items and catalogue), "
        "Hive dt partitions of Parquet; one child process per cell; MB / 10M = (peak - idle) per 10 M events",
        [
            "size",
            "events",
            "users",
            "items",
            "load s",
            "load peak MB",
            "load s / 10M",
            "load MB / 10M",
            "train s",
            "train peak MB",
            "train s / 10M",
            "train MB / 10M",
        ],
        rows,
    )
    for note in notes:
        print(f"  {note}")


def _child_load(events: str, catalog: str) -> None:
    """Child: ``load_source`` once (or nothing, for the idle baseline), then one JSON line."""
    from recops_serve.datasource import load_source

    t0 = time.perf_counter()
    info: dict = {"users": 0, "items": 0, "rows": 0}
    if events:
        ds = load_source(events, catalog)
        info = {"users": ds.n_users, "items": ds.n_items, "rows": len(ds.item)}
    info.update(seconds=time.perf_counter() - t0, peak_mb=_hwm_mb(os.getpid()))
    print(json.dumps(info))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        _child_load(sys.argv[2], sys.argv[3])
    else:
        run()
