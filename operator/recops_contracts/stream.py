"""What the operator's FlinkDeployment and the clickstream job (recops_stream/job.py) agree on.

The job reads its configuration from its command line (argparse), with the two connection strings
that carry credentials from the environment (filled from Secrets by the pod template, never in the
CR nor in the job's args, which the Flink operator shows in its status). ``job_args`` is the one
place that spells the flags, so the operator cannot render a flag the job does not parse
(tests/stream/test_contract.py parses the rendered args with the job's own parser).
Stdlib only: the Flink image's Python imports it next to recops_stream.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOPIC = "recops.events"
DEFAULT_GROUP = "recops-clickstream"

#: environment variables the job falls back to for --bootstrap / --redis-url (Secret-backed)
BOOTSTRAP_ENV = "RECOPS_KAFKA_BOOTSTRAP"
REDIS_URL_ENV = "RECOPS_REDIS_URL"

#: where the stream image carries the job (the FlinkDeployment's ``-py`` argument), the Python
#: that runs the driver and the UDF workers (a venv with PyFlink and redis-py), and the paths that
#: make ``recops_stream`` and ``recops_contracts`` importable there (stream/Dockerfile builds them)
JOB_PATH = "/opt/recops/stream/recops_stream/job.py"
PYTHON_PATH = "/opt/recops/venv/bin/python"
IMPORT_PATHS = ("/opt/recops/stream", "/opt/recops/operator")

#: state TTLs and windows the job defaults to (recops_stream.features.JobConfig uses these)
FEATURE_STATE_TTL_SECONDS = 1800 + 300
ITEM_STATE_TTL_SECONDS = 7 * 86400
TREND_WINDOW_SECONDS = 1800
TREND_SLIDE_SECONDS = 10
TREND_TOP_N = 50  # items per category's trending list
TREND_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}  # an event's share of a trend score
#: per-entity count windows (name, seconds): ``v5:<category>`` = views in the last 5 minutes, ...; the
#: server picks a session's category for the trending list from the first one's views
WINDOWS = (("5", 300), ("30", 1800))
WATERMARK_DELAY_SECONDS = 5  # event-time watermark: the newest event time minus this


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """The job's knobs that the RecommenderService sets."""

    topic: str = DEFAULT_TOPIC
    group: str = DEFAULT_GROUP
    parallelism: int = 1
    archive: str
    checkpoints: str
    state_backend: str = "rocksdb"
    feature_state_ttl_s: int = FEATURE_STATE_TTL_SECONDS
    item_state_ttl_s: int = ITEM_STATE_TTL_SECONDS
    trend_window_s: int = TREND_WINDOW_SECONDS
    trend_slide_s: int = TREND_SLIDE_SECONDS


def job_args(s: JobSettings) -> list[str]:
    """The job's command line (after ``-py JOB_PATH``), detached: under application mode the
    driver submits and returns; the cluster runs the job."""
    return [
        "--topic", s.topic,
        "--group", s.group,
        "--parallelism", str(s.parallelism),
        "--archive-dir", s.archive,
        "--checkpoints", s.checkpoints,
        "--state-backend", s.state_backend,
        "--feature-state-ttl-s", str(s.feature_state_ttl_s),
        "--item-state-ttl-s", str(s.item_state_ttl_s),
        "--trend-window-s", str(s.trend_window_s),
        "--trend-slide-s", str(s.trend_slide_s),
        "--detached",
    ]  # fmt: skip
