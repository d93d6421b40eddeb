"""The RecommenderService API (recops.io/v1alpha1), defined once, in pydantic.

These models are the single source of truth: ``recops_operator.api.crd`` turns
them into the CRD's OpenAPI schema (with CEL rules from ``json_schema_extra``),
the admission webhook validates with them, and renderers read typed specs.
Field names are camelCase on the wire (aliases) and snake_case in Python.
Anything the API server can check lives here as schema or CEL; semantic checks
that need context (region of buckets/endpoints) live in ``api.semantics``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from recops_contracts import serving as serve_defaults
from recops_contracts import stream as stream_contract
from recops_operator.api import windows
from recops_operator.api.fields import Bounded, Confidence, Fraction, Maybe, Seconds, Text
from recops_operator.api.status import RolloutStatus, TrainingStatus

GROUP = "recops.io"
VERSION = "v1alpha1"
KIND = "RecommenderService"
PLURAL = "recommenderservices"
SINGULAR = "recommenderservice"
SHORT_NAMES = ["recsvc"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
REGION_PATTERN = r"^[a-z]{2}-[a-z]+(-[0-9]+)?$"
OSS_URI_PATTERN = r"^oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](\.[a-z0-9.-]+)?(/.*)?$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"
DATA_URI_PATTERN = (
    r"^(oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](\.[a-z0-9.-]+)?(/.*)?|builtin:[a-z]+(\+[a-z]+)*)$"
)
PROMETHEUS_URL_PATTERN = r"^https?://[^@\s]+$"
IMAGE_PATTERN = r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$"


@dataclass(frozen=True)
class Location:
    """Marks a field that names a place data or code comes from or goes to. ``api.semantics``
    checks every marked field with one rule (in spec.region, no credentials, no path tricks, no
    link-local/metadata or public hosts); tests/operator/test_locations.py fails on an unmarked one.

    kind: ``oss`` (oss:// URI), ``data`` (oss:// or builtin:NAME), ``image`` (container image,
    registry host), ``endpoint`` (http(s) URL that must be in-cluster or regional), ``host``
    (an intranet host name), ``cidr`` (an address range pods may talk to; list items), ``model``
    (an OpenAI-compatible model API: in-cluster, a private address or the region's PAI-EAS VPC endpoint).
    """

    kind: Literal["oss", "data", "image", "endpoint", "host", "cidr", "model"]


OSS = Location("oss")
DATA = Location("data")
IMAGE = Location("image")
ENDPOINT = Location("endpoint")
HOST = Location("host")
CIDR = Location("cidr")
MODEL_API = Location("model")


def location_of(field: Any) -> Location | None:
    """The Location marker of a pydantic FieldInfo, if any."""
    return next((m for m in field.metadata if isinstance(m, Location)), None)


def OssUri(description: str, **field: Any) -> Any:
    """An oss:// prefix or object; the OSS marker has api.semantics hold its bucket to spec.region."""
    return Annotated[
        str, Field(description=description, pattern=OSS_URI_PATTERN, max_length=1024, **field), OSS
    ]


def DataUri(description: str, kind: Any = str) -> Any:
    """A shop's data: oss:// (its bucket in spec.region, by the DATA marker) or builtin:NAME."""
    return Annotated[kind, Field(description=description, pattern=DATA_URI_PATTERN, max_length=1024), DATA]


def Image(description: str, kind: Any = str) -> Any:
    """A container image reference; the IMAGE marker has api.semantics check its registry host."""
    return Annotated[kind, Field(description=description, pattern=IMAGE_PATTERN, max_length=512), IMAGE]


def PrometheusUrl(description: str) -> Any:
    """An optional Prometheus API URL (no credentials: no ``@``), in-cluster or regional (ENDPOINT)."""
    return Annotated[
        str | None,
        Field(
            alias="prometheusURL", description=description, pattern=PROMETHEUS_URL_PATTERN, max_length=1024
        ),
        ENDPOINT,
    ]


#: Seconds, for the bounds of durations.
MINUTE, DAY, WEEK = 60, 86400, 7 * 86400


def duration_seconds(text: str) -> int:
    """Seconds of a DURATION_PATTERN string ("1m30s")."""
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"([0-9]+)(s|m|h)", text))


def _human(seconds: int) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def Duration(description: str, floor: int, ceiling: int, name: str):
    """A duration string that drives a loop: bounded both in the CRD (CEL) and in pydantic, with the
    bound in the message (a "0s" interval would spin the control loop, "9999h" would stall it)."""
    lo, hi = _human(floor), _human(ceiling)
    message = f"{name} must be between {lo} and {hi}"

    def check(value: str) -> str:
        if not floor <= duration_seconds(value) <= ceiling:
            raise ValueError(message)
        return value

    return Annotated[
        str,
        Field(
            description=f"{description} Between {lo} and {hi}.",
            pattern=DURATION_PATTERN,
            max_length=32,
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(f"duration(self) >= duration('{lo}') && duration(self) <= duration('{hi}')", message)
                ]
            },
        ),
        AfterValidator(check),
    ]


def cel(rule: str, message: str, field_path: str | None = None) -> dict:
    """One x-kubernetes-validations entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (the CRD schema prunes them anyway)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


#: Upper bound of a training pod's terminationGracePeriodSeconds: it must checkpoint and exit inside
#: ECI's ~180 s spot-release notice, with margin for the eviction round trip.
MAX_TRAINING_GRACE_SECONDS = 150


# ---------------------------------------------------------------------------------- model
class ModelRef(Model):
    """Which trained model bundle to serve."""

    uri: OssUri(
        "Object-storage prefix holding versioned model bundles, e.g. oss://retail-models-hz/home-feed/. "
        "Must be a bucket in spec.region. Never embed credentials."
    )
    version: Annotated[
        str,
        Field(
            description="Model version (bundle directory under uri) served by the stable track.",
            pattern=VERSION_PATTERN,
        ),
    ]


# ---------------------------------------------------------------------------------- serving
class Replicas(Model):
    """Replica bounds; the HPA moves between them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [cel("self.min <= self.max", "replicas.min must be <= replicas.max")]
        }
    )
    min: Bounded(int, "Minimum replicas (also the PDB's floor).", ge=1, le=1000) = 2
    max: Bounded(int, "Maximum replicas for a flash-sale spike.", ge=1, le=1000) = 20


