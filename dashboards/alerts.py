"""Prometheus alert rules for RecOps, as data (rendered to YAML by build.py).

Thresholds follow the RecommenderService defaults (rollout.analysis: p99 80 ms, error rate 1%).
Label values the operator emits: training results are Job phases ("Succeeded"/"Failed"); rollout and
reconcile results are matched case-insensitively so "rolled_back"/"RolledBack" and "error"/"failed" all count.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    runbook: str  # anchor in docs/runbook.md


_REQ = 'recops_http_requests_total{route="recommendations"}'
ALERTS = (
    Alert(
        "RecOpsServingLatencyP99High",
        "histogram_quantile(0.99, sum by (namespace, recsvc, track, le) ("
        'rate(recops_http_request_duration_seconds_bucket{route="recommendations"}[5m]))) > 0.08',
        "5m",
        "page",
        "{{ $labels.namespace }}/{{ $labels.recsvc }} ({{ $labels.track }}) p99 latency is {{ $value | humanizeDuration }} (> 80ms) for 5m",
        "serving-latency",
    ),
    Alert(
        "RecOpsServingErrorRateHigh",
        # "or ... * 0": a 0 ratio (not an empty result) while no 5xx happened, so the signal is always visible.
        '(sum by (namespace, recsvc, track) (rate(recops_http_requests_total{code=~"5.."}[5m]))'
        " or sum by (namespace, recsvc, track) (rate(recops_http_requests_total[5m])) * 0)"
        " / sum by (namespace, recsvc, track) (rate(recops_http_requests_total[5m])) > 0.01",
        "5m",
        "page",
        "{{ $labels.namespace }}/{{ $labels.recsvc }} ({{ $labels.track }}) 5xx ratio is {{ $value | humanizePercentage }} (> 1%)",
        "serving-errors",
    ),
    Alert(
        "RecOpsCanaryRolledBack",
        'sum by (namespace, recsvc) (increase(recops_rollouts_total{result=~"(?i)rolled_?back|rollback"}[30m])) > 0',
        "0m",
        "ticket",
        "Canary of {{ $labels.namespace }}/{{ $labels.recsvc }} was rolled back; see its status conditions for the failed check",
        "rollback",
    ),
    Alert(
        "RecOpsTrainingFailing",
        'sum by (namespace, recsvc) (increase(recops_training_runs_total{result="Failed"}[12h])) >= 2',
        "0m",
        "ticket",
        "Training of {{ $labels.namespace }}/{{ $labels.recsvc }} failed {{ $value }} times in 12h",
        "training-failing",
    ),
    Alert(
        "RecOpsTrainingPreemptedTooOften",
        "sum by (namespace, recsvc) (increase(recops_training_preemptions_total[1h])) > 3",
        "0m",
        "ticket",
        "Training of {{ $labels.namespace }}/{{ $labels.recsvc }} was preempted {{ $value }} times in 1h (spot capacity scarce)",
        "preemptions",
    ),
    Alert(
        "RecOpsFeatureFreshnessStale",
        "histogram_quantile(0.5, sum by (namespace, recsvc, le) (rate(recops_session_feature_age_seconds_bucket[10m]))) > 300",
        "10m",
        "page",
        "{{ $labels.namespace }}/{{ $labels.recsvc }} median session-feature age at read is {{ $value | humanizeDuration }} (> 5m)",
        "redis-outage",
    ),
    Alert(
        "RecOpsFeatureStoreErrors",
        "sum by (namespace, recsvc) (rate(recops_feature_store_errors_total[5m])) > 1",
        "5m",
        "page",
        "{{ $labels.namespace }}/{{ $labels.recsvc }} feature store errors at {{ $value }}/s; serving falls back to popularity",
        "redis-outage",
    ),
    Alert(
        "RecOpsOperatorReconcileErrors",
        'sum (rate(recops_operator_reconcile_total{result=~"(?i)error|failed|failure"}[10m])) > 0',
        "10m",
        "ticket",
        "The RecOps operator has been failing reconciles for 10m",
        "operator-errors",
    ),
)
