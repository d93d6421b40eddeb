"""A flash sale on the real control plane, shared by tests/autoscaling and ``python -m bench scaling``.

Real pieces only: a LocalCluster with KEDA (operator + metrics adapter behind external.metrics.k8s.io),
the RecOps operator as a process, real recops-serve processes answering real HTTP load on loopback,
a real Prometheus scraping them (labels namespace/recsvc/track as the ServiceMonitor relabels them), so:
load -> Prometheus -> KEDA -> HPA (kube-controller-manager) -> Deployment -> KWOK pods on the ECI node.

KWOK pods serve nothing: the offered load lands on the real servers, which count every request (503s
included) - the offered rate of the service - and the KWOK Deployment is what scales. The 503 share of
``Timeline.shed_share`` is therefore modelled: offered load beyond Ready replicas x per-replica capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recops_localcluster import procs
from recops_localcluster.cluster import free_port

BIN = Path(sys.executable).parent
IMAGE = "registry-vpc.cn-hangzhou.aliyuncs.com/recops/recops-serve:0.1.0"
#: a replica at its autoscaling target still has this much headroom before it sheds (modelled 503s)
CAPACITY_HEADROOM = 1.25


def train_bundle(out: Path, rows: int = 30_000) -> Path:
    if not (out / "manifest.json").exists() and not any(out.glob("*")):
        subprocess.run(
            [
                str(BIN / "recops-serve"),
                "train",
                "--events",
                "builtin:completejourney",
                "--limit-rows",
                str(rows),
                "--out",
                str(out),
                "--version",
                "v1",
            ],
            check=True,
            capture_output=True,
        )
    return out


class Servers:
    """N real recops-serve processes on loopback (no Redis: session features off, fallback on)."""

    def __init__(self, workdir: Path, bundle: Path, n: int = 2):
        self.workdir, self.bundle, self.n = workdir, bundle, n
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []

    def start(self) -> Servers:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "serve.json"
        cfg.write_text(json.dumps({"model_uri": str(self.bundle), "model_version": "v1", "track": "stable"}))
        for i in range(self.n):
            port = free_port()
            log = self.workdir / f"serve-{i}.log"
            p = procs.popen_tied(
                [
                    str(BIN / "recops-serve"),
                    "serve",
                    "--config",
                    str(cfg),
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                ],
                stdout=open(log, "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            self.procs.append(p)
            self.ports.append(port)
            procs.wait_http(f"http://127.0.0.1:{port}/readyz", p, timeout=120, log=log, what="recops-serve")
        return self

    def stop(self) -> None:
        for p in self.procs:
            procs.stop(p)


class OfferedLoad:
    """Open-loop load at a rate that can step (10x in a few seconds) over keep-alive connections to
    every server; a request is issued on schedule whether or not earlier ones finished (offered, not
    served, load). Runs in its own thread with its own event loop."""

    def __init__(self, ports: list[int], conns_per_server: int = 16):
        self.ports, self.conns = ports, conns_per_server
        self._rate = 0.0
        self._ramp: tuple[float, float, float, float] | None = None  # (t0, t1, r0, r1)
        self.sent = 0
        self.codes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rate_at(self, now: float) -> float:
        if self._ramp is None:
            return self._rate
        t0, t1, r0, r1 = self._ramp
        if now >= t1:
            return r1
        return r0 + (r1 - r0) * max(0.0, now - t0) / (t1 - t0)

    def set_rate(self, rps: float, ramp_seconds: float = 0.0) -> float:
        """Move to ``rps`` linearly over ``ramp_seconds``; returns the monotonic time of the change."""
        now = time.monotonic()
        if ramp_seconds <= 0:
            self._ramp, self._rate = None, rps
        else:
            self._ramp = (now, now + ramp_seconds, self.rate_at(now), rps)
            self._rate = rps
        return now

    def start(self) -> OfferedLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    async def _main(self) -> None:
        queue: asyncio.Queue[None] = asyncio.Queue()
        req = b"GET /v1/recommendations?session_id=flash&k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

        async def worker(port: int) -> None:
            reader = writer = None
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(req)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await reader.readexactly(length)
                    code = head.split(b" ", 2)[1].decode()
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    code, writer = "conn-error", None
                self.codes[code] = self.codes.get(code, 0) + 1

        workers = [asyncio.create_task(worker(p)) for p in self.ports for _ in range(self.conns)]
        credit, last = 0.0, time.monotonic()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            credit += self.rate_at(now) * (now - last)
            last = now
            while credit >= 1:
                credit -= 1
                self.sent += 1
                queue.put_nowait(None)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


@dataclass
class Sample:
    t: float
    spec_replicas: int
    ready: int
    hpa_desired: int | None
    created: int = 0  # pods the ReplicaSet has created (Deployment status.replicas)


@dataclass
class Timeline:
    """Deployment and HPA state sampled from the API server every ``period`` seconds."""

    samples: list[Sample] = field(default_factory=list)

    def first(self, pred, after: float) -> float | None:
        return next((s.t for s in self.samples if s.t >= after and pred(s)), None)

    def shed_share(self, load: OfferedLoad, start: float, end: float, per_replica: float) -> float:
        """Modelled 503 share over [start, end]: offered load above Ready x per-replica capacity."""
        offered = shed = 0.0
        pts = [s for s in self.samples if start <= s.t <= end]
        for a, b in itertools.pairwise(pts):
            dt_ = b.t - a.t
            rate = load.rate_at(a.t)
            cap = a.ready * per_replica * CAPACITY_HEADROOM
            offered += rate * dt_
            shed += max(0.0, rate - cap) * dt_
        return shed / offered if offered else 0.0


class Sampler:
    def __init__(self, api, namespace: str, name: str, period: float = 0.5):
        from kubernetes import client

        self.apps = client.AppsV1Api(api)
        self.hpa = client.AutoscalingV2Api(api)
        self.namespace, self.name, self.period = namespace, name, period
        self.timeline = Timeline()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            with contextlib.suppress(Exception):
                d = self.apps.read_namespaced_deployment(self.name, self.namespace)
                desired = None
                with contextlib.suppress(Exception):
                    h = self.hpa.read_namespaced_horizontal_pod_autoscaler(
                        f"keda-hpa-{self.name}", self.namespace
                    )
                    desired = h.status.desired_replicas if h.status else None
                self.timeline.samples.append(
                    Sample(
                        t,
                        int(d.spec.replicas or 0),
                        int(d.status.ready_replicas or 0),
                        desired,
                        int(d.status.replicas or 0),
                    )
                )
            self._stop.wait(max(0.0, self.period - (time.monotonic() - t)))

    def latest(self) -> Sample | None:
        return self.timeline.samples[-1] if self.timeline.samples else None


def service_body(
    name: str,
    per_replica: int,
    *,
    min_replicas: int = 2,
    max_replicas: int = 600,
    schedules: list[dict[str, Any]] | None = None,
    scale_down_stabilization: int = 10,
) -> dict[str, Any]:
    return {
        "apiVersion": "recops.io/v1alpha1",
        "kind": "RecommenderService",
        "metadata": {"name": name},
        "spec": {
            "region": "cn-hangzhou",
            "model": {"uri": "oss://retail-models-cn-hangzhou/home-feed/", "version": "v1"},
            "serving": {
                "image": IMAGE,
                "placement": "eci",
                "replicas": {"min": min_replicas, "max": max_replicas},
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "autoscaling": {
                    "targetCPUUtilization": None,  # no metrics.k8s.io here: the offered rate alone scales
                    "targetRequestsPerSecond": per_replica,
                    "rateWindow": "4s",
                    "scaleDownStabilizationSeconds": scale_down_stabilization,
                    "scaleDownPercent": 100,
                    "scaleDownPeriodSeconds": 5,
                    "schedules": schedules or [],
                },
            },
            "monitoring": {"serviceMonitor": False},
        },
    }


def next_window(lead_seconds: float = 20, tz: str = "UTC", minutes: int = 1) -> tuple[dict[str, str], float]:
    """A one-off sale window opening on the first minute boundary at least ``lead_seconds`` away:
    (start/duration fields, seconds until it opens)."""
    now = dt.datetime.now(dt.UTC)
    start = (now + dt.timedelta(seconds=lead_seconds + 60)).replace(second=0, microsecond=0)
    return {"start": start.strftime("%Y-%m-%dT%H:%M"), "duration": f"{minutes}m", "timezone": tz}, (
        start - now
    ).total_seconds()


class Operator:
    """``recops-operator run`` for one namespace, with the Prometheus URL the KEDA trigger queries."""

    def __init__(self, cluster, namespace: str, log: Path, prometheus_url: str):
        env = {
            **cluster.env,
            "RECOPS_WEBHOOK_PORT": str(free_port()),
            "RECOPS_RESYNC_SECONDS": "30",
            "RECOPS_WINDOW_SECONDS": "5",
            "RECOPS_PROMETHEUS_URL": prometheus_url,
        }
        self.cluster = cluster
        self.proc = procs.popen_tied(
            [str(BIN / "recops-operator"), "run", "--standalone", f"--namespace={namespace}"],
            env=env,
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        procs.stop(self.proc)
        self.cluster.kubectl(
            "delete",
            "validatingwebhookconfiguration",
            "validate.recops.io",
            "--ignore-not-found",
            check=False,
        )


def wait_until(pred, timeout: float, what: str, period: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = pred()
            if last:
                return last
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def pods_on_pool(cluster, namespace: str, name: str, pool: str) -> list[str]:
    """Pods of the service bound to nodes of a local pool (``recops.io/local-pool``: on-demand, spot, eci)."""
    nodes = {
        n["metadata"]["name"]
        for n in json.loads(
            cluster.kubectl("get", "nodes", "-l", f"recops.io/local-pool={pool}", "-o", "json").stdout
        )["items"]
    }
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"recops.io/service={name}", "-o", "json"
    ).stdout
    return [p["metadata"]["name"] for p in json.loads(out)["items"] if p["spec"].get("nodeName") in nodes]


def pods_running_on_eci(cluster, namespace: str, name: str) -> tuple[int, int]:
    """(pods of the service Running and Ready on the ECI virtual node, all pods of the service)."""
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"recops.io/service={name}", "-o", "json"
    ).stdout
    items = json.loads(out)["items"]
    nodes = {
        n["metadata"]["name"]
        for n in json.loads(
            cluster.kubectl("get", "nodes", "-l", "type=virtual-kubelet", "-o", "json").stdout
        )["items"]
    }
    ok = 0
    for p in items:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        if p["status"].get("phase") == "Running" and ready and p["spec"].get("nodeName") in nodes:
            ok += 1
    return ok, len(items)


def env_flag(name: str, default: str) -> str:
    return os.environ.get(name, default)