CRON_PATTERN = r"^[0-9*,/-]+( +[0-9*,/-]+){2} +[0-9A-Za-z*,/-]+ +[0-9A-Za-z*,/-]+$"
LOCAL_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$"
WINDOW_TIME_PATTERN = f"({CRON_PATTERN[:-1]}$)|({LOCAL_TIME_PATTERN})"
TIMEZONE_PATTERN = r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$"


def _window_time(value: str) -> str:
    """A 5-field cron expression (recurring) or a local date-time YYYY-MM-DDTHH:MM (one-off)."""
    import datetime as _dt

    if re.match(LOCAL_TIME_PATTERN, value):
        _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M")  # a real date, not 2026-02-31
    return value


def _timezone(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from e
    return value


class SaleWindow(Model):
    """A known traffic window (a flash sale): the replica floor is raised before it starts and released
    when it ends. KEDA's cron trigger where KEDA exists, else the operator moves the HPA's minReplicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.end) != has(self.duration)", "a schedule needs exactly one of end or duration")
            ]
        }
    )
    start: Annotated[
        str,
        Field(
            description="Window start: a 5-field cron expression (recurring, e.g. '0 20 * * *') or a local "
            "date-time YYYY-MM-DDTHH:MM (one-off) in timezone. Schedule it a few minutes before the sale.",
            pattern=WINDOW_TIME_PATTERN,
            max_length=128,
        ),
        AfterValidator(_window_time),
    ]
    end: Annotated[
        str | None,
        Field(
            description="Window end, in the same form as start. Exactly one of end or duration.",
            pattern=WINDOW_TIME_PATTERN,
            max_length=128,
        ),
        AfterValidator(lambda v: v if v is None else _window_time(v)),
    ] = None
    duration: Annotated[
        str | None,
        Field(
            description="Window length (e.g. 2h, 90m); with a cron start its minute and hour fields must be "
            "plain numbers. Exactly one of end or duration.",
            pattern=DURATION_PATTERN,
            max_length=32,
        ),
    ] = None
    min_replicas: Bounded(int, "Replica floor while the window is open.", ge=1, le=1000)
    timezone: Annotated[
        str,
        Field(description="IANA time zone of start and end.", pattern=TIMEZONE_PATTERN, max_length=64),
        AfterValidator(_timezone),
    ] = "Asia/Shanghai"

    @model_validator(mode="after")
    def _window_shape(self) -> SaleWindow:
        if (self.end is None) == (self.duration is None):
            raise ValueError("a schedule needs exactly one of end or duration")
        # raises on a shape KEDA's cron trigger cannot express
        windows.to_cron(
            self.start, self.end, None if self.duration is None else duration_seconds(self.duration)
        )
        return self


class Autoscaling(Model):
    """Autoscaling: a KEDA ScaledObject when keda.sh exists (offered request rate from Prometheus,
    CPU, cron sale windows), else a plain HorizontalPodAutoscaler. Behaviour is tuned for spikes:
    no scale-up stabilisation, percent and pods policies that allow 10x in one period, slow scale-down."""

    target_cpu_utilization: Annotated[
        int | None,
        Field(
            alias="targetCPUUtilization",
            description="Average CPU utilization target, percent of requests. null: no CPU metric (the "
            "request rate alone scales; needs no metrics.k8s.io). Send the null with kubectl apply "
            "--server-side, create or replace: client-side kubectl apply drops nulls and the default returns.",
            ge=10,
            le=95,
        ),
    ] = 60
    target_requests_per_second: Bounded(
        int | None,
        "Per-replica target of the offered request rate (every request, 503s included). With "
        "KEDA: a Prometheus trigger on sum(rate(recops_http_requests_total)) of the service; without: the "
        "pods metric recops_http_requests_per_second via a metrics adapter. null: CPU only (null as for "
        "targetCPUUtilization).",
        ge=1,
        le=100000,
    ) = 800
    prometheus_url: PrometheusUrl(
        "Prometheus API the KEDA trigger queries (in-cluster or ARMS in spec.region); default: "
        "spec.rollout.prometheusURL, then the operator's RECOPS_PROMETHEUS_URL."
    ) = None
    rate_window: Duration(
        "Window of the request-rate query (at least two scrapes).", 2, 600, "autoscaling.rateWindow"
    ) = "30s"
    scale_up_stabilization_seconds: Seconds(
        "Scale-up stabilization window; 0 reacts at once to a spike.", ge=0, le=3600
    ) = 0
    scale_up_percent: Bounded(
        int,
        "Scale-up policy: add up to this percent of current replicas per period (900 = 10x).",
        ge=1,
        le=10000,
    ) = 900
    scale_up_pods: Bounded(
        int, "Scale-up policy: or add up to this many pods per period (the larger wins).", ge=1, le=1000
    ) = 100
    scale_up_period_seconds: Seconds("Period of the scale-up policies.", ge=1, le=1800) = 15
    scale_down_stabilization_seconds: Seconds(
        "Scale-down stabilization window, so a dip does not drop capacity.", ge=0, le=3600
    ) = 300
    scale_down_percent: Bounded(
        int, "Scale-down policy: remove at most this percent of replicas per period.", ge=1, le=100
    ) = 10
    scale_down_period_seconds: Seconds("Period of the scale-down policy.", ge=1, le=1800) = 60
    schedules: Annotated[
        list[SaleWindow],
        Field(
            description="Known sale windows that pre-scale (replica floor raised for the window).",
            max_length=20,
        ),
    ] = []


class ResourceList(Model):
    cpu: Annotated[str, Field(description="CPU quantity, e.g. 500m or 2.", pattern=QUANTITY_PATTERN)]
    memory: Annotated[str, Field(description="Memory quantity, e.g. 1Gi.", pattern=QUANTITY_PATTERN)]


class Resources(Model):
    """Container resources of an inference pod."""

    requests: Annotated[ResourceList, Field(description="Requests (also sizes the ECI instance).")] = (
        ResourceList(cpu="1", memory="2Gi")
    )
    limits: Annotated[ResourceList, Field(description="Limits.")] = ResourceList(cpu="2", memory="4Gi")


def SecretKey(description: str) -> Any:
    """A key of a Secret's data: anything outside the pattern can never be mounted."""
    return Annotated[str, Field(description=description, pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class SecretKeyRef(Model):
    name: Annotated[
        str, Field(description="Secret name in the same namespace.", pattern=DNS_LABEL, max_length=253)
    ]
    key: SecretKey("Key in the Secret holding the redis:// or rediss:// URL (with password).") = "url"


class FeatureStore(Model):
    """Real-time session features in Tair/Redis. Credentials only by Secret reference."""

    secret_ref: Annotated[
        SecretKeyRef, Field(description="Secret with the feature-store URL; never inline credentials.")
    ]
    session_ttl_seconds: Annotated[
        int,
        Field(alias="sessionTTLSeconds", description="TTL of a session's recent events.", ge=MINUTE, le=WEEK),
    ] = serve_defaults.SESSION_TTL_SECONDS
    max_session_events: Bounded(int, "Recent events kept per session.", ge=1, le=500) = (
        serve_defaults.MAX_SESSION_EVENTS
    )


class Fallback(Model):
    """What anonymous or unknown users get, and how new items are boosted."""

    strategy: Annotated[
        Literal["category-popularity", "popularity"],
        Field(description="Cold-start fallback: per-category then global popularity, or global only."),
    ] = serve_defaults.FALLBACK_STRATEGY
    new_item_boost_hours: Bounded(
        int,
        "Boost items created (catalogue created_at, else first seen) within this many hours (0 disables).",
        ge=0,
        le=720,
    ) = serve_defaults.NEW_ITEM_BOOST_HOURS


class Exclude(Model):
    """What is never recommended again. Unset: the policy the trainer measured as better on the shop's
    validation data (recorded in the bundle; buy-again shops keep purchases, discovery shops drop them)."""

    purchased: Maybe(
        bool, "Never recommend what the user already bought (in basket data every event is a purchase)."
    ) = None
    seen: Maybe(bool, "Never recommend items already in the current session.") = None


class Rules(Model):
    """Merchandising rules, applied after scoring (relevance decides which items stay)."""

    exclude_categories: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]],
        Field(
            description="Catalogue categories never recommended (fuel, bags, coupons...); a name matches its sub-paths ('A' matches 'A > B').",
            max_length=200,
        ),
    ] = []
    max_per_category: Bounded(
        int | None, "At most this many items of one category in a top-K (diversity).", ge=1, le=500
    ) = None


