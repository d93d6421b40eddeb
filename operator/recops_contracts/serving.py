"""The serving configuration: one typed schema shared by the operator and the server.

The operator renders it (``ServeConfig.model_dump_json``) into the ConfigMap the pod mounts;
``recops-serve serve`` parses the same model and refuses a config with an unknown key, so a
spec field the server does not read cannot exist. Offline evaluation and the training gate
build their ranking configuration from this model too (``ranking.RankConfig.resolve``).

Depends on pydantic only: the operator image imports this module without numpy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Defaults written once: the CRD's defaults, the renderer and the server all read these.
TOP_K = 50
SESSION_TTL_SECONDS = 1800
MAX_SESSION_EVENTS = 50
#: Recent session events the ranking uses (older clicks weigh almost nothing in session kNN).
SESSION_LENGTH = 10
NEW_ITEM_BOOST_HOURS = 48
FALLBACK_STRATEGY = "category-popularity"
ASSISTANT_BUDGET_TOKENS = 1500
ASSISTANT_MAX_ANSWER_TOKENS = 400
ASSISTANT_TIMEOUT_SECONDS = 20.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Exclude(_Strict):
    """What is never recommended again. ``None``: the policy the trainer measured as better on the
    shop's validation data (recorded in the bundle manifest)."""

    purchased: bool | None = None
    seen: bool | None = None


class Rules(_Strict):
    """Merchandising rules, applied after scoring so relevance decides what stays."""

    exclude_categories: list[str] = Field(default_factory=list, max_length=200)
    max_per_category: int | None = Field(default=None, ge=1, le=500)


class ServeConfig(_Strict):
    """The file ``recops-serve serve --config`` reads (JSON), written by the operator."""

    model_uri: str | None = None
    model_version: str | None = None
    track: Literal["stable", "canary"] = "stable"
    region: str | None = None
    top_k: int = Field(default=TOP_K, ge=1, le=500)
    session_ttl_seconds: int = Field(default=SESSION_TTL_SECONDS, ge=1)
    max_session_events: int = Field(default=MAX_SESSION_EVENTS, ge=1, le=500)
    session_length: int = Field(default=SESSION_LENGTH, ge=1, le=100)
    fallback_strategy: Literal["category-popularity", "popularity"] = FALLBACK_STRATEGY
    new_item_boost_hours: float = Field(default=NEW_ITEM_BOOST_HOURS, ge=0)
    exclude: Exclude = Field(default_factory=Exclude)
    rules: Rules = Field(default_factory=Rules)
    holdout_percent: float = Field(default=0.0, ge=0, le=100)
    holdout_salt: str = ""
    max_inflight: int = Field(default=256, ge=1)
    reload_seconds: float = Field(default=5.0, gt=0)
    redis_url: str | None = None
    #: an event's ts must be within this many seconds of the server's clock (either side)
    event_time_window_seconds: float = Field(default=86400.0, gt=0)
    #: an attribution token counts for lift this long after the answer that issued it
    attribution_window_seconds: float = Field(default=7 * 86400.0, gt=0)
    # the clickstream topic (eventlog.py)
    kafka_bootstrap: str | None = None
    kafka_topic: str = "recops.events"
    #: catalogue search (``recops-serve vectorize`` output); None: /v1/search and /v1/retrieve answer 503
    search_uri: str | None = None
    #: hybrid score weight of the vector cosine (1 - it: the normalised BM25 score)
    search_alpha: float = Field(default=0.5, ge=0, le=1)
    #: answer synthesis (``POST /v1/answer``, search/assistant.py): an OpenAI-compatible chat API's base
    #: URL (``.../v1``) in the region; None: /v1/answer answers 503. Its key is a Secret file
    #: (``--assistant-key-file``), never config.
    assistant_url: str | None = None
    assistant_model: str | None = None
    #: retrieved chunk tokens put in the prompt, and the answer's own token limit
    assistant_budget_tokens: int = Field(default=ASSISTANT_BUDGET_TOKENS, ge=1, le=8192)
    assistant_max_answer_tokens: int = Field(default=ASSISTANT_MAX_ANSWER_TOKENS, ge=1, le=4096)
    #: one deadline for the model's whole answer (connect, generate, read)
    assistant_timeout_seconds: float = Field(default=ASSISTANT_TIMEOUT_SECONDS, gt=0, le=300)
    #: read the Flink job's signals with the session list (streamfeatures.py): sold-out items are
    #: never recommended, trending ones boosted; off = the session list only
    stream_features: bool = True
    #: a category's trending list is kept in process this long (an answer may use a list this much
    #: older than Redis's; the job rewrites them every 10 s slide); 0: read with every request
    stream_trend_ttl_seconds: float = Field(default=1.0, ge=0, le=60)
    shadow_url: str | None = None
    shadow_percent: float = Field(default=0.0, ge=0, le=100)
    #: mirrors in flight at once per process (recommendations, search, retrieve); more are dropped
    shadow_max_inflight: int = Field(default=64, ge=1, le=4096)
    # chaos knobs for rollout drills (a slow or failing candidate); 0 in production
    fault_latency_ms: float = Field(default=0.0, ge=0)
    fault_error_percent: float = Field(default=0.0, ge=0, le=100)
