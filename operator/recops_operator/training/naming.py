"""Names of training objects, run ids and model versions.

A run is one Job. Its id is the Job name: the CronJob controller names scheduled Jobs
``<cronjob>-<scheduled unix minutes>`` and we name on-demand Jobs ``<cronjob>-od-<hash of
the trigger token>``, so the id is stable across pod replacements (every pod of the Job
reads it from the ``batch.kubernetes.io/job-name`` label through the downward API) and an
on-demand trigger maps to exactly one Job name (creating it twice is an AlreadyExists, not
a second run). The produced model version is the run id: unique, and it names the Job
that built it.
"""

from __future__ import annotations

import hashlib

#: CronJob names are limited to 52 characters; the controller appends "-<8 digits>" and
#: Job names must stay valid label values (<= 63). On-demand names append "-od-<8 hex>".
_BASE_MAX = 50


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def training_base_name(service: str) -> str:
    """Name of the CronJob (and prefix of every training Job) of a service."""
    base = f"{service}-train"
    if len(base) <= _BASE_MAX:
        return base
    return f"{service[: _BASE_MAX - 15].rstrip('-')}-{_short_hash(service, 6)}-train"


def on_demand_job_name(service: str, token: str) -> str:
    """Deterministic Job name for the on-demand run requested with ``token``."""
    return f"{training_base_name(service)}-od-{_short_hash(token)}"


def checkpoint_uri(base: str, run_id: str) -> str:
    """Per-run checkpoint location under ``spec.training.checkpoint.uri``."""
    return f"{base.rstrip('/')}/{run_id}"


def bundle_uri(model_uri: str, version: str) -> str:
    """Where the bundle of ``version`` lives under ``spec.model.uri``."""
    return f"{model_uri.rstrip('/')}/{version}"
