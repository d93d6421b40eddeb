"""Run the real helm binary (built by scripts/build-helm.sh into the tool cache) on the chart."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "recops-operator"


@cache
def helm_binary() -> Path:
    """$RECOPS_HELM, then the cached build (built now if missing: ~4 min cold, cached after)."""
    if os.environ.get("RECOPS_HELM"):
        return Path(os.environ["RECOPS_HELM"])
    out = subprocess.run([str(ROOT / "scripts" / "build-helm.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return Path(out.stdout.strip().splitlines()[-1]) / "helm"


def helm(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "recops-helm-home"
    base = env or dict(os.environ)
    base = {  # keep helm's cache/config out of $HOME and the repo
        **base,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    res = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=base, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def template(*set_args: str, namespace: str = "recops-system") -> list[dict]:
    sets = [a for s in set_args for a in ("--set", s)]
    out = helm("template", "recops", str(CHART), "--namespace", namespace, "--include-crds", *sets).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]