class EciOptions(Model):
    """ECI pod options (only when placement is eci)."""

    use_specs: Annotated[
        list[str], Field(description="Ordered ECI instance specs to try, e.g. 2-4Gi.", max_length=5)
    ] = []
    image_cache: Annotated[
        bool, Field(description="Let ECI match/create an image cache (k8s.aliyun.com/eci-auto-imc).")
    ] = True
    image_snapshot_id: Annotated[
        str | None,
        Field(
            alias="imageSnapshotID",
            description="A prepared ECI image cache (k8s.aliyun.com/eci-image-snapshot-id, imc-...): new pods "
            "start from it and pull nothing. Unset: automatic matching per imageCache.",
            pattern=r"^imc-[a-z0-9]{8,32}$",
        ),
    ] = None


class Serving(Model):
    """The inference Deployment, Service and autoscaling."""

    image: Image("recops-serve image (same image trains).")
    placement: Annotated[
        Literal["eci", "nodes"],
        Field(description="eci: ECI virtual nodes (serverless); nodes: the on-demand node pool. Never spot."),
    ] = "nodes"
    replicas: Annotated[Replicas, Field(description="Replica bounds.")] = Replicas()
    autoscaling: Annotated[Autoscaling, Field(description="Autoscaling targets.")] = Autoscaling()
    resources: Annotated[Resources, Field(description="Container resources.")] = Resources()
    top_k: Annotated[
        int, Field(alias="topK", description="Default number of recommendations per request.", ge=1, le=500)
    ] = serve_defaults.TOP_K
    session_length: Bounded(
        int, "Newest session events the ranking uses (same in evaluation and serving).", ge=1, le=100
    ) = serve_defaults.SESSION_LENGTH
    exclude: Annotated[
        Exclude, Field(description="Exclusions; unset fields use the trainer's measured policy.")
    ] = Exclude()
    rules: Annotated[Rules, Field(description="Business rules.")] = Rules()
    feature_store: Maybe(FeatureStore, "Session feature store. Unset: serve without session features.") = None
    fallback: Annotated[Fallback, Field(description="Cold-start fallback policy.")] = Fallback()
    eci: Annotated[EciOptions, Field(description="ECI options.")] = EciOptions()
    port: Bounded(int, "Container and Service port.", ge=1024, le=65535) = 8080


class Monitoring(Model):
    """Prometheus integration (ServiceMonitor/PrometheusRule when the CRDs exist)."""

    service_monitor: Annotated[
        bool,
        Field(description="Create a ServiceMonitor and PrometheusRule when monitoring.coreos.com exists."),
    ] = True
    scrape_interval: Duration("Scrape interval.", 5, 300, "monitoring.scrapeInterval") = "15s"


# ---------------------------------------------------------------------------------- training
class TrainingResources(Model):
    cpu: Annotated[str, Field(description="CPU for the training pod.", pattern=QUANTITY_PATTERN)] = "1"
    memory: Annotated[str, Field(description="Memory for the training pod.", pattern=QUANTITY_PATTERN)] = (
        "2Gi"
    )


class Checkpoint(Model):
    uri: OssUri("Object-storage prefix for checkpoints (oss:// in spec.region).")
    interval_seconds: Seconds(
        "Checkpoint interval; at most this much work is lost to a preemption.", ge=30, le=3600
    ) = 300


