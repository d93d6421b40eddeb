"""``recops-serve train``: build a model bundle, resumably, on spot capacity.

Stages: popularity -> item-item neighbours (cosine of co-occurrence, in chunks of
items) -> ALS user factors (``implicit``, iteration by iteration) -> user
candidates -> offline evaluation -> bundle. Progress is checkpointed to
``--checkpoint`` at most every ``--checkpoint-interval`` seconds and at every
SIGTERM; a SIGTERM makes the run write a checkpoint and exit 143 (the Job's
podFailurePolicy ignores 143, so preemption does not consume backoff). With
``--resume`` a run continues from the last checkpoint: at most one interval of
work is lost. Configuration errors exit 78 (EX_CONFIG), which fails the Job.

Determinism: single-threaded ALS with a fixed seed, so an interrupted run and an
uninterrupted one produce the same bundle (up to float summation order).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp

from recops_serve import sessionknn, storage
from recops_serve.bundle import ModelBundle, save_bundle
from recops_serve.data import Dataset, DatasetUnavailable, load

EXIT_PREEMPTED = 143
EXIT_CONFIG = 78
CHUNK_ITEMS = 4096


class Preempted(Exception):
    """SIGTERM arrived; the checkpoint has been written."""


@dataclass
class Params:
    neighbors: int = 50
    factors: int = 64
    iterations: int = 12
    regularization: float = 0.05
    candidates: int = 100
    half_life_days: float = 14.0
    seed: int = 42


@dataclass
class Checkpointer:
    """Atomic checkpoint files in a directory: ``state.json`` + ``arrays.npz``."""

    uri: str | None
    interval: float
    last: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    writes: int = 0

    @property
    def dir(self) -> Path | None:
        return storage.local_path(self.uri) if self.uri else None

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        d = self.dir
        if d is None or not (d / "state.json").exists():
            return None
        state = json.loads((d / "state.json").read_text())
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return state, arrays

    def save(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        d = self.dir
        if d is None:
            return
        d.mkdir(parents=True, exist_ok=True)
        tmp_npz, tmp_json = d / ".arrays.npz.tmp", d / ".state.json.tmp"
        with open(tmp_npz, "wb") as f:
            np.savez(f, **arrays)
        tmp_json.write_text(json.dumps({**state, "saved_at": time.time()}))
        # arrays first, then state: state.json always describes a complete arrays.npz
        os.replace(tmp_npz, d / "arrays.npz")
        os.replace(tmp_json, d / "state.json")
        self.last = time.monotonic()
        self.writes += 1

    def maybe(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Checkpoint when the interval elapsed or a stop was requested; raise Preempted on stop.

        Called after every work step; the progress line lets an operator (and the resume
        test) see exactly how much finished work a kill can lose.
        """
        print(
            f"progress stage={state['stage']} chunk={state['next_chunk']} als_iter={state['als_iter']} t={time.time():.3f}",
            flush=True,
        )
        if self.stop_requested:
            self.save(state, arrays)
            raise Preempted
        if time.monotonic() - self.last >= self.interval:
            self.save(state, arrays)


def train_threads() -> int:
    """CPUs for parallel, deterministic steps: $RECOPS_TRAIN_THREADS (the pod's limits.cpu, set by the
    operator through the downward API), else this process's CPU affinity."""
    raw = os.environ.get("RECOPS_TRAIN_THREADS", "")
    return max(1, int(raw)) if raw.isdigit() else len(os.sched_getaffinity(0))


def interaction_matrix(ds: Dataset) -> sp.csr_matrix:
    x = sp.csr_matrix((np.ones(len(ds.user), np.float32), (ds.user, ds.item)), shape=(ds.n_users, ds.n_items))
    x.sum_duplicates()
    x.data = np.log1p(x.data).astype(np.float32)  # repeat purchases count, with diminishing weight
    return x


def popularity(ds: Dataset, half_life_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t_max = float(ds.ts.max()) if ds.ts.size else 0.0
    w = np.exp(-(t_max - ds.ts) / (half_life_days * 86400.0) * np.log(2.0))
    score = np.bincount(ds.item, weights=w, minlength=ds.n_items)
    order = np.argsort(-score, kind="stable").astype(np.int32)
    n_cat = max(len(ds.category_names), int(ds.item_category.max()) + 1 if ds.n_items else 0)
    cat_of = ds.item_category[order]
    ptr = [0]
    items: list[np.ndarray] = []
    for c in range(n_cat):
        chunk = order[cat_of == c][:200]
        items.append(chunk)
        ptr.append(ptr[-1] + chunk.size)
    cat_items = np.concatenate(items).astype(np.int32) if items else np.empty(0, np.int32)
    return order, np.asarray(ptr, np.int64), cat_items


SR_WINDOW = 3


def sequential_rules(ds: Dataset) -> sp.csr_matrix:
    """Directed item -> next-item weights within sessions (an item j seen g steps after i adds 1/g,
    g <= SR_WINDOW): the "sequential rules" session model, strong on click streams where order matters."""
    order = np.lexsort((ds.ts, ds.user))
    u, it = ds.user[order], ds.item[order]
    rows, cols, vals = [], [], []
    for g in range(1, SR_WINDOW + 1):
        same = u[:-g] == u[g:]
        rows.append(it[:-g][same])
        cols.append(it[g:][same])
        vals.append(np.full(int(same.sum()), 1.0 / g, np.float32))
    m = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(ds.n_items, ds.n_items)
    )
    return m.tocsr()


