"""A standalone Flink cluster (one JobManager, one TaskManager: separate JVMs) built from the PyFlink
wheel, for the fault that matters in production: a TaskManager SIGKILLed mid-stream, replaced (as
Kubernetes restarts the pod), and the job recovered by the JobManager from its last checkpoint.

FLINK_HOME is assembled per cluster in its workdir (bin/ copied: config.sh resolves symlinks; lib/ =
the wheel's jars + opt/flink-python; opt/ jars linked one by one), facts from
/work/shared/notes/streaming.md. JM and TM run in the foreground (``start-foreground``), each in its
own process group that dies with its parent. No pyflink import here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from recops_localcluster.cluster import free_port
from recops_stream.runner import JOB, _session_with_lifeline, flink_home


def _pyflink(home: Path) -> Path:
    return next((home / "venv" / "lib").glob("python3*/site-packages/pyflink"))


class FlinkCluster:
    def __init__(self, workdir: Path, slots: int = 1):
        self.workdir, self.slots = workdir, slots
        self.home = workdir / "flink-home"
        self.rest_port = free_port()
        self.jm: subprocess.Popen | None = None
        self.tm: subprocess.Popen | None = None
        self.tm_starts = 0

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _assemble(self) -> None:
        cache = flink_home()
        pkg = _pyflink(cache)
        if self.home.exists():
            return
        shutil.copytree(pkg / "bin", self.home / "bin")
        for sub in ("lib", "opt", "plugins"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            for jar in (pkg / sub).glob("*.jar") if (pkg / sub).exists() else []:
                (self.home / sub / jar.name).symlink_to(jar)
        (self.home / "lib" / "flink-python.jar").symlink_to(next((pkg / "opt").glob("flink-python-*.jar")))
        shutil.copytree(pkg / "conf", self.home / "conf")
        py = cache / "venv" / "bin" / "python"
        conf = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": "900m",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "blob.server.port": free_port(),
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.rpc.port": "0",
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "1300m",
            "heartbeat.interval": 2000,
            "heartbeat.timeout": 8000,  # a killed TM is noticed within seconds, not the default 50 s
            "python.executable": str(py),
            "python.client.executable": str(py),
            "env.log.dir": str(self.workdir / "log"),
            "io.tmp.dirs": str(self.workdir / "tmp"),  # the TaskManager's files (RocksDB's), not /tmp
        }
        # keep the wheel's defaults (env.java.opts.all: the --add-opens Java 17 needs), flattened
        flat: dict[str, object] = {}

        def walk(d: dict, prefix: str = "") -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")
                else:
                    flat[f"{prefix}{k}"] = v

        walk(yaml.safe_load((pkg / "conf" / "config.yaml").read_text()) or {})
        flat.update(conf)
        (self.home / "conf" / "config.yaml").write_text(yaml.safe_dump(flat, default_flow_style=False))

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FLINK_HOME": str(self.home),
            "FLINK_CONF_DIR": str(self.home / "conf"),
            "FLINK_LOG_DIR": str(self.workdir / "log"),
            "PYTHONPATH": str(JOB.parents[1]),
        }

    def _spawn(self, what: str) -> subprocess.Popen:
        log = self.workdir / f"{what}.out"
        with log.open("ab") as out:
            return subprocess.Popen(
                [str(self.home / "bin" / f"{what}.sh"), "start-foreground"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                preexec_fn=_session_with_lifeline(),
            )

    def _get(self, path: str) -> dict:
        import json

        with urllib.request.urlopen(self.rest + path, timeout=3) as r:
            return json.loads(r.read())

    def free_slots(self) -> int:
        try:
            return int(self._get("/overview")["slots-available"])
        except OSError:
            return -1

    def start(self, timeout: float = 120) -> FlinkCluster:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self._assemble()
        self.jm = self._spawn("jobmanager")
        self.start_taskmanager(timeout)
        return self

    def start_taskmanager(self, timeout: float = 120) -> None:
        self.tm_starts += 1
        self.tm = self._spawn("taskmanager")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, KeyError, ValueError):
                if int(self._get("/overview")["taskmanagers"]) >= 1:
                    return
            if self.jm.poll() is not None or self.tm.poll() is not None:
                raise RuntimeError(f"Flink JM/TM exited; logs in {self.workdir}")
            time.sleep(0.5)
        raise TimeoutError(f"no TaskManager registered in {timeout:.0f}s; logs in {self.workdir}")

    def kill_taskmanager(self) -> None:
        """SIGKILL the TaskManager's process group (its JVM and Python workers): no cleanup at all."""
        if self.tm is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.tm.pid, signal.SIGKILL)
            self.tm.wait(10)

    def submit(self, job_args: list[str], jars: list[str]) -> str:
        """``flink run -d -py job.py``; returns the job id."""
        py = str(flink_home() / "venv" / "bin" / "python")
        cmd = [str(self.home / "bin" / "flink"), "run", "-d", "-m", f"127.0.0.1:{self.rest_port}"]
        cmd += ["-pyclientexec", py, "-pyexec", py, "-py", str(JOB)]
        for j in jars:
            cmd += ["-j", j]
        out = subprocess.run(
            [*cmd, *job_args, "--detached", "--jars", *jars],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        for line in out.stdout.splitlines():
            if "JobID" in line:
                return line.split()[-1]
        raise RuntimeError(
            f"flink run failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        )

    def job_state(self, job_id: str) -> str:
        try:
            return self._get(f"/jobs/{job_id}")["state"]
        except OSError:
            return "UNKNOWN"

    def stop(self) -> None:
        for p in (self.tm, self.jm):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
