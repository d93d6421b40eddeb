"""Prometheus analysis for one interval, tri-state: Pass, Fail or Inconclusive.

Queries run through ``prometheus-api-client`` against ``spec.rollout.prometheusURL``
or the operator default (``RECOPS_PROMETHEUS_URL``). Missing data (no series, NaN,
fewer than ``minRequests`` requests) and an unreachable Prometheus are
*Inconclusive*, never a pass and never a failure by themselves. Every check's
value, threshold and verdict is returned for status and events.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from recops_operator.api.models import Rollout
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
) -> Analysis:
    """Run every check for this interval. ``query`` is injectable (tests pass a real Prometheus's)."""
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