def neighbour_chunk(
    xt: sp.csr_matrix, x: sp.csr_matrix | None, norm: np.ndarray | None, start: int, stop: int, k: int
):
    """Top-k neighbours for items [start, stop): cosine of co-occurrence (``x`` given), or the rows of a
    precomputed directed weight matrix ``xt`` (``x`` None, no normalisation)."""
    s = (xt[start:stop] @ x).tocsr() if x is not None else xt[start:stop].tocsr()
    nb = np.full((stop - start, k), -1, np.int32)
    sc = np.zeros((stop - start, k), np.float32)
    for r in range(stop - start):
        lo, hi = s.indptr[r], s.indptr[r + 1]
        cols, vals = s.indices[lo:hi], s.data[lo:hi]
        i = start + r
        keep = cols != i
        cols, vals = cols[keep], vals[keep]
        if norm is not None:
            vals = vals / (norm[i] * norm[cols] + 1e-9)
        top = np.argpartition(-vals, k - 1)[:k] if cols.size > k else np.arange(cols.size)
        top = top[np.lexsort((cols[top], -vals[top]))]
        nb[r, : top.size] = cols[top]
        sc[r, : top.size] = vals[top]
    return nb, sc


def fit(ds: Dataset, params: Params, ckpt: Checkpointer, log=print) -> dict[str, np.ndarray]:
    """Everything but the manifest, resuming from the checkpoint when there is one."""
    import implicit

    x = interaction_matrix(ds)
    binary = x.copy()
    binary.data[:] = 1.0
    norm = np.sqrt(np.asarray(binary.sum(axis=0)).ravel()).astype(np.float32)
    state: dict[str, Any] = {
        "stage": "neighbors",
        "next_chunk": 0,
        "als_iter": 0,
        "dataset": ds.name,
        "n_items": ds.n_items,
    }
    arrays: dict[str, np.ndarray] = {
        "neighbors": np.full((ds.n_items, params.neighbors), -1, np.int32),
        "neighbor_scores": np.zeros((ds.n_items, params.neighbors), np.float32),
    }
    resumed = ckpt.load()
    if resumed:
        old_state, old_arrays = resumed
        if old_state.get("dataset") == ds.name and old_state.get("n_items") == ds.n_items:
            state, arrays = old_state, old_arrays
            log(
                f"resuming at stage={state['stage']} chunk={state['next_chunk']} als_iter={state['als_iter']}"
            )
        else:
            log("checkpoint belongs to another dataset; starting fresh")

    if ds.sequential:  # click streams: directed sequential rules
        rows, cols, row_norm = sequential_rules(ds), None, None
    else:  # baskets: cosine of co-occurrence
        rows, cols, row_norm = binary.T.tocsr(), binary, norm
    n_chunks = (ds.n_items + CHUNK_ITEMS - 1) // CHUNK_ITEMS
    while state["stage"] == "neighbors" and state["next_chunk"] < n_chunks:
        c = state["next_chunk"]
        lo, hi = c * CHUNK_ITEMS, min(ds.n_items, (c + 1) * CHUNK_ITEMS)
        arrays["neighbors"][lo:hi], arrays["neighbor_scores"][lo:hi] = neighbour_chunk(
            rows, cols, row_norm, lo, hi, params.neighbors
        )
        state["next_chunk"] = c + 1
        ckpt.maybe(state, arrays)
    if state["stage"] == "neighbors":
        state["stage"] = "als"

    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        iterations=1,
        random_state=params.seed,
        num_threads=1,
        calculate_training_loss=False,
    )
    if "user_factors" in arrays:
        model.user_factors, model.item_factors = arrays["user_factors"], arrays["item_factors"]
    while state["stage"] == "als" and state["als_iter"] < params.iterations:
        model.fit(x, show_progress=False)  # one sweep; continues from the current factors
        arrays["user_factors"], arrays["item_factors"] = model.user_factors, model.item_factors
        state["als_iter"] += 1
        ckpt.maybe(state, arrays)
    state["stage"] = "done"
    m = ds.n_users
    c = min(params.candidates, ds.n_items)
    # users x items scoring dominates on large catalogues (127k items x 253k users: ~90 s on one
    # thread); it is deterministic, so it uses every CPU the container may use (ALS sweeps stay on one)
    model.num_threads = train_threads()
    ids, scores = model.recommend(np.arange(m), x, N=c, filter_already_liked_items=False)
    arrays["user_top"] = np.asarray(ids, np.int32)
    arrays["user_top_scores"] = np.asarray(scores, np.float32)
    return arrays


