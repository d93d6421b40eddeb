"""Autoscaling render: a KEDA ScaledObject when keda.sh is served, else a plain HPA.

KEDA path (ack-keda in production, built from the Go module proxy in tests): triggers are
* ``prometheus``: the service's *offered* request rate (every request, 503s included, summed over
  its pods) against a per-replica target, so desired = ceil(offered / target) even when pods shed;
* ``cpu`` (optional: needs metrics.k8s.io);
* ``cron``: one per sale window (``spec.serving.autoscaling.schedules``), desiredReplicas = the floor.
KEDA turns them into an HPA (``keda-hpa-<name>``) that the HPA controller in kube-controller-manager
acts on, with the spike-tuned behaviour below.

Plain-HPA path: CPU and the pods metric via a metrics adapter; an open sale window raises
``minReplicas`` (the operator re-renders on a short timer while schedules exist).

Pure: ``now`` comes from the RenderContext.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from recops_operator.api import windows
from recops_operator.api.models import RecommenderServiceSpec, SaleWindow, duration_seconds

KEDA_API = "keda.sh/v1alpha1"
SCALED_OBJECT = "ScaledObject"
KEDA_HPA_PREFIX = "keda-hpa-"


# ------------------------------------------------------------------ behaviour
def behavior(spec: RecommenderServiceSpec) -> dict[str, Any]:
    """HPA behaviour for spikes: no scale-up stabilisation by default, a percent policy and a pods
    policy per period (the larger wins: 900% = 10x in one period), slow and safe scale-down."""
    a = spec.serving.autoscaling
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": a.scale_up_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": a.scale_up_percent, "periodSeconds": a.scale_up_period_seconds},
                {"type": "Pods", "value": a.scale_up_pods, "periodSeconds": a.scale_up_period_seconds},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
            "selectPolicy": "Min",
            "policies": [
                {
                    "type": "Percent",
                    "value": a.scale_down_percent,
                    "periodSeconds": a.scale_down_period_seconds,
                }
            ],
        },
    }


# ------------------------------------------------------------------ sale windows
def window_cron(w: SaleWindow) -> tuple[str, str]:
    """(start, end) of a sale window as 5-field cron expressions in ``w.timezone`` (``api.windows``)."""
    return windows.to_cron(w.start, w.end, None if w.duration is None else duration_seconds(w.duration))


def _field(expr: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in expr.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/")
            step = int(s)
        if part == "*":
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(x) for x in part.split("-"))
        else:
            a = b = int(part)
            if step > 1:
                b = hi
        out.update(range(a, b + 1, step))
    return out


def cron_next(expr: str, after: dt.datetime) -> dt.datetime | None:
    """Next minute strictly after ``after`` (tz-aware, in the window's zone) matching a 5-field cron
    expression (robfig/cron semantics as KEDA uses: day-of-month OR day-of-week when both are set)."""
    m, h, dom, mon, dow = expr.split()
    minutes, hours = sorted(_field(m, 0, 59)), sorted(_field(h, 0, 23))
    doms, mons = _field(dom, 1, 31), _field(mon, 1, 12)
    dows = {d % 7 for d in _field(dow, 0, 7)}
    start = (after + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    day = start.date()
    for _ in range(366 * 5):
        dom_ok, dow_ok = day.day in doms, (day.isoweekday() % 7) in dows
        day_ok = (dom_ok and dow_ok) if "*" in (dom, dow) else (dom_ok or dow_ok)
        if day.month in mons and day_ok:
            for hh in hours:
                for mm in minutes:
                    t = dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=after.tzinfo)
                    if t >= start:
                        return t
        day += dt.timedelta(days=1)
    return None


def window_open(w: SaleWindow, now: dt.datetime) -> bool:
    """KEDA's cron rule: open when the next end comes before the next start."""
    start, end = window_cron(w)
    local = now.astimezone(zoneinfo.ZoneInfo(w.timezone))
    nxt_start, nxt_end = cron_next(start, local), cron_next(end, local)
    return nxt_end is not None and (nxt_start is None or nxt_end < nxt_start)


def window_floor(spec: RecommenderServiceSpec, now: dt.datetime | None) -> tuple[int, list[int]]:
    """(the floor from open windows, 0 if none; indexes of the open windows)."""
    if now is None:
        return 0, []
    open_ = [i for i, w in enumerate(spec.serving.autoscaling.schedules) if window_open(w, now)]
    floor = max((spec.serving.autoscaling.schedules[i].min_replicas for i in open_), default=0)
    return floor, open_


def describe_window(w: SaleWindow) -> str:
    return f"{w.start}{' to ' + w.end if w.end else ' for ' + (w.duration or '')} {w.timezone}, floor {w.min_replicas}"


# ------------------------------------------------------------------ objects
def offered_rate_query(namespace: str, name: str, window: str) -> str:
    """Offered load of the stable track: every answered request, 503s (shed load) included."""
    sel = f'namespace="{namespace}",recsvc="{name}",track="stable",route=~"recommendations|events"'
    return f"sum(rate(recops_http_requests_total{{{sel}}}[{window}]))"


def render_hpa(
    owner, spec: RecommenderServiceSpec, now: dt.datetime | None, *, meta: dict[str, Any], target: str
) -> dict[str, Any]:
    """The plain HPA; ``meta`` and ``target`` (the Deployment's name) come from ``render.serving``."""
    a, r = spec.serving.autoscaling, spec.serving.replicas
    metrics: list[dict[str, Any]] = []
    if a.target_cpu_utilization is not None or not a.target_requests_per_second:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization or 60},
                },
            }
        )
    if a.target_requests_per_second:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "recops_http_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": str(a.target_requests_per_second)},
                },
            }
        )
    floor, _ = window_floor(spec, now)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            # an open sale window moves the floor (KEDA's cron trigger does this where KEDA exists)
            "minReplicas": min(r.max, max(r.min, floor)),
            "maxReplicas": r.max,
            "metrics": metrics,
            "behavior": behavior(spec),
        },
    }