class TrainingData(Model):
    """A shop's own data, in the contract of docs/data.md (Parquet or CSV; dt= partitions)."""

    events: DataUri(
        "Interaction events: an oss:// prefix or file in spec.region, or builtin:NAME (completejourney, diginetica, taobao)."
    )
    catalog: DataUri(
        "Item catalogue (category, availability, created_at, ...): oss:// in spec.region. builtin sources carry their own.",
        str | None,
    ) = None
    max_bad_fraction: Fraction(
        "Fail the run (exit 78, serving untouched) above this share of rejected rows."
    ) = 0.1
    type_map: Annotated[
        dict[str, Literal["view", "add_to_cart", "purchase"]],
        Field(
            description="Map the shop's event type names to view/add_to_cart/purchase (e.g. pv: view).",
            max_length=50,
        ),
    ] = {}


class DataWindow(Model):
    days: Bounded(int, "Train on the last N days of interactions.", ge=1, le=3650)


class MetricsGate(Model):
    metrics: Annotated[
        list[str],
        Field(
            description="Offline metrics compared with the serving model (candidate >= serving - tolerance).",
            min_length=1,
            max_length=10,
        ),
    ] = ["ndcg@10"]
    tolerance: Fraction("Allowed drop per metric.") = 0.0


class Retrieval(Model):
    """ALS candidate retrieval: precomputed per user or an HNSW index in the bundle, gated on recall."""

    min_recall: Fraction(
        "Fail the run (exit 78, serving untouched) when the index's recall@K against exact search, on a sample of real users' vectors, is below this."
    ) = 0.95
    mode: Annotated[
        Literal["auto", "precomputed", "index"],
        Field(
            description="auto: precomputed while users x candidates <= 50 M (about 500k users at 100 candidates: every built-in dataset), else index. precomputed: every known user's top candidates in the bundle (8 bytes per user and candidate, rebuilt each run). index: the bundle carries the users' vectors and the HNSW index answers per request, unavailable and excluded items filtered inside the search. Either way the index is built and gated on minRecall."
        ),
    ] = "auto"


class History(Model):
    successful: Bounded(int, "Finished Jobs kept.", ge=0, le=20) = 3
    failed: Bounded(int, "Failed Jobs kept.", ge=0, le=20) = 3


class SpotJob(Model):
    """What both spot batch jobs of a service have (training, catalogue vectorization): when they run,
    on which image and capacity, and how long a preempted pod has to checkpoint."""

    schedule: Annotated[
        str | None,
        Field(
            description="Cron schedule of runs. Unset: none is scheduled (training still runs on its other triggers; vectorization does not run).",
            max_length=100,
        ),
    ] = None
    time_zone: Annotated[str | None, Field(description="IANA time zone of the schedule.", max_length=64)] = (
        None
    )
    image: Image("The job's image; default: serving.image.", str | None) = None
    placement: Annotated[
        Literal["eci", "nodes"], Field(description="eci: spot ECI pods; nodes: the spot node pool.")
    ] = "nodes"
    capacity: Annotated[
        Literal["spot"], Field(description="Always spot: batch jobs never use on-demand capacity.")
    ] = "spot"
    resources: Annotated[TrainingResources, Field(description="The job's pod resources.")] = (
        TrainingResources()
    )
    backoff_limit: Bounded(int, "Genuine failures tolerated (preemptions do not count).", ge=0, le=20) = 3
    termination_grace_period_seconds: Seconds(
        "Time to checkpoint after SIGTERM; below the spot notice window (ECI: ~180 s).",
        ge=1,
        le=MAX_TRAINING_GRACE_SECONDS,
    ) = 120


class Training(SpotJob):
    """Spot-only training runs (scheduled and on demand) that resume from checkpoints."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.dataset)",
                    "spec.training.dataset was replaced by spec.training.data: {events: builtin:NAME or oss://..., catalog: oss://...} (docs/data.md)",
                    ".dataset",
                )
            ]
        }
    )
    data: Annotated[TrainingData, Field(description="The shop's events and catalogue (docs/data.md).")]
    dataset: Annotated[
        str | None,
        Field(
            description="Removed: use data.events (kept in the schema only to reject it with a clear message).",
            max_length=1024,
        ),
    ] = None
    checkpoint: Annotated[Checkpoint, Field(description="Checkpoint location and interval.")]
    suspend: Annotated[bool, Field(description="Suspend scheduled runs.")] = False
    data_window: Maybe(DataWindow, "Data window.") = None
    active_deadline_seconds: Seconds(
        "Hard limit on one run (1 min to 7 days).", int | None, ge=MINUTE, le=WEEK
    ) = None
    trigger: Annotated[
        str | None,
        Field(description="Change this token to start an on-demand run (GitOps-safe).", max_length=128),
    ] = None
    auto_rollout: Annotated[
        bool, Field(description="When a run passes the metrics gate, make its version the rollout candidate.")
    ] = False
    gate: Annotated[MetricsGate, Field(description="Offline metrics gate for autoRollout.")] = MetricsGate()
    retrieval: Annotated[
        Retrieval, Field(description="Candidate retrieval (HNSW index) and its recall gate.")
    ] = Retrieval()
    history: Annotated[History, Field(description="Job history limits.")] = History()

    @field_validator("dataset")
    @classmethod
    def _dataset_was_replaced(cls, value: str | None) -> str | None:
        """The CEL rule's message, for code that validates without the API server."""
        if value is not None:
            raise ValueError("spec.training.dataset was replaced by spec.training.data (docs/data.md)")
        return value


# ---------------------------------------------------------------------------------- search
CIDR_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"
PRIVATE_CIDRS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
Cidr = Annotated[str, Field(pattern=CIDR_PATTERN, max_length=18)]
MODEL_API_PATTERN = r"^https?://[^@\s?#]+$"


class AssistantKeyRef(SecretKeyRef):
    key: SecretKey("Key in the Secret holding the model API's bearer key.") = "api-key"


