"""The job's only Python operator: the SQL results (absolute values, one changelog stream) -> Redis in
batches. Runs inside the PyFlink Python worker (imported there by reference: no pyflink at import).

Rows are ``(kind, key, value)`` strings (job.sql): ``f`` an entity's minute buckets, ``t`` one row of
a category's top list for a window, ``i`` an item's stock. The UDF is a *vectorized* (pandas) scalar
function: Flink hands it one Arrow batch of rows per call, and ``write_rows`` keeps the newest value
per key of that batch and writes it as ONE pipelined MULTI before the call returns. That is the
public API giving the checkpoint alignment: the Arrow operator closes its current batch when the
Python bundle ends (``python.fn-execution.bundle.size/time``) and Flink finishes the bundle before a
checkpoint barrier passes the operator (``prepareSnapshotPreBarrier``), so a completed checkpoint
never covers a value that is not in Redis yet; a restart from it replays the rest and rewrites the
same absolute values (idempotent, no increments). Arrow also moves the rows columnar instead of one
pickled row at a time. Redis down: the write retries for ``redis_retry_s`` and then fails the task,
which restarts from the last checkpoint (nothing lost).
"""

from __future__ import annotations

import time
import uuid

from recops_stream import features as f


def parse_buckets(s: str) -> dict[int, dict[str, int]]:
    """``m,type,cat,n;...`` (the SQL LISTAGG) -> {minute: {"type:cat": n}}."""
    out: dict[int, dict[str, int]] = {}
    for part in s.split(";") if s else ():
        m, typ, cat, n = part.split(",")
        b = out.setdefault(int(m), {})
        k = f"{typ}:{cat}"
        b[k] = b.get(k, 0) + int(n)
    return out


def entity_fields(value: str) -> dict[str, str]:
    as_of, last_purchase, buckets = value.split("|", 2)
    fields = f.window_fields(parse_buckets(buckets), float(as_of))
    if last_purchase:
        fields["last_purchase_ts"] = f"{float(last_purchase):.3f}"
    return fields


class Batch:
    """Newest value per key since the last flush, and the commands that write them."""

    def __init__(self, cfg: f.JobConfig):
        self.cfg = cfg
        self.entities: dict[str, str] = {}
        self.items: dict[str, str] = {}
        self.trend: dict[str, tuple[int, dict[str, float]]] = {}  # category -> (window end, items)
        self.trend_written: dict[str, int] = {}  # category -> window end already (partly) in Redis

    def add(self, kind: str, key: str, value: str) -> None:
        if kind == "f":
            self.entities[key] = value
        elif kind == "i":
            self.items[key] = value
        elif kind == "t":
            end, item, score = value.split("|")
            w = int(end)
            cur = self.trend.get(key)
            if cur is None or cur[0] < w:
                cur = self.trend[key] = (w, {})
            if cur[0] == w:
                cur[1][item] = float(score)

    def __len__(self) -> int:
        return len(self.entities) + len(self.items) + len(self.trend)

    def write(self, pipe) -> None:
        cfg = self.cfg
        for entity, value in self.entities.items():
            key = f.FEATURE_PREFIX + entity
            pipe.delete(key)
            pipe.hset(key, mapping=entity_fields(value))
            pipe.expire(key, cfg.feature_ttl_s)
        for item, value in self.items.items():
            stock_s, ts = value.split("|")
            stock = int(stock_s)
            key = f"{f.ITEM_PREFIX}{item}"
            pipe.hset(key, mapping={"stock": stock, "soldout": int(stock <= 0), "ts": ts})
            pipe.expire(key, cfg.item_ttl_s)
            (pipe.sadd if stock <= 0 else pipe.srem)(f.SOLDOUT_KEY, item)
        if self.items:
            pipe.expire(f.SOLDOUT_KEY, cfg.item_ttl_s)
            pipe.set(f.SOLDOUT_VERSION_KEY, uuid.uuid4().hex, ex=cfg.item_ttl_s)
        for cat, (end, scores) in self.trend.items():
            key = f"{f.TREND_PREFIX}{cat}"
            if self.trend_written.get(cat) != end:  # a new window replaces the list; the rest of
                pipe.delete(key)  # a window split over two bundles is added to it
            pipe.zadd(key, scores)
            pipe.zremrangebyrank(key, 0, -cfg.trend_top_n - 1)
            pipe.expire(key, 2 * cfg.trend_window_s)

    def clear(self) -> None:
        for cat, (end, _) in self.trend.items():
            self.trend_written[cat] = end
        self.entities, self.items, self.trend = {}, {}, {}


class RedisWriter:
    """The body of the job's vectorized UDF ``recops_write(kind, k, v)`` (a pyflink ScalarFunction
    subclass in job.py: this module must import without pyflink or pandas). The UDF sees every
    changelog row without its kind: an update's old value (-U) always comes before its new one (+U),
    so keeping the newest value per key writes the new one."""

    def __init__(self, redis_url: str, cfg: f.JobConfig):
        self.redis_url, self.cfg = redis_url, cfg

    def open(self, ctx) -> None:
        import redis

        self.r = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.batch = Batch(self.cfg)
        mg = ctx.get_metric_group()
        self.m_rows = mg.counter("redis_rows")
        self.m_flushes = mg.counter("redis_flushes")

    def close(self) -> None:
        self.r.close()

    def write_rows(self, kinds: list[str], keys: list[str], values: list[str]) -> int:
        """One Arrow batch: newest value per key, written before returning (the batch's rows count
        as processed only then). Returns the number of rows."""
        add = self.batch.add
        for kind, key, value in zip(kinds, keys, values, strict=True):
            add(kind, key, value)
        self.m_rows.inc(len(kinds))
        self.flush()
        return len(kinds)

    def flush(self) -> None:
        if not len(self.batch):
            return
        import redis

        deadline = time.monotonic() + self.cfg.redis_retry_s
        delay = 0.05
        while True:
            try:
                pipe = self.r.pipeline(transaction=True)
                self.batch.write(pipe)
                pipe.execute()
                break
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise  # the task fails and restarts from the last checkpoint: nothing is lost
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        self.batch.clear()
        self.m_flushes.inc()
