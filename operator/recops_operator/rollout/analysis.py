"""Prometheus analysis for one interval, tri-state: Pass, Fail or Inconclusive.

Queries run through ``prometheus-api-client`` against ``spec.rollout.prometheusURL``
or the operator default (``RECOPS_PROMETHEUS_URL``). Missing data (no series, NaN,
fewer than ``minRequests`` requests) and an unreachable Prometheus are
*Inconclusive*, never a pass and never a failure by themselves. Every check's
value, threshold and verdict is returned for status and events.

The business check (``analysis.business``) compares conversion per recommendation of the two
tracks with ``sequential.compare`` on totals since the rollout started: attributed events are
counted by whichever pod receives them, labelled with the track that *answered*
(``answer_track``, carried by the attribution token), so they are summed over every pod.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from recops_operator.api.models import BusinessCheck, Rollout
from recops_operator.rollout import sequential
from recops_operator.rollout.machine import Analysis, Verdict

Query = Callable[[str], float | None]


def prometheus_query(url: str, timeout: int = 5) -> Query:
    """A query function returning the first sample's value, or None for no data."""
    from prometheus_api_client import PrometheusConnect

    prom = PrometheusConnect(url=url, disable_ssl=True)

    def query(q: str) -> float | None:
        result = prom.custom_query(q, params={"timeout": f"{int(timeout)}s"})
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    return query


def default_url(spec: Rollout) -> str | None:
    return spec.prometheus_url or os.environ.get("RECOPS_PROMETHEUS_URL")


def _sel(namespace: str, service: str, track: str, extra: str = "") -> str:
    return f'namespace="{namespace}",recsvc="{service}",track="{track}"' + (f",{extra}" if extra else "")


def queries(namespace: str, service: str, track: str, window: str) -> dict[str, str]:
    s = _sel(namespace, service, track, 'route="recommendations"')
    return {
        "requests": f"sum(increase(recops_http_requests_total{{{s}}}[{window}]))",
        "p99-latency-ms": f"1000 * histogram_quantile(0.99, sum by (le) (rate(recops_http_request_duration_seconds_bucket{{{s}}}[{window}])))",
        "error-rate": f'sum(rate(recops_http_requests_total{{{s},code=~"5.."}}[{window}])) / sum(rate(recops_http_requests_total{{{s}}}[{window}]))',
    }


def shadow_queries(namespace: str, service: str, window: str) -> dict[str, str]:
    s = _sel(namespace, service, "stable")
    return {
        "shadow-requests": f"sum(increase(recops_shadow_requests_total{{{s}}}[{window}]))",
        "shadow-error-rate": f'sum(rate(recops_shadow_requests_total{{{s},outcome="error"}}[{window}])) / sum(rate(recops_shadow_requests_total{{{s}}}[{window}]))',
        "shadow-topk-overlap": f"sum(rate(recops_shadow_topk_overlap_ratio_sum{{{s}}}[{window}])) / sum(rate(recops_shadow_topk_overlap_ratio_count{{{s}}}[{window}]))",
    }


EVENT_OF = {"click": "view", "add_to_cart": "add_to_cart", "purchase": "purchase"}


def business_queries(
    namespace: str, service: str, metric: str, window: str, track: str | None = None, arm: str = "model"
) -> dict[str, str]:
    """Recommendations answered (by ``track``, or any) in ``arm`` and what shoppers did with them."""
    own = f'namespace="{namespace}",recsvc="{service}",arm="{arm}"'
    answers = own + ',route="recommendations",code="200"' + (f',track="{track}"' if track else "")
    mine = own + (f',answer_track="{track}"' if track else "")
    if metric == "revenue":
        value = f"sum(increase(recops_attributed_revenue_total{{{mine}}}[{window}]))"
        value_sq = f"sum(increase(recops_attributed_revenue_squared_total{{{mine}}}[{window}]))"
    else:
        value = f'sum(increase(recops_attributed_events_total{{{mine},type="{EVENT_OF[metric]}"}}[{window}]))'
        value_sq = ""
    q = {
        "recommendations": f"sum(increase(recops_http_requests_total{{{answers}}}[{window}]))",
        "value": value,
    }
    return {**q, "value_sq": value_sq} if value_sq else q


def arm_totals(query: Query, q: dict[str, str]) -> sequential.Arm:
    sq = query(q["value_sq"]) if "value_sq" in q else None
    return sequential.Arm(query(q["recommendations"]) or 0.0, query(q["value"]) or 0.0, sq)


def numbers(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 6)


def _since(started_at: float | None, now: float | None, fallback: str) -> str:
    """The PromQL range from the rollout's start to now (whole seconds, at least one scrape)."""
    if started_at is None:
        return fallback
    elapsed = (time.time() if now is None else now) - started_at
    return f"{max(15, math.ceil(elapsed))}s"


