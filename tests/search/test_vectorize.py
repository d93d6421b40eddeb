"""``recops-serve vectorize`` as a process: a dirty catalogue in, a search bundle out; SIGTERM
writes a checkpoint and exits 143, ``--resume`` finishes with the same vectors; bad data exits 78."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recops_serve.search.embed import default_encoder
from recops_serve.search.index import load_search_bundle
from tests.search.catalog import FORBIDDEN, write_catalog

BIN = Path(sys.executable).parent


def vectorize(catalog: Path, out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "recops-serve"),
            "vectorize",
            "--catalog",
            str(catalog),
            "--out",
            str(out),
            "--version",
            "s1",
            *extra,
        ],
        capture_output=True,
        text=True,
        **kw,
    )


def test_bundle_from_dirty_catalog(tmp_path):
    rows = write_catalog(tmp_path / "catalog.parquet", copies=2)
    r = vectorize(tmp_path / "catalog.parquet", tmp_path / "search" / "s1")
    assert r.returncode == 0, r.stderr
    b = load_search_bundle(str(tmp_path / "search" / "s1"))
    assert b.manifest["model"]["name"] == "all-MiniLM-L6-v2" and b.manifest["n_items"] == len(rows)
    assert sorted(b.item_ids.tolist()) == sorted(rows)
    assert b.index.ntotal == b.vectors.shape[0] == len(set(b.chunk_text))  # one vector per distinct text
    for text in b.chunk_text:
        for bad in FORBIDDEN:
            assert bad not in text, (bad, text)
    # availability and categories come from the catalogue
    for i, item in enumerate(b.item_ids.tolist()):
        assert bool(b.item_available[i]) == rows[item]["available"]
        assert b.item_category[i] == rows[item]["category"]
    # stored vectors are the model's vectors of the stored chunk text
    np.testing.assert_allclose(
        b.vectors[b.chunk_vector[:3]], default_encoder().encode(b.chunk_text[:3]), atol=1e-5
    )


def test_sigterm_then_resume(tmp_path):
    write_catalog(tmp_path / "catalog.parquet", copies=12)  # 120 distinct products
    out, ckpt = tmp_path / "s1", tmp_path / "ckpt"
    args = ("--checkpoint", str(ckpt), "--checkpoint-interval", "0.2", "--batch", "4", "--resume")
    proc = subprocess.Popen(
        [
            str(BIN / "recops-serve"),
            "vectorize",
            "--catalog",
            str(tmp_path / "catalog.parquet"),
            "--out",
            str(out),
            "--version",
            "s1",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (ckpt / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, log
    assert "preempted: checkpoint written" in log and not out.exists()
    done = json.loads((ckpt / "state.json").read_text())["done"]
    r = vectorize(tmp_path / "catalog.parquet", out, *args)
    assert r.returncode == 0, r.stderr
    assert f"resuming at {done}/" in r.stdout
    b = load_search_bundle(str(out))
    assert b.manifest["texts_embedded"] < len(set(b.chunk_text))  # the resumed run did not redo the work
    np.testing.assert_allclose(b.vectors[b.chunk_vector], default_encoder().encode(b.chunk_text), atol=1e-5)
    assert not ckpt.exists()  # cleared after a finished run


def test_bad_catalog_exits_78(tmp_path):
    pq.write_table(
        pa.table({"item_id": pa.array([1, 2], pa.int64()), "title": ["a", "b"]}), tmp_path / "c.parquet"
    )
    r = vectorize(tmp_path / "c.parquet", tmp_path / "s1")
    assert r.returncode == 78
    assert "missing required column category" in r.stderr
    r = vectorize(tmp_path / "nothing", tmp_path / "s1")
    assert r.returncode == 78 and "no catalogue files found" in r.stderr
    assert not (tmp_path / "s1").exists()
