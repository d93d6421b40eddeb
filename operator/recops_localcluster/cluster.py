"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK, on loopback with free ports.

Every component runs in its own process group, logs to ``<run_dir>/logs`` and
is recorded in ``<run_dir>/state.json`` so ``recops-localcluster down`` (or
``LocalCluster.stop``) can stop it from another process. A component that dies
or never becomes ready stops the start with ``ComponentFailed`` naming it and
its log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recops_localcluster import binaries, pki, procs
from recops_localcluster.nodes import NodeSet, node_manifests

STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
START_TIMEOUT = float(os.environ.get("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT", "90").rstrip("s"))


class ComponentFailed(RuntimeError):
    """A control-plane component failed to start or become ready."""

    def __init__(self, component: str, log: Path | None, why: str):
        self.component, self.log = component, log
        tail = ""
        if log and log.exists():
            lines = log.read_text(errors="replace").splitlines()[-15:]
            tail = "\n  " + "\n  ".join(lines)
        super().__init__(f"{component} failed: {why}; read {log}{tail}")


class KubectlFailed(subprocess.CalledProcessError):
    """A kubectl call failed; unlike its base class, its message carries kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()[-2000:]}"


def run_kubectl(
    kubeconfig: Path, args: tuple[str, ...], check: bool, input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    cmd = [str(binaries.find("kubectl")), f"--kubeconfig={kubeconfig}", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise KubectlFailed(res.returncode, cmd, res.stdout, res.stderr)
    return res


def install_crds(cluster: LocalCluster | ExistingCluster, path: Path, timeout: float = 60) -> None:
    """Apply the CRDs under ``path`` and wait until every CRD is Established.

    ``kubectl wait`` fails at once (not after its timeout) while a just-created CRD has no
    conditions yet, so under load a single wait is a flake: retry until ``timeout``.
    """
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    deadline = time.monotonic() + timeout
    while True:
        res = cluster.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s", check=False
        )
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ComponentFailed("crds", None, f"not Established after {timeout:.0f}s: {res.stderr.strip()}")
        time.sleep(0.5)


_ISSUED: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: the kernel may return a port
    it just gave us again while its first taker has not bound it yet (seen as EADDRINUSE)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@dataclass
class LocalCluster:
    """One local control plane. ``start()`` brings it up; ``stop()`` leaves nothing behind."""

    run_dir: Path | None = None
    nodes: NodeSet = field(default_factory=NodeSet)
    log: Callable[[str], None] = lambda msg: None
    pids: dict[str, int] = field(default_factory=dict)
    api_port: int = 0
    etcd_port: int = 0
    #: Also run KEDA (operator + external-metrics adapter behind the external.metrics.k8s.io
    #: APIService), from scripts/build-keda.sh's cache.
    keda: bool = False
    #: False (tests, demo, bench): components die with this process (prctl PDEATHSIG, atexit,
    #: SIGTERM/SIGHUP). True (`recops-localcluster up`): they outlive it until `down`.
    detach: bool = False

    # ---- paths -------------------------------------------------------------------------
    def _in_run_dir(self, name: str) -> Path:
        assert self.run_dir is not None, "the cluster has no run dir before start()"
        return self.run_dir / name

    @property
    def kubeconfig(self) -> Path:
        return self._in_run_dir("admin.kubeconfig")

    @property
    def logs(self) -> Path:
        return self._in_run_dir("logs")

    @property
    def state_file(self) -> Path:
        return self._in_run_dir("state.json")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, the operator) that should talk to this cluster.
        No OSS CSI driver here: object storage is a local directory (``RECOPS_OSS_LOCAL_ROOT``) and the
        KWOK pods run no code, so the operator mounts no bucket claims unless told to."""
        return {"RECOPS_OSS_VOLUMES": "none", **os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> LocalCluster:
        t0 = time.monotonic()
        if self.run_dir is None:
            base = "/dev/shm" if Path("/dev/shm").is_dir() else None
            self.run_dir = Path(tempfile.mkdtemp(prefix="recops-kcp-", dir=base))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if not self.detach:
            self._forget_cleanup = procs.on_exit(self.stop)
        bins = {name: binaries.find(name) for name in binaries.COMPONENTS}
        keys = pki.generate(self.run_dir / "pki")
        self.etcd_port, self.api_port = free_port(), free_port()
        self._write_kubeconfig(keys)
        try:
            self._start_etcd(bins["etcd"])
            self._start_apiserver(bins["kube-apiserver"], keys)
            self._start_kcm(bins["kube-controller-manager"], keys)
            self._start_scheduler(bins["kube-scheduler"])
            self._start_kwok(bins["kwok"])
            self._create_nodes()
            if self.keda:
                self._start_keda(keys)
        except BaseException:
            self.stop(keep_logs=True)  # the error names a log file: keep it to read
            raise
        self.log(f"local cluster ready in {time.monotonic() - t0:.1f}s: KUBECONFIG={self.kubeconfig}")
        return self

    def stop(self, keep_logs: bool = False) -> None:
        """SIGTERM every component's process group in reverse start order, SIGKILL stragglers;
        remove the run dir (etcd data and keys live under /dev/shm), or all but the logs."""
        for name in reversed(list(self.pids)):
            _terminate(self.pids[name])
        self.pids.clear()
        if getattr(self, "_forget_cleanup", None):
            self._forget_cleanup()
            self._forget_cleanup = None
        if self.run_dir and self.run_dir.exists():
            if keep_logs:
                for child in self.run_dir.iterdir():
                    if child.name != "logs":
                        subprocess.run(["rm", "-rf", str(child)], check=False)
            else:
                subprocess.run(["rm", "-rf", str(self.run_dir)], check=False)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- clients -----------------------------------------------------------------------
    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, args, check, input, timeout)

    def api_client(self):  # -> kubernetes.client.ApiClient
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)

    # ---- state file (for `recops-localcluster down` from another process) -----------------
    def _save_state(self) -> None:
        state = {
            "pids": self.pids,
            "kubeconfig": str(self.kubeconfig),
            "api_port": self.api_port,
            "etcd_port": self.etcd_port,
            "run_dir": str(self.run_dir),
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, run_dir: Path) -> LocalCluster:
        state = json.loads((run_dir / "state.json").read_text())
        return cls(
            run_dir=run_dir, pids=state["pids"], api_port=state["api_port"], etcd_port=state["etcd_port"]
        )

    def running(self) -> dict[str, bool]:
        return {name: _alive(pid) for name, pid in self.pids.items()}

    # ---- components --------------------------------------------------------------------
    def _write_kubeconfig(self, keys: pki.Pki) -> None:
        """Admin kubeconfig with inline credentials, so it stays valid if copied elsewhere."""
        import base64

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "recops-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(keys.ca.crt)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(keys.admin.crt),
                        "client-key-data": b64(keys.admin.key),
                    },
                }
            ],
            "contexts": [{"name": "recops-local", "context": {"cluster": "recops-local", "user": "admin"}}],
            "current-context": "recops-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))
        self.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            # own process group (stop() signals the group); tied: dies with us unless detached
            opts = {
                "stdout": out,
                "stderr": subprocess.STDOUT,
                "stdin": subprocess.DEVNULL,
                "start_new_session": True,
                "env": env,
            }
            proc = subprocess.Popen(argv, **opts) if self.detach else procs.popen_tied(argv, **opts)
        self.pids[name] = proc.pid
        self._save_state()
        self.log(f"started {name} (pid {proc.pid}, log {log})")
        return log

    def _wait(self, name: str, log: Path, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(self.pids[name]):
                raise ComponentFailed(name, log, "process exited")
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.25)
        raise ComponentFailed(name, log, f"not ready after {timeout:.0f}s")

    def _start_etcd(self, binary: Path) -> None:
        assert self.run_dir is not None
        url = f"http://127.0.0.1:{self.etcd_port}"
        log = self._spawn(
            "etcd",
            [
                str(binary),
                "--name=recops",
                f"--data-dir={self.run_dir / 'etcd'}",
                "--unsafe-no-fsync=true",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                "--listen-peer-urls=http://127.0.0.1:0",
                "--watch-progress-notify-interval=5s",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._wait("etcd", log, healthy)

    def _start_apiserver(self, binary: Path, keys: pki.Pki) -> None:
        log = self._spawn(
            "kube-apiserver",
            [
                str(binary),
                *_serving_flags(self.api_port, tls=keys.apiserver),
                f"--client-ca-file={keys.ca.crt}",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={keys.sa.crt}",
                f"--service-account-signing-key-file={keys.sa.key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=false",
                f"--requestheader-client-ca-file={keys.ca.crt}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={keys.front_proxy.crt}",
                f"--proxy-client-key-file={keys.front_proxy.key}",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(keys.ca.crt))

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=3, context=ctx) as r:
                return r.status == 200

        self._wait("kube-apiserver", log, ready)
        self._wait(
            "kube-apiserver", log, lambda: self.kubectl("get", "ns", "default", check=False).returncode == 0
        )

    def _start_kcm(self, binary: Path, keys: pki.Pki) -> None:
        log = self._spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                *_serving_flags(delegate_to=self.kubeconfig),  # no port: nothing here scrapes it
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={keys.sa.key}",
                f"--root-ca-file={keys.ca.crt}",
                f"--cluster-signing-cert-file={keys.ca.crt}",
                f"--cluster-signing-key-file={keys.ca.key}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--horizontal-pod-autoscaler-sync-period=5s",
                # Fake nodes heartbeat from one kwok process; on a busy 2-core machine give it slack
                # rather than tainting nodes NotReady and evicting test pods.
                "--node-monitor-grace-period=120s",
                "--v=1",
            ],
        )
        # The ServiceAccount controller creating sa/default proves KCM's controllers run.
        self._wait(
            "kube-controller-manager",
            log,
            lambda: self.kubectl("get", "sa", "default", "-n", "default", check=False).returncode == 0,
        )

    def _start_scheduler(self, binary: Path) -> None:
        assert self.run_dir is not None
        cfg = self.run_dir / "scheduler.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(self.kubeconfig), "qps": 500, "burst": 1000},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        log = self._spawn(
            "kube-scheduler",
            [str(binary), f"--config={cfg}", *_serving_flags(delegate_to=self.kubeconfig), "--v=1"],
        )
        # Liveness over a short grace period: a bad config makes it exit at once.
        self._wait("kube-scheduler", log, _after(1.5))

    def _start_kwok(self, binary: Path) -> None:
        log = self._spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
            ],
        )
        self._wait("kwok", log, _after(1.5))

    def _start_keda(self, keys: pki.Pki) -> None:
        _start_keda_impl(self, keys)

    def _create_nodes(self) -> None:
        manifests = node_manifests(self.nodes)
        if not manifests:
            return
        docs = yaml.safe_dump_all(manifests)
        self.kubectl("apply", "--server-side", "--field-manager=recops-localcluster", "-f", "-", input=docs)

        def all_ready() -> bool:
            res = self.kubectl("wait", "node", "--all", "--for=condition=Ready", "--timeout=2s", check=False)
            if res.returncode != 0:
                return False
            # KCM's node-lifecycle controller lifts the not-ready taint once kwok reports Ready.
            out = self.kubectl("get", "nodes", "-o", "json").stdout
            return not any(
                t.get("key", "").startswith("node.kubernetes.io/")
                for n in json.loads(out)["items"]
                for t in n["spec"].get("taints", [])
            )

        self._wait("kwok", self.logs / "kwok.log", all_ready)


