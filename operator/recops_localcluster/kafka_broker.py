"""A real Kafka broker (4.1, KRaft combined broker+controller, no ZooKeeper) on free loopback
ports: the local stand-in for Alibaba Cloud Message Queue for Apache Kafka (alikafka).

The jars come from Maven Central (``scripts/build-kafka.sh``, cached outside the repo under
``~/.cache/recops/kafka-<version>/libs``); Java 17 is the Debian package. Why not a fake or an
embedded Python broker: the server's producer (librdkafka) and Flink's Kafka connector must meet
the real protocol (idempotent producer, transactions-free exactly-once via checkpointed offsets).
The storage is formatted fresh in ``workdir``; the JVM dies with its parent (``PR_SET_PDEATHSIG``).
``stop()``/``start()`` again on the same object restarts the broker on the same ports and data
(the "restart Kafka" fault).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from recops_localcluster import procs
from recops_localcluster.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = os.environ.get("RECOPS_KAFKA_VERSION", "4.1.1")


def kafka_home() -> Path:
    """The cached jars' directory; raises with the command that builds it when missing."""
    explicit = os.environ.get("RECOPS_KAFKA_HOME")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recops"
    home = Path(explicit) if explicit else cache / f"kafka-{KAFKA_VERSION}"
    if not (home / ".complete").exists():
        raise RuntimeError(
            f"Kafka {KAFKA_VERSION} jars missing in {home}: run scripts/build-kafka.sh (make test does)"
        )
    return home


class KafkaBroker:
    def __init__(self, workdir: Path, partitions: int = 4, heap_mb: int = 512):
        self.workdir, self.partitions, self.heap_mb = workdir, partitions, heap_mb
        self.port, self.controller_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java not installed: run scripts/system-deps.sh (make test does)")
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            "-Xms128m",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            str(kafka_home() / "libs" / "*"),
        ]

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "-1",
        }
        cfg = self.workdir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        # log4j2 defaults to ERROR on the console: keep WARN, plus the one INFO line that says ready
        (self.workdir / "log4j2.properties").write_text(
            "appender.out.type=Console\nappender.out.name=out\nappender.out.layout.type=PatternLayout\n"
            "appender.out.layout.pattern=[%d] %p %m (%c)%n\nrootLogger.level=WARN\n"
            "rootLogger.appenderRef.out.ref=out\nlogger.ready.name=kafka.server.KafkaRaftServer\n"
            "logger.ready.level=INFO\n"
        )
        return cfg

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        started_before = (
            log.read_bytes().count(b"Kafka Server started")
            if (log := self.workdir / "kafka.log").exists()
            else 0
        )
        env = {**os.environ, "LOG_DIR": str(self.workdir)}
        if not self._formatted:
            cluster_id = subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            fmt = subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(cfg)],
                capture_output=True,
                text=True,
                env=env,
            )
            if fmt.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {fmt.stderr[-2000:]}")
            self._formatted = True
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=procs.die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kafka exited with {self.proc.returncode}; log {log}:\n{log.read_text()[-3000:]}"
                )
            if log.read_bytes().count(b"Kafka Server started") > started_before:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) == 0:
                        return self
            time.sleep(0.2)
        raise TimeoutError(f"kafka did not start in {timeout:.0f}s; log {log}")

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` (idempotent) with the admin client the server uses too (confluent-kafka)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        fut = admin.create_topics([NewTopic(name, partitions or self.partitions, 1)])[name]
        try:
            fut.result(30)
        except Exception as e:  # already exists is fine
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise

    def stop(self) -> None:
        procs.stop(self.proc, timeout=20)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