def business_check(check: BusinessCheck, namespace: str, service: str, query: Query, window: str) -> dict:
    """The sequential comparison as a check record; its numbers go to status and events."""

    canary, stable = (
        arm_totals(query, business_queries(namespace, service, check.metric, window, track))
        for track in ("canary", "stable")
    )
    c = sequential.compare(
        canary,
        stable,
        max_relative_drop=check.max_relative_drop,
        confidence=check.confidence,
        min_samples=check.min_samples,
    )
    r = numbers
    return {
        "name": f"business-{check.metric}",
        "value": r(c.lift),
        "threshold": f"lift >= -{check.max_relative_drop:g} at {check.confidence:g} (always valid)",
        "verdict": Verdict(c.verdict),
        "message": c.reason,
        "business": {
            "canary": {
                "recommendations": r(canary.recommendations),
                "value": r(canary.value),
                "rate": r(c.rate_candidate),
            },
            "stable": {
                "recommendations": r(stable.recommendations),
                "value": r(stable.value),
                "rate": r(c.rate_baseline),
            },
            "liftLow": r(c.lift_low),
            "liftHigh": r(c.lift_high),
            "logLikelihoodRatio": r(c.log_lr),
            "logThreshold": r(c.threshold),
            "window": window,
        },
    }


def _check(name: str, value: float | None, *, max_: float | None = None, min_: float | None = None) -> dict:
    if value is None:
        verdict = Verdict.INCONCLUSIVE
    elif (max_ is not None and value > max_) or (min_ is not None and value < min_):
        verdict = Verdict.FAIL
    else:
        verdict = Verdict.PASS
    threshold = f"<= {max_:g}" if max_ is not None else f">= {min_:g}"
    return {
        "name": name,
        "value": None if value is None else round(value, 6),
        "threshold": threshold,
        "verdict": verdict,
    }


def _volume(name: str, value: float | None, minimum: int) -> dict:
    """Too few requests is missing evidence, not a failure: Inconclusive."""
    ok = value is not None and value >= minimum
    return {
        "name": name,
        "value": None if value is None else round(value, 3),
        "threshold": f">= {minimum}",
        "verdict": Verdict.PASS if ok else Verdict.INCONCLUSIVE,
    }


def analyse(
    spec: Rollout,
    namespace: str,
    service: str,
    *,
    shadowing: bool,
    query: Query | None = None,
    window: str | None = None,
    started_at: float | None = None,
    now: float | None = None,
) -> Analysis:
    """Run every check for this interval. ``query`` is injectable (tests pass a real Prometheus's).

    ``started_at`` (the rollout's start) sets the business check's cumulative window."""
    window = window or spec.interval
    if query is None:
        url = default_url(spec)
        if not url:
            return Analysis(
                Verdict.INCONCLUSIVE,
                [
                    {
                        "name": "prometheus",
                        "value": None,
                        "threshold": "configured",
                        "verdict": Verdict.INCONCLUSIVE,
                    }
                ],
            )
        query = prometheus_query(url)
    a = spec.analysis
    checks: list[dict] = []
    try:
        if shadowing:
            q = shadow_queries(namespace, service, window)
            volume = query(q["shadow-requests"])
            checks.append(_volume("shadow-requests", volume, a.min_requests))
            if volume is not None and volume >= a.min_requests:
                checks.append(
                    _check("shadow-error-rate", query(q["shadow-error-rate"]), max_=a.max_error_rate)
                )
                checks.append(
                    _check("shadow-topk-overlap", query(q["shadow-topk-overlap"]), min_=a.min_shadow_overlap)
                )
        else:
            q = queries(namespace, service, "canary", window)
            volume = query(q["requests"])
            checks.append(_volume("requests", volume, a.min_requests))
            if volume is not None and volume >= a.min_requests:
                p99 = query(q["p99-latency-ms"])
                err = query(q["error-rate"])
                checks.append(_check("p99-latency-ms", p99, max_=a.max_p99_latency_ms))
                checks.append(
                    _check("error-rate", 0.0 if err is None and volume else err, max_=a.max_error_rate)
                )
                if a.relative:
                    base = queries(namespace, service, "stable", window)
                    if a.relative.max_latency_increase_percent is not None:
                        sp99 = query(base["p99-latency-ms"])
                        limit = (
                            None
                            if sp99 is None
                            else sp99 * (1 + a.relative.max_latency_increase_percent / 100)
                        )
                        checks.append(
                            _check(
                                "p99-vs-stable",
                                p99 if limit is not None else None,
                                max_=limit if limit is not None else 0,
                            )
                        )
                    if a.relative.max_error_rate_increase is not None:
                        serr = query(base["error-rate"]) or 0.0
                        checks.append(
                            _check(
                                "error-rate-vs-stable",
                                err or 0.0,
                                max_=serr + a.relative.max_error_rate_increase,
                            )
                        )
            if a.business and volume is not None and volume >= a.min_requests:
                since = _since(started_at, now, window)
                checks.append(business_check(a.business, namespace, service, query, since))
        for c in a.checks:
            expr = (
                c.query.replace("$namespace", namespace)
                .replace("$service", service)
                .replace("$track", "canary")
            )
            checks.append(_check(c.name, query(expr), max_=c.max, min_=c.min))
    except Exception as e:  # unreachable or erroring Prometheus: hold, never guess
        checks.append(
            {
                "name": "prometheus",
                "value": None,
                "threshold": "reachable",
                "verdict": Verdict.INCONCLUSIVE,
                "error": str(e)[:200],
            }
        )
    verdicts = {c["verdict"] for c in checks}
    if Verdict.FAIL in verdicts:
        overall = Verdict.FAIL
    elif Verdict.INCONCLUSIVE in verdicts:
        overall = Verdict.INCONCLUSIVE
    else:
        overall = Verdict.PASS
    return Analysis(overall, checks)