class Assistant(Model):
    """Answer synthesis for a shopping assistant (POST /v1/answer): the chunks /v1/retrieve finds,
    with the shopper's question, go to an OpenAI-compatible chat API in spec.region, told to cite
    only those product ids; a citation of any other id is removed from the answer and counted."""

    endpoint: Annotated[
        str,
        Field(
            description="The chat API's base URL (.../v1; POST <endpoint>/chat/completions): in-cluster (*.svc), "
            "a private address, or the spec.region PAI-EAS VPC endpoint (*.vpc.<region>.pai-eas.aliyuncs.com).",
            pattern=MODEL_API_PATTERN,
            max_length=1024,
        ),
        MODEL_API,
    ]
    model: Annotated[
        str,
        Field(
            description="The model name sent with each request.",
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
            max_length=128,
        ),
    ]
    api_key_secret_ref: Maybe(
        AssistantKeyRef, "Secret with the API's bearer key (omit for an in-cluster model that takes none)."
    ) = None
    budget_tokens: Bounded(int, "Retrieved chunk tokens put in the prompt.", ge=100, le=8192) = (
        serve_defaults.ASSISTANT_BUDGET_TOKENS
    )
    max_answer_tokens: Bounded(int, "The answer's token limit (max_tokens).", ge=16, le=4096) = (
        serve_defaults.ASSISTANT_MAX_ANSWER_TOKENS
    )
    timeout_seconds: Seconds("One deadline for the whole answer.", ge=1, le=300) = int(
        serve_defaults.ASSISTANT_TIMEOUT_SECONDS
    )
    cidrs: Annotated[
        list[Cidr],
        Field(
            description="Address ranges of the model API (the serving pods' egress allows only these).",
            min_length=1,
            max_length=20,
        ),
        CIDR,
    ] = PRIVATE_CIDRS
    egress_port: Bounded(
        int | None,
        "Port the egress policy opens (default: the endpoint URL's; an in-cluster Service's targetPort when it differs).",
        ge=1,
        le=65535,
    ) = None


class VisualSearch(Model):
    """Visual search (/v1/visual-search): the vectorization job also embeds each product's
    ``image_uri`` into the search bundle's image index; the server answers once the served bundle
    has one (503 otherwise)."""

    enabled: Annotated[bool, Field(description="Embed catalogue images (vectorize --visual).")] = False
    model: Annotated[
        Literal["efficientnet-lite0"],
        Field(description="Image embedding model (ImageNet EfficientNet-Lite0, hash-pinned in the image)."),
    ] = "efficientnet-lite0"
    max_failed_images: Fraction(
        "Fraction of products with an image_uri whose image may be missing or broken (reported in the bundle manifest) before the run fails."
    ) = 0.05


class Search(SpotJob):
    """Catalogue search (/v1/search, /v1/retrieve; /v1/visual-search with ``visual``): a spot-only vectorization CronJob
    (``recops-serve vectorize``, resumable like training) and the serving config's search bundle."""

    catalog: DataUri(
        "Item catalogue with title/description (HTML allowed)/attributes (docs/data.md): oss:// in spec.region, or builtin:completejourney."
    )
    uri: OssUri(
        "Object-storage prefix of search bundles (oss:// in spec.region); a run writes <uri>/<run id>."
    )
    version: Annotated[
        str | None,
        Field(
            description="The search bundle version served (<uri>/<version>). Unset: the search routes answer 503.",
            pattern=VERSION_PATTERN,
        ),
    ] = None
    alpha: Fraction("Hybrid score weight of the vector cosine (the rest: normalised BM25).") = 0.5
    checkpoint_interval_seconds: Seconds(
        "Vectorization checkpoints (under <uri>/_checkpoints/<run id>): at most this much work is lost to a preemption.",
        ge=30,
        le=3600,
    ) = 300
    visual: Annotated[
        VisualSearch, Field(description="Visual search: product images in the search bundle.")
    ] = VisualSearch()
    assistant: Maybe(
        Assistant, "Answer synthesis (POST /v1/answer) by an OpenAI-compatible chat API in spec.region."
    ) = None


# ---------------------------------------------------------------------------------- rollout
class Candidate(Model):
    """What the rollout moves traffic to."""

    version: Annotated[str, Field(description="Candidate model version.", pattern=VERSION_PATTERN)]
    image: Image("Candidate image; default: serving.image.", str | None) = None
    search_version: Text(
        "The search bundle the candidate serves (<spec.search.uri>/<searchVersion>), shadow-compared and promoted with the model; default: spec.search.version.",
        pattern=VERSION_PATTERN,
    ) = None


class CustomCheck(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [cel("has(self.min) || has(self.max)", "a check needs min or max")]
        }
    )
    name: Annotated[str, Field(description="Check name (shown in status).", pattern=DNS_LABEL, max_length=63)]
    query: Annotated[
        str,
        Field(
            description="PromQL returning one number; $namespace, $service and $track are substituted.",
            min_length=1,
            max_length=4096,
        ),
    ]
    min: Maybe(float, "Fail below this.") = None
    max: Maybe(float, "Fail above this.") = None


class RelativeAnalysis(Model):
    """Compare the candidate with the stable track instead of only absolute limits."""

    max_latency_increase_percent: Bounded(
        float | None, "Fail when candidate p99 exceeds stable p99 by more than this percent.", ge=0, le=1000
    ) = None
    max_error_rate_increase: Fraction(
        "Fail when candidate error rate exceeds stable by more than this (absolute).", float | None
    ) = None


class BusinessCheck(Model):
    """Conversion per recommendation, candidate against stable, by an always-valid sequential test
    (rollout/sequential.py): a significant drop beyond the bound fails, significant non-inferiority
    passes, anything less is Inconclusive (the weight holds). Evidence accumulates from the start
    of the rollout across steps (a rate per recommendation does not depend on the weight)."""

    metric: Annotated[
        Literal["click", "add_to_cart", "purchase", "revenue"],
        Field(
            description=(
                "What a recommendation should lead to: click (an attributed view), add_to_cart, purchase, "
                "or revenue (price x quantity of attributed purchases)."
            )
        ),
    ] = "add_to_cart"
    max_relative_drop: Bounded(
        float,
        "Largest acceptable drop of the candidate's rate relative to stable (0.05 = 5%).",
        ge=0.005,
        le=0.5,
    ) = 0.05
    confidence: Confidence("Confidence of every decision, valid under repeated looks.") = 0.95
    min_samples: Bounded(
        int, "Recommendations each track must have served before the test decides.", ge=100, le=100_000_000
    ) = 1000


