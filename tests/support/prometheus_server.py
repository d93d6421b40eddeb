"""Start a real Prometheus (Debian binary) on a free loopback port for tests, and query it.

Used by dashboard/alert tests (and free for the rollout tests): `with PrometheusServer(tmp, targets) as p:
p.query("up")`. Scrape targets get static labels, which stand in for ServiceMonitor relabelling.
Optionally starts on a TSDB backfilled from OpenMetrics text with `promtool tsdb create-blocks-from`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from recops_localcluster import procs
from recops_localcluster.cluster import free_port


@dataclass
class Target:
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)
    job: str = "recops"


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: list[Target] = (),
        scrape_interval: str = "1s",
        rule_files: list[Path] = (),
        openmetrics: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files)
        self.openmetrics = openmetrics
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def _config(self) -> dict:
        jobs: dict[str, list[dict]] = {}
        for t in self.targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": t.labels})
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": j, "static_configs": sc} for j, sc in jobs.items()],
        }

    def start(self) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus binary not found (apt-get install prometheus)")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        if self.openmetrics is not None:
            src = self.workdir / "backfill.om"
            src.write_text(self.openmetrics)
            subprocess.run(
                ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(data)],
                check=True,
                capture_output=True,
                text=True,
            )
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self._config()))
        self.log = self.workdir / "prometheus.log"
        self._proc = procs.popen_tied(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=30d",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        procs.wait_http(f"{self.url}/-/ready", self._proc, timeout=30, log=self.log, what="prometheus")
        return self

    def stop(self) -> None:
        procs.stop(self._proc)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query; raises on a PromQL error so a bad expression fails loudly."""
        params = {"query": expr, **({"time": at} if at is not None else {})}
        r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            res = self.query(expr)
            if res or time.monotonic() > deadline:
                return res
            time.sleep(0.5)


@contextmanager
def scraping_this_process(workdir: Path) -> Iterator[PrometheusServer]:
    """This process's prometheus_client registry (in-process operator handlers) served on a loopback
    port and scraped by a real Prometheus, as job ``recops-operator``."""
    from prometheus_client import start_http_server

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        with PrometheusServer(workdir, [Target(f"127.0.0.1:{port}", job="recops-operator")]) as prom:
            yield prom
    finally:
        server.shutdown()
        thread.join(5)
