"""``recops-serve train``: build a model bundle, resumably, on spot capacity.

Input: a shop's events and catalogue (``--events``/``--catalog``, the contract in docs/data.md;
``builtin:NAME`` for the datasets that ship here). Phases, each checkpointed in its own child
directory: **validation** (fit on the window minus its time tail), **tuning** (a bounded search
of the exclusion policy and the blend of sources on that tail, through the call the server
makes: ``validation.tune``), **final** (fit on the whole window; the bundle carries the tuned
``serving`` section and the validation metrics the operator's gate reads). A fit is:
popularity -> item-item neighbours (cosine of co-occurrence, or sequential rules for click
streams, in chunks of items) -> ALS user factors (``implicit``, iteration by iteration) -> user
candidates (precomputed while users x candidates is small, ``retrieval_mode``) -> the HNSW index over the
item factors (ann.py) with its **recall gate**: recall@K against exact search on a sample of real users'
vectors below ``--min-recall`` (``spec.training.retrieval.minRecall``) exits 78 and writes nothing. Progress is checkpointed at most every ``--checkpoint-interval`` seconds and at every
SIGTERM; a SIGTERM makes the run write a checkpoint and exit 143 (the Job's
podFailurePolicy ignores 143, so preemption does not consume backoff). With
``--resume`` a run continues from the last checkpoint: at most one interval of
work is lost. Configuration and data errors exit 78 (EX_CONFIG), which fails the Job, with a
one-line reason in the pod's termination message (the operator puts it in status); nothing is
written to ``--out``, so the serving model is untouched.

Determinism: single-threaded ALS with a fixed seed, so an interrupted run and an
uninterrupted one produce the same bundle (up to float summation order).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp

from recops_contracts import storage
from recops_contracts.training import (
    CHECKPOINT_ARRAYS_NAME,
    CHECKPOINT_STATE_NAME,
    EXIT_CONFIG,
    EXIT_PREEMPTED,
)
from recops_serve import ann, sessionknn
from recops_serve.bundle import ModelBundle, save_bundle
from recops_serve.data import EVENT_TYPES, Dataset, DatasetUnavailable
from recops_serve.ranking import Blend, RankConfig

CHUNK_ITEMS = 4096
#: auto retrieval keeps precomputed candidates up to this many users x candidates entries (8 bytes each:
#: 50 M = 400 MB of user_top per bundle, ~500k users at 100 candidates); above it the index serves
PRECOMPUTE_MAX_ENTRIES = 50_000_000
RETRIEVAL_MODES = ("auto", "precomputed", "index", "exact")


class Preempted(Exception):
    """SIGTERM arrived; the checkpoint has been written."""


class RecallGateFailed(Exception):
    """The ANN index's recall@K against exact search is below the spec's minimum: no bundle is written."""


def retrieval_mode(params: Params, n_users: int, n_items: int) -> str:
    """``precomputed`` while users x candidates is small (``PRECOMPUTE_MAX_ENTRIES``), else ``index``."""
    if params.retrieval not in RETRIEVAL_MODES:
        raise ValueError(f"retrieval {params.retrieval!r}: expected one of {', '.join(RETRIEVAL_MODES)}")
    if params.retrieval != "auto":
        return params.retrieval
    return "precomputed" if n_users * min(params.candidates, n_items) <= PRECOMPUTE_MAX_ENTRIES else "index"


def retrieval_index(
    item_factors: np.ndarray, user_factors: np.ndarray, params: Params, log=print
) -> tuple[ann.AnnIndex, dict[str, Any]]:
    """Build the HNSW index over the item factors, pick efSearch on a sample of real users' vectors and
    gate its recall@K (K = the candidates per user) against exact search; the manifest's section."""
    k = min(params.candidates, item_factors.shape[0])
    queries = ann.sample_queries(user_factors, ann.RECALL_SAMPLE, seed=params.seed)
    index, tuned = ann.build_tuned(
        item_factors,
        queries,
        k,
        params.min_recall,
        m=params.hnsw_m,
        ef_construction=params.hnsw_ef_construction,
        ladder=tuple(params.ef_ladder),
        threads=train_threads(),
    )
    section = {
        "index": ann.INDEX_FILE,
        "m": params.hnsw_m,
        "ef_construction": params.hnsw_ef_construction,
        "ef_search": tuned.ef_search,
        "k": tuned.k,
        "recall_at_k": tuned.recall,
        "recall_by_ef_search": {str(e): r for e, r in tuned.by_ef.items()},
        "recall_queries": tuned.queries,
        "min_recall": params.min_recall,
        "build_seconds": tuned.build_seconds,
    }
    log(
        f"retrieval index: {index.ntotal} items, M={params.hnsw_m}, efSearch={tuned.ef_search}, "
        f"recall@{tuned.k}={tuned.recall:.4f} on {tuned.queries} users (min {params.min_recall}), "
        f"built in {tuned.build_seconds:.1f} s"
    )
    if tuned.recall < params.min_recall:
        raise RecallGateFailed(
            f"retrieval index recall@{tuned.k} {tuned.recall:.4f} < spec.training.retrieval.minRecall "
            f"{params.min_recall} (M={params.hnsw_m}, efSearch up to {tuned.ef_search}, {tuned.queries} users); "
            "no bundle written, the serving model is untouched"
        )
    return index, section