class Analysis(Model):
    max_p99_latency_ms: Annotated[
        float,
        Field(alias="maxP99LatencyMs", description="p99 latency limit for the candidate.", gt=0, le=60000),
    ] = 80
    max_error_rate: Fraction("5xx ratio limit.") = 0.01
    min_requests: Bounded(
        int, "Fewer requests in the interval is Inconclusive (never a pass).", ge=1, le=10_000_000
    ) = 200
    min_shadow_overlap: Fraction(
        "Minimum mean top-K overlap with stable during shadowing, of recommendations and (unless minSearchShadowOverlap is set) of search product ids each."
    ) = 0.0
    min_search_shadow_overlap: Maybe(
        float,
        "Minimum mean top-K overlap of search, visual search and retrieve product ids during shadowing; "
        "defaults to minShadowOverlap. A candidate search bundle with a new embedding model legitimately "
        "reorders results, so it may warrant a lower value than recommendations.",
        ge=0,
        le=1,
    ) = None
    relative: Maybe(RelativeAnalysis, "Relative checks against stable.") = None
    checks: Annotated[list[CustomCheck], Field(description="Extra PromQL checks.", max_length=20)] = []
    business: Maybe(BusinessCheck, "Conversion per recommendation against stable (sequential test).") = None


class Shadow(Model):
    percent: Bounded(
        int,
        "Percent of requests mirrored to the candidate before any live traffic (0: no shadow phase).",
        ge=0,
        le=100,
    ) = 0
    intervals: Bounded(int, "Analysis intervals to shadow before the first step.", ge=1, le=100) = 2


class Traffic(Model):
    provider: Annotated[
        Literal["nginx", "alb", "asm"],
        Field(description="Router that splits traffic: ingress-nginx, ALB Ingress or ASM (Istio)."),
    ] = "nginx"
    host: Annotated[
        str | None,
        Field(description="Intranet host name of the Ingress/VirtualService.", max_length=253),
        HOST,
    ] = None
    ingress_class_name: Annotated[
        str | None, Field(description="IngressClass (nginx/alb).", max_length=253)
    ] = None


class ManualAction(Model):
    """A declarative, GitOps-safe action: applied once per nonce, echoed in status."""

    type: Annotated[Literal["promote", "abort", "retry", "pause", "resume"], Field(description="Action.")]
    nonce: Annotated[str, Field(description="Change to apply the action again.", min_length=1, max_length=64)]


class Rollout(Model):
    """Shadow -> canary steps -> promote, or roll back, decided by Prometheus."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.all(x, self.steps.filter(y, y <= x).size() == self.steps.indexOf(x) + 1)",
                    "rollout.steps must be strictly ascending",
                    ".steps",
                ),
                cel(
                    "self.steps[self.steps.size() - 1] == 100", "the last rollout step must be 100", ".steps"
                ),
            ]
        }
    )
    candidate: Maybe(Candidate, "Setting it starts a rollout.") = None
    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]],
        Field(
            description="Canary weights in percent, ascending, ending at 100.", min_length=1, max_length=20
        ),
    ] = [2, 10, 25, 50, 100]
    interval: Duration(
        "How long each step is held and analysed (also the analysis window).", 5, 3600, "rollout.interval"
    ) = "1m"
    progress_deadline_seconds: Seconds(
        "Roll back when the rollout has not finished by then (1 min to 7 days).", ge=MINUTE, le=WEEK
    ) = 3600
    failure_limit: Bounded(int, "Consecutive failed analyses before rollback.", ge=1, le=100) = 2
    inconclusive_limit: Bounded(
        int, "Consecutive inconclusive analyses before the rollout fails.", ge=1, le=1000
    ) = 10
    analysis: Annotated[Analysis, Field(description="Analysis thresholds.")] = Analysis()
    shadow: Annotated[Shadow, Field(description="Mirrored traffic before the canary.")] = Shadow()
    traffic: Annotated[Traffic, Field(description="Traffic router.")] = Traffic()
    prometheus_url: PrometheusUrl(
        "Prometheus API (in-cluster or ARMS in spec.region); default: the operator's."
    ) = None
    canary_replicas: Maybe(
        Replicas, "Replica bounds of the candidate track; default: scaled with its weight."
    ) = None
    action: Maybe(ManualAction, "Manual promote/abort/retry/pause/resume.") = None


# ---------------------------------------------------------------------------------- experiment
class Holdout(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.percent == 0.0 || size(self.salt) > 0",
                    "holdout.salt is required when holdout.percent > 0",
                )
            ]
        }
    )
    percent: Bounded(
        float, "Percent of users (salted hash of the user id) served the popularity baseline.", ge=0, le=50
    ) = 0
    salt: Annotated[
        str,
        Field(description="Salt of the assignment hash; change it to reshuffle the groups.", max_length=64),
    ] = ""
    metric: Annotated[
        Literal["click", "add_to_cart", "purchase", "revenue"],
        Field(description="What the lift is measured on (status.experiment.holdout, the lift panel)."),
    ] = "add_to_cart"
    confidence: Confidence("Confidence of the lift's always-valid interval.") = 0.95


class Experiment(Model):
    holdout: Annotated[Holdout, Field(description="Persistent holdout group for measuring lift.")] = Holdout()


# ---------------------------------------------------------------------------------- features
class KafkaSecretRef(SecretKeyRef):
    key: SecretKey(
        "Key in the Secret holding the Kafka bootstrap servers (host:port,...; the VPC endpoint)."
    ) = "bootstrap"


class StreamKafka(Model):
    """The clickstream topic's brokers, by Secret reference only (ApsaraMQ for Kafka's VPC endpoint)."""

    bootstrap_secret_ref: Annotated[
        KafkaSecretRef, Field(description="Secret with the bootstrap servers; never inline them in the CR.")
    ]


class StreamWindows(Model):
    """The trending window (HOP): its size must be whole minutes and a multiple of the slide."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "duration(self.trending).getSeconds() % duration(self.trendingSlide).getSeconds() == 0",
                    "features.stream.windows.trending must be a multiple of windows.trendingSlide",
                ),
                cel(
                    "duration(self.trending).getSeconds() % 60 == 0",
                    "features.stream.windows.trending must be whole minutes",
                ),
            ]
        }
    )
    trending: Duration(
        "Sliding window of the per-category trending items.", MINUTE, DAY, "features.stream.windows.trending"
    ) = "30m"
    trending_slide: Duration(
        "How often (event time) a category's trending list is recomputed.",
        1,
        3600,
        "features.stream.windows.trendingSlide",
    ) = "10s"

    @model_validator(mode="after")
    def _hop_shape(self) -> StreamWindows:
        size, slide = duration_seconds(self.trending), duration_seconds(self.trending_slide)
        if size % slide:
            raise ValueError("features.stream.windows.trending must be a multiple of windows.trendingSlide")
        if size % 60:
            raise ValueError("features.stream.windows.trending must be whole minutes")
        return self


