"""Session-based kNN (STAN: Garg et al., SIGIR 2019) for anonymous click streams.

Why this model: on session-based next-item tasks, tuned neighbourhood methods match or beat the
neural ones (Ludewig et al., UMUAI 2021; see the README's evaluation), they need no GPU and no
training beyond an index, and a new click is used by the very next request. On the Diginetica
SR-GNN split it scores above SR-GNN (README, ``python -m recops_serve.evaluate diginetica``).

Scoring for a session ``s`` (oldest click first, ``n`` clicks):
* a click at position ``p`` weighs ``exp((p - n) / POSITION_DECAY)`` (the latest counts most);
* each training session ``t`` sharing an item gets ``sim = sum(weights of shared items) / sqrt(|s| |t|)``;
  only the ``SAMPLE`` most recent training sessions per item are considered;
* the ``NEIGHBOURS`` most similar sessions vote for their items with ``sim * exp(-|q - q*| / ITEM_DECAY)``,
  where ``q*`` is the position in ``t`` of the latest click of ``s`` that ``t`` contains.
The defaults are session-rec's published STAN values for Diginetica; the trainer's tuning
(validation.tune) may pick other neighbour counts and decays on a shop's own validation tail.

The index is plain CSR arrays that live in the model bundle: sessions -> items in click order, and
item -> (session, last position in it) with the most recent session first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 500
SAMPLE = 10_000
POSITION_DECAY = 1.225
ITEM_DECAY = 4.9
MAX_SESSION = 10  # older clicks weigh < exp(-9 / 1.225) ~ 0.0006: skipping them changes nothing


@dataclass(frozen=True)
class SessionIndex:
    sess_ptr: np.ndarray  # int64 [n_sessions + 1]
    sess_items: np.ndarray  # int32 [n_clicks], item indices in click order
    item_sess_ptr: np.ndarray  # int64 [n_items + 1]
    item_sess: np.ndarray  # int32, training session rows, most recent first
    item_sess_pos: np.ndarray  # int32, last position of the item in that session

    @property
    def empty(self) -> bool:
        return self.sess_ptr.size < 2


def build(session: np.ndarray, item: np.ndarray, ts: np.ndarray, n_items: int) -> dict[str, np.ndarray]:
    """Index arrays from interactions (session codes, item indices, timestamps)."""
    if session.size:  # number sessions by start time so that "most recent" is "highest row"
        start = np.full(int(session.max()) + 1, np.inf)
        np.minimum.at(start, session, ts)
        rank = np.empty(start.size, np.int64)
        rank[np.argsort(start, kind="stable")] = np.arange(start.size)
        session = rank[session]
    order = np.lexsort((ts, session))
    sess, it = session[order].astype(np.int64), item[order].astype(np.int32)
    if sess.size == 0:
        z64, z32 = np.zeros(1, np.int64), np.empty(0, np.int32)
        return {
            "sess_ptr": z64,
            "sess_items": z32,
            "item_sess_ptr": np.zeros(n_items + 1, np.int64),
            "item_sess": z32,
            "item_sess_pos": z32,
        }
    starts = np.r_[0, np.flatnonzero(np.diff(sess)) + 1]
    lengths = np.diff(np.r_[starts, sess.size])
    row = np.repeat(np.arange(starts.size, dtype=np.int32), lengths)
    pos = (np.arange(sess.size) - np.repeat(starts, lengths)).astype(np.int32)
    # one entry per (item, session): the last position; sessions newest first within an item
    o = np.lexsort((-pos, -row, it))
    i_it, i_row, i_pos = it[o], row[o], pos[o]
    first = np.r_[True, (i_it[1:] != i_it[:-1]) | (i_row[1:] != i_row[:-1])]
    i_it, i_row, i_pos = i_it[first], i_row[first], i_pos[first]
    return {
        "sess_ptr": np.r_[starts, sess.size].astype(np.int64),
        "sess_items": it,
        "item_sess_ptr": np.searchsorted(i_it, np.arange(n_items + 1)).astype(np.int64),
        "item_sess": i_row.astype(np.int32),
        "item_sess_pos": i_pos.astype(np.int32),
    }


def score(
    ix: SessionIndex,
    clicks: list[int],
    *,
    neighbours: int = NEIGHBOURS,
    sample: int = SAMPLE,
    position_decay: float = POSITION_DECAY,
    item_decay: float = ITEM_DECAY,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate items and their STAN scores for a session given oldest click first.

    With both decays infinite this is plain SKNN (cosine session neighbours), the evaluation baseline."""
    clicks = clicks[-MAX_SESSION:]
    n = len(clicks)
    if ix.empty or n == 0:
        return np.empty(0, np.int32), np.empty(0, np.float32)
    weight: dict[int, float] = {}
    for p, x in enumerate(clicks):
        weight[x] = math.exp((p + 1 - n) / position_decay)  # a repeated item keeps its latest weight
    xs = np.fromiter(weight, np.int64, len(weight))
    lo = ix.item_sess_ptr[xs]
    span = np.minimum(ix.item_sess_ptr[xs + 1], lo + sample) - lo
    total = int(span.sum())
    if total == 0:
        return np.empty(0, np.int32), np.empty(0, np.float32)
    # one gather for all the clicked items' (most recent) sessions
    at = np.repeat(lo - np.cumsum(span) + span, span) + np.arange(total)
    cand, cpos = ix.item_sess[at], ix.item_sess_pos[at]
    cw = np.repeat(np.fromiter(weight.values(), np.float64, len(weight)), span)
    uniq, inv = np.unique(cand, return_inverse=True)
    lengths = (ix.sess_ptr[uniq + 1] - ix.sess_ptr[uniq]).astype(np.float64)
    sim = np.bincount(inv, weights=cw, minlength=uniq.size) / np.sqrt(len(weight) * lengths)
    # q*: position in the neighbour of the session's latest (highest-weight) shared click
    o = np.lexsort((-cw, inv))
    inv_o = inv[o]
    lead = np.concatenate(([True], inv_o[1:] != inv_o[:-1]))
    anchor = np.empty(uniq.size, np.float64)
    anchor[inv_o[lead]] = cpos[o][lead]
    top = (
        np.argpartition(-sim, neighbours - 1)[:neighbours] if uniq.size > neighbours else np.arange(uniq.size)
    )
    rows = uniq[top]
    starts, ends = ix.sess_ptr[rows], ix.sess_ptr[rows + 1]
    lens = ends - starts
    owner = np.repeat(np.arange(rows.size), lens)
    offset = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    items = ix.sess_items[np.repeat(starts, lens) + offset]
    votes = sim[top][owner] * np.exp(-np.abs(offset - anchor[top][owner]) / item_decay)
    cand_items, cinv = np.unique(items, return_inverse=True)
    return cand_items.astype(np.int32), np.bincount(cinv, weights=votes).astype(np.float32)
