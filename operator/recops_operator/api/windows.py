"""Sale windows as cron expressions (KEDA's cron trigger form): shared by the model's validation
(a shape the trigger cannot express is rejected at admission) and the autoscaling render. Imports
nothing of the operator."""

from __future__ import annotations

import datetime as dt
import re

LOCAL_TIME = "%Y-%m-%dT%H:%M"


def _is_cron(text: str) -> bool:
    return not re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T", text)


def _local_to_cron(text: str) -> str:
    t = dt.datetime.strptime(text, LOCAL_TIME)
    return f"{t.minute} {t.hour} {t.day} {t.month} *"


def to_cron(start_text: str, end_text: str | None, duration_s: int | None) -> tuple[str, str]:
    """(start, end) as 5-field cron expressions (KEDA's cron trigger form) of a window given by its
    start and either its end or its length in seconds. A one-off local date-time becomes
    ``M H D Mo *`` (it would recur on that date next year: remove it after). Raises ValueError on a
    shape the cron trigger cannot express."""
    if _is_cron(start_text):
        start = start_text
        if end_text is not None:
            end = end_text if _is_cron(end_text) else _local_to_cron(end_text)
        else:
            fields = start_text.split()
            if not (fields[0].isdigit() and fields[1].isdigit()):
                raise ValueError("duration with a cron start needs plain minute and hour fields; use end")
            total = int(fields[1]) * 60 + int(fields[0]) + (duration_s or 0) // 60
            if total >= 24 * 60 and any(f != "*" for f in fields[2:]):
                raise ValueError("the window crosses midnight of a dated cron start; use end")
            end = " ".join([str(total % 60), str(total // 60 % 24), *fields[2:]])
    else:
        start = _local_to_cron(start_text)
        if end_text is not None:
            end = end_text if _is_cron(end_text) else _local_to_cron(end_text)
        else:
            t = dt.datetime.strptime(start_text, LOCAL_TIME) + dt.timedelta(seconds=duration_s or 0)
            end = _local_to_cron(t.strftime(LOCAL_TIME))
    if start == end:
        raise ValueError("a sale window must not end when it starts")
    return start, end
