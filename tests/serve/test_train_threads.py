"""The trainer's parallel step (users x items candidate scoring) gives the same bundle on 1 or 2 threads,
and its thread count comes from $RECOPS_TRAIN_THREADS (the pod's CPU limit) when set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recops_serve.bundle import load_bundle
from recops_serve.train import train_threads

BIN = Path(sys.executable).parent


def test_thread_count_follows_the_cpu_limit_env(monkeypatch):
    monkeypatch.setenv("RECOPS_TRAIN_THREADS", "3")
    assert train_threads() == 3
    monkeypatch.setenv("RECOPS_TRAIN_THREADS", "0")
    assert train_threads() == 1
    monkeypatch.delenv("RECOPS_TRAIN_THREADS")
    assert train_threads() == len(os.sched_getaffinity(0))


@pytest.mark.integration
def test_candidates_are_identical_on_one_and_two_threads(tmp_path):
    out = {}
    for threads in ("1", "2"):
        subprocess.run(
            [
                str(BIN / "recops-serve"),
                "train",
                "--events",
                "builtin:completejourney",
                "--limit-rows",
                "120000",
                "--out",
                str(tmp_path / threads),
                "--version",
                "t",
            ],
            env={**os.environ, "RECOPS_TRAIN_THREADS": threads},
            check=True,
            capture_output=True,
        )
        out[threads] = load_bundle(str(tmp_path / threads))
    one, two = out["1"], out["2"]
    assert one.user_top.shape[0] > 1000
    np.testing.assert_array_equal(one.user_top, two.user_top)
    np.testing.assert_array_equal(one.user_top_scores, two.user_top_scores)
