"""The clickstream job (PyFlink 2.3, DataStream API with Python keyed process functions).

Topic ``recops.events`` (docs/stream.md) ->
  1. per session and per user: views / add-to-carts per category over 5 and 30 min, last purchase time
     -> Redis hash ``recops:f:<s|u>:<id>`` (DEL + HSET of absolute values in one MULTI, EXPIRE = 30 min);
  2. per category: trending items over a sliding 30-min window, recomputed every 10 s of event time
     -> sorted set ``recops:trend:<category>``; per item: stock from ``inventory`` events minus purchases
     -> ``recops:item:<id>`` and the set ``recops:soldout``;
  3. every click event -> Flink ``FileSink`` (row format, part files committed by checkpoints: exactly
     once) in ``<archive>/events/_staging/``, published as Parquet under ``events/dt=YYYY-MM-DD/`` by
     ``archive.compact`` (idempotent; recops_stream.archive).
Event time from ``ts`` (the Kafka record timestamp) with a per-partition bounded-out-of-orderness watermark; events older than watermark minus the
allowed lateness are counted (``late_events`` metric, ``recops:stream:stats`` hash) and not used for
features (they are archived). Every keyed state has an explicit TTL (features.JobConfig).

Why process functions, not Table/SQL windows: the features must be in Redis within a second of the
event (a window result only appears at the window's end) and Redis has no Flink 2.x connector.
Run: ``<flink venv>/bin/python job.py --bootstrap ... --topic ... --redis-url ... --archive-dir ...``
(embedded mini-cluster) or ``flink run -py job.py`` on a cluster; recops_stream.runner does both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyflink.common import Configuration, Duration, Encoder, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.time import Time
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (
    FileSink,
    OutputFileConfig,
    RollingPolicy,
)
from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import (
    StateTtlConfig,
    ValueStateDescriptor,
)

from recops_stream import features as f


def ttl(seconds: int) -> StateTtlConfig:
    return (
        StateTtlConfig.new_builder(Time.seconds(seconds))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build()
    )


class _RedisFn(KeyedProcessFunction):
    def __init__(self, redis_url: str, cfg: f.JobConfig):
        self.redis_url, self.cfg = redis_url, cfg

    def _open_common(self, ctx: RuntimeContext) -> None:
        import redis

        self.r = redis.Redis.from_url(self.redis_url, socket_timeout=5, retry_on_timeout=True)
        self.late = ctx.get_metrics_group().counter("late_events")

    def _is_late(self, ctx: KeyedProcessFunction.Context, ev: dict) -> bool:
        wm = ctx.timer_service().current_watermark()
        if ev["ts"] * 1000 < wm - self.cfg.allowed_lateness_s * 1000:
            self.late.inc()
            self.r.hincrby(f.STATS_KEY, "late_events", 1)
            return True
        return False


class SessionUserFeatures(_RedisFn):
    """Keyed by ``s:<session>`` / ``u:<user>``: minute buckets -> the 5/30-min feature hash."""

    def open(self, ctx: RuntimeContext) -> None:
        self._open_common(ctx)
        # one value per key (minute buckets, as_of, last purchase): one state read and one write per
        # event (a MapState iteration is a round trip to the JVM per call; the bench throughput was poor)
        d = ValueStateDescriptor("entity", Types.PICKLED_BYTE_ARRAY())
        d.enable_time_to_live(ttl(self.cfg.feature_state_ttl_s))
        self.state = ctx.get_state(d)

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        entity, ev = value
        if self._is_late(ctx, ev):
            return
        buckets, as_of, last_purchase = self.state.value() or ({}, 0.0, None)
        m = f.minute(ev["ts"])
        buckets[m] = f.add_to_bucket(buckets.get(m), ev)
        as_of = max(as_of, ev["ts"])
        if ev["type"] == "purchase":
            last_purchase = max(last_purchase or 0.0, ev["ts"])
        for old in f.prune(buckets, as_of, self.cfg.feature_ttl_s):
            del buckets[old]
        self.state.update((buckets, as_of, last_purchase))
        fields = f.window_fields(buckets, as_of)
        if last_purchase is not None:
            fields["last_purchase_ts"] = f"{last_purchase:.3f}"
        key = f.FEATURE_PREFIX + entity
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.cfg.feature_ttl_s)
        pipe.execute()
        yield key


class TrendingItems(_RedisFn):
    """Keyed by category: minute buckets of weighted item counts; top-N every ``trend_slide_s``."""

    def open(self, ctx: RuntimeContext) -> None:
        self._open_common(ctx)
        d = ValueStateDescriptor("items", Types.PICKLED_BYTE_ARRAY())  # {minute: {item: score}}
        d.enable_time_to_live(ttl(self.cfg.trend_state_ttl_s))
        self.buckets = ctx.get_state(d)

    def process_element(self, ev, ctx: KeyedProcessFunction.Context):
        if self._is_late(ctx, ev):
            return
        buckets = self.buckets.value() or {}
        b = buckets.setdefault(f.minute(ev["ts"]), {})
        b[ev["item_id"]] = b.get(ev["item_id"], 0.0) + f.TREND_WEIGHTS[ev["type"]]
        self.buckets.update(buckets)
        slide = self.cfg.trend_slide_s * 1000
        ctx.timer_service().register_event_time_timer((int(ev["ts"] * 1000) // slide + 1) * slide)
        yield from ()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        now = timestamp / 1000
        buckets = self.buckets.value() or {}
        for old in f.prune(buckets, now, self.cfg.trend_window_s):
            del buckets[old]
        self.buckets.update(buckets)
        top = f.trending(buckets, now, self.cfg.trend_window_s, self.cfg.trend_top_n)
        key = f"{f.TREND_PREFIX}{ctx.get_current_key()}"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        if top:
            pipe.zadd(key, {str(i): s for i, s in top})
            pipe.expire(key, 2 * self.cfg.trend_window_s)
        pipe.execute()
        yield key


class ItemAvailability(_RedisFn):
    """Keyed by item: stock from inventory events minus purchases; sold out when it reaches 0."""

    def open(self, ctx: RuntimeContext) -> None:
        self._open_common(ctx)
        d = ValueStateDescriptor("stock", Types.LONG())
        d.enable_time_to_live(ttl(self.cfg.item_state_ttl_s))
        self.stock = ctx.get_state(d)

    def process_element(self, ev, ctx: KeyedProcessFunction.Context):
        new = f.stock_after(self.stock.value(), ev)
        if new is None:
            return
        self.stock.update(new)
        item = ev["item_id"]
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{f.ITEM_PREFIX}{item}", mapping={"stock": new, "soldout": int(new <= 0), "ts": ev["ts"]})
        pipe.expire(f"{f.ITEM_PREFIX}{item}", self.cfg.item_ttl_s)
        (pipe.sadd if new <= 0 else pipe.srem)(f.SOLDOUT_KEY, str(item))
        pipe.expire(f.SOLDOUT_KEY, self.cfg.item_ttl_s)
        pipe.execute()
        yield item


def flink_config(args: argparse.Namespace, cfg: f.JobConfig) -> Configuration:
    conf = Configuration()
    ckpt = Path(args.checkpoints).resolve().as_uri()
    settings = {
        "pipeline.name": "recops-clickstream",
        "pipeline.jars": ";".join(Path(j).resolve().as_uri() for j in args.jars),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.fn-execution.bundle.size": str(cfg.bundle_size),
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        # keyed state lives in the JVM; the Python worker caches it per key. The default (1000 keys) is
        # far below the live sessions + users, and every miss is a round trip to the JVM.
        "python.state.cache-size": "200000",
        "parallelism.default": str(args.parallelism),
        "execution.checkpointing.dir": ckpt,
        "state.checkpoints.dir": ckpt,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "state.backend.type": args.state_backend,
        "state.backend.incremental": "true",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "1 s",
        "taskmanager.memory.process.size": "1200m",
    }
    if args.rest_port:  # embedded only: under `flink run` the client's -m address must stay
        settings["rest.port"] = str(args.rest_port)
    if args.restore:
        settings["execution.state-recovery.path"] = args.restore
        settings["execution.savepoint.path"] = args.restore
    for k, v in settings.items():
        conf.set_string(k, v)
    return conf


def build(env: StreamExecutionEnvironment, args: argparse.Namespace, cfg: f.JobConfig) -> None:
    env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_topics(args.topic)
        .set_group_id(args.group)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("partition.discovery.interval.ms", "10000")
        .build()
    )
    # Event time = the Kafka record timestamp, which the producer sets to the event's ts (docs/stream.md):
    # the watermark is then generated per partition inside the source (a Python timestamp assigner
    # would run after the source and merge partitions, making in-order partitions look late).
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_seconds(cfg.max_out_of_orderness_s)
    ).with_idleness(Duration.of_seconds(cfg.idle_partition_s))
    raw = env.from_source(source, watermarks, "kafka").uid("kafka-source")
    events = raw.map(f.parse).uid("parse").filter(lambda ev: ev is not None).uid("valid")
    clicks = events.filter(lambda ev: ev["type"] in f.CLICK_TYPES).uid("clicks")

    (
        clicks.flat_map(lambda ev: [(e, ev) for e in f.entities(ev)])
        .uid("entities")
        .key_by(lambda t: t[0], key_type=Types.STRING())
        .process(SessionUserFeatures(args.redis_url, cfg), output_type=Types.STRING())
        .uid("features")
        .name("features -> redis")
    )
    (
        clicks.key_by(f.category, key_type=Types.INT())
        .process(TrendingItems(args.redis_url, cfg), output_type=Types.STRING())
        .uid("trending")
        .name("trending -> redis")
    )
    (
        events.filter(lambda ev: ev["type"] in ("inventory", "purchase"))
        .uid("stock-events")
        .key_by(lambda ev: ev["item_id"], key_type=Types.LONG())
        .process(ItemAvailability(args.redis_url, cfg), output_type=Types.LONG())
        .uid("availability")
        .name("availability -> redis")
    )
    staging = Path(args.archive_dir) / "events" / "_staging"
    sink = (
        FileSink.for_row_format(str(staging), Encoder.simple_string_encoder())
        .with_output_file_config(
            OutputFileConfig.builder().with_part_prefix("part").with_part_suffix(".jsonl").build()
        )
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
        .build()
    )
    (
        clicks.map(
            lambda ev: json.dumps(ev, separators=(",", ":"), sort_keys=True), output_type=Types.STRING()
        )
        .uid("archive-lines")
        .sink_to(sink)
        .uid("archive-sink")
        .name("archive (exactly once)")
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", default="recops.events")
    p.add_argument("--group", default="recops-clickstream")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--archive-dir", required=True, help="local directory (the mounted oss:// root)")
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--restore", help="a retained checkpoint (chk-N dir) or savepoint to start from")
    p.add_argument("--jars", nargs="*", default=[])
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--state-backend", default="hashmap", choices=["hashmap", "rocksdb"])
    p.add_argument("--rest-port", type=int, default=0)
    p.add_argument("--checkpoint-interval-ms", type=int, default=f.JobConfig.checkpoint_interval_ms)
    p.add_argument("--bundle-size", type=int, default=f.JobConfig.bundle_size)
    p.add_argument("--bundle-time-ms", type=int, default=f.JobConfig.bundle_time_ms)
    p.add_argument("--allowed-lateness-s", type=int, default=f.JobConfig.allowed_lateness_s)
    args = p.parse_args(argv)
    cfg = f.JobConfig(
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        bundle_size=args.bundle_size,
        bundle_time_ms=args.bundle_time_ms,
        allowed_lateness_s=args.allowed_lateness_s,
    )
    env = StreamExecutionEnvironment.get_execution_environment(flink_config(args, cfg))
    build(env, args, cfg)
    env.execute("recops-clickstream")


if __name__ == "__main__":
    main()
