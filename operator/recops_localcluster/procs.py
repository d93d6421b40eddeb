"""Processes the local stand-ins start (recops-serve, Redis; Prometheus in tests): wait until one
answers over HTTP, and stop one without leaving it behind. stdlib only (urllib, as cluster.py): the
launcher needs no HTTP client library."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process that started it dies, however it
    dies (SIGKILL included, where no handler or atexit runs). Linux prctl(PR_SET_PDEATHSIG).
    SIGKILL: this is the path where the orderly stop did not run, and a kube-apiserver told to
    shut down gracefully after its etcd is gone can hang for minutes."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def popen_tied(argv: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child dies with this process."""
    return subprocess.Popen(argv, preexec_fn=die_with_parent(), **kwargs)


_cleanups: list[Callable[[], None]] = []
_installed = False
_install_lock = threading.Lock()


def _run_cleanups() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        with contextlib.suppress(Exception):
            fn()


def on_exit(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run ``cleanup`` at interpreter exit and on SIGTERM/SIGHUP (once; newest first). Installs
    handlers only where none are set, and only from the main thread. Returns a function that
    unregisters it (for an orderly stop that already cleaned up)."""
    global _installed
    with _install_lock:
        _cleanups.append(cleanup)
        if not _installed:
            _installed = True
            atexit.register(_run_cleanups)
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    if signal.getsignal(sig) in (signal.SIG_DFL, None):
                        signal.signal(sig, _exit_on_signal)

    def forget() -> None:
        if cleanup in _cleanups:
            _cleanups.remove(cleanup)

    return forget


def _exit_on_signal(signum: int, _frame: object) -> None:
    _run_cleanups()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as without the handler
