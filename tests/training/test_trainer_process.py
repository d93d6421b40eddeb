"""End to end where a kubelet cannot be had: the rendered training container, run for real.

The Job's container (command, args, env) is rendered by the operator; this test does the
kubelet's part by hand (downward-API env, ``$(VAR)`` expansion) and runs the real
``recops-serve train`` code as a process: SIGTERM mid-run -> checkpoint + exit 143 (what
the podFailurePolicy ignores); the "replacement pod" (same Job, so same run id and args)
resumes from that checkpoint and publishes the bundle; the operator's artifacts reader
and metrics gate then read the manifest it wrote. Only speed knobs are appended to the
rendered args (``--limit-rows``, ``--iterations``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from recops_contracts.training import CONFIG_ERROR_EXIT_CODES
from recops_operator.api.status import TrainingRun
from recops_operator.training import artifacts, loop, naming
from recops_operator.training.render import pod_failure_policy, render_on_demand_job
from tests.support.training import expand, kubelet_env

pytestmark = pytest.mark.integration

SPEED = ["--limit-rows", "20000", "--iterations", "12"]


def _run_pod(container, job_name, pod_name, root, *, sigterm: bool = False):
    env = kubelet_env(container, job_name, pod_name)
    args = expand(container["args"], env)
    assert args[0] == "train" and container["command"] == ["recops-serve"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recops_serve.train", *args[1:], *SPEED],
        env={**os.environ, **env, "RECOPS_OSS_LOCAL_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    head = ""
    if sigterm:
        # once the dataset is loaded (the handler is installed by then), mid-training
        for line in proc.stdout:
            head += line
            if line.startswith("dataset "):
                break
        proc.send_signal(signal.SIGTERM)  # what the eviction's graceful termination delivers
    out, _ = proc.communicate(timeout=180)
    return proc.returncode, head + out, env


def test_rendered_trainer_checkpoints_on_sigterm_and_the_replacement_resumes(svc, tmp_path):
    # the API minimum (30 s): the SIGTERM checkpoint below does not wait for the interval
    body = svc(checkpoint={"uri": "oss://retail-models-cn-hangzhou/ckpt/home-feed/", "intervalSeconds": 30})
    job = render_on_demand_job(body, "nightly")
    job_name = job["metadata"]["name"]
    (container,) = job["spec"]["template"]["spec"]["containers"]

    code, out, env = _run_pod(container, job_name, f"{job_name}-aaaaa", tmp_path, sigterm=True)
    assert code == 143, out  # preempted: checkpoint written, exit 143 ...
    ignored = [r for r in pod_failure_policy()["rules"] if r["action"] == "Ignore" and "onExitCodes" in r]
    assert code in ignored[0]["onExitCodes"]["values"]  # ... which the Job does not count as a failure
    ckpt_uri = naming.checkpoint_uri("oss://retail-models-cn-hangzhou/ckpt/home-feed/", job_name)
    assert env["RECOPS_CHECKPOINT_URI"] == ckpt_uri
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOPS_OSS_LOCAL_ROOT", str(tmp_path))
        saved = artifacts.last_checkpoint_time(ckpt_uri)
        assert saved, out

        code, out2, _ = _run_pod(container, job_name, f"{job_name}-bbbbb", tmp_path)  # the replacement pod
        assert code == 0, out2
        assert "resuming at stage=" in out2
        manifest = artifacts.read_manifest(naming.bundle_uri(body["spec"]["model"]["uri"], job_name))
    assert manifest["version"] == job_name  # the run id names the model version
    metrics = artifacts.offline_metrics(manifest)
    assert set(metrics) >= {"ndcg@10", "recall@20"}
    run = TrainingRun(name=job_name, version=job_name, phase="Succeeded")
    spec = svc(autoRollout=True, gate={"metrics": ["ndcg@10", "recall@20"], "tolerance": 0.0})["spec"]
    assert (
        loop.decide(spec, run, metrics, {k: v - 0.001 for k, v in metrics.items()}).candidate_version
        == job_name
    )
    assert (
        loop.decide(spec, run, metrics, {k: v + 0.01 for k, v in metrics.items()}).candidate_version is None
    )
    # config error -> exit code the Job fails at once on
    bad = {
        **container,
        "args": [a if a != "builtin:completejourney" else "builtin:nosuchdataset" for a in container["args"]],
    }
    code, out3, _ = _run_pod(bad, job_name + "x", "p", tmp_path)
    assert code in CONFIG_ERROR_EXIT_CODES, out3
