"""``recops-demo``: the whole system on an embedded local default.

Steps, in order (each prints what it did): start training a bundle on the default
dataset in the background (or reuse the cached one), start the local control plane
(or use ``USE_EXISTING_CLUSTER=true`` + ``KUBECONFIG``), install the CRDs from
``crds/``, start the operator as a real process (admission webhook on loopback),
apply the example RecommenderService and wait until ``kubectl get recsvc`` shows it
Ready; then run the serving config the operator rendered in a local ``recops-serve``
with a local Redis (demo_serving.py), print real recommendations, including one that
changes after a click; run the clickstream pipeline beside it (demo_stream.py: a real Kafka broker and
the Flink job, fed by the server's event log) and print a session feature appearing after a click and
a trending list changing; then wait for Ctrl-C to stop everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recops_localcluster import procs
from recops_localcluster.cluster import (
    ExistingCluster,
    LocalCluster,
    existing_cluster,
    free_port,
    install_crds,
)
from recops_localcluster.demo_serving import DemoServer, ask, cache_dir, start_training
from recops_localcluster.demo_stream import DemoStream
from recops_localcluster.demo_stream import show as show_stream

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "home-feed.yaml"


def say(msg: str) -> None:
    print(f"[recops-demo] {msg}", flush=True)


def start_operator(env: dict[str, str], log: Path) -> subprocess.Popen:
    env = {
        **env,
        "RECOPS_WEBHOOK_PORT": str(free_port()),
        "RECOPS_METRICS_PORT": str(free_port()),
        "RECOPS_RESYNC_SECONDS": "60",
    }
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return procs.popen_tied(
        [str(Path(sys.executable).parent / "recops-operator"), "run", "--standalone", "--all-namespaces"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(cluster, name: str, namespace: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = cluster.kubectl("get", "recsvc", name, "-n", namespace, "-o", "json", check=False)
        if res.returncode == 0:
            body = json.loads(res.stdout)
            if (body.get("status") or {}).get("phase") == "Ready":
                return body
        time.sleep(1)
    raise TimeoutError(f"{namespace}/{name} did not become Ready in {timeout:.0f}s")


def _example_version() -> str:
    """The model version the example RecommenderService serves (the demo trains that version)."""
    import yaml

    return str(yaml.safe_load(EXAMPLE.read_text())["spec"]["model"]["version"])


def main() -> int:
    cluster: LocalCluster | None = None
    operator: subprocess.Popen | None = None
    server: DemoServer | None = None
    stream: DemoStream | None = None
    training = None
    work = Path(tempfile.mkdtemp(prefix="recops-demo-"))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        say("stopping")
        if stream:  # the job first: it writes into the server's Redis
            stream.stop()
        if server:
            server.stop()
        if training and training.proc:  # interrupted before it was published to the cache
            if training.proc.poll() is None:
                training.proc.terminate()
                training.proc.wait(15)
            shutil.rmtree(training.tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        if operator and operator.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
        if cluster:
            cluster.stop()
        say("stopped: no process or port left behind")

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        training = start_training(_example_version(), cache_dir() / "train.log")
        if training.cached:
            say(f"reusing the bundle trained earlier: {training.path}")
        else:
            say(f"training a bundle on completejourney in the background (log {cache_dir() / 'train.log'})")
        kubeconfig = existing_cluster()
        if kubeconfig:
            target = ExistingCluster(kubeconfig)
            say(f"using existing cluster {kubeconfig}")
        else:
            say(
                "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
            )
            cluster = LocalCluster(log=say).start()
            target = cluster
        install_crds(target, ROOT / "crds")
        say("CRDs installed: " + ", ".join(p.name for p in sorted((ROOT / "crds").glob("*.yaml"))))

        log_dir = Path(cluster.run_dir) / "logs" if cluster else Path("/tmp")
        operator = start_operator(target.env, log_dir / "recops-operator.log")
        say(f"operator started (pid {operator.pid}, log {log_dir / 'recops-operator.log'})")
        target.kubectl("create", "namespace", "shop", check=False)
        target.kubectl(
            "-n",
            "shop",
            "create",
            "secret",
            "generic",
            "tair-credentials",
            "--from-literal=url=redis://127.0.0.1:6379/0",
            check=False,
        )
        deadline = time.monotonic() + 60
        while True:  # the webhook must be up before the apply is admitted
            res = target.kubectl("-n", "shop", "apply", "-f", str(EXAMPLE), check=False)
            if res.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"applying {EXAMPLE} failed: {res.stderr.strip()}")
            time.sleep(1)
        wait_ready(target, "home-feed", "shop")
        print(
            target.kubectl("-n", "shop", "get", "recsvc,deploy,svc,hpa,pdb,cronjob,pods", "-o", "wide").stdout
        )

        cm = target.kubectl("-n", "shop", "get", "configmap", "home-feed-serving", "-o", "json")
        config = json.loads(json.loads(cm.stdout)["data"]["config.json"])
        say(
            "the operator rendered configmap/home-feed-serving: "
            f"model {config['model_version']}, top_k {config['top_k']}, holdout {config['holdout_percent']}%"
        )
        trained = not training.cached
        if trained:
            say("waiting for training to finish")
        bundle = training.wait()
        took = (
            f" (trained in {time.monotonic() - training.started:.0f}s, cached for the next run)"
            if trained
            else ""
        )
        say(f"bundle ready: {bundle}{took}")
        stream = DemoStream(work).start_broker()
        say(
            f"Kafka broker (KRaft) at {stream.kafka.bootstrap}, topic {stream.server_config()['kafka_topic']}"
        )
        server = DemoServer(work, {**config, **stream.server_config()}, bundle).start()
        say(f"recops-serve is ready at {server.url} with that config, Redis at {server.redis.url}")
        stream.start_job(server.redis.url)
        say(
            f"Flink job (recops_stream) starting: Kafka -> windowed features, trending -> Redis (log {stream.job.log})"
        )
        shown = ask(server.url, bundle)
        show_stream(server.url, server.redis.url, bundle, stream.job)
        kubectl = Path(sys.executable).parent / "kubectl"
        print(
            "\nEverything is running. In another shell:\n"
            f"  export KUBECONFIG={target.kubeconfig}\n"
            f"  {kubectl} get nodes -L recops.io/capacity,type,topology.kubernetes.io/zone\n"
            f"  {kubectl} -n shop get recsvc\n"
            f"  curl '{server.url}/v1/recommendations?session_id=me&k=10'\n"
            f'  curl -d \'{{"session_id":"me","item_id":{shown["clicked"]},"type":"view"}}\' {server.url}/v1/events\n'
            f"  curl {server.url}/metrics   # API: {server.url}/openapi.json\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        if os.environ.get("RECOPS_DEMO_EXIT") == "1":  # non-interactive runs (tests, CI smoke)
            return 0
        while operator.poll() is None and server.proc.poll() is None:
            time.sleep(1)
        say(f"operator exited with {operator.returncode}; recops-serve with {server.proc.returncode}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    raise SystemExit(main())
