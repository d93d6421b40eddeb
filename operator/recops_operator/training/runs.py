"""Run records for ``status.training``, computed from the training Jobs (pure, level-based).

A run is a Job. Preemptions of a run are counted on its Job as one annotation per
preempted pod (``recops.io/preempted.<pod>``): the pod handler adds keys with a merge
patch, so concurrent notices never race on a counter, and the count is simply the number
of such keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recops_operator.api.status import TrainingRun
from recops_operator.training import config as c

PREEMPTED_POD_PREFIX = "recops.io/preempted."


def job_phase(job: Mapping[str, Any]) -> tuple[str, str | None]:
    """(Pending|Running|Succeeded|Failed, reason) of a Job."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", None
        if cond.get("type") == "Failed":
            return "Failed", cond.get("reason")
    if status.get("active") and not (job.get("spec") or {}).get("suspend"):
        return "Running", None
    return "Pending", None


def job_preemptions(job: Mapping[str, Any]) -> int:
    ann = (job.get("metadata") or {}).get("annotations") or {}
    return sum(1 for k in ann if k.startswith(PREEMPTED_POD_PREFIX))


def preempted_pod_key(pod_name: str) -> str:
    """Job annotation key recording that ``pod_name`` was preempted (<= 63-char name part)."""
    return PREEMPTED_POD_PREFIX + pod_name[-(63 - len("preempted.")) :]


def run_record(job: Mapping[str, Any]) -> TrainingRun:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    phase, reason = job_phase(job)
    completion = status.get("completionTime")
    if not completion and phase == "Failed":
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Failed":
                completion = cond.get("lastTransitionTime")
    return TrainingRun(
        name=meta.get("name"),
        version=meta.get("name"),
        trigger=(meta.get("labels") or {}).get(c.TRIGGER_LABEL, c.TRIGGER_SCHEDULED),
        phase=phase,
        reason=reason,
        start_time=status.get("startTime") or meta.get("creationTimestamp"),
        completion_time=completion,
        preemptions=job_preemptions(job),
    )


def _created(job: Mapping[str, Any]) -> str:
    meta = job.get("metadata") or {}
    return f"{meta.get('creationTimestamp') or ''}/{meta.get('name') or ''}"


def current_and_last(
    jobs: Iterable[Mapping[str, Any]],
) -> tuple[TrainingRun | None, TrainingRun | None]:
    """The newest active run and the newest finished run of a service."""
    current = last = None
    for job in sorted(jobs, key=_created):
        if (job.get("metadata") or {}).get("deletionTimestamp"):
            continue
        rec = run_record(job)
        if rec.phase in ("Succeeded", "Failed"):
            last = rec
        else:
            current = rec
    return current, last


def active_runs(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the runs that are not finished (the on-demand trigger waits while any exists)."""
    return [
        (j.get("metadata") or {}).get("name")
        for j in jobs
        if job_phase(j)[0] in ("Pending", "Running")
        and not (j.get("metadata") or {}).get("deletionTimestamp")
    ]


def _suspended(job: Mapping[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def next_to_start(jobs: Iterable[Mapping[str, Any]]) -> str | None:
    """The queued run to start now, or None: a run starts only when no other run is active.

    Runs are created suspended (queued). Among unfinished runs, if one is already
    unsuspended it keeps the slot; otherwise the oldest queued one gets it.
    """
    unfinished = [
        j
        for j in sorted(jobs, key=_created)
        if job_phase(j)[0] in ("Pending", "Running")
        and not (j.get("metadata") or {}).get("deletionTimestamp")
    ]
    if not unfinished or any(not _suspended(j) for j in unfinished):
        return None
    return (unfinished[0].get("metadata") or {}).get("name")
