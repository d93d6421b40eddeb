"""Kill a real training process again and again; the resumed result equals an uninterrupted run.

Tolerance: item neighbours identical; ALS candidate scores within 1e-4 (single-threaded ALS
with a fixed seed; checkpoints sit on iteration boundaries); the tuned serving section identical.
Loss bound: finished work that a SIGTERM loses is less than one checkpoint interval (or one step
where a step is longer); a SIGKILL may also interrupt a checkpoint being written, so it loses at
most one interval plus one step (the last finished step, from the trainer's progress log, is never
more than that newer than the newest checkpoint); the step in flight is redone.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recops_serve.bundle import load_bundle

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
ROWS, ITERATIONS, INTERVAL = "150000", "40", 0.3


def cmd(out: Path, ckpt: Path) -> list[str]:
    return [
        str(BIN / "recops-serve"),
        "train",
        "--events",
        "builtin:completejourney",
        "--limit-rows",
        ROWS,
        "--iterations",
        ITERATIONS,
        "--out",
        str(out),
        "--version",
        "r1",
        "--checkpoint",
        str(ckpt),
        "--checkpoint-interval",
        str(INTERVAL),
        "--resume",
    ]


PHASES = ("validation", "validation-2", "validation-3", "tuning", "final")  # older tails: small shops


def progress(ckpt: Path) -> tuple[tuple[int, int, int], int, float] | None:
    """(phase, stage/chunk, iteration or trials done) of the newest checkpoint, and its time."""
    newest = None
    for n, phase in enumerate(PHASES):
        f = ckpt / phase / "state.json"
        if not f.exists():
            continue
        s = json.loads(f.read_text())
        stage = {"neighbors": 0, "als": 1, "done": 2}.get(s.get("stage"), 0) * 1000 + s.get("next_chunk", 0)
        done = s.get("als_iter", len(s.get("trials", {})))
        newest = (
            ((n, stage, done), 0, s["saved_at"]) if newest is None or s["saved_at"] > newest[2] else newest
        )
    return newest


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    ref_out, out, ckpt = tmp_path / "ref", tmp_path / "out", tmp_path / "ckpt"
    subprocess.run(cmd(ref_out, tmp_path / "ref-ckpt"), check=True, capture_output=True)

    seen: list[tuple[int, int]] = []
    for n, sig in enumerate([signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]):
        started = time.time()
        proc = subprocess.Popen(cmd(out, ckpt), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # kill inside the work, not on a timer: after this run wrote a checkpoint, n steps later
        head, after_ckpt = [], -1
        for line in proc.stdout:
            head.append(line)
            if line.startswith("progress "):
                if after_ckpt < 0 and (p := progress(ckpt)) is not None and p[2] >= started:
                    after_ckpt = 0
                elif after_ckpt >= 0:
                    after_ckpt += 1
                if after_ckpt >= n:
                    break
        killed_at = time.time()
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
        output = "".join(head) + rest
        if proc.returncode == 0:
            break  # finished before the kill: nothing left to interrupt
        if sig == signal.SIGTERM:
            assert proc.returncode == 143, output
            assert "preempted: checkpoint written" in output
        p = progress(ckpt)
        assert p is not None, f"no checkpoint after kill {n}: {output}"
        steps = [
            float(line.rsplit("t=", 1)[1]) for line in output.splitlines() if line.startswith("progress ")
        ]
        if steps:
            # a SIGTERM'd run saves before it exits: it loses less than one interval (or one step, where a
            # step is longer). A SIGKILL can land while a checkpoint is being written: that one is lost too,
            # so the bound is one interval plus the step that triggered the interrupted write
            longest = max((b - a for a, b in itertools.pairwise(steps)), default=0.0)
            bound = max(INTERVAL, longest) if sig == signal.SIGTERM else INTERVAL + longest
            assert steps[-1] - p[2] < bound + 0.05, (
                f"finished work {steps[-1] - p[2]:.2f}s newer than the checkpoint at kill {n}"
            )
        if sig == signal.SIGKILL:
            assert p[2] <= killed_at, "a SIGKILLed run cannot have written after the kill"
        if seen:
            assert p[:2] >= seen[-1], "progress never goes backwards"
        seen.append(p[:2])
    done = subprocess.run(cmd(out, ckpt), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(seen) >= 2, "the run was interrupted at least twice"

    ref, got = load_bundle(str(ref_out)), load_bundle(str(out))
    np.testing.assert_array_equal(ref.neighbors, got.neighbors)
    np.testing.assert_allclose(ref.neighbor_scores, got.neighbor_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ref.user_top_scores, got.user_top_scores, rtol=0, atol=1e-4)
    assert np.mean(ref.user_top == got.user_top) > 0.99
    np.testing.assert_array_equal(ref.pop_global, got.pop_global)
    # the tuning phase resumed too: finished trials are not redone and the tuned result is the same
    assert ref.manifest["serving"] == got.manifest["serving"]
    assert ref.manifest["validation"]["trials"] == got.manifest["validation"]["trials"]
