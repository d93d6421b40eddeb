"""The PromQL behind every RecOps dashboard panel, as plain data.

Kept apart from the Grafana builder so the same queries feed three consumers: the dashboard JSON
(build.py), the PNG preview (render.py) and the test that runs every query against a real Prometheus.
Queries use Grafana's template variables ($namespace, $recsvc, $__rate_interval); `concrete()` turns
them into plain PromQL for Prometheus. Metric names and labels are the team's serving/operator contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEL = 'namespace=~"$namespace", recsvc=~"$recsvc"'
RI = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    # Series the inference servers do not export (the operator's): the live serving test skips them;
    # the rollout e2e checks them against the real operator process.
    external: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _q(quantile: float, metric: str, by: str, sel: str = SEL) -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


# Latency per model version: the version is an info-style gauge on each pod, joined onto the buckets.
def _lat_by_version(q: float) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, arm, model_version) ("
        f'rate(recops_http_request_duration_seconds_bucket{{route="recommendations", {SEL}}}[{RI}])'
        f" * on (namespace, recsvc, pod) group_left (model_version) recops_model_info{{{SEL}}}))"
    )


_REQ = f'recops_http_requests_total{{route="recommendations", {SEL}}}'
# Errors: "or ... * 0" keeps a 0 series when no 5xx happened yet, so the panel shows 0, not "No data".
_ERR_RATIO = (
    f'(sum by (track) (rate(recops_http_requests_total{{code=~"5..", {SEL}}}[{RI}]))'
    f" or sum by (track) (rate(recops_http_requests_total{{{SEL}}}[{RI}])) * 0)"
    f" / sum by (track) (rate(recops_http_requests_total{{{SEL}}}[{RI}]))"
)


def _per_request(arm: str) -> str:
    return (
        f'sum by (namespace, recsvc) (rate(recops_attributed_events_total{{arm="{arm}", {SEL}}}[1h]))'
        f' / sum by (namespace, recsvc) (rate(recops_http_requests_total{{route="recommendations", arm="{arm}", {SEL}}}[1h]))'
    )


SERVING = Dashboard(
    uid="recops-serving",
    title="RecOps / Serving",
    description="Inference pods of RecommenderServices: latency, traffic, errors, fallbacks, features, lift.",
    panels=(
        Panel(
            "Recommendation latency p50 / p99 by arm and model version",
            "s",
            (
                Query(_lat_by_version(0.5), "p50 {{arm}} {{model_version}}"),
                Query(_lat_by_version(0.99), "p99 {{arm}} {{model_version}}"),
            ),
            "Alert fires when p99 stays above 80 ms for 5 minutes.",
        ),
        Panel(
            "Requests per second by route, arm and track",
            "reqps",
            (
                Query(
                    f"sum by (route, arm, track) (rate(recops_http_requests_total{{{SEL}}}[{RI}]))",
                    "{{route}} {{arm}} {{track}}",
                ),
            ),
        ),
        Panel("Error ratio (5xx) by track", "percentunit", (Query(_ERR_RATIO, "{{track}}"),)),
        Panel(
            "Fallbacks and overload rejections",
            "reqps",
            (
                Query(
                    f"sum by (reason) (rate(recops_recommendation_fallback_total{{{SEL}}}[{RI}]))",
                    "fallback {{reason}}",
                ),
                Query(f"sum (rate(recops_overload_rejections_total{{{SEL}}}[{RI}]))", "overload rejected"),
            ),
        ),
        Panel(
            "Feature store p99 latency by op",
            "s",
            (Query(_q(0.99, "recops_feature_store_duration_seconds", "op"), "p99 {{op}}"),),
        ),
        Panel(
            "Feature store errors by op",
            "ops",
            (Query(f"sum by (op) (rate(recops_feature_store_errors_total{{{SEL}}}[{RI}]))", "{{op}}"),),
        ),
        Panel(
            "Event-to-visible freshness (age of newest session event at read)",
            "s",
            (
                Query(_q(0.5, "recops_session_feature_age_seconds", "recsvc"), "p50 {{recsvc}}"),
                Query(_q(0.99, "recops_session_feature_age_seconds", "recsvc"), "p99 {{recsvc}}"),
            ),
        ),
        Panel(
            "Events ingested by type",
            "ops",
            (Query(f"sum by (type) (rate(recops_events_ingested_total{{{SEL}}}[{RI}]))", "{{type}}"),),
        ),
        Panel(
            "Holdout lift with its always-valid interval (since the assignment) and the last hour's ratio",
            "percentunit",
            (
                Query(
                    f'max by (recsvc) (recops_holdout_lift{{bound="estimate", {SEL}}})',
                    "lift {{recsvc}}",
                    external=True,
                ),
                Query(
                    f'max by (recsvc) (recops_holdout_lift{{bound="low", {SEL}}})',
                    "low {{recsvc}}",
                    external=True,
                ),
                Query(
                    f'max by (recsvc) (recops_holdout_lift{{bound="high", {SEL}}})',
                    "high {{recsvc}}",
                    external=True,
                ),
                Query(f"({_per_request('model')}) / ({_per_request('holdout')}) - 1", "1h ratio {{recsvc}}"),
            ),
            "Relative lift of the personalised arm over the popularity holdout (attributed events of "
            "spec.experiment.holdout.metric per recommendation). Lift, low and high come from the operator's "
            "sequential test (status.experiment.holdout): the interval covers the true lift at every moment "
            "with the spec's confidence. The 1h ratio is the raw, noisy point estimate.",
        ),
        Panel(
            "Serving replicas: scraped, HPA-desired, ready, bounds",
            "short",
            (
                Query(f"count by (track) (up{{{SEL}}} == 1)", "scraped {{track}}"),
                Query(
                    f"max by (recsvc, state) (recops_serving_replicas{{{SEL}}})",
                    "{{recsvc}} {{state}}",
                    external=True,
                ),
            ),
            "Pods Prometheus scrapes per track; the stable Deployment's replicas as the operator reads them "
            "(desired is what the HPA set) against the spec's min/max.",
        ),
        Panel(
            "Model versions serving (pods per version and track)",
            "short",
            (
                Query(
                    f"count by (model_version, track) (recops_model_info{{{SEL}}})",
                    "{{model_version}} {{track}}",
                ),
            ),
            kind="stat",
        ),
        Panel(
            "Shadow: top-K overlap with stable (p50), recommendations / search / retrieve / visual search",
            "percentunit",
            (
                Query(
                    _q(0.5, "recops_shadow_topk_overlap_ratio", "recsvc, endpoint"), "{{recsvc}} {{endpoint}}"
                ),
            ),
        ),
        Panel(
            "Shadow: latency delta vs stable (p50)",
            "s",
            (Query(_q(0.5, "recops_shadow_latency_delta_seconds", "recsvc"), "{{recsvc}}"),),
        ),
        Panel(
            "Shadow requests by endpoint and outcome (dropped: too many in flight)",
            "reqps",
            (
                Query(
                    f"sum by (endpoint, outcome) (rate(recops_shadow_requests_total{{{SEL}}}[{RI}]))",
                    "{{endpoint}} {{outcome}}",
                ),
            ),
        ),
        Panel(
            "Catalogue search latency p50 / p99 (/v1/search, /v1/retrieve) and query embedding p99",
            "s",
            (
                Query(
                    _q(
                        0.5,
                        "recops_http_request_duration_seconds",
                        "route",
                        f'route=~"search|retrieve", {SEL}',
                    ),
                    "p50 {{route}}",
                ),
                Query(
                    _q(
                        0.99,
                        "recops_http_request_duration_seconds",
                        "route",
                        f'route=~"search|retrieve", {SEL}',
                    ),
                    "p99 {{route}}",
                ),
                Query(_q(0.99, "recops_search_query_embed_seconds", "recsvc"), "p99 query embedding"),
            ),
            "Target: /v1/search p99 <= 15 ms including the query embedding (python -m bench search).",
        ),
        Panel(
            "Catalogue search requests by route and code, and searches that found nothing",
            "reqps",
            (
                Query(
                    f'sum by (route, code) (rate(recops_http_requests_total{{route=~"search|retrieve", {SEL}}}[{RI}]))',
                    "{{route}} {{code}}",
                ),
                Query(
                    f"sum by (route) (rate(recops_search_empty_results_total{{{SEL}}}[{RI}]))",
                    "empty {{route}}",
                ),
            ),
        ),
        Panel(
            "Assistant answers (/v1/answer) by outcome, and citations removed (products not retrieved)",
            "reqps",
            (
                Query(
                    f"sum by (outcome) (rate(recops_assistant_answers_total{{{SEL}}}[{RI}]))",
                    "{{outcome}}",
                ),
                Query(
                    f"sum(rate(recops_assistant_removed_citations_total{{{SEL}}}[{RI}]))",
                    "removed citations",
                ),
            ),
            "grounded: cites retrieved products only; upstream_error / timeout: the model API failed (502 / 504).",
        ),
        Panel(
            "Assistant latency p50 / p99: the whole answer and the model API's part",
            "s",
            (
                Query(
                    _q(0.5, "recops_http_request_duration_seconds", "route", f'route="answer", {SEL}'),
                    "p50 answer",
                ),
                Query(
                    _q(0.99, "recops_http_request_duration_seconds", "route", f'route="answer", {SEL}'),
                    "p99 answer",
                ),
                Query(_q(0.99, "recops_assistant_model_seconds", "recsvc"), "p99 model API"),
            ),
        ),
        Panel(
            "Visual search latency p50 / p99 (/v1/visual-search) and image decode + embed p99",
            "s",
            (
                Query(
                    _q(0.5, "recops_http_request_duration_seconds", "route", f'route="visual_search", {SEL}'),
                    "p50 visual_search",
                ),
                Query(
                    _q(
                        0.99, "recops_http_request_duration_seconds", "route", f'route="visual_search", {SEL}'
                    ),
                    "p99 visual_search",
                ),
                Query(_q(0.99, "recops_search_image_embed_seconds", "recsvc"), "p99 image decode + embed"),
            ),
            "EfficientNet-Lite0 on one search thread; figures: python -m bench visual-search.",
        ),
        Panel(
            "Visual search requests by code (413: over 8 MiB or a decompression bomb)",
            "reqps",
            (
                Query(
                    f'sum by (code) (rate(recops_http_requests_total{{route="visual_search", {SEL}}}[{RI}]))',
                    "{{code}}",
                ),
            ),
        ),
    ),
)

ROLLOUTS = Dashboard(
    uid="recops-rollouts",
    title="RecOps / Rollouts and training",
    description="Operator view: canary weight and analysis, rollout outcomes, training runs, preemptions, checkpoints.",
    panels=(
        Panel(
            "Canary weight (% of traffic)",
            "percent",
            (
                Query(
                    f"max by (namespace, recsvc) (recops_rollout_weight{{{SEL}}})", "{{namespace}}/{{recsvc}}"
                ),
            ),
        ),
        Panel(
            "Conversion per recommendation by the track that answered (model arm, 5m)",
            "percentunit",
            tuple(
                Query(
                    f"sum by (track) (label_replace(rate(recops_attributed_events_total"
                    f'{{arm="model", type="{typ}", {SEL}}}[5m]), "track", "$1", "answer_track", "(.*)"))'
                    f" / sum by (track) (rate(recops_http_requests_total"
                    f'{{route="recommendations", arm="model", code="200", {SEL}}}[5m]))',
                    f"{typ} {{{{track}}}}",
                )
                for typ in ("view", "add_to_cart", "purchase")
            ),
            "What the rollout's business check compares (status.rollout.business has its always-valid interval): "
            "attributed events per answer, credited to the track whose answer the shopper acted on, whichever pod "
            "received the event.",
        ),
        Panel(
            "Rollout phase",
            "short",
            (Query(f"max by (recsvc, phase) (recops_rollout_phase{{{SEL}}}) == 1", "{{recsvc}} {{phase}}"),),
            kind="stat",
        ),
        Panel(
            "Canary analysis verdicts by check",
            "short",
            (
                Query(
                    f"sum by (check, verdict) (increase(recops_rollout_analysis_total{{{SEL}}}[{RI}]))",
                    "{{check}} {{verdict}}",
                ),
            ),
        ),
        Panel(
            "Rollouts finished by result (1h)",
            "short",
            (Query(f"sum by (result) (increase(recops_rollouts_total{{{SEL}}}[1h]))", "{{result}}"),),
        ),
        Panel(
            "Training runs by result (6h)",
            "short",
            (Query(f"sum by (result) (increase(recops_training_runs_total{{{SEL}}}[6h]))", "{{result}}"),),
        ),
        Panel(
            "Spot preemptions of training pods (1h)",
            "short",
            (
                Query(
                    f"sum by (recsvc) (increase(recops_training_preemptions_total{{{SEL}}}[1h]))",
                    "{{recsvc}}",
                ),
            ),
        ),
        Panel(
            "Checkpoint age",
            "s",
            (
                Query(
                    f"time() - max by (namespace, recsvc) (recops_training_last_checkpoint_timestamp_seconds{{{SEL}}})",
                    "{{namespace}}/{{recsvc}}",
                ),
            ),
        ),
        Panel(
            "Operator reconciles by result",
            "ops",
            (Query(f"sum by (result) (rate(recops_operator_reconcile_total[{RI}]))", "{{result}}"),),
        ),
    ),
)

DASHBOARDS = (SERVING, ROLLOUTS)


def concrete(expr: str, rate_interval: str = "1m") -> str:
    """Grafana variables -> plain PromQL (all namespaces/services) for Prometheus and tests."""
    return (
        expr.replace("$__rate_interval", rate_interval).replace("$namespace", ".*").replace("$recsvc", ".*")
    )


def all_queries() -> list[tuple[str, str, Query]]:
    """(dashboard uid, panel title, query) for every query on every dashboard."""
    return [(d.uid, p.title, q) for d in DASHBOARDS for p in d.panels for q in p.queries]