KEDA_NAMESPACE = "keda"
KEDA_METRICS_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
#: waited for before the KEDA operator starts (it exits when the eventing.keda.sh ones are missing)
KEDA_CRDS = ("scaledobjects.keda.sh", "cloudeventsources.eventing.keda.sh")


def _keda_objects(ca_bundle: str, adapter_port: int) -> list[dict]:
    """What the aggregator needs to reach the adapter on loopback: an ExternalName Service (the
    aggregator resolves it itself, no kube-proxy) and the external.metrics.k8s.io APIService."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "127.0.0.1",
                "ports": [{"name": "https", "port": adapter_port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS_APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": ca_bundle,
                "service": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE, "port": adapter_port},
            },
        },
    ]


def _start_keda_impl(cluster: LocalCluster, keys: pki.Pki) -> None:
    import base64

    assert cluster.run_dir is not None
    kdir = binaries.keda_dir()
    certs = pki.issue_pair(
        keys,
        cluster.run_dir / "keda-certs",
        "keda",
        [
            f"{KEDA_METRICS_SERVICE}.{KEDA_NAMESPACE}.svc",
            f"keda-operator.{KEDA_NAMESPACE}.svc",
        ],
    )
    cluster.kubectl("apply", "--server-side", "--field-manager=recops-localcluster", "-f", str(kdir / "crds"))
    deadline = time.monotonic() + 60  # `kubectl wait` errors while the CRD has no conditions yet: retry
    while (
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            *KEDA_CRDS,
            "--timeout=10s",
            check=False,
        ).returncode
        != 0
    ):
        if time.monotonic() > deadline:
            raise ComponentFailed("keda-crds", None, f"{', '.join(KEDA_CRDS)} not Established after 60s")
        time.sleep(0.5)
    grpc_port, adapter_port = free_port(), free_port()
    docs = yaml.safe_dump_all(
        _keda_objects(base64.b64encode(keys.ca.crt.read_bytes()).decode(), adapter_port)
    )
    cluster.kubectl("apply", "--server-side", "--field-manager=recops-localcluster", "-f", "-", input=docs)
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": KEDA_NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "KEDA_HTTP_DEFAULT_TIMEOUT": "3000",
    }
    probe = free_port()
    log = cluster._spawn(
        "keda-operator",
        [
            str(kdir / "keda"),
            f"--kubeconfig={cluster.kubeconfig}",
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{probe}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
            f"--cert-dir={certs}",
            f"--ca-dir={certs}",
            "--enable-cert-rotation=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--zap-log-level=info",
        ],
        env=env,
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=2) as r:
            return r.status == 200

    cluster._wait("keda-operator", log, healthy)
    kc = str(cluster.kubeconfig)
    log = cluster._spawn(
        "keda-adapter",
        [
            str(kdir / "keda-adapter"),
            f"--kubeconfig={kc}",
            f"--lister-kubeconfig={kc}",
            *_serving_flags(adapter_port, tls=pki.Pair.named(certs, "tls"), delegate_to=cluster.kubeconfig),
            f"--cert-dir={certs}",
            f"--metrics-service-address=127.0.0.1:{grpc_port}",
            f"--port={free_port()}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--zap-log-level=info",
        ],
        env=env,
    )

    def served() -> bool:
        res = cluster.kubectl(
            "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1", check=False, timeout=10
        )
        return res.returncode == 0

    cluster._wait("keda-adapter", log, served, timeout=max(START_TIMEOUT, 120))


def _serving_flags(port: int = 0, tls: pki.Pair | None = None, delegate_to: Path | None = None) -> list[str]:
    """How a component serves: on loopback only, at ``port`` (0: no port at all), with the ``tls``
    certificate (else a self-signed one of its own); with a ``delegate_to`` kubeconfig it asks the
    API server who its callers are and what they may do (TokenReview, SubjectAccessReview)."""
    flags = ["--bind-address=127.0.0.1", f"--secure-port={port}"]
    if tls:
        flags += [f"--tls-cert-file={tls.crt}", f"--tls-private-key-file={tls.key}"]
    if delegate_to:
        flags += [f"--authentication-kubeconfig={delegate_to}", f"--authorization-kubeconfig={delegate_to}"]
    return flags


def _after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def _terminate(pid: int, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def existing_cluster() -> Path | None:
    """The kubeconfig of an existing cluster to use instead (envtest's USE_EXISTING_CLUSTER)."""
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() != "true":
        return None
    path = Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
    if not path.exists():
        raise FileNotFoundError(f"USE_EXISTING_CLUSTER=true but kubeconfig {path} does not exist")
    return path


@dataclass
class ExistingCluster:
    """The ``LocalCluster`` client surface over a kubeconfig we did not start."""

    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, args, check, input, timeout)

    def api_client(self):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)
