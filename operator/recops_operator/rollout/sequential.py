"""A sequential test of conversion per recommendation, valid however often it is looked at.

The rollout looks at the candidate-vs-stable comparison every interval and would stop at the
first look that crosses a line, so a fixed-sample z-test (valid for one look) rolls back good
models far more often than its level says (about 3x at 10 looks, more with more; see
``tests/rollout/test_sequential.py``). We use an **always-valid confidence sequence** instead:
the normal-mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and
Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3),
2022 (the method behind Optimizely's stats engine), on the log rate ratio, with the plug-in
variance that Waudby-Smith et al., "Time-uniform central limit theory and asymptotic confidence
sequences" (Annals of Statistics, 2024) show keeps it valid asymptotically. By Ville's
inequality the interval covers the true ratio at every look at once with probability
>= ``confidence``, so stopping when it first excludes a value keeps the error rate bounded.
Chosen over group-sequential boundaries (O'Brien-Fleming, Pocock) because those fix the number
of looks and the information at each in advance; a canary's traffic, interval count and
operator restarts do not.

Model: each track's attributed value (events or revenue) is compound Poisson in the
recommendations it served, so ``log(rate)`` has variance ``(sum(y^2) / sum(y)) / E[sum(y)]``
(``1 / expected count`` for events; expected from the pooled rate, see ``_estimate``).
``theta = log(rate_candidate / rate_stable)``; the margin is ``log(1 - maxDrop)``:
* the whole interval below the margin: a drop beyond the bound is significant -> Fail;
* the whole interval above it: non-inferiority is significant -> Pass;
* otherwise (or fewer than ``min_samples`` recommendations on a side) -> Inconclusive.
The same interval with margin 0 reports holdout lift (personalised vs holdout) with error bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: the mixture's spread (the log-ratio effects the test is most efficient at); near the margin,
#: but never narrower than a 5 % effect, which would make every look but the very late ones weak
MIN_MIXTURE_SD = 0.05


@dataclass(frozen=True)
class Arm:
    """Cumulative totals of one track (or holdout arm) since the comparison started."""

    recommendations: float  # answers served (the exposure)
    value: float  # attributed events (or revenue) on those answers
    value_sq: float | None = None  # sum of squared per-event values (None: events, each 1)

    @property
    def rate(self) -> float:
        return self.value / self.recommendations if self.recommendations > 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    verdict: str  # "Pass" | "Fail" | "Inconclusive" (the rollout's Verdict values)
    rate_candidate: float
    rate_baseline: float
    lift: float  # rate_candidate / rate_baseline - 1
    lift_low: float  # the always-valid interval of the lift at ``confidence``
    lift_high: float
    log_lr: float  # mSPRT log likelihood ratio against "the drop is exactly the margin"
    threshold: float  # log(1 / alpha): log_lr above it is significant
    reason: str


def _estimate(candidate: Arm, baseline: Arm) -> tuple[float, float]:
    """log(rate_c / rate_s) and its variance.

    The variance uses the pooled rate (each track's expected value if both converted alike),
    not each track's own count: a candidate with no conversions at all then gives a large,
    finite statistic instead of an undefined one. Compound Poisson: Var(log X) = (m2 / m1) / E[X]
    with m2 / m1 the pooled sum of squares over the sum (1 for events). Half an average event is
    added to each side's value so the log stays finite (Haldane-Anscombe).
    """
    total = candidate.value + baseline.value
    sq = total if candidate.value_sq is None else (candidate.value_sq or 0.0) + (baseline.value_sq or 0.0)
    spread = sq / total
    half = 0.5 * spread
    theta = math.log((candidate.value + half) / candidate.recommendations) - math.log(
        (baseline.value + half) / baseline.recommendations
    )
    exposure = candidate.recommendations + baseline.recommendations
    expected_c = total * candidate.recommendations / exposure
    expected_b = total * baseline.recommendations / exposure
    return theta, spread * (1 / expected_c + 1 / expected_b)


def interval(theta: float, var: float, alpha: float, tau: float) -> float:
    """Half-width of the normal-mixture confidence sequence for ``theta`` (Johari et al., eq. 11)."""
    t2 = tau * tau
    return math.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + math.log((var + t2) / var)))


def log_likelihood_ratio(theta: float, theta0: float, var: float, tau: float) -> float:
    """The mSPRT statistic for H0: theta == theta0 with a N(theta0, tau^2) mixture."""
    t2 = tau * tau
    return 0.5 * math.log(var / (var + t2)) + t2 * (theta - theta0) ** 2 / (2 * var * (var + t2))


def compare(
    candidate: Arm,
    baseline: Arm,
    *,
    max_relative_drop: float,
    confidence: float = 0.95,
    min_samples: int = 1000,
) -> Comparison:
    """Decide whether the candidate's rate per recommendation is within ``max_relative_drop``."""
    alpha = 1.0 - confidence
    threshold = math.log(1 / alpha)
    nan = math.nan
    if min(candidate.recommendations, baseline.recommendations) < max(min_samples, 1):
        n = int(min(candidate.recommendations, baseline.recommendations))
        return Comparison(
            "Inconclusive",
            candidate.rate,
            baseline.rate,
            nan,
            nan,
            nan,
            nan,
            threshold,
            f"{n} recommendations on the smaller side, need {min_samples}",
        )
    if candidate.value + baseline.value <= 0:
        return Comparison(
            "Inconclusive", 0.0, 0.0, nan, nan, nan, nan, threshold, "no attributed events on either track"
        )
    theta, var = _estimate(candidate, baseline)
    margin = math.log(1.0 - max_relative_drop) if max_relative_drop < 1 else -math.inf
    tau = max(abs(margin), MIN_MIXTURE_SD) if math.isfinite(margin) else MIN_MIXTURE_SD
    w = interval(theta, var, alpha, tau)
    lo, hi = theta - w, theta + w
    stat = log_likelihood_ratio(theta, margin, var, tau) if math.isfinite(margin) else -math.inf
    bound = f"{100 * max_relative_drop:g}%"
    if hi < margin:
        verdict, reason = "Fail", f"dropped by more than {bound} (significant)"
    elif lo > margin:
        verdict, reason = "Pass", f"no drop beyond {bound} (significant)"
    else:
        verdict, reason = "Inconclusive", f"a drop of {bound} is not yet ruled in or out"
    return Comparison(
        verdict,
        candidate.rate,
        baseline.rate,
        math.exp(theta) - 1,
        math.exp(lo) - 1,
        math.exp(hi) - 1,
        stat,
        threshold,
        reason,
    )


def lift(personalised: Arm, holdout: Arm, *, confidence: float = 0.95, min_samples: int = 100) -> Comparison:
    """Personalisation lift over the holdout arm with its always-valid interval (margin 0)."""
    c = compare(personalised, holdout, max_relative_drop=0.0, confidence=confidence, min_samples=min_samples)
    if c.verdict == "Pass":
        return replace(c, reason="personalisation lifts the rate (significant)")
    if c.verdict == "Fail":
        return replace(c, reason="personalisation lowers the rate (significant)")
    return c if math.isnan(c.lift) else replace(c, reason="lift not yet significant")


@dataclass(frozen=True)
class Outcome:
    verdict: str  # the first non-Inconclusive verdict, or Inconclusive after every look
    looks: int  # the look that decided (or the number of looks)


def simulate(
    *,
    drop: float,
    weight: float,
    requests_per_look: float,
    base_rate: float,
    looks: int,
    max_relative_drop: float,
    confidence: float = 0.95,
    min_samples: int = 1000,
    rng,
) -> Outcome:
    """One canary, looked at every interval until decided: Poisson recommendations per track,
    Poisson conversions per recommendation (stable ``base_rate``, candidate ``base_rate * (1 - drop)``).
    ``rng`` is a ``numpy.random.Generator``; the bench and the error-rate test run many of these."""
    cand = base = Arm(0.0, 0.0)
    for look in range(1, looks + 1):
        nc = float(rng.poisson(requests_per_look * weight))
        nb = float(rng.poisson(requests_per_look * (1 - weight)))
        cand = Arm(cand.recommendations + nc, cand.value + rng.poisson(nc * base_rate * (1 - drop)))
        base = Arm(base.recommendations + nb, base.value + rng.poisson(nb * base_rate))
        c = compare(
            cand, base, max_relative_drop=max_relative_drop, confidence=confidence, min_samples=min_samples
        )
        if c.verdict != "Inconclusive":
            return Outcome(c.verdict, look)
    return Outcome("Inconclusive", looks)