@dataclass
class Params:
    neighbors: int = 50
    factors: int = 64
    iterations: int = 12
    regularization: float = 0.05
    candidates: int = 100
    half_life_days: float = 14.0
    seed: int = 42
    validation_fraction: float = 0.1  # the tail of the window (by time) the blend is tuned on
    validation_cases: int = 4000  # at most this many cases are scored per trial (sampled)
    # older tails are added while the tails hold fewer cases than this: at 2,000 cases one standard
    # error of a ~5% hit rate is ~0.5 points, below that blends cannot be told apart (a Taobao-sample
    # tail: ~1,400 cases, one hit = 0.07 points); a shop with a full tail is tuned on its newest one
    validation_min_cases: int = 2000
    # candidate retrieval (ann.py): auto = precomputed user_top while users x candidates stays small,
    # else the HNSW index; "index" / "precomputed" force one; "exact" = brute force (evaluation baseline)
    retrieval: str = "auto"
    min_recall: float = 0.95  # spec.training.retrieval.minRecall: the recall gate
    hnsw_m: int = ann.DEFAULT_M
    hnsw_ef_construction: int = ann.DEFAULT_EF_CONSTRUCTION
    ef_ladder: tuple[int, ...] = ann.EF_LADDER


@dataclass
class _Clock:
    """Shared by a checkpointer and its children: one interval, one stop flag, one write count."""

    interval: float
    last: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    writes: int = 0