def build_bundle(
    ds: Dataset,
    params: Params,
    ckpt: Checkpointer,
    version: str,
    metrics: dict[str, float] | None = None,
    log=print,
) -> ModelBundle:
    arrays = fit(ds, params, ckpt, log)
    pop, cat_ptr, cat_items = popularity(ds, params.half_life_days)
    order = np.lexsort((ds.item, ds.user))
    u, it = ds.user[order], ds.item[order]
    pairs = np.unique(np.stack([u, it], 1), axis=0) if u.size else np.empty((0, 2), np.int32)
    hist_ptr = np.zeros(ds.n_users + 1, np.int64)
    np.add.at(hist_ptr, pairs[:, 0] + 1, 1)
    first_seen = np.full(ds.n_items, np.inf)
    np.minimum.at(first_seen, ds.item, ds.ts)
    bundle_arrays = {
        "item_ids": ds.item_ids.astype(np.int64),
        "item_category": ds.item_category.astype(np.int32),
        "item_first_seen": first_seen.astype(np.float64),
        "item_available": np.ones(ds.n_items, bool),
        "neighbors": arrays["neighbors"],
        "neighbor_scores": arrays["neighbor_scores"],
        "item_factors": np.asarray(arrays["item_factors"], np.float32),
        "user_ids": ds.user_ids.astype(str),
        "user_top": arrays["user_top"],
        "user_top_scores": arrays["user_top_scores"],
        "user_hist_ptr": np.cumsum(hist_ptr).astype(np.int64),
        "user_hist": pairs[:, 1].astype(np.int32),
        "pop_global": pop,
        "cat_ptr": cat_ptr,
        "cat_items": cat_items,
        **(
            sessionknn.build(ds.user, ds.item, ds.ts, ds.n_items)
            if ds.sequential
            else sessionknn.build(ds.user[:0], ds.item[:0], ds.ts[:0], ds.n_items)
        ),
    }
    manifest = {
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": ds.name,
        "data_window": {
            "start": float(ds.ts.min()) if ds.ts.size else None,
            "end": float(ds.ts.max()) if ds.ts.size else None,
        },
        "model": "als+session-knn+sequential-rules+popularity"
        if ds.sequential
        else "als+item-knn+popularity",
        "params": params.__dict__,
        "metrics": metrics or {},
        "load_report": ds.report.summary(),
    }
    return ModelBundle(manifest=manifest, arrays=bundle_arrays)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recops-serve train", description=__doc__)
    p.add_argument(
        "--dataset", required=True, help="completejourney | diginetica | taobao, or several joined by +"
    )
    p.add_argument("--out", required=True, help="bundle URI (the version directory)")
    p.add_argument("--version", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory URI")
    p.add_argument("--checkpoint-interval", type=float, default=300)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if one exists")
    p.add_argument("--limit-rows", type=int, default=0, help="train on the first N interactions (tests)")
    p.add_argument("--iterations", type=int, default=Params.iterations)
    p.add_argument(
        "--evaluate", action="store_true", help="hold out the last 10%% of time and record metrics"
    )
    args = p.parse_args(argv)
    ckpt = Checkpointer(args.checkpoint, args.checkpoint_interval)
    if args.checkpoint and not args.resume and ckpt.dir and ckpt.dir.exists():
        for name in ("state.json", "arrays.npz"):
            (ckpt.dir / name).unlink(missing_ok=True)

    def on_term(*_: object) -> None:
        ckpt.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        ds = load(args.dataset)
    except (ValueError, DatasetUnavailable) as e:
        print(f"recops-serve train: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.limit_rows:
        ds = ds.head(args.limit_rows)
    print(f"dataset {ds.name}: {ds.report.summary()}; {ds.n_users} users, {ds.n_items} items", flush=True)
    params = Params(iterations=args.iterations)
    metrics = None
    try:
        if args.evaluate:
            from recops_serve.evaluate import evaluate_temporal

            metrics = evaluate_temporal(ds, params)["shipped"]
        bundle = build_bundle(ds, params, ckpt, args.version, metrics, log=lambda m: print(m, flush=True))
    except Preempted:
        print(f"preempted: checkpoint written to {args.checkpoint}", flush=True)
        return EXIT_PREEMPTED
    save_bundle(bundle, args.out)
    print(
        f"bundle {args.version} written to {args.out} ({bundle.n_items} items, {ckpt.writes} checkpoints)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
