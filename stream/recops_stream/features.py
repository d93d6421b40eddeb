"""What the stream job computes, as pure functions over plain state (no pyflink import): the Redis key
layout the server reads, the per-minute buckets behind the 5/30-minute windows, trending scores.

Why per-minute buckets in keyed state rather than SQL HOP windows: every entity's hash is rewritten
with absolute counts after each of its events (an event reaches Redis within the bundle time, not at
a window's end), and a replay from a checkpoint recomputes the same absolute values, so HSET
overwrites instead of incrementing: the write is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recops_contracts import stream as contract

#: Redis keys (docs/stream.md). Hash of per-window counts per session / per user.
FEATURE_PREFIX = "recops:f:"
TREND_PREFIX = "recops:trend:"  # sorted set item -> score, per category
ITEM_PREFIX = "recops:item:"  # hash {stock, soldout, ts} per item
SOLDOUT_KEY = "recops:soldout"  # set of sold-out item ids (one SMEMBERS/SMISMEMBER for the server)
#: a new random token in the same MULTI as every change of SOLDOUT_KEY: the server re-reads the set
#: only when it differs from the token of its cached copy (a cache key, not a feature: not idempotent)
SOLDOUT_VERSION_KEY = "recops:soldout:v"

CLICK_TYPES = ("view", "add_to_cart", "purchase")
WINDOWS = contract.WINDOWS
TREND_WEIGHTS = contract.TREND_WEIGHTS
UNKNOWN_CATEGORY = -1


@dataclass(frozen=True)
class JobConfig:
    """Every knob of the job, state TTLs explicit (seconds)."""

    feature_ttl_s: int = 1800  # Redis TTL of a feature hash = the longest window
    feature_state_ttl_s: int = (
        contract.FEATURE_STATE_TTL_SECONDS
    )  # keyed state of an idle session/user is dropped after this
    trend_window_s: int = contract.TREND_WINDOW_SECONDS  # sliding window of trending items
    trend_slide_s: int = (
        contract.TREND_SLIDE_SECONDS
    )  # how often a category's top list is recomputed (event time)
    trend_top_n: int = contract.TREND_TOP_N
    trend_state_ttl_s: int = 1800 + 300
    item_state_ttl_s: int = contract.ITEM_STATE_TTL_SECONDS  # stock per item
    item_ttl_s: int = 7 * 86400
    max_out_of_orderness_s: int = contract.WATERMARK_DELAY_SECONDS  # watermark delay
    idle_partition_s: int = 30  # a partition silent this long no longer holds the watermark back
    checkpoint_interval_ms: int = 2000
    # Python bundle = one Redis flush: throughput vs latency (python.fn-execution.bundle.*)
    bundle_size: int = 5000
    bundle_time_ms: int = 100
    mini_batch_ms: int = 100  # SQL aggregations emit at most this often (table.exec.mini-batch.*)
    mini_batch_size: int = 5000
    buffer_timeout_ms: int = 10  # network buffers flushed at least this often (latency)
    redis_retry_s: float = 20.0  # a flush retries this long, then the task fails and restores


def parse(raw: str | bytes) -> dict[str, Any] | None:
    """One topic message -> event dict, or None when it is not a usable event (counted by the job)."""
    try:
        ev = json.loads(raw)
        if not isinstance(ev, dict):
            return None
        ev["item_id"] = int(ev["item_id"])
        ev["ts"] = float(ev["ts"])
        ev.setdefault("type", "view")
        if not ev.get("session_id"):
            ev["session_id"] = ev.get("user_id")
        if ev["type"] != "inventory" and not ev.get("session_id"):
            return None
        return ev
    except (ValueError, KeyError, TypeError):
        return None


def category(ev: dict[str, Any]) -> int:
    c = ev.get("category")
    try:
        return int(c) if c is not None else UNKNOWN_CATEGORY
    except (TypeError, ValueError):
        return UNKNOWN_CATEGORY


def entities(ev: dict[str, Any]) -> list[str]:
    """The feature keys an event updates: its session, and its user when logged in."""
    if ev.get("type") not in CLICK_TYPES:
        return []
    out = [f"s:{ev['session_id']}"]
    if ev.get("user_id"):
        out.append(f"u:{ev['user_id']}")
    return out


def minute(ts: float) -> int:
    return int(ts // 60)


def add_to_bucket(bucket: dict[str, int] | None, ev: dict[str, Any]) -> dict[str, int]:
    """A minute bucket: counts per ``<type>:<category>``."""
    b = dict(bucket or {})
    k = f"{ev['type']}:{category(ev)}"
    b[k] = b.get(k, 0) + 1
    return b


def window_fields(buckets: dict[int, dict[str, int]], as_of: float) -> dict[str, str]:
    """The feature hash from minute buckets: ``v5:<cat>``, ``c5:<cat>`` (views, add-to-carts over the
    last 5 min), ``v30:``, ``c30:`` (30 min), ``as_of`` (the newest event time they count up to).
    Windows are whole minutes ending at ``as_of``'s minute."""
    now_m = minute(as_of)
    out: dict[str, int] = {}
    for name, secs in WINDOWS:
        lo = now_m - secs // 60 + 1
        for m, bucket in buckets.items():
            if lo <= m <= now_m:
                for k, n in bucket.items():
                    typ, cat = k.split(":", 1)
                    short = {"view": "v", "add_to_cart": "c"}.get(typ)
                    if short:
                        f = f"{short}{name}:{cat}"
                        out[f] = out.get(f, 0) + n
    fields = {k: str(v) for k, v in sorted(out.items())}
    fields["as_of"] = f"{as_of:.3f}"
    return fields


