"""Real inference servers for tests and benches: a trained bundle, a ``recops-serve`` process
with real Redis, its metrics, and steady storefront traffic; and the fixtures built on them
(``bundles``, ``redis_server``, ``make_server``), a pytest plugin of tests/conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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


class ServerProc:
    def __init__(
        self,
        config: Path,
        redis_url: str | None,
        log: Path,
        attribution_key: Path | None = None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
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
        if attribution_key:  # the Secret file every pod of a service mounts
            args += ["--attribution-key-file", str(attribution_key)]
        out = open(log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([*args, *extra], stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.wait_http(f"{self.url}/readyz", self.proc, log=log, what="recops-serve")

    def get(self, path: str, **params):
        return httpx.get(f"{self.url}{path}", params=params, timeout=5)

    def post(self, path: str, body):
        return httpx.post(
            f"{self.url}{path}", content=body if isinstance(body, bytes) else json.dumps(body), timeout=5
        )

    def stop(self) -> None:
        procs.stop(self.proc)


def metric(server, name: str, **labels) -> float:
    """Sum of the samples of ``name`` on the server's /metrics whose labels include ``labels``."""
    text = server.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else "")) and (
            not labels or all(f'{k}="{v}"' in line for k, v in labels.items())
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load:
    """Steady background traffic to both arms (the storefront)."""

    def __init__(self, *urls: str):
        self.urls, self.stop_flag = urls, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=5) as c:
            n = 0
            while not self.stop_flag.is_set():
                for u in self.urls:
                    c.get(f"{u}/v1/recommendations", params={"user_id": f"u{n % 50}"})
                n += 1
                time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(10)


# ---- fixtures (registered for every test by tests/conftest.py) --------------------------------
@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    train(root / "v1", "v1")
    train(root / "v2", "v2", 140_000)
    return {"v1": root / "v1", "v2": root / "v2", "root": root}


@pytest.fixture(scope="session")
def diginetica_bundle(tmp_path_factory) -> Path:
    """A tuned bundle on the first 200,000 Diginetica rows, trained once for the tests that serve one
    (``recops-serve train`` as the job runs it; ~2.5 min, so not once per test)."""
    from recops_serve.data import data_dir

    if not (data_dir() / "diginetica" / "train_sessions.csv.zst").exists():
        pytest.skip(f"Diginetica not present at {data_dir()} (../shared/data; set RECOPS_DATA_DIR)")
    out = tmp_path_factory.mktemp("diginetica") / "dg"
    train(out, "dg", 200_000, dataset="diginetica")
    return out


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as r:
        yield r


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerProc] = []

    def start(
        config: dict, redis_url: str | None, attribution_key: str | None = None
    ) -> tuple[ServerProc, Path]:
        """A server on ``config``; ``attribution_key``: the HMAC key, as the Secret file pods mount."""
        n = len(started)
        path = tmp_path / f"config-{n}.json"
        path.write_text(json.dumps({"reload_seconds": 0.5, **config}))
        key_file = None
        if attribution_key is not None:
            key_file = tmp_path / f"attribution-key-{n}"
            key_file.write_text(attribution_key + "\n")
        s = ServerProc(path, redis_url, tmp_path / f"server-{n}.log", key_file)
        started.append(s)
        return s, path

    yield start
    for s in started:
        s.stop()