def render_scaled_object(
    owner, spec: RecommenderServiceSpec, prometheus_url: str | None, *, meta: dict[str, Any], target: str
) -> dict[str, Any]:
    a, r = spec.serving.autoscaling, spec.serving.replicas
    triggers: list[dict[str, Any]] = []
    if a.target_requests_per_second and prometheus_url:
        triggers.append(
            {
                "type": "prometheus",
                "name": "offered-rps",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": prometheus_url,
                    "query": offered_rate_query(owner.namespace, owner.name, a.rate_window),
                    "threshold": str(a.target_requests_per_second),
                    "ignoreNullValues": "true",
                },
            }
        )
    if a.target_cpu_utilization is not None or not triggers:
        triggers.append(
            {
                "type": "cpu",
                "name": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": str(a.target_cpu_utilization or 60)},
            }
        )
    for i, w in enumerate(a.schedules):
        start, end = window_cron(w)
        triggers.append(
            {
                "type": "cron",
                "name": f"sale-window-{i}",
                "metadata": {
                    "timezone": w.timezone,
                    "start": start,
                    "end": end,
                    "desiredReplicas": str(min(r.max, w.min_replicas)),
                },
            }
        )
    return {
        "apiVersion": KEDA_API,
        "kind": SCALED_OBJECT,
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicaCount": r.min,
            "maxReplicaCount": r.max,
            "pollingInterval": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": behavior(spec)},
            },
            "triggers": triggers,
        },
    }


def render_autoscaler(
    owner, spec: RecommenderServiceSpec, ctx, *, meta: dict[str, Any], target: str
) -> list[dict[str, Any]]:
    if ctx.keda_available:
        return [render_scaled_object(owner, spec, prometheus_url(spec, ctx), meta=meta, target=target)]
    return [render_hpa(owner, spec, ctx.now, meta=meta, target=target)]


def prometheus_url(spec: RecommenderServiceSpec, ctx) -> str | None:
    return spec.serving.autoscaling.prometheus_url or spec.rollout.prometheus_url or ctx.prometheus_url


def autoscaling_conditions(spec: RecommenderServiceSpec, ctx, generation: int | None) -> list[dict[str, Any]]:
    """``Autoscaling`` says which autoscaler renders and on which signals; ``PreScaled`` whether a sale
    window holds the floor up now."""
    from recops_operator.status import condition

    a = spec.serving.autoscaling
    if ctx.keda_available:
        url = prometheus_url(spec, ctx)
        signals = []
        if a.target_requests_per_second and url:
            signals.append(f"offered request rate (target {a.target_requests_per_second}/s per replica)")
        if a.target_cpu_utilization is not None or not signals:
            signals.append(f"CPU {a.target_cpu_utilization or 60}%")
        if a.schedules:
            signals.append(f"{len(a.schedules)} cron sale window(s)")
        msg = "KEDA ScaledObject: " + ", ".join(signals)
        if a.target_requests_per_second and not url:
            msg += "; no Prometheus URL (autoscaling.prometheusURL, rollout.prometheusURL or RECOPS_PROMETHEUS_URL): request-rate trigger skipped"
        reason = "KedaScaledObject"
    else:
        msg = "keda.sh CRDs not installed: plain HorizontalPodAutoscaler (CPU, pods metric via a metrics adapter)"
        if a.schedules:
            msg += "; sale windows move its minReplicas"
        reason = "HorizontalPodAutoscaler"
    out = [condition("Autoscaling", True, reason, msg, generation)]
    if a.schedules:
        floor, open_ = window_floor(spec, ctx.now)
        if open_:
            w = "; ".join(describe_window(a.schedules[i]) for i in open_)
            out.append(
                condition("PreScaled", True, "SaleWindowOpen", f"replica floor {floor}: {w}", generation)
            )
        else:
            out.append(
                condition("PreScaled", False, "NoSaleWindowOpen", "no sale window is open", generation)
            )
    return out
