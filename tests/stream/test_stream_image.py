"""The stream image (stream/Dockerfile) carries what the rendered FlinkDeployment runs: the job at
``JOB_PATH``, importable from ``IMPORT_PATHS``, on the ``PYTHON_PATH`` venv, with the versions the
tests run the job with (scripts/build-flink.sh) and the Flink minor the spec defaults to. Read, not
built: the machine has no registry to pull the base images from."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from recops_contracts import stream as contract
from recops_operator.api.models import StreamFeatures
from tests.operator.test_render_stream import flink, spec

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "stream" / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#"))
    )
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in text.splitlines() if ln.strip()]


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in _instructions() if op == "ARG" and "=" in a)


def _build_flink_default(var: str) -> str:
    script = (ROOT / "scripts" / "build-flink.sh").read_text()
    return re.search(rf"^{var}=\$\{{[A-Z_]+:-([^}}]+)\}}$", script, re.M).group(1)


def test_the_job_and_its_contracts_sit_where_the_flink_deployment_runs_them():
    copies = {
        src: dst
        for op, a in _instructions()
        if op == "COPY" and "--from" not in a
        for src, dst in [a.split()]
    }
    job_dir = PurePosixPath(contract.JOB_PATH).parent
    assert copies["stream/recops_stream"] == str(job_dir)
    assert (ROOT / "stream/recops_stream" / PurePosixPath(contract.JOB_PATH).name).is_file()
    contracts_dir = PurePosixPath(copies["operator/recops_contracts"])
    assert contracts_dir.name == "recops_contracts" and str(contracts_dir.parent) in contract.IMPORT_PATHS
    assert str(job_dir.parent) in contract.IMPORT_PATHS
    env = " ".join(a for op, a in _instructions() if op == "ENV")
    assert f"PYTHONPATH={':'.join(contract.IMPORT_PATHS)}" in env.split()
    s = spec()
    args = flink(s)["spec"]["job"]["args"]
    assert args[:2] == ["-py", contract.JOB_PATH]


def test_the_venv_is_the_python_the_rendered_configuration_names():
    venv = str(PurePosixPath(contract.PYTHON_PATH).parents[1])
    runs = " ".join(a for op, a in _instructions() if op == "RUN")
    assert f"python3 -m venv {venv}" in runs and f"{venv}/bin/pip install" in runs
    conf = flink(spec())["spec"]["flinkConfiguration"]
    assert conf["python.executable"] == conf["python.client.executable"] == contract.PYTHON_PATH


def test_versions_are_the_ones_the_job_is_tested_with():
    args = _args()
    assert args["PYFLINK_VERSION"] == _build_flink_default("FLINK_V")
    assert args["REDIS_PY_VERSION"] == _build_flink_default("REDIS_PY_V")
    assert args["KAFKA_CONNECTOR_VERSION"] == _build_flink_default("KAFKA_CONN_V")
    flink_tag = args["FLINK_IMAGE"].rsplit(":", 1)[1]
    default = StreamFeatures.model_fields["flink_version"].default  # e.g. v2_3
    assert flink_tag.startswith(default[1:].replace("_", ".") + "."), (flink_tag, default)
    assert flink_tag.split("-")[0] == args["PYFLINK_VERSION"]  # PyFlink matches the runtime


def test_runs_as_the_flink_user_with_plugins_baked_in():
    ops = _instructions()
    assert ops[-1] == ("USER", "flink")  # uid 9999, the rendered pod's runAsUser (render/stream.FLINK_UID)
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert "/opt/flink/plugins/oss-fs-hadoop/" in runs and "/opt/flink/plugins/metrics-prometheus" in runs
    assert any(op == "COPY" and "--from=connectors" in a and a.endswith("/opt/flink/lib/") for op, a in ops)