class StreamStateTTL(Model):
    """Explicit state TTLs (state bloat kills stream jobs during spikes)."""

    features: Duration(
        "Keyed state of an idle session/user is dropped after this; at least the longest feature window "
        "(30m), or a 30-minute count would forget its start.",
        1800,
        WEEK,
        "features.stream.stateTTL.features",
    ) = "35m"
    items: Duration(
        "Stock state per item (sold-out), and the Redis TTL of item availability.",
        3600,
        90 * DAY,
        "features.stream.stateTTL.items",
    ) = "168h"


class StreamResources(Model):
    job_manager: Annotated[ResourceList, Field(description="JobManager pod resources.")] = ResourceList(
        cpu="1", memory="2Gi"
    )
    task_manager: Annotated[
        ResourceList, Field(description="TaskManager pod resources (one task slot each).")
    ] = ResourceList(cpu="2", memory="4Gi")


class StreamFeatures(Model):
    """The clickstream job (recops_stream) as a FlinkDeployment of the Apache Flink Kubernetes
    Operator: application mode, savepoint upgrades, RocksDB state with checkpoints in spec.region.
    It writes into spec.serving.featureStore, the store the server reads."""

    image: Image(
        "PyFlink image carrying recops_stream and recops_contracts under /opt/recops and "
        "the flink-python jar in /opt/flink/opt."
    )
    flink_version: Annotated[
        Literal["v1_20", "v2_0", "v2_1", "v2_2", "v2_3"],
        Field(description="Flink version of the image (the Flink operator's spec.flinkVersion)."),
    ] = "v2_3"
    kafka: Annotated[StreamKafka, Field(description="Brokers of the clickstream topic.")]
    topic: Annotated[
        str,
        Field(description="Clickstream topic.", pattern=r"^[a-zA-Z0-9._-]+$", min_length=1, max_length=249),
    ] = stream_contract.DEFAULT_TOPIC
    consumer_group: Annotated[
        str,
        Field(description="Kafka consumer group of the job.", pattern=r"^[a-zA-Z0-9._-]+$", max_length=249),
    ] = stream_contract.DEFAULT_GROUP
    parallelism: Bounded(
        int, "Job parallelism (= TaskManager slots; at most the topic's partitions).", ge=1, le=512
    ) = 1
    windows: Annotated[StreamWindows, Field(description="Trending window.")] = StreamWindows()
    state_ttl: Annotated[
        StreamStateTTL, Field(alias="stateTTL", description="State TTLs of the job's keyed state.")
    ] = StreamStateTTL()
    checkpoint_uri: OssUri(
        "oss:// prefix in spec.region for checkpoints (<uri>/checkpoints) and savepoints (<uri>/savepoints).",
        alias="checkpointURI",
    )
    archive_uri: OssUri(
        "oss:// prefix in spec.region the raw events are archived under (events/, "
        "docs/data.md); usually spec.training.data.events' bucket.",
        alias="archiveURI",
    )
    tolerate_restarts: Annotated[
        bool,
        Field(
            description="The job may be restarted from its last checkpoint at any time (features late by "
            "the restart): only then may it run on spot capacity (preferred, not required)."
        ),
    ] = False
    resources: Annotated[StreamResources, Field(description="JobManager and TaskManager resources.")] = (
        StreamResources()
    )
    max_lag_records: Bounded(
        int,
        "Records waiting in the topic for the job (its Kafka source's pendingRecords, from "
        "Prometheus at each resync) above which StreamJobReady turns False (FallingBehind).",
        ge=1,
        le=10**12,
    ) = 100_000
    service_account: Annotated[
        str,
        Field(
            description="Service account of the JobManager (it creates the TaskManager pods and HA "
            "ConfigMaps): the one the Flink operator's Helm chart creates in each watched namespace.",
            pattern=DNS_LABEL,
            max_length=253,
        ),
    ] = "flink"


class Features(Model):
    """Feature pipelines beside the serving path."""

    stream: Maybe(
        StreamFeatures, "Real-time features from the clickstream (Kafka -> Flink -> the feature store)."
    ) = None


# ---------------------------------------------------------------------------------- network


class Network(Model):
    """Least-privilege NetworkPolicies, one per track (stable, canary, training). Ingress only from
    what is listed here plus the monitoring namespace; egress only DNS, the feature store and
    object storage (the operator, not the pods, reads Prometheus)."""

    policies: Annotated[
        bool, Field(description="Render the NetworkPolicies (off only where a mesh enforces the same).")
    ] = True
    allow_namespaces: Annotated[
        list[Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]],
        Field(
            description="Namespaces whose pods may call the service (the ingress controller's, the storefront's).",
            max_length=50,
        ),
    ] = []
    allow_pod_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]],
        Field(description="Pods of this namespace with these labels may call the service.", max_length=10),
    ] = {}
    allow_cidrs: Annotated[
        list[Cidr],
        Field(
            alias="allowCIDRs",
            description="Client address ranges of the intranet load balancer (the VPC).",
            max_length=50,
        ),
        CIDR,
    ] = PRIVATE_CIDRS
    monitoring_namespace: Annotated[
        str,
        Field(
            description="Namespace of the Prometheus that scrapes the pods.", pattern=DNS_LABEL, max_length=63
        ),
    ] = "monitoring"
    feature_store_cidrs: Annotated[
        list[Cidr],
        Field(
            alias="featureStoreCIDRs",
            description="Address ranges of the Tair/Redis feature store (VPC).",
            max_length=20,
        ),
        CIDR,
    ] = PRIVATE_CIDRS
    feature_store_port: Bounded(int, "Feature store port.", ge=1, le=65535) = 6379
    object_storage_cidrs: Annotated[
        list[Cidr],
        Field(
            alias="objectStorageCIDRs",
            description="Address ranges of the region's internal OSS endpoints (Alibaba Cloud's service range).",
            min_length=1,
            max_length=20,
        ),
        CIDR,
    ] = ["100.64.0.0/10"]


