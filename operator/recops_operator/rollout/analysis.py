"""Prometheus analysis for one interval, tri-state: Pass, Fail or Inconclusive.

Queries run through ``prometheus-api-client`` against ``spec.rollout.prometheusURL``
or the operator default (``RECOPS_PROMETHEUS_URL``). Missing data (no series, NaN,
fewer than ``minRequests`` requests) and an unreachable Prometheus are
*Inconclusive*, never a pass and never a failure by themselves. Every check's
value, threshold and verdict is returned for status and events.

Shadowing reads the top-K overlap the stable pods record per mirrored endpoint: recommendations,
and search/retrieve (the candidate serves ``candidate.searchVersion`` when set).

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
from dataclasses import dataclass, field

from recops_operator.api.models import Analysis as AnalysisSpec
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


#: mirrored endpoints as label matchers; "" also matches the unlabelled series of older pods
RECOMMENDATIONS = 'endpoint=~"recommendations|"'
SEARCH = 'endpoint=~"search|retrieve|visual_search"'


def _overlap(sel: str, window: str) -> str:
    return f"sum(rate(recops_shadow_topk_overlap_ratio_sum{{{sel}}}[{window}])) / sum(rate(recops_shadow_topk_overlap_ratio_count{{{sel}}}[{window}]))"


def shadow_queries(namespace: str, service: str, window: str) -> dict[str, str]:
    s = _sel(namespace, service, "stable")
    r, q = _sel(namespace, service, "stable", RECOMMENDATIONS), _sel(namespace, service, "stable", SEARCH)
    return {
        "shadow-requests": f"sum(increase(recops_shadow_requests_total{{{r}}}[{window}]))",
        "shadow-error-rate": f'sum(rate(recops_shadow_requests_total{{{s},outcome="error"}}[{window}])) / sum(rate(recops_shadow_requests_total{{{s}}}[{window}]))',
        "shadow-topk-overlap": _overlap(r, window),
        "shadow-search-requests": f"sum(increase(recops_shadow_topk_overlap_ratio_count{{{q}}}[{window}]))",
        "shadow-search-topk-overlap": _overlap(q, window),
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


@dataclass
class _Interval:
    """What every check builder of one analysis reads: the spec, where, which window, and the
    query (answers memoised, so a value two checks share is asked once)."""

    a: AnalysisSpec
    namespace: str
    service: str
    window: str
    query: Query
    since: str
    #: the candidate ships its own search bundle: search overlap is evidence the rollout needs
    new_search: bool = False
    volume: float | None = None
    answers: dict[str, float | None] = field(default_factory=dict)

    def ask(self, expr: str) -> float | None:
        if expr not in self.answers:
            self.answers[expr] = self.query(expr)
        return self.answers[expr]

    def track(self, track: str, key: str) -> float | None:
        return self.ask(queries(self.namespace, self.service, track, self.window)[key])

    @property
    def enough(self) -> bool:
        return self.volume is not None and self.volume >= self.a.min_requests


Builder = Callable[[_Interval], list[dict]]


def _shadow_volume(iv: _Interval) -> list[dict]:
    iv.volume = iv.ask(shadow_queries(iv.namespace, iv.service, iv.window)["shadow-requests"])
    return [_volume("shadow-requests", iv.volume, iv.a.min_requests)]


def _shadow_quality(iv: _Interval) -> list[dict]:
    if not iv.enough:
        return []
    q = shadow_queries(iv.namespace, iv.service, iv.window)
    return [
        _check("shadow-error-rate", iv.ask(q["shadow-error-rate"]), max_=iv.a.max_error_rate),
        _check("shadow-topk-overlap", iv.ask(q["shadow-topk-overlap"]), min_=iv.a.min_shadow_overlap),
    ]


def _shadow_search(iv: _Interval) -> list[dict]:
    """Search, visual search and retrieve overlap, against ``min_search_shadow_overlap`` if set, else
    the recommendations' minimum. Required (too few is Inconclusive) when the candidate ships its own
    search bundle; else checked once there are enough mirrored searches."""
    q = shadow_queries(iv.namespace, iv.service, iv.window)
    volume = iv.ask(q["shadow-search-requests"])
    enough = volume is not None and volume >= iv.a.min_requests
    if not enough:
        return [_volume("shadow-search-requests", volume, iv.a.min_requests)] if iv.new_search else []
    overlap = iv.ask(q["shadow-search-topk-overlap"])
    minimum = iv.a.min_search_shadow_overlap
    minimum = iv.a.min_shadow_overlap if minimum is None else minimum
    return [_check("shadow-search-topk-overlap", overlap, min_=minimum)]


def _canary_volume(iv: _Interval) -> list[dict]:
    iv.volume = iv.track("canary", "requests")
    return [_volume("requests", iv.volume, iv.a.min_requests)]


def _canary_errors(iv: _Interval) -> float | None:
    err = iv.track("canary", "error-rate")
    return 0.0 if err is None and iv.volume else err  # requests but no 5xx series: no errors


def _canary_absolute(iv: _Interval) -> list[dict]:
    if not iv.enough:
        return []
    return [
        _check("p99-latency-ms", iv.track("canary", "p99-latency-ms"), max_=iv.a.max_p99_latency_ms),
        _check("error-rate", _canary_errors(iv), max_=iv.a.max_error_rate),
    ]


def _latency_vs_stable(iv: _Interval) -> list[dict]:
    rel = iv.a.relative
    if not (iv.enough and rel and rel.max_latency_increase_percent is not None):
        return []
    stable = iv.track("stable", "p99-latency-ms")
    if stable is None:  # no baseline: inconclusive, not a pass
        return [_check("p99-vs-stable", None, max_=0)]
    limit = stable * (1 + rel.max_latency_increase_percent / 100)
    return [_check("p99-vs-stable", iv.track("canary", "p99-latency-ms"), max_=limit)]


def _errors_vs_stable(iv: _Interval) -> list[dict]:
    rel = iv.a.relative
    if not (iv.enough and rel and rel.max_error_rate_increase is not None):
        return []
    stable = iv.track("stable", "error-rate") or 0.0
    return [
        _check("error-rate-vs-stable", _canary_errors(iv) or 0.0, max_=stable + rel.max_error_rate_increase)
    ]


def _business(iv: _Interval) -> list[dict]:
    if not (iv.a.business and iv.enough):
        return []
    return [business_check(iv.a.business, iv.namespace, iv.service, iv.query, iv.since)]


def _custom(iv: _Interval) -> list[dict]:
    out = []
    for c in iv.a.checks:
        expr = c.query.replace("$namespace", iv.namespace).replace("$service", iv.service)
        out.append(_check(c.name, iv.ask(expr.replace("$track", "canary")), max_=c.max, min_=c.min))
    return out


#: The checks of one interval, in order: volume first (the rest need enough requests).
SHADOW_CHECKS: tuple[Builder, ...] = (_shadow_volume, _shadow_quality, _shadow_search, _custom)
CANARY_CHECKS: tuple[Builder, ...] = (
    _canary_volume,
    _canary_absolute,
    _latency_vs_stable,
    _errors_vs_stable,
    _business,
    _custom,
)


def _overall(checks: list[dict]) -> Verdict:
    verdicts = {c["verdict"] for c in checks}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in verdicts else Verdict.PASS


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
            return Analysis(Verdict.INCONCLUSIVE, [_unavailable("configured")])
        query = prometheus_query(url)
    iv = _Interval(spec.analysis, namespace, service, window, query, _since(started_at, now, window))
    iv.new_search = bool(spec.candidate and spec.candidate.search_version)
    checks: list[dict] = []
    try:
        for build in SHADOW_CHECKS if shadowing else CANARY_CHECKS:
            checks.extend(build(iv))
    except Exception as e:  # unreachable or erroring Prometheus: hold, never guess
        checks.append({**_unavailable("reachable"), "error": str(e)[:200]})
    return Analysis(_overall(checks), checks)


def _unavailable(threshold: str) -> dict:
    return {"name": "prometheus", "value": None, "threshold": threshold, "verdict": Verdict.INCONCLUSIVE}
