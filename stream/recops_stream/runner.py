"""Start the stream job from the project's own environment (tests, bench, demo): the PyFlink venv
and connector jars cached by ``scripts/build-flink.sh``, the job in an embedded mini-cluster in its
own process group (so a SIGKILL of the group is the "job crashed" fault), restart from the newest
retained checkpoint. No pyflink import here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).resolve().with_name("job.py")
FLINK_VERSION = os.environ.get("RECOPS_FLINK_VERSION", "2.3.0")


def flink_home() -> Path:
    """The cached venv + jars; raises with the command that builds them when missing."""
    explicit = os.environ.get("RECOPS_FLINK_HOME")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recops"
    home = Path(explicit) if explicit else cache / f"flink-{FLINK_VERSION}"
    if not list(home.glob(".complete-*")):
        raise RuntimeError(
            f"PyFlink {FLINK_VERSION} missing in {home}: run scripts/build-flink.sh (make test does)"
        )
    return home


def _session_with_lifeline() -> Callable[[], None]:
    """A ``preexec_fn`` (made in the parent, which it remembers): the child gets its own process
    group (the JVM and Python workers die together on killpg) and dies with its parent."""
    from recops_localcluster.procs import die_with_parent

    tie = die_with_parent()

    def preexec() -> None:
        os.setsid()
        tie()

    return preexec


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest completed checkpoint (``<job id>/chk-N`` with ``_metadata``) under ``checkpoints``."""
    done = [p.parent for p in checkpoints.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])), default=None)


class StreamJob:
    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        topic: str,
        redis_url: str,
        archive_dir: Path,
        **options: str | int,
    ):
        self.workdir, self.archive_dir = workdir, archive_dir
        self.checkpoints = workdir / "checkpoints"
        self.rest_port = options.get("rest_port")  # embedded mini-cluster's REST API (metrics), if set
        self.args = [
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--redis-url",
            redis_url,
            "--archive-dir",
            str(archive_dir),
            "--checkpoints",
            str(self.checkpoints),
        ]
        for k, v in options.items():
            self.args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, restore: Path | None = None) -> StreamJob:
        home = flink_home()
        self.workdir.mkdir(parents=True, exist_ok=True)
        jars = sorted(str(j) for j in (home / "jars").glob("*.jar"))
        args = [str(home / "venv" / "bin" / "python"), str(JOB), *self.args, "--jars", *jars]
        # the mini-cluster's working files (RocksDB's instance and native library) beside the job: a
        # SIGKILLed run leaves them where the job's own directory is cleaned, not in /tmp
        (self.workdir / "tmp").mkdir(exist_ok=True)
        args += ["--tmp-dir", str(self.workdir / "tmp")]
        if restore:
            args += ["--restore", restore.as_uri()]
        self.starts += 1
        log = self.workdir / f"job-{self.starts}.log"
        # the JobManager/TaskManager log beside the job, one per start: flink-job-N-python-<host>.log
        # (PyFlink's default is one file inside the cached venv, truncated by the next job)
        env = {**os.environ, "PYTHONPATH": str(JOB.parents[1]), "FLINK_LOG_DIR": str(self.workdir)}
        env["FLINK_IDENT_STRING"] = f"job-{self.starts}"
        env.pop("PYTHONHOME", None)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                preexec_fn=_session_with_lifeline(),
            )
        self.log = log
        return self

    def flink_logs(self) -> list[Path]:
        """The JobManager/TaskManager logs of this job's runs (one file per start of the JVM)."""
        return sorted(self.workdir.glob("flink-*.log"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the job's whole process group (client, JVM, Python workers): a crash, no cleanup."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart_from_checkpoint(self) -> Path | None:
        self.kill()
        ckpt = latest_checkpoint(self.checkpoints)
        self.start(restore=ckpt)
        return ckpt

    stop = kill