def prune(buckets: dict[int, Any], as_of: float, keep_s: int) -> list[int]:
    """Bucket minutes older than the longest window: to remove from state."""
    lo = minute(as_of) - keep_s // 60
    return [m for m in buckets if m < lo]


def trending(
    buckets: dict[int, dict[int, float]], now: float, window_s: int, top_n: int
) -> list[tuple[int, float]]:
    """Top items by weighted count (view 1, add-to-cart 3, purchase 5) over the sliding window."""
    lo = minute(now) - window_s // 60 + 1
    score: dict[int, float] = {}
    for m, b in buckets.items():
        if lo <= m <= minute(now):
            for item, s in b.items():
                score[item] = score.get(item, 0.0) + s
    return sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


def stock_after(stock: int | None, ev: dict[str, Any]) -> int | None:
    """Stock from ``inventory`` events (``stock``) minus purchased quantities; None = unknown."""
    if ev.get("type") == "inventory":
        try:
            return int(ev["stock"])
        except (KeyError, TypeError, ValueError):
            return stock
    if ev.get("type") == "purchase" and stock is not None:
        q = ev.get("quantity", 1)
        return stock - (int(q) if isinstance(q, int | float) and q > 0 else 1)
    return stock


def recompute(events: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """From-scratch feature hashes for a list of events (tests and offline replay): what the job's
    Redis hashes must equal once it has seen them all."""
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        for e in entities(ev):
            by_entity.setdefault(e, []).append(ev)
    out = {}
    for e, evs in by_entity.items():
        buckets: dict[int, dict[str, int]] = {}
        last_purchase = None
        for ev in evs:
            buckets[minute(ev["ts"])] = add_to_bucket(buckets.get(minute(ev["ts"])), ev)
            if ev["type"] == "purchase":
                last_purchase = max(last_purchase or 0.0, ev["ts"])
        fields = window_fields(buckets, max(ev["ts"] for ev in evs))
        if last_purchase is not None:
            fields["last_purchase_ts"] = f"{last_purchase:.3f}"
        out[FEATURE_PREFIX + e] = fields
    return out
