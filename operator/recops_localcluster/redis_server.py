"""A real redis-server (Debian package) on a free loopback port: the local stand-in for Tair.

Used by ``recops-demo``, the tests and the benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from recops_localcluster import procs
from recops_localcluster.cluster import free_port


class RedisServer:
    """``persist``: append-only file, fsync per write, kept in ``workdir``: a RedisServer started
    again on the same workdir and port is the same Redis after a restart (the "Redis restarts"
    fault; Tair persists too). Default: memory only."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = False):
        self.workdir, self.port, self.persist = workdir, port or free_port(), persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed: run scripts/system-deps.sh (make test does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = procs.popen_tied(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C goes to the owner, which stops it
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        procs.stop(self.proc)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
