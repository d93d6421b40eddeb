"""Processes the local stand-ins start (recops-serve, Redis; Prometheus in tests): wait until one
answers over HTTP, and stop one without leaving it behind. stdlib only (urllib, as cluster.py): the
launcher needs no HTTP client library."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_http(
    url: str,
    proc: subprocess.Popen | None = None,
    *,
    timeout: float = 60.0,
    log: Path | None = None,
    what: str = "process",
) -> None:
    """Return once ``url`` answers 200; fail early, with the log's tail, if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before {url} answered; log {log}:\n{tail}"
            )
        if http_ok(url):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer {url} in {timeout:.0f}s; log {log}")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def die_with_parent() -> None:
    """``preexec_fn`` for long-lived children (Kafka, Flink): the kernel sends them SIGKILL when the
    process that started them dies (Linux ``PR_SET_PDEATHSIG``), so a killed test run leaves no JVM
    behind. A no-op elsewhere."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
