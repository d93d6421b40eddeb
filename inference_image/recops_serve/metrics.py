"""Serving metrics (names fixed by the team contract). Label children are bound once here,
never built per request, so the hot path only increments pre-resolved objects."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
_LAT = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.08, 0.1, 0.25, 0.5, 1.0)

request_duration = Histogram(
    "recops_http_request_duration_seconds",
    "Request latency",
    ["route", "arm"],
    buckets=_LAT,
    registry=REGISTRY,
)
requests_total = Counter(
    "recops_http_requests_total",
    "Requests by route, arm and status",
    ["route", "arm", "code"],
    registry=REGISTRY,
)
fallback_total = Counter(
    "recops_recommendation_fallback_total",
    "Responses that needed fallback items, by reason",
    ["reason"],
    registry=REGISTRY,
)
fs_errors = Counter("recops_feature_store_errors_total", "Feature-store failures", ["op"], registry=REGISTRY)
fs_duration = Histogram(
    "recops_feature_store_duration_seconds",
    "Feature-store round trips",
    ["op"],
    buckets=_LAT,
    registry=REGISTRY,
)
feature_age = Histogram(
    "recops_session_feature_age_seconds",
    "Age of the newest session event at read",
    buckets=(0.01, 0.1, 1, 5, 30, 60, 300, 900, 1800, 3600),
    registry=REGISTRY,
)
model_info = Gauge("recops_model_info", "Loaded model version", ["model_version"], registry=REGISTRY)
model_load_failures = Counter(
    "recops_model_load_failures_total",
    "Bundles that failed to load (the old one keeps serving)",
    registry=REGISTRY,
)
events_ingested = Counter("recops_events_ingested_total", "Events stored", ["type"], registry=REGISTRY)
attributed = Counter(
    "recops_attributed_events_total",
    "Events the client attributed to a recommendation answer (its attribution_token), by the arm and the "
    "track (stable|canary) that answered, whichever pod receives the event",
    ["arm", "type", "answer_track"],
    registry=REGISTRY,
)
attributed_revenue = Counter(
    "recops_attributed_revenue_total",
    "price x quantity of attributed purchases, by the arm and track that answered",
    ["arm", "answer_track"],
    registry=REGISTRY,
)
attributed_revenue_sq = Counter(
    "recops_attributed_revenue_squared_total",
    "Sum of squared (price x quantity) of attributed purchases: the spread the rollout's business test needs",
    ["arm", "answer_track"],
    registry=REGISTRY,
)
shadow_requests = Counter(
    "recops_shadow_requests_total",
    "Mirrored requests by outcome (ok|error|dropped: too many in flight) and endpoint",
    ["outcome", "endpoint"],
    registry=REGISTRY,
)
shadow_overlap = Histogram(
    "recops_shadow_topk_overlap_ratio",
    "Top-K overlap of candidate vs stable, by endpoint (recommendations|search|retrieve|visual_search)",
    ["endpoint"],
    buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    registry=REGISTRY,
)
shadow_delta = Histogram(
    "recops_shadow_latency_delta_seconds",
    "Candidate minus stable latency",
    ["endpoint"],
    buckets=(-0.05, -0.01, -0.005, -0.002, -0.001, 0.0, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1),
    registry=REGISTRY,
)
fs_degraded = Gauge(
    "recops_feature_store_degraded",
    "1 while the feature store is failing and answers are served without session features",
    registry=REGISTRY,
)
fs_malformed = Counter(
    "recops_feature_store_malformed_entries_total",
    "Session entries in the store that could not be parsed (skipped)",
    registry=REGISTRY,
)
attribution_rejected = Counter(
    "recops_attribution_rejected_total",
    "Attribution tokens not counted for lift (the event is stored): forged (bad signature) or expired",
    ["reason"],
    registry=REGISTRY,
)
aborted_uploads = Counter(
    "recops_aborted_uploads_total",
    "Request bodies that ended early or were malformed on the wire (counted as 400)",
    registry=REGISTRY,
)
inflight = Gauge("recops_inflight_requests", "Requests being served", registry=REGISTRY)
overload_rejections = Counter(
    "recops_overload_rejections_total", "Requests refused with 503 under overload", registry=REGISTRY
)

ARMS = ("model", "holdout")
EVENT_TYPES = ("view", "add_to_cart", "purchase")
REC_LATENCY = {arm: request_duration.labels("recommendations", arm) for arm in ARMS}
EVENT_LATENCY = request_duration.labels("events", "model")
REQS = {
    (route, arm, code): requests_total.labels(route, arm, code)
    for route in ("recommendations", "events")
    for arm in ARMS
    for code in ("200", "400", "404", "405", "413", "500", "503")
}
FALLBACK = {
    r: fallback_total.labels(r) for r in ("cold_start", "sparse_candidates", "feature_store_down", "holdout")
}
FS_ERR = {op: fs_errors.labels(op) for op in ("read", "write")}
FS_LAT = {op: fs_duration.labels(op) for op in ("read", "write")}
INGESTED = {t: events_ingested.labels(t) for t in EVENT_TYPES}
TRACKS = ("stable", "canary")
ATTRIBUTED = {(a, t, tr): attributed.labels(a, t, tr) for a in ARMS for t in EVENT_TYPES for tr in TRACKS}
REVENUE = {(a, tr): attributed_revenue.labels(a, tr) for a in ARMS for tr in TRACKS}
REVENUE_SQ = {(a, tr): attributed_revenue_sq.labels(a, tr) for a in ARMS for tr in TRACKS}
ATTRIBUTION_REJECTED = {r: attribution_rejected.labels(r) for r in ("forged", "expired")}
SHADOW_ENDPOINTS = ("recommendations", "search", "retrieve", "visual_search")
SHADOW = {(e, o): shadow_requests.labels(o, e) for e in SHADOW_ENDPOINTS for o in ("ok", "error", "dropped")}
SHADOW_OVERLAP = {e: shadow_overlap.labels(e) for e in SHADOW_ENDPOINTS}
SHADOW_DELTA = {e: shadow_delta.labels(e) for e in SHADOW_ENDPOINTS}
for _child in (
    *REQS.values(),
    *FALLBACK.values(),
    *FS_ERR.values(),
    *INGESTED.values(),
    *ATTRIBUTED.values(),
    *REVENUE.values(),
    *REVENUE_SQ.values(),
    *ATTRIBUTION_REJECTED.values(),
    *SHADOW.values(),
):
    _child.inc(0)  # series exist from the first scrape, so rate() and absent() behave
