"""The clickstream job (PyFlink 2.3): Kafka -> Flink SQL -> Redis in batches + the exactly-once archive.

Topic ``recops.events`` (docs/stream.md), one SQL plan (a statement set: the topic is read and its JSON
parsed once, in the JVM), event time = the Kafka record timestamp (= the event's ``ts``) with
per-partition watermarks inside the source and idle partitions released:
  1. archive: the click events -> the SQL filesystem sink (JSON lines, part files committed by
     checkpoints: exactly once) in ``<archive>/events/_staging/``, published as Parquet under
     ``events/dt=YYYY-MM-DD/`` by ``archive.compact``. No Python on this path.
  2. features, all aggregation in Flink SQL (mini-batch: emitted at most every ``mini_batch_ms``):
     - per session and per user: counts per (minute, type, category) and one row per entity with
       its minute buckets, newest event time and last purchase (two-level group aggregation);
     - per category: trending items over a sliding 30-min window (HOP, slide 10 s) and the window
       Top-N (50) by weighted count; events behind the watermark are dropped there and counted by
       Flink (``numLateRecordsDropped``);
     - per item: stock = the newest ``inventory`` event's stock minus the purchases after it.
  3. a vectorized (pandas/Arrow) Python scalar UDF (recops_stream.writer) writes those changelogs to
     Redis: the newest absolute value per key, one pipelined MULTI per Arrow batch (not a call per
     event), the batch closed at each bundle end and so before each checkpoint barrier; a replay
     rewrites the same values (idempotent).
State TTLs explicit (features.JobConfig): ``table.exec.state.ttl`` for the entity aggregations, a
``STATE_TTL`` hint of 7 days for stock; window state is cleaned by the watermark.
Run: ``<flink venv>/bin/python job.py --bootstrap ... --topic ... --redis-url ... --archive-dir ...``
(embedded mini-cluster) or ``flink run -py job.py`` on a cluster; recops_stream.runner does both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.table import DataTypes, StreamTableEnvironment
from pyflink.table.udf import ScalarFunction, udf

from recops_stream import features as f
from recops_stream import options
from recops_stream.writer import RedisWriter


class Writer(RedisWriter, ScalarFunction):
    """Vectorized (``func_type="pandas"``): ``eval`` gets one Arrow batch as three pandas Series."""

    def eval(self, kind, k, v):
        import pandas as pd

        keys = k.tolist()
        # the planner pushes the UNION ALL below the call: ``kind`` arrives as the literal itself
        kinds = kind.tolist() if isinstance(kind, pd.Series) else [kind] * len(keys)
        n = self.write_rows(kinds, keys, v.tolist())
        return pd.Series([0] * n, dtype="int32")

    def is_deterministic(self) -> bool:  # a side effect: never folded, reordered or deduplicated
        return False


def tables(args: argparse.Namespace, cfg: f.JobConfig) -> list[str]:
    """The source (the topic, JSON parsed once in the JVM) and the two sinks."""
    staging = f"{options.location(args.archive_dir)}/events/_staging"
    return [
        f"""CREATE TEMPORARY TABLE rc_topic (
             event_id STRING, user_id STRING, session_id STRING, item_id STRING, `type` STRING,
             ts DOUBLE, quantity DOUBLE, price DOUBLE, category STRING, attribution_token STRING,
             stock STRING,
             rowtime TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
             WATERMARK FOR rowtime AS rowtime - INTERVAL '{cfg.max_out_of_orderness_s}' SECOND
           ) WITH (
             'connector' = 'kafka', 'topic' = '{args.topic}',
             'properties.bootstrap.servers' = '{args.bootstrap}', 'properties.group.id' = '{args.group}',
             'scan.startup.mode' = 'earliest-offset', 'scan.topic-partition-discovery.interval' = '10 s',
             'scan.watermark.idle-timeout' = '{cfg.idle_partition_s} s',
             'format' = 'json', 'json.ignore-parse-errors' = 'true', 'json.fail-on-missing-field' = 'false'
           )""",
        f"""CREATE TEMPORARY TABLE rc_archive (
             event_id STRING, user_id STRING, session_id STRING, item_id BIGINT, `type` STRING,
             ts DOUBLE, quantity DOUBLE, price DOUBLE, category BIGINT, attribution_token STRING
           ) WITH (
             'connector' = 'filesystem', 'path' = '{staging}', 'format' = 'json',
             'sink.rolling-policy.rollover-interval' = '1 s', 'sink.rolling-policy.check-interval' = '1 s'
           )""",
        "CREATE TEMPORARY TABLE rc_discard (x INT) WITH ('connector' = 'blackhole')",
    ]


def sql(cfg: f.JobConfig) -> list[str]:
    """The views over ``rc_topic``; ``rc_changes`` is the one changelog the writer consumes."""
    weights = " ".join(f"WHEN '{t}' THEN {w}" for t, w in f.TREND_WEIGHTS.items())
    clicks = ", ".join(f"'{t}'" for t in f.CLICK_TYPES)
    return [
        """CREATE TEMPORARY VIEW rc_ev AS SELECT
             event_id,
             COALESCE(NULLIF(session_id, ''), NULLIF(user_id, '')) AS session_id,
             NULLIF(user_id, '') AS user_id,
             TRY_CAST(item_id AS BIGINT) AS item_id,
             COALESCE(`type`, 'view') AS `type`,
             ts AS ets,
             COALESCE(TRY_CAST(category AS INT), -1) AS category,
             TRY_CAST(category AS BIGINT) AS raw_category,
             quantity, price, attribution_token,
             TRY_CAST(stock AS BIGINT) AS stock,
             rowtime
           FROM rc_topic""",
        f"""CREATE TEMPORARY VIEW rc_clicks AS SELECT * FROM rc_ev
           WHERE `type` IN ({clicks}) AND session_id IS NOT NULL AND item_id IS NOT NULL AND ets IS NOT NULL""",
        """CREATE TEMPORARY VIEW rc_ent AS
             SELECT CONCAT('s:', session_id) AS entity, `type`, category, ets FROM rc_clicks
           UNION ALL
             SELECT CONCAT('u:', user_id) AS entity, `type`, category, ets FROM rc_clicks
             WHERE user_id IS NOT NULL""",
        """CREATE TEMPORARY VIEW rc_buckets AS
           SELECT entity, CAST(FLOOR(ets / 60) AS BIGINT) AS m, `type`, category, COUNT(*) AS n,
                  MAX(ets) AS as_of, MAX(CASE WHEN `type` = 'purchase' THEN ets END) AS lp
           FROM rc_ent GROUP BY entity, CAST(FLOOR(ets / 60) AS BIGINT), `type`, category""",
        """CREATE TEMPORARY VIEW rc_entity_rows AS
           SELECT 'f' AS kind, entity AS k,
                  CONCAT(CAST(MAX(as_of) AS STRING), '|', COALESCE(CAST(MAX(lp) AS STRING), ''), '|',
                         LISTAGG(CONCAT(CAST(m AS STRING), ',', `type`, ',', CAST(category AS STRING), ',',
                                        CAST(n AS STRING)), ';')) AS v
           FROM rc_buckets GROUP BY entity""",
        f"""CREATE TEMPORARY VIEW rc_trend_rows AS
           SELECT 't' AS kind, CAST(category AS STRING) AS k,
                  CONCAT(CAST(UNIX_TIMESTAMP(CAST(window_end AS STRING)) AS STRING), '|',
                         CAST(item_id AS STRING), '|', CAST(score AS STRING)) AS v
           FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, category
                                          ORDER BY score DESC, item_id) AS rn
             FROM (
               SELECT window_start, window_end, category, item_id,
                      SUM(CASE `type` {weights} ELSE 0 END) AS score
               FROM TABLE(HOP(TABLE rc_clicks, DESCRIPTOR(rowtime), INTERVAL '{cfg.trend_slide_s}' SECOND,
                              INTERVAL '{cfg.trend_window_s // 60}' MINUTE))
               GROUP BY window_start, window_end, category, item_id))
           WHERE rn <= {cfg.trend_top_n}""",
        """CREATE TEMPORARY VIEW rc_inv_last AS
           SELECT item_id, stock, ets FROM (
             SELECT item_id, stock, ets, ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY rowtime DESC) AS rn
             FROM rc_ev
             WHERE `type` = 'inventory' AND stock IS NOT NULL AND item_id IS NOT NULL AND ets IS NOT NULL)
           WHERE rn = 1""",
        f"""CREATE TEMPORARY VIEW rc_stock_joined AS
           SELECT /*+ STATE_TTL('i' = '{cfg.item_state_ttl_s}s', 'p' = '{cfg.item_state_ttl_s}s') */
                  i.item_id, i.stock, i.ets AS inv_ts, p.ets AS p_ts,
                  CASE WHEN p.ets > i.ets THEN p.q ELSE 0 END AS bought
           FROM rc_inv_last AS i LEFT JOIN (
             SELECT item_id, ets, CASE WHEN quantity > 0 THEN CAST(quantity AS BIGINT) ELSE 1 END AS q
             FROM rc_clicks WHERE `type` = 'purchase') AS p
           ON i.item_id = p.item_id""",
        f"""CREATE TEMPORARY VIEW rc_stock_rows AS
           SELECT /*+ STATE_TTL('sj' = '{cfg.item_state_ttl_s}s') */
                  'i' AS kind, CAST(item_id AS STRING) AS k,
                  CONCAT(CAST(MAX(stock) - SUM(bought) AS STRING), '|',
                         CAST(MAX(GREATEST(inv_ts, COALESCE(p_ts, inv_ts))) AS STRING)) AS v
           FROM rc_stock_joined AS sj GROUP BY item_id""",
        """CREATE TEMPORARY VIEW rc_changes AS
           SELECT * FROM rc_entity_rows UNION ALL SELECT * FROM rc_trend_rows
           UNION ALL SELECT * FROM rc_stock_rows""",
    ]


def flink_config(args: argparse.Namespace, cfg: f.JobConfig) -> Configuration:
    conf = Configuration()
    ckpt = options.location(args.checkpoints)
    settings = {
        "pipeline.name": "recops-clickstream",
        "pipeline.jars": ";".join(Path(j).resolve().as_uri() for j in args.jars),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.fn-execution.bundle.size": str(cfg.bundle_size),
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        "python.fn-execution.arrow.batch.size": str(cfg.bundle_size),  # one Arrow batch per bundle
        "parallelism.default": str(args.parallelism),
        "execution.checkpointing.dir": ckpt,
        "state.checkpoints.dir": ckpt,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.buffer-timeout.interval": f"{cfg.buffer_timeout_ms} ms",
        "state.backend.type": args.state_backend,
        "state.backend.incremental": "true",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "1 s",
        "taskmanager.memory.process.size": "1200m",
        # the SQL side: emit aggregates per mini-batch (not per event), UTC, explicit state TTL
        "table.exec.mini-batch.enabled": "true",
        "table.exec.mini-batch.allow-latency": f"{cfg.mini_batch_ms} ms",
        "table.exec.mini-batch.size": str(cfg.mini_batch_size),
        "table.exec.state.ttl": f"{cfg.feature_state_ttl_s} s",
        "table.local-time-zone": "UTC",
    }
    if args.tmp_dir:
        settings["io.tmp.dirs"] = args.tmp_dir
    if args.rest_port:  # embedded only: under `flink run` the client's -m address must stay
        settings["rest.port"] = str(args.rest_port)
    if args.restore:
        settings["execution.state-recovery.path"] = args.restore
        settings["execution.savepoint.path"] = args.restore
    for k, v in settings.items():
        conf.set_string(k, v)
    return conf


def build(env: StreamExecutionEnvironment, args: argparse.Namespace, cfg: f.JobConfig):
    env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    env.set_buffer_timeout(cfg.buffer_timeout_ms)
    t_env = StreamTableEnvironment.create(env)
    for stmt in tables(args, cfg) + sql(cfg):
        t_env.execute_sql(stmt)
    t_env.create_temporary_function(
        "recops_write", udf(Writer(args.redis_url, cfg), result_type=DataTypes.INT(), func_type="pandas")
    )
    stmts = t_env.create_statement_set()
    # one plan: the topic is read and parsed once, for the archive and for the features
    stmts.add_insert_sql(
        """INSERT INTO rc_archive SELECT event_id, user_id, session_id, item_id, `type`, ets, quantity,
              price, raw_category, attribution_token FROM rc_clicks"""
    )
    stmts.add_insert_sql("INSERT INTO rc_discard SELECT recops_write(kind, k, v) FROM rc_changes")
    return stmts


def main(argv: list[str] | None = None) -> None:
    args = options.parse(argv)
    cfg = options.job_config(args)
    env = StreamExecutionEnvironment.get_execution_environment(flink_config(args, cfg))
    stmts = build(env, args, cfg)
    if args.explain:
        print(stmts.explain())
        return
    result = stmts.execute()
    if not args.detached:  # the embedded mini-cluster lives as long as this process; under `flink run -d`
        result.wait()  # wait() never returns (the detached client gets no job result): return at once


if __name__ == "__main__":
    main()
