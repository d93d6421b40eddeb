"""What every benchmark shares: paths, the printed table, process CPU and memory, a cached bundle."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("RECOPS_BENCH_CACHE", Path.home() / ".cache" / "recops" / "bench"))


@contextlib.contextmanager
def serve_processes(
    bundle_path: Path, redis_url: str, variants: list[tuple[str, list[str], dict]]
) -> Iterator[dict[str, tuple[int, subprocess.Popen]]]:
    """One ready ``recops-serve`` per variant (name, extra CLI args, env) on one bundle and Redis:
    {name: (port, process)}; all stopped on exit."""
    from recops_localcluster.procs import wait_http
    from tests.support.redis_server import free_port

    servers: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        for name, extra, env in variants:
            port = free_port()
            servers[name] = (
                port,
                subprocess.Popen(
                    [str(BIN / "recops-serve"), "serve", "--bundle", str(bundle_path), "--redis-url",
                     redis_url, "--port", str(port), "--host", "127.0.0.1", *extra],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ),
            )  # fmt: skip
        for port, _ in servers.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        yield servers
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(10)


def tree_env(env: dict, tree: str | Path) -> dict:
    """``env`` importing the server from another checkout (the code before a change)."""
    return {**env, "PYTHONPATH": f"{Path(tree) / 'inference_image'}:{Path(tree) / 'operator'}"}


def table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


SERVE_COLUMNS = [
    "max req/s (wrk -c64)",
    "server CPU us/req",
    "p50 ms @2000/s",
    "p99 ms @2000/s",
    "achieved/s",
    "errors",
]


def serve_cells(wrk: dict, at: dict) -> list:
    """The SERVE_COLUMNS cells of one serving row: wrk's ceiling, then the open-loop run at 2,000 req/s."""
    return [
        f"{wrk['rps']:,.0f}",
        f"{wrk['cpu_us']:,.0f}",
        at["p50_ms"],
        at["p99_ms"],
        at["achieved_rps"],
        at["errors"],
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (a granian server's worker is a child)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
        todo += children.get(p, [])
    return total


def load() -> str:
    """The load average (1 min) now: other jobs share these 2 cores, so every figure carries it."""
    return f"{os.getloadavg()[0]:.1f}"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bundle(dataset: str = "completejourney") -> Path:
    from recops_serve.bundle import SCHEMA_HASH

    out = CACHE / f"bundle-{dataset}-{SCHEMA_HASH}"  # a schema change retrains
    if not (out / "manifest.json").exists():
        subprocess.run(
            [
                str(BIN / "recops-serve"),
                "train",
                "--events",
                f"builtin:{dataset}",
                "--out",
                str(out),
                "--version",
                "bench",
            ],
            check=True,
            capture_output=True,
        )
    return out


def loadgen(url: str, rate: int, seconds: int = 10) -> dict:
    """Open-loop GETs at ``rate`` from another process (bench/loadgen.py): its JSON summary."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--rate", str(rate), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)
