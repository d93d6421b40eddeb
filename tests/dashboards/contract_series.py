"""OpenMetrics text for every series of the serving/operator metrics contract, for backfilling a real
Prometheus. Counters grow, histograms put observations in plausible buckets, labels are the contract's
(plus the scrape-target labels namespace/recsvc/track/pod). kube-state-metrics' HPA gauges are included
because the dashboards read them and no exporter runs in tests."""

from __future__ import annotations

import math

TARGET = {"namespace": "shop", "recsvc": "home-feed"}
PODS = {"stable": ("home-feed-stable-0", "2026-11-20"), "canary": ("home-feed-canary-0", "2026-11-21")}


def _c(i: int) -> float:
    """Cumulative load after i steps: the rate swings +-60% around its mean (monotone, as counters must be)."""
    return i + 6 * math.sin(i / 10)


def _lbl(d: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"


def _hist(
    lines: list[str],
    name: str,
    labels: dict,
    step: int,
    per_step: float,
    buckets: dict[float, float],
    ts: int,
) -> None:
    """buckets: upper bound -> share of observations (cumulative is computed)."""
    cum = 0.0
    total = per_step * _c(step)
    for le, share in sorted(buckets.items()):
        cum += share
        lines.append(f"{name}_bucket{_lbl({**labels, 'le': str(le)})} {total * cum:.6f} {ts}")
    lines.append(f"{name}_bucket{_lbl({**labels, 'le': '+Inf'})} {total:.6f} {ts}")
    lines.append(f"{name}_count{_lbl(labels)} {total:.6f} {ts}")
    lines.append(f"{name}_sum{_lbl(labels)} {total * 0.02:.3f} {ts}")


def openmetrics(end: int, minutes: int = 30, step_s: int = 15) -> str:
    lines: list[str] = []
    steps = minutes * 60 // step_s
    for i in range(steps + 1):
        ts = end - (steps - i) * step_s
        for track, (pod, version) in PODS.items():
            t = {**TARGET, "track": track, "pod": pod}
            lines.append(f"up{_lbl({**t, 'job': 'recops-serve'})} 1 {ts}")
            lines.append(f"recops_model_info{_lbl({**t, 'model_version': version})} 1 {ts}")
            for arm, share in (("model", 0.95), ("holdout", 0.05)):
                _hist(
                    lines,
                    "recops_http_request_duration_seconds",
                    {**t, "route": "recommendations", "arm": arm},
                    i,
                    50 * share,
                    {0.005: 0.2, 0.01: 0.4, 0.025: 0.3, 0.05: 0.08, 0.1: 0.02}
                    if track == "stable"
                    else {0.005: 0.1, 0.01: 0.3, 0.025: 0.4, 0.05: 0.17, 0.1: 0.03},
                    ts,
                )
                for code, n in (("200", 50 * share), ("503", 0.2 * share)):
                    lines.append(
                        f"recops_http_requests_total{_lbl({**t, 'route': 'recommendations', 'arm': arm, 'code': code})} {n * _c(i):.3f} {ts}"
                    )
                for typ in ("view", "add_to_cart", "purchase"):
                    n = (
                        (3 if arm == "model" else 2.5)
                        * share
                        * {"view": 1, "add_to_cart": 0.3, "purchase": 0.1}[typ]
                    )
                    lines.append(
                        f"recops_attributed_events_total{_lbl({**t, 'arm': arm, 'type': typ, 'answer_track': track})} {n * _c(i):.3f} {ts}"
                    )
                revenue = {**t, "arm": arm, "answer_track": track}
                lines.append(f"recops_attributed_revenue_total{_lbl(revenue)} {40 * share * _c(i):.3f} {ts}")
                lines.append(
                    f"recops_attributed_revenue_squared_total{_lbl(revenue)} {2000 * share * _c(i):.3f} {ts}"
                )
            lines.append(
                f"recops_http_requests_total{_lbl({**t, 'route': 'events', 'arm': 'model', 'code': '202'})} {20 * _c(i):.3f} {ts}"
            )
            for reason in ("feature_store", "cold_start"):
                lines.append(
                    f"recops_recommendation_fallback_total{_lbl({**t, 'reason': reason})} {0.5 * _c(i):.3f} {ts}"
                )
            for op in ("get", "append"):
                lines.append(
                    f"recops_feature_store_errors_total{_lbl({**t, 'op': op})} {0.01 * _c(i):.3f} {ts}"
                )
                _hist(
                    lines,
                    "recops_feature_store_duration_seconds",
                    {**t, "op": op},
                    i,
                    40,
                    {0.001: 0.7, 0.005: 0.3},
                    ts,
                )
            _hist(lines, "recops_session_feature_age_seconds", t, i, 40, {1: 0.5, 10: 0.3, 60: 0.2}, ts)
            for typ in ("view", "add_to_cart", "purchase"):
                lines.append(f"recops_events_ingested_total{_lbl({**t, 'type': typ})} {5 * _c(i):.3f} {ts}")
            for route in ("search", "retrieve"):  # catalogue search (search/http.py)
                _hist(
                    lines,
                    "recops_http_request_duration_seconds",
                    {**t, "route": route, "arm": "model"},
                    i,
                    5,
                    {0.005: 0.3, 0.01: 0.5, 0.025: 0.2},
                    ts,
                )
                for code, n in (("200", 5), ("400", 0.05)):
                    lines.append(
                        f"recops_http_requests_total{_lbl({**t, 'route': route, 'arm': 'model', 'code': code})} {n * _c(i):.3f} {ts}"
                    )
                lines.append(
                    f"recops_search_empty_results_total{_lbl({**t, 'route': route})} {0.2 * _c(i):.3f} {ts}"
                )
            _hist(
                lines, "recops_search_query_embed_seconds", t, i, 10, {0.005: 0.4, 0.01: 0.5, 0.02: 0.1}, ts
            )
            _hist(  # visual search (search/http.py): request latency, codes, image decode + embed
                lines,
                "recops_http_request_duration_seconds",
                {**t, "route": "visual_search", "arm": "model"},
                i,
                2,
                {0.1: 0.5, 0.25: 0.4, 0.5: 0.1},
                ts,
            )
            for code, n in (("200", 2), ("400", 0.05), ("413", 0.02)):
                lines.append(
                    f"recops_http_requests_total{_lbl({**t, 'route': 'visual_search', 'arm': 'model', 'code': code})} {n * _c(i):.3f} {ts}"
                )
            _hist(lines, "recops_search_image_embed_seconds", t, i, 2, {0.1: 0.6, 0.2: 0.3, 0.5: 0.1}, ts)
            _hist(  # answer synthesis (search/assistant.py): the whole answer and the model API's part
                lines,
                "recops_http_request_duration_seconds",
                {**t, "route": "answer", "arm": "model"},
                i,
                1,
                {1: 0.4, 2: 0.5, 4: 0.1},
                ts,
            )
            _hist(lines, "recops_assistant_model_seconds", t, i, 1, {1: 0.5, 2: 0.4, 4: 0.1}, ts)
            for outcome, n in (("grounded", 0.9), ("ungrounded", 0.05), ("upstream_error", 0.03)):
                lines.append(
                    f"recops_assistant_answers_total{_lbl({**t, 'outcome': outcome})} {n * _c(i):.3f} {ts}"
                )
            lines.append(f"recops_assistant_removed_citations_total{_lbl(t)} {0.02 * _c(i):.3f} {ts}")
            lines.append(f"recops_inflight_requests{_lbl(t)} 3 {ts}")
            lines.append(f"recops_overload_rejections_total{_lbl(t)} {0.1 * _c(i):.2f} {ts}")
            lines.append(f"recops_model_load_failures_total{_lbl(t)} 0 {ts}")
        for endpoint in ("recommendations", "search", "retrieve", "visual_search"):
            sh = {**TARGET, "track": "stable", "pod": PODS["stable"][0], "endpoint": endpoint}
            for outcome, n in (("ok", 2), ("error", 0.1), ("dropped", 0.05)):
                lines.append(
                    f"recops_shadow_requests_total{_lbl({**sh, 'outcome': outcome})} {n * _c(i):.2f} {ts}"
                )
            _hist(lines, "recops_shadow_topk_overlap_ratio", sh, i, 2, {0.5: 0.3, 0.8: 0.5, 1.0: 0.2}, ts)
            _hist(
                lines, "recops_shadow_latency_delta_seconds", sh, i, 2, {-0.01: 0.2, 0.0: 0.3, 0.01: 0.5}, ts
            )
        # operator
        for state, n in (("desired", 4), ("ready", 4), ("min", 2), ("max", 200)):
            lines.append(f"recops_serving_replicas{_lbl({**TARGET, 'state': state})} {n} {ts}")
        lines.append(f"recops_operator_reconcile_total{_lbl({'result': 'success'})} {_c(i):.3f} {ts}")
        lines.append(f"recops_operator_reconcile_total{_lbl({'result': 'error'})} {i // 20} {ts}")
        lines.append(f"recops_rollout_weight{_lbl(TARGET)} {10 if i > steps // 2 else 2} {ts}")
        for bound, lift in (("estimate", 0.12), ("low", 0.04), ("high", 0.2)):
            lines.append(f"recops_holdout_lift{_lbl({**TARGET, 'bound': bound})} {lift} {ts}")
        for phase in ("Shadow", "Canary", "Stable"):
            lines.append(
                f"recops_rollout_phase{_lbl({**TARGET, 'phase': phase})} {int(phase == 'Canary')} {ts}"
            )
        for check in ("latency", "errors"):
            lines.append(
                f"recops_rollout_analysis_total{_lbl({**TARGET, 'check': check, 'verdict': 'pass'})} {i // 4} {ts}"
            )
        for result in ("promoted", "rolled_back"):
            lines.append(f"recops_rollouts_total{_lbl({**TARGET, 'result': result})} {i // 40} {ts}")
        for result in ("Succeeded", "Failed"):
            lines.append(f"recops_training_runs_total{_lbl({**TARGET, 'result': result})} {i // 40} {ts}")
        lines.append(f"recops_training_preemptions_total{_lbl(TARGET)} {i // 30} {ts}")
        lines.append(f"recops_training_last_checkpoint_timestamp_seconds{_lbl(TARGET)} {ts - 120} {ts}")
    return "\n".join(lines) + "\n# EOF\n"
