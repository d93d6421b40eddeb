"""The operator as a real process against the real control plane, and the kubectl helpers the
e2e tests and benches share (test modules import this, never each other)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from recops_localcluster import procs
from recops_localcluster.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "home-feed.yaml").read_text())


def wait_for(predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except subprocess.CalledProcessError:
            last = None
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def feature_store_secret(cluster, ns) -> None:
    """The Secret the example's serving.featureStore names (the pods' feature-store URL comes from
    it), holding a Redis URL nothing dials."""
    name = EXAMPLE["spec"]["serving"]["featureStore"]["secretRef"]["name"]
    cluster.kubectl("-n", ns, "create", "secret", "generic", name, "--from-literal=url=redis://x")


def get(cluster, ns, *args):
    res = cluster.kubectl("get", *args, "-n", ns, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def apply(cluster, ns, obj, check=True):
    return cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj), check=check)


def service(name="home-feed", **spec_overrides) -> dict:
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] = {"name": name}
    for path, value in spec_overrides.items():
        node = body["spec"]
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return body


class Operator:
    """`recops-operator run` as a subprocess, scoped to one namespace, webhook on loopback."""

    def __init__(self, cluster, namespace: str, log: Path, extra_env: dict[str, str] | None = None):
        self.cluster, self.namespace, self.log = cluster, namespace, log
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        env = {
            **self.cluster.env,
            "RECOPS_WEBHOOK_PORT": str(free_port()),
            "RECOPS_RESYNC_SECONDS": "30",
            **self.extra_env,
        }
        self.proc = procs.popen_tied(
            [
                str(Path(sys.executable).parent / "recops-operator"),
                "run",
                "--standalone",
                f"--namespace={self.namespace}",
            ],
            env=env,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        # Ready when the webhook judges: with no webhook configured yet a dry run passes too, so first
        # wait until the webhook rejects a probe only it can reject, then until it admits a valid one.
        def dry_run(body: dict) -> subprocess.CompletedProcess:
            return self.cluster.kubectl(
                "apply",
                "--dry-run=server",
                "-n",
                self.namespace,
                "-f",
                "-",
                input=json.dumps(body),
                check=False,
            )

        foreign = service("probe", model__uri="oss://probe-cn-shanghai/x/")  # residency: webhook only
        wait_for(
            lambda: "admission webhook" in dry_run(foreign).stderr,
            timeout=60,
            what=f"operator webhook to judge (log {self.log})",
        )
        wait_for(
            lambda: dry_run(service("probe")).returncode == 0,
            timeout=60,
            what=f"operator webhook to admit (log {self.log})",
        )
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        # kopf manages the webhook configuration; do not leave it pointing at a dead port.
        self.cluster.kubectl(
            "delete",
            "validatingwebhookconfiguration",
            "validate.recops.io",
            "--ignore-not-found",
            check=False,
        )


def ready(cluster, ns, name="home-feed"):
    body = get(cluster, ns, "recsvc", name)
    return body if body and (body.get("status") or {}).get("phase") == "Ready" else None
