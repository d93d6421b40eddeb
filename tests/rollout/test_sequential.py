"""The business check's sequential test: error rates under repeated looks, power, edge cases.

Pure decision function, many simulated canaries (seeded): the false-rollback rate of a
candidate that is exactly as good as stable must stay at or below 1 - confidence although the
rollout looks every interval and stops at the first decision. The same simulation with a
fixed-sample z-test shows why that needs a sequential method.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recops_operator.rollout.sequential import Arm, compare, lift, simulate

RUNS = 1500


def _rollback_rate(rng, drop: float, runs: int = RUNS, **kw) -> float:
    outcomes = [
        simulate(
            drop=drop,
            weight=kw.get("weight", 0.25),
            requests_per_look=kw.get("requests", 20_000),
            base_rate=0.05,
            looks=kw.get("looks", 30),
            max_relative_drop=kw.get("max_drop", 0.0),
            confidence=kw.get("confidence", 0.95),
            min_samples=100,
            rng=rng,
        )
        for _ in range(runs)
    ]
    return sum(o.verdict == "Fail" for o in outcomes) / runs


def test_false_rollback_rate_under_repeated_looks_stays_below_alpha():
    # margin 0: any significant drop rolls back, the hardest case for the error rate
    rate = _rollback_rate(np.random.default_rng(7), drop=0.0)
    se = math.sqrt(0.05 * 0.95 / RUNS)
    assert rate <= 0.05 + 2 * se, rate
    strict = _rollback_rate(np.random.default_rng(8), drop=0.0, confidence=0.99)
    assert strict <= 0.01 + 2 * math.sqrt(0.01 * 0.99 / RUNS), strict


def _naive_z_rollback_rate(rng, looks: int = 30, runs: int = RUNS) -> float:
    """A fixed-sample one-sided z-test on the log ratio, peeked at every look (what not to do)."""
    failed = 0
    for _ in range(runs):
        xc = xb = nc = nb = 0.0
        for _ in range(looks):
            dc, db = rng.poisson(5000), rng.poisson(15000)
            nc, nb = nc + dc, nb + db
            xc, xb = xc + rng.poisson(dc * 0.05), xb + rng.poisson(db * 0.05)
            z = (math.log(xc / nc) - math.log(xb / nb)) / math.sqrt(1 / xc + 1 / xb)
            if z < -1.645:
                failed += 1
                break
    return failed / runs


def test_a_fixed_sample_test_peeked_at_every_interval_would_exceed_alpha():
    """The reason for the sequential method: the same looks with a z-test roll back far too often."""
    assert _naive_z_rollback_rate(np.random.default_rng(9)) > 2 * 0.05


def test_a_real_drop_is_rolled_back_and_an_equal_candidate_passes_non_inferiority():
    rng = np.random.default_rng(3)
    bad = [
        simulate(
            drop=0.2,
            weight=0.1,
            requests_per_look=12_000,
            base_rate=0.05,
            looks=30,
            max_relative_drop=0.05,
            rng=rng,
        )
        for _ in range(100)
    ]
    assert sum(o.verdict == "Fail" for o in bad) >= 95
    assert not any(o.verdict == "Pass" for o in bad)
    good = [
        simulate(
            drop=0.0,
            weight=0.25,
            requests_per_look=50_000,
            base_rate=0.05,
            looks=30,
            max_relative_drop=0.1,
            rng=rng,
        )
        for _ in range(100)
    ]
    assert sum(o.verdict == "Pass" for o in good) >= 95
    assert not any(o.verdict == "Fail" for o in good)


def test_too_little_traffic_is_inconclusive_with_the_reason():
    c = compare(Arm(50, 3), Arm(5000, 250), max_relative_drop=0.05, min_samples=1000)
    assert c.verdict == "Inconclusive" and "50 recommendations" in c.reason
    c = compare(Arm(2000, 0), Arm(2000, 0), max_relative_drop=0.05, min_samples=1000)
    assert c.verdict == "Inconclusive" and "no attributed events" in c.reason


def test_zero_conversions_on_the_candidate_is_a_finite_significant_drop():
    c = compare(Arm(20_000, 0), Arm(20_000, 1000), max_relative_drop=0.05, min_samples=1000)
    assert c.verdict == "Fail"
    assert math.isfinite(c.lift_low) and c.lift_high < -0.05


def test_interval_contains_the_estimate_and_narrows_with_data():
    small = compare(Arm(10_000, 500), Arm(10_000, 520), max_relative_drop=0.05)
    large = compare(Arm(1_000_000, 50_000), Arm(1_000_000, 52_000), max_relative_drop=0.05)
    for c in (small, large):
        assert c.lift_low < c.lift < c.lift_high
    assert (large.lift_high - large.lift_low) < (small.lift_high - small.lift_low) / 5
    assert large.lift == pytest.approx(50_000 / 52_000 - 1, rel=1e-3)


def test_revenue_uses_the_spread_of_order_values():
    """Same totals, lumpier orders (a few large baskets): a wider interval."""
    even = compare(
        Arm(50_000, 100_000, 100_000 * 20), Arm(50_000, 100_000, 100_000 * 20), max_relative_drop=0.1
    )
    lumpy = compare(
        Arm(50_000, 100_000, 100_000 * 400), Arm(50_000, 100_000, 100_000 * 400), max_relative_drop=0.1
    )
    assert (lumpy.lift_high - lumpy.lift_low) > 3 * (even.lift_high - even.lift_low)
    assert even.verdict == "Pass" and lumpy.verdict == "Inconclusive"


def test_holdout_lift_reports_an_interval_and_a_verdict():
    up = lift(Arm(100_000, 6000), Arm(10_000, 400))
    assert up.verdict == "Pass" and up.lift == pytest.approx(0.5, rel=0.02) and up.lift_low > 0
    none = lift(Arm(1000, 50), Arm(1000, 48))
    assert none.verdict == "Inconclusive" and none.lift_low < 0 < none.lift_high
