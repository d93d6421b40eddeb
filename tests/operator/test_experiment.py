"""Holdout lift in status: the arms' totals since the assignment, the interval, the reset."""

from __future__ import annotations

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.experiment import measure
from tests.support.kube import service


def _spec(percent: float = 10, salt: str = "s1") -> RecommenderServiceSpec:
    spec = service("feed")["spec"]
    spec["experiment"] = {"holdout": {"percent": percent, "salt": salt, "metric": "purchase"}}
    return RecommenderServiceSpec.model_validate(spec)


def test_lift_with_its_interval_and_a_window_since_the_assignment():
    seen: list[str] = []
    totals = {"model": (90_000.0, 5_400.0), "holdout": (10_000.0, 400.0)}  # 6% vs 4% per answer

    def query(q: str) -> float:
        seen.append(q)
        arm = "holdout" if 'arm="holdout"' in q else "model"
        return totals[arm][0 if "recops_http_requests_total" in q else 1]

    first = measure(_spec(), "shop", "feed", query, None, now=1000.0)
    assert first["since"] == 1000.0 and first["verdict"] == "Pass"
    assert first["model"]["rate"] == 0.06 and first["holdout"]["rate"] == 0.04
    assert first["liftLow"] < first["lift"] < first["liftHigh"] and first["liftLow"] > 0
    assert all('type="purchase"' in q for q in seen if "attributed" in q)
    later = measure(_spec(), "shop", "feed", query, first, now=4600.0)
    assert later["since"] == 1000.0 and any("[3600s]" in q for q in seen), "totals since the assignment"
    reshuffled = measure(_spec(salt="s2"), "shop", "feed", query, later, now=5000.0)
    assert reshuffled["since"] == 5000.0, "a new salt is a new experiment"
