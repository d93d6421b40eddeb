"""The job's command line, without pyflink: the operator's rendered FlinkDeployment args
(recops_contracts.stream.job_args) are parsed by this very parser in a test, so the two cannot drift.

Connection strings that carry credentials may come from the environment instead of the command line
(``RECOPS_KAFKA_BOOTSTRAP``, ``RECOPS_REDIS_URL``: Secret-backed env in the pod template), because
the Flink operator shows a job's args in its status and the JobManager logs them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recops_contracts import stream as contract  # found beside stream/: recops_stream/__init__.py
from recops_stream import features as f

#: the JobConfig fields that have a flag of their own
TUNABLE = (
    "checkpoint_interval_ms", "bundle_size", "bundle_time_ms", "mini_batch_ms", "buffer_timeout_ms",
    "feature_state_ttl_s", "item_state_ttl_s", "trend_window_s", "trend_slide_s",
)  # fmt: skip


def parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(description="The clickstream job: Kafka -> Flink SQL -> Redis + archive.")
    p.add_argument(
        "--bootstrap", default=env.get(contract.BOOTSTRAP_ENV), help=f"or ${contract.BOOTSTRAP_ENV}"
    )
    p.add_argument("--topic", default=contract.DEFAULT_TOPIC)
    p.add_argument("--group", default=contract.DEFAULT_GROUP)
    p.add_argument(
        "--redis-url", default=env.get(contract.REDIS_URL_ENV), help=f"or ${contract.REDIS_URL_ENV}"
    )
    p.add_argument(
        "--archive-dir", required=True, help="a local directory (the mounted oss:// root) or a URI"
    )
    p.add_argument("--checkpoints", required=True, help="a local directory or a URI (oss://...)")
    p.add_argument("--restore", help="a retained checkpoint (chk-N dir) or savepoint to start from")
    p.add_argument("--jars", nargs="*", default=[])
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--state-backend", default="rocksdb", choices=["rocksdb", "hashmap"])
    p.add_argument("--rest-port", type=int, default=0)
    p.add_argument(
        "--tmp-dir", help="io.tmp.dirs: the TaskManager's working files (RocksDB's among them); default /tmp"
    )
    p.add_argument("--explain", action="store_true", help="print the execution plan and exit")
    p.add_argument(
        "--detached",
        action="store_true",
        help="submit and return (`flink run -d`, application mode); default: wait (embedded mini-cluster)",
    )
    d = f.JobConfig()
    for name in TUNABLE:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--redis-retry-s", type=float, default=d.redis_retry_s, help="then the task fails")
    return p


def parse(argv: list[str] | None = None, env: dict[str, str] | None = None) -> argparse.Namespace:
    p = parser(env)
    args = p.parse_args(argv)
    for flag, value in (("--bootstrap", args.bootstrap), ("--redis-url", args.redis_url)):
        if not value:
            p.error(f"{flag} (or its environment variable) is required")
    return args


def job_config(args: argparse.Namespace) -> f.JobConfig:
    """The JobConfig of parsed args; the Redis TTLs follow the state TTLs they outlive."""
    values = {name: getattr(args, name) for name in TUNABLE}
    return f.JobConfig(
        **values,
        redis_retry_s=args.redis_retry_s,
        feature_ttl_s=min(f.JobConfig().feature_ttl_s, args.feature_state_ttl_s),
        item_ttl_s=args.item_state_ttl_s,
        trend_state_ttl_s=args.trend_window_s + 300,
    )


def location(path_or_uri: str) -> str:
    """A URI as Flink takes it: a local path becomes file://, a URI (oss://, file://) stays."""
    if "://" in path_or_uri:
        return path_or_uri.rstrip("/")
    return Path(path_or_uri).resolve().as_uri()