# ---------------------------------------------------------------------------------- spec
SEARCH_NEEDS_SEARCH = "rollout.candidate.searchVersion is a bundle under spec.search.uri: set spec.search"


class RecommenderServiceSpec(Model):
    """Desired state of a recommendation service."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.rollout) || !has(self.rollout.candidate) || self.rollout.candidate.version != self.model.version",
                    "rollout.candidate.version equals model.version: nothing to roll out",
                ),
                cel(
                    "!has(self.rollout) || !has(self.rollout.candidate) || !has(self.rollout.candidate.searchVersion) || has(self.search)",
                    SEARCH_NEEDS_SEARCH,
                    ".rollout.candidate.searchVersion",
                ),
                cel(
                    "!has(self.features) || !has(self.features.stream) || has(self.serving.featureStore)",
                    "features.stream writes into the feature store: set spec.serving.featureStore",
                    ".features.stream",
                ),
            ]
        }
    )
    region: Annotated[
        str,
        Field(
            description="Alibaba Cloud region (data residency): every bucket and endpoint must be in it. Immutable.",
            pattern=REGION_PATTERN,
            json_schema_extra={
                "x-kubernetes-validations": [cel("self == oldSelf", "region is immutable (data residency)")]
            },
        ),
    ]
    model: Annotated[ModelRef, Field(description="The model served by the stable track.")]
    serving: Annotated[Serving, Field(description="Inference serving.")]
    monitoring: Annotated[Monitoring, Field(description="Prometheus integration.")] = Monitoring()
    training: Maybe(Training, "Spot-only training.") = None
    search: Maybe(Search, "Catalogue search (text, and visual with search.visual.enabled).") = None
    rollout: Annotated[Rollout, Field(description="Progressive delivery of a candidate model.")] = Rollout()
    experiment: Annotated[Experiment, Field(description="Experiments (holdout).")] = Experiment()
    features: Maybe(Features, "Feature pipelines (the clickstream job on Flink).") = None
    network: Annotated[Network, Field(description="NetworkPolicies of the inference and training pods.")] = (
        Network()
    )

    @model_validator(mode="after")
    def _stream_needs_store(self) -> RecommenderServiceSpec:
        """The CEL rule's message, for code that validates without the API server (webhook, check)."""
        if self.features and self.features.stream and self.serving.feature_store is None:
            raise ValueError("features.stream writes into the feature store: set spec.serving.featureStore")
        cand = self.rollout.candidate
        if cand and cand.search_version and self.search is None:
            raise ValueError(SEARCH_NEEDS_SEARCH)
        return self


# ---------------------------------------------------------------------------------- status
class Condition(Model):
    type: Annotated[str, Field(description="Ready, Reconciled, Degraded, MonitoringAvailable, ...")]
    status: Annotated[Literal["True", "False", "Unknown"], Field(description="Condition status.")]
    reason: Annotated[str, Field(description="CamelCase reason.")] = ""
    message: Annotated[str, Field(description="Human-readable detail.")] = ""
    last_transition_time: Text("RFC 3339 time of the last status change.") = None
    observed_generation: Maybe(int, "Generation this condition was computed for.") = None


class ReplicaStatus(Model):
    desired: Annotated[int, Field(description="Replicas the stable Deployment wants.")] = 0
    ready: Annotated[int, Field(description="Ready stable replicas.")] = 0


class StreamStatus(Model):
    """What the Flink operator reports on the stream job's FlinkDeployment."""

    lifecycle_state: Text("status.lifecycleState: CREATED, DEPLOYED, STABLE, FAILED, ...") = None
    job_state: Text("status.jobStatus.state: RUNNING, FAILED, ...") = None
    job_id: Annotated[str | None, Field(alias="jobId", description="Flink job id.")] = None
    message: Text("The Flink operator's last error, one line.") = None
    lag_records: Maybe(int, "Records pending in the topic for the job at the last resync (Prometheus).") = (
        None
    )


class RecommenderServiceStatus(Model):
    """Observed state. Rollout and training sections are written by their controllers."""

    observed_generation: Maybe(int, "Generation last reconciled.") = None
    phase: Text("Pending, Ready, Degraded, Progressing, ...") = None
    conditions: Annotated[list[Condition], Field(description="Standard conditions.")] = []
    replicas: Annotated[ReplicaStatus, Field(description="Stable track replicas.")] = ReplicaStatus()
    stable_version: Text("Model version serving stable traffic.") = None
    candidate_version: Text("Candidate under rollout.") = None
    canary_weight: Annotated[int, Field(description="Percent of traffic on the candidate.")] = 0
    rollout: Annotated[
        RolloutStatus | None,
        Field(
            description="Rollout state machine (phase, step, analysis results, business evidence, actions)."
        ),
    ] = None
    training: Maybe(TrainingStatus, "Training runs, preemptions, checkpoints, metrics and lineage.") = None
    stream: Maybe(StreamStatus, "The stream job's FlinkDeployment: lifecycle and job state, last error.") = (
        None
    )
    experiment: Annotated[
        dict | None,
        Field(
            description="Holdout lift: rates per arm, lift with its always-valid interval, verdict.",
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = None


class RecommenderService(Model):
    """Top-level object, for typed access in Python (the CRD wraps spec/status itself)."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)
    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict = {}
    spec: RecommenderServiceSpec
    status: RecommenderServiceStatus | None = None
