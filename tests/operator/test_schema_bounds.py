"""Loop-driving durations and counts are bounded in the models (and so in the CRD), with the bound
in the message. The same bounds are enforced by the API server: see test_admission_e2e."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recops_operator.api.models import Monitoring, Rollout, duration_seconds


@pytest.mark.parametrize(
    ("value", "ok"),
    [("0s", False), ("4s", False), ("5s", True), ("1h", True), ("1h1s", False), ("61m", False)],
)
def test_rollout_interval_has_a_floor_and_a_ceiling(value, ok):
    if ok:
        assert Rollout(interval=value).interval == value
    else:
        with pytest.raises(ValidationError, match=r"rollout.interval must be between 5s and 1h"):
            Rollout(interval=value)


def test_scrape_interval_bounds_and_duration_parsing():
    with pytest.raises(ValidationError, match="between 5s and 5m"):
        Monitoring(scrape_interval="0s")
    assert duration_seconds("1h2m3s") == 3723


def test_deadlines_and_counts_have_ceilings():
    with pytest.raises(ValidationError, match="less than or equal to 604800"):
        Rollout(progress_deadline_seconds=10**9)
    with pytest.raises(ValidationError, match="less than or equal to 10000000"):
        Rollout(analysis={"minRequests": 10**9})
