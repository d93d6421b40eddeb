"""A real bundle (trained on a completejourney slice) and a real server process with real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from recops_localcluster import procs
from tests.support.redis_server import RedisServer, free_port

BIN = Path(sys.executable).parent


def train(
    out: Path, version: str, rows: int = 120_000, *extra: str, dataset: str = "completejourney"
) -> None:
    subprocess.run(
        [
            str(BIN / "recops-serve"),
            "train",
            "--events",
            f"builtin:{dataset}",
            "--limit-rows",
            str(rows),
            "--out",
            str(out),
            "--version",
            version,
            *extra,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    train(root / "v1", "v1")
    train(root / "v2", "v2", 140_000)
    return {"v1": root / "v1", "v2": root / "v2", "root": root}


class ServerProc:
    def __init__(self, config: Path, redis_url: str | None, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(BIN / "recops-serve"),
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
        ]
        if redis_url:
            args += ["--redis-url", redis_url]
        self.proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        procs.wait_http(f"{self.url}/readyz", self.proc, log=log, what="recops-serve")

    def get(self, path: str, **params):
        return httpx.get(f"{self.url}{path}", params=params, timeout=5)

    def post(self, path: str, body):
        return httpx.post(
            f"{self.url}{path}", content=body if isinstance(body, bytes) else json.dumps(body), timeout=5
        )

    def stop(self) -> None:
        procs.stop(self.proc)


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as r:
        yield r


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerProc] = []

    def start(config: dict, redis_url: str | None) -> tuple[ServerProc, Path]:
        path = tmp_path / f"config-{len(started)}.json"
        path.write_text(json.dumps({"reload_seconds": 0.5, **config}))
        s = ServerProc(path, redis_url, tmp_path / f"server-{len(started)}.log")
        started.append(s)
        return s, path

    yield start
    for s in started:
        s.stop()