@dataclass
class Checkpointer:
    """Atomic checkpoint files in a directory: ``state.json`` + ``arrays.npz``; each training phase
    (validation fit, tuning, final fit) checkpoints in its own child directory."""

    uri: str | None
    interval: float
    clock: _Clock | None = None

    def __post_init__(self) -> None:
        self.clock = self.clock or _Clock(self.interval)

    @property
    def stop_requested(self) -> bool:
        return self.clock.stop_requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.clock.stop_requested = value

    @property
    def writes(self) -> int:
        return self.clock.writes

    def child(self, name: str) -> Checkpointer:
        return Checkpointer(storage.join(self.uri, name) if self.uri else None, self.interval, self.clock)

    @property
    def dir(self) -> Path | None:
        return storage.local_path(self.uri) if self.uri else None

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        d = self.dir
        if d is None or not (d / CHECKPOINT_STATE_NAME).exists():
            return None
        state = json.loads((d / CHECKPOINT_STATE_NAME).read_text())
        with np.load(d / CHECKPOINT_ARRAYS_NAME, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return state, arrays

    def save(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        d = self.dir
        if d is None:
            return
        # the snapshot's time, not the write's: the next checkpoint is due one interval after the work
        # it holds, however long writing it took (a busy disk must not stretch the loss bound)
        snapshot, mono = time.time(), time.monotonic()
        d.mkdir(parents=True, exist_ok=True)
        tmp_npz, tmp_json = d / f".{CHECKPOINT_ARRAYS_NAME}.tmp", d / f".{CHECKPOINT_STATE_NAME}.tmp"
        with open(tmp_npz, "wb") as f:
            np.savez(f, **arrays)
        tmp_json.write_text(json.dumps({**state, "saved_at": snapshot}))
        # arrays first, then state: state.json always describes a complete arrays.npz
        os.replace(tmp_npz, d / CHECKPOINT_ARRAYS_NAME)
        os.replace(tmp_json, d / CHECKPOINT_STATE_NAME)
        self.clock.last = mono
        self.clock.writes += 1

    def clear(self) -> None:
        if self.dir and self.dir.exists():
            shutil.rmtree(self.dir)

    def maybe(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Checkpoint when the interval elapsed or a stop was requested; raise Preempted on stop.

        Called after every work step; the progress line lets an operator (and the resume
        test) see exactly how much finished work a kill can lose.
        """
        if self.uri:  # in-process fits (evaluation, benches) have no checkpoint and nothing to report
            print(
                f"progress phase={Path(self.uri).name} stage={state.get('stage', '-')} "
                f"chunk={state.get('next_chunk', 0)} als_iter={state.get('als_iter', 0)} t={time.time():.3f}",
                flush=True,
            )
        if self.clock.stop_requested:
            self.save(state, arrays)
            raise Preempted
        if time.monotonic() - self.clock.last >= self.clock.interval:
            self.save(state, arrays)


def train_threads() -> int:
    """CPUs for parallel, deterministic steps: $RECOPS_TRAIN_THREADS (the pod's limits.cpu, set by the
    operator through the downward API), else this process's CPU affinity."""
    raw = os.environ.get("RECOPS_TRAIN_THREADS", "")
    return max(1, int(raw)) if raw.isdigit() else len(os.sched_getaffinity(0))


def fitted_als(ds: Dataset, params: Params | None = None):
    """ALS with the trainer's settings fitted in one go on ``ds`` (the evaluation's fold-in baseline
    and the retrieval bench); the trainer itself fits sweep by sweep to checkpoint between them."""
    import implicit

    p = params or Params()
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=p.factors,
        regularization=p.regularization,
        iterations=p.iterations,
        random_state=p.seed,
        num_threads=train_threads(),
        calculate_training_loss=False,
    )
    model.fit(interaction_matrix(ds), show_progress=False)
    return model


def interaction_matrix(ds: Dataset) -> sp.csr_matrix:
    x = sp.csr_matrix((np.ones(len(ds.user), np.float32), (ds.user, ds.item)), shape=(ds.n_users, ds.n_items))
    x.sum_duplicates()
    x.data = np.log1p(x.data).astype(np.float32)  # repeat purchases count, with diminishing weight
    return x


def popularity(ds: Dataset, half_life_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    norm = (
        (score / max(float(score.max()), 1e-12)).astype(np.float32)
        if score.size
        else score.astype(np.float32)
    )
    return order, np.asarray(ptr, np.int64), cat_items, norm


SR_WINDOW = 3


def sequential_rules(ds: Dataset) -> sp.csr_matrix:
    """Directed item -> next-item weights within sessions (an item j seen g steps after i adds 1/g,
    g <= SR_WINDOW): the "sequential rules" session model, strong on click streams where order matters."""
    order = np.lexsort((ds.ts, ds.sessions))
    u, it = ds.sessions[order], ds.item[order]
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
        "n_events": int(ds.ts.size),
    }
    arrays: dict[str, np.ndarray] = {
        "neighbors": np.full((ds.n_items, params.neighbors), -1, np.int32),
        "neighbor_scores": np.zeros((ds.n_items, params.neighbors), np.float32),
    }
    resumed = ckpt.load()
    if resumed:
        old_state, old_arrays = resumed
        if all(old_state.get(k) == state[k] for k in ("dataset", "n_items", "n_events")):
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
    if retrieval_mode(params, m, ds.n_items) != "precomputed":  # the index (or brute force) serves
        arrays["user_top"] = np.empty((m, 0), np.int32)
        arrays["user_top_scores"] = np.empty((m, 0), np.float32)
        return arrays
    # users x items scoring dominates on large catalogues (127k items x 253k users: ~90 s on one
    # thread); it is deterministic, so it uses every CPU the container may use (ALS sweeps stay on one)
    model.num_threads = train_threads()
    ids, scores = model.recommend(np.arange(m), x, N=c, filter_already_liked_items=False)
    arrays["user_top"] = np.asarray(ids, np.int32)
    arrays["user_top_scores"] = np.asarray(scores, np.float32)
    return arrays


def user_history(ds: Dataset, half_life_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of the items each user touched, with a frequency x recency weight (the "buy again" source)."""
    t_max = float(ds.ts.max()) if ds.ts.size else 0.0
    order = np.lexsort((ds.ts, ds.item, ds.user))
    u, it, ts = ds.user[order], ds.item[order], ds.ts[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (it[1:] != it[:-1])] if u.size else np.empty(0, bool)
    first = np.flatnonzero(new)
    counts = np.diff(np.r_[first, u.size])
    last_ts = ts[np.r_[first[1:], u.size] - 1] if u.size else ts
    w = np.log1p(counts) * np.exp(-(t_max - last_ts) / (half_life_days * 86400.0) * np.log(2.0))
    ptr = np.zeros(ds.n_users + 1, np.int64)
    np.add.at(ptr, u[first] + 1, 1)
    # heaviest first within each user: the ranking reads a bounded prefix (ranking.MAX_HISTORY)
    by_weight = np.lexsort((-w, u[first]))
    return (
        np.cumsum(ptr).astype(np.int64),
        it[first][by_weight].astype(np.int32),
        w[by_weight].astype(np.float32),
    )


def user_purchases(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR (ptr, items) of the items each user purchased; None when every event is a purchase
    (baskets: the history itself is what "exclude purchased" bans)."""
    bought = ds.event == EVENT_TYPES.index("purchase")
    if bool(bought.all()):
        return None
    pairs = np.unique(ds.user[bought].astype(np.int64) * ds.n_items + ds.item[bought])
    users, items = pairs // ds.n_items, pairs % ds.n_items
    ptr = np.zeros(ds.n_users + 1, np.int64)
    np.add.at(ptr, users + 1, 1)
    return np.cumsum(ptr).astype(np.int64), items.astype(np.int32)


def build_bundle(
    ds: Dataset,
    params: Params,
    ckpt: Checkpointer,
    version: str,
    extra_manifest: dict[str, Any] | None = None,
    log=print,
    *,
    with_index: bool = True,
) -> ModelBundle:
    """``with_index``: build (and gate) the ANN index even when precomputed candidates serve known users
    (it answers folded-in sessions); the validation fit skips it unless the index serves."""
    arrays = fit(ds, params, ckpt, log)
    mode = retrieval_mode(params, ds.n_users, ds.n_items)
    item_factors = np.asarray(arrays["item_factors"], np.float32)
    user_factors = np.asarray(arrays["user_factors"], np.float32)
    index, retrieval = None, {"mode": mode, "candidates": min(params.candidates, ds.n_items)}
    if mode == "index" or (with_index and mode == "precomputed"):
        index, section = retrieval_index(item_factors, user_factors, params, log)
        retrieval.update(section)
    pop, cat_ptr, cat_items, pop_score = popularity(ds, params.half_life_days)
    hist_ptr, hist, hist_w = user_history(ds, params.half_life_days)
    first_seen = np.full(ds.n_items, np.inf)
    np.minimum.at(first_seen, ds.item, ds.ts)
    if ds.item_created_at is not None:  # the catalogue's creation time wins where it is known
        first_seen = np.where(np.isnan(ds.item_created_at), first_seen, ds.item_created_at)
    available = ds.item_available if ds.item_available is not None else np.ones(ds.n_items, bool)
    index_rows = np.ones(ds.ts.size, bool) if ds.sequential else np.zeros(ds.ts.size, bool)
    bundle_arrays = {
        "item_ids": ds.item_ids.astype(np.int64),
        "item_category": ds.item_category.astype(np.int32),
        "item_first_seen": first_seen.astype(np.float64),
        "item_available": np.asarray(available, bool),
        "neighbors": arrays["neighbors"],
        "neighbor_scores": arrays["neighbor_scores"],
        "item_factors": item_factors,
        "user_ids": ds.user_ids.astype(str),
        "user_top": arrays["user_top"],
        "user_top_scores": arrays["user_top_scores"],
        "user_hist_ptr": hist_ptr,
        "user_hist": hist,
        "user_hist_w": hist_w,
        "pop_global": pop,
        "item_pop": pop_score,
        "category_names": np.asarray(list(ds.category_names), dtype=str).reshape(-1),
        "cat_ptr": cat_ptr,
        "cat_items": cat_items,
        # session kNN over the training sessions, for click streams (baskets: an empty index)
        **sessionknn.build(ds.sessions[index_rows], ds.item[index_rows], ds.ts[index_rows], ds.n_items),
    }
    if mode != "precomputed":  # known users' vectors: the index's (or brute force's) queries
        bundle_arrays["user_factors"] = user_factors
    if (bought := user_purchases(ds)) is not None:  # views and carts are history, not purchases
        bundle_arrays["user_bought_ptr"], bundle_arrays["user_bought"] = bought
    manifest = {
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": ds.name,
        "data_window": {
            "start": float(ds.ts.min()) if ds.ts.size else None,
            "end": float(ds.ts.max()) if ds.ts.size else None,
        },
        "model": "als+session-knn+sequential-rules+repeat+popularity"
        if ds.sequential
        else "als+item-knn+repeat+popularity",
        "params": {**params.__dict__, "ef_ladder": list(params.ef_ladder)},
        "retrieval": retrieval,
        "metrics": {},
        "serving": {"blend": Blend().as_dict(), "exclude": {"seen": True, "purchased": True}},
        "load_report": ds.report.summary(),
        "data_report": ds.report.as_dict(),
        **(extra_manifest or {}),
    }
    return ModelBundle(manifest=manifest, arrays=bundle_arrays, ann=index)


def _tuned(ds: Dataset, params: Params, ckpt: Checkpointer, log) -> dict[str, Any]:
    """Validation phase: fit on the window minus its tail(s), tune the served configuration on them.

    Returns the manifest sections the final bundle carries: ``serving`` (blend + exclusion policy
    the server uses unless the spec overrides it), ``metrics`` (the tuned configuration on the
    validation tails, through the served call: the metrics gate reads these) and ``validation``.
    """
    from recops_contracts.serving import MAX_SESSION_EVENTS
    from recops_serve.validation import policy_axis, pooled, tune, validation_tails

    tails = validation_tails(ds, params.validation_fraction, params.validation_min_cases, MAX_SESSION_EVENTS)
    # CPU seconds of this process, not wall time: on a shared node (or a busy 2-core runner) the
    # neighbours' load must not cut the search short and ship a worse blend than an idle run's
    t0 = time.process_time()
    folds = _folds(ds, params, ckpt, tails, log)
    if not folds:
        log(
            "validation: window too short for a validation tail, or no held-out target is known; "
            "shipping the default blend"
        )
        return {}
    tuning = ckpt.child("tuning")
    saved = tuning.load()
    # the search is bounded by design (fixed axes x validation_cases calls); the time cap is a safety net
    state = (
        saved[0] if saved else {"phase": "tune", "trials": {}, "budget": max(120.0, time.process_time() - t0)}
    )

    def keep() -> None:
        tuning.maybe(state, {})

    best, exclude, info = tune(
        folds,
        ds.sequential,
        state["budget"],
        state["trials"],
        keep,
        fold_in=folds[0].bundle.retrieval_mode != "precomputed",
    )
    tuning.save(state, {})
    cfg = best[exclude]
    metrics, default = pooled(folds, cfg), pooled(folds, folds[0].base)
    cases = metrics.pop("cases")
    default.pop("cases")
    axis = policy_axis(ds.sequential)
    log(
        f"validation: {cases} cases in {len(folds)} tail(s), {info['trials']} trials ({info['stopped']}); "
        f"exclude {axis}={exclude}; tuned {metrics}, untuned {default}"
    )
    return {
        "serving": {
            "exclude": {"seen": cfg.exclude_seen, "purchased": cfg.exclude_purchased},
            "policy_axis": axis,
            "blend": cfg.blend.as_dict(),
            # the blend tuned for each policy: a spec that overrides the exclusion gets its own
            "blend_if_excluded": {"true": best[True].blend.as_dict(), "false": best[False].blend.as_dict()},
        },
        "metrics": metrics,
        "validation": {
            "split_ts": tails[0][0],
            "tails": [start for start, _ in tails[: len(folds)]],
            "cases": cases,
            "protocol": "next-item" if ds.sequential else "next-basket",
            "untuned_metrics": default,
            **info,
        },
    }


def _folds(ds: Dataset, params: Params, ckpt: Checkpointer, tails, log) -> list:
    """One validation fit per tail (each checkpointed in its own child), its cases cut to the items
    it knows (a target first seen in the tail says nothing about the blend, it only adds noise),
    then sampled: ``validation_cases`` in all, shared evenly between the tails."""
    from recops_serve.validation import Fold, basket_cases, known_targets, sample

    folds = []
    per_fold = -(-params.validation_cases // len(tails))
    for f, (start, cases) in enumerate(tails):
        part = ds.take(ds.ts < start).compact()
        if part.ts.size == 0 or not cases:
            break  # nothing before this tail to fit on: the older tails have even less
        name = "validation" if f == 0 else f"validation-{f + 1}"
        vb = build_bundle(part, params, ckpt.child(name), name, log=log, with_index=False)
        cases = sample(known_targets(vb, cases), per_fold)
        if not cases:
            continue
        new_only = None
        if not ds.sequential:  # baskets: the excluding policy is tuned on items new to the household
            window = ds if f == 0 else ds.take(ds.ts < tails[f - 1][0])
            new_only = sample(known_targets(vb, basket_cases(window, start, discovery=True)), per_fold)
        folds.append(Fold(vb, cases, new_only, RankConfig.resolve(vb)))
    return folds


def train_model(
    ds: Dataset, params: Params, ckpt: Checkpointer, version: str, *, tune: bool = True, log=print
) -> ModelBundle:
    """Validation fit -> tuning -> final fit on the whole window, each phase checkpointed."""
    extra = _tuned(ds, params, ckpt, log) if tune else {}
    return build_bundle(ds, params, ckpt.child("final"), version, extra, log=log)


def _termination_message(msg: str) -> None:
    """One line for ``kubectl describe`` and the operator's status (the pod's termination message)."""
    path = Path(os.environ.get("RECOPS_TERMINATION_LOG", "/dev/termination-log"))
    with contextlib.suppress(OSError):
        if path.parent.exists():
            path.write_text(msg[:4000])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recops-serve train", description=__doc__)
    p.add_argument(
        "--events",
        help="events URI (docs/data.md): path, file://, oss://, or builtin:completejourney|diginetica|taobao",
    )
    p.add_argument("--catalog", help="item catalogue URI (docs/data.md); builtin sources carry their own")
    p.add_argument("--dataset", help=argparse.SUPPRESS)  # replaced by --events builtin:NAME
    p.add_argument("--out", required=True, help="bundle URI (the version directory)")
    p.add_argument("--version", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory URI")
    p.add_argument("--checkpoint-interval", type=float, default=300)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if one exists")
    p.add_argument(
        "--window-days",
        type=int,
        default=int(os.environ.get("RECOPS_DATA_WINDOW_DAYS") or 0) or None,
        help="train on the last N days (default: $RECOPS_DATA_WINDOW_DAYS, else everything)",
    )
    p.add_argument(
        "--max-bad-fraction", type=float, default=0.1, help="fail (exit 78) above this share of bad rows"
    )
    p.add_argument(
        "--type-map", default="", help="map event types, e.g. pv=view,cart=add_to_cart,buy=purchase"
    )
    p.add_argument("--limit-rows", type=int, default=0, help="train on the first N interactions (tests)")
    p.add_argument("--iterations", type=int, default=Params.iterations)
    p.add_argument(
        "--retrieval",
        choices=RETRIEVAL_MODES,
        default="auto",
        help="ALS candidates: precomputed per user, from the HNSW index, or auto (by users x candidates)",
    )
    p.add_argument(
        "--min-recall",
        type=float,
        default=Params.min_recall,
        help="fail (exit 78, serving untouched) when the index's recall@K vs exact is below this",
    )
    p.add_argument("--ef-ladder", help=argparse.SUPPRESS)  # efSearch values tried (tests: a bad index)
    p.add_argument("--hnsw-m", type=int, default=ann.DEFAULT_M, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-tune", action="store_true", help="skip the validation phase (default blend, no metrics)"
    )
    p.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)  # validation is always on now
    args = p.parse_args(argv)
    if args.dataset:
        msg = f"--dataset was replaced by --events: use --events builtin:{args.dataset} (docs/data.md)"
        print(f"recops-serve train: {msg}", file=sys.stderr)
        _termination_message(msg)
        return EXIT_CONFIG
    if not args.events:
        p.error("--events is required")
    ckpt = Checkpointer(args.checkpoint, args.checkpoint_interval)
    if args.checkpoint and not args.resume:
        ckpt.clear()

    def on_term(*_: object) -> None:
        ckpt.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    from recops_serve.datasource import DataError, load_source

    try:
        type_map = dict(kv.split("=", 1) for kv in args.type_map.split(",") if kv)
        ds = load_source(
            args.events,
            args.catalog,
            window_days=args.window_days,
            max_bad_fraction=args.max_bad_fraction,
            type_map=type_map or None,
        )
    except (DataError, ValueError, DatasetUnavailable, storage.StorageError) as e:
        print(f"recops-serve train: {e}", file=sys.stderr)
        _termination_message(str(e))
        return EXIT_CONFIG
    if args.limit_rows:
        ds = ds.head(args.limit_rows)
    print(f"dataset {ds.name}: {ds.report.summary()}; {ds.n_users} users, {ds.n_items} items", flush=True)
    for reason, rows in ds.report.examples.items():
        print(f"  {reason}: e.g. {'; '.join(rows)}", flush=True)
    params = Params(
        iterations=args.iterations,
        retrieval=args.retrieval,
        min_recall=args.min_recall,
        hnsw_m=args.hnsw_m,
        ef_ladder=tuple(int(x) for x in args.ef_ladder.split(",")) if args.ef_ladder else ann.EF_LADDER,
    )
    try:
        bundle = train_model(
            ds, params, ckpt, args.version, tune=not args.no_tune, log=lambda m: print(m, flush=True)
        )
    except Preempted:
        print(f"preempted: checkpoint written to {args.checkpoint}", flush=True)
        return EXIT_PREEMPTED
    except RecallGateFailed as e:
        print(f"recops-serve train: {e}", file=sys.stderr)
        _termination_message(str(e))
        return EXIT_CONFIG
    save_bundle(bundle, args.out)
    print(
        f"bundle {args.version} written to {args.out} ({bundle.n_items} items, {ckpt.writes} checkpoints)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
