"""The HTTP API, as a lean RSGI app served by granian (Rust HTTP/1.1 stack, one Python
worker per process): no framework routing or validation layers on the hot path.

Routes: ``GET /v1/recommendations?user_id=|session_id=&k=&category=``,
``POST /v1/events`` (one event or ``{"events": [...]}``), ``GET /v1/search``, ``POST /v1/retrieve``,
``POST /v1/visual-search``, ``POST /v1/answer`` (catalogue search: ``search/http.py``), ``/healthz``, ``/readyz``
(200 only with a warm bundle), ``/metrics``, ``/openapi.json``; other methods get 405 with ``Allow``.

Client input never causes a 5xx: every field is parsed strictly (400 naming it), the 1 MiB body
limit is enforced while streaming (413), a large batch is validated and stored in slices so other
requests keep flowing, and attribution tokens are HMAC-signed (``Attribution``) so lift cannot be
forged.

Launch: ``settings.LaunchSettings``, validated by the CLI and parsed again in the worker (granian's
target loader, ``cli.worker_app``); the app reads nothing from the environment. Config:
``ServeConfig`` (the JSON file the operator renders into the ConfigMap, then ``--set`` overrides);
a file with an unknown key or a bad value is refused with its error in ``/readyz`` and the running
config and bundle stay. The ranking is ``ranking.answer`` with ``RankConfig.resolve(bundle,
config)``: the very call offline evaluation and the training gate make. A feature-store URL (the
Secret's file, or ``--redis-url``) enables session features.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import itertools
import json
import math
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from recops_contracts.serving import ServeConfig
from recops_serve import metrics as m
from recops_serve import ranking, shadow, streamfeatures
from recops_serve.bundle import ModelBundle, load_bundle
from recops_serve.eventlog import EventLog
from recops_serve.features import FeatureStoreDown, NewEvent, SessionStore
from recops_serve.search import http as search_http
from recops_serve.settings import LaunchSettings
from recops_serve.turns import Turn

JSON = [("content-type", "application/json")]
RETRY = [*JSON, ("retry-after", "1")]
EVENT_TYPES = frozenset(m.EVENT_TYPES)
MAX_BODY = 1 << 20
MAX_ID = 128
GET_ROUTES = frozenset(("/v1/recommendations", "/healthz", "/readyz", "/metrics", "/openapi.json"))
SEARCH_ROUTES = frozenset(("/v1/search", "/v1/retrieve", "/v1/visual-search", "/v1/answer"))
#: events validated between two looks at the clock (``Turn``): ~0.1 ms of plain events
VALIDATE_CHUNK = 128
_ITEM_LIMIT = 1 << 63
_new_event = tuple.__new__  # a NamedTuple without its Python-level __new__ (~0.3 us an event)
_UINT = re.compile(r"[0-9]{1,18}")  # ASCII digits only: no sign, blanks, "_" or other scripts


class BadRequest(ValueError):
    """Client input the server refuses (400), the message naming the field."""

    status = 400


class TooLarge(BadRequest):
    status = 413


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """The config file plus overrides, validated; raises ValueError with the reason."""
    raw: dict[str, Any] = {}
    if path and Path(path).exists():
        try:
            raw.update(json.loads(Path(path).read_text()))
        except ValueError as e:
            raise ValueError(f"config {path} is not valid JSON: {e}") from None
    raw.update(overrides or {})
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"config {path or '(overrides)'}: {where}: {first['msg']}") from None


def holdout_arm(user: str, percent: float, salt: str) -> str:
    """Stable assignment: the same user is in the same arm across requests, pods and restarts."""
    if percent <= 0:
        return "model"
    h = int.from_bytes(hashlib.blake2b(f"{salt}:{user}".encode(), digest_size=8).digest(), "big")
    return "holdout" if (h % 10000) < percent * 100 else "model"


def _uint(raw: str, name: str) -> int:
    """A non-negative decimal integer in ASCII digits (``int()`` also takes " 5 ", "+5", "5_0" and non-ASCII digits)."""
    if not _UINT.fullmatch(raw):
        raise BadRequest(f"{name} must be a non-negative integer in ASCII digits, got {raw!r}")
    return int(raw)


def _id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise BadRequest(f"{where} must be a non-empty string of at most {MAX_ID} characters")
    return value


class Attribution:
    """Unforgeable attribution tokens: ``<arm>:<track>:<model_version>:<issued hex>:<seq hex>:<mac>``,
    ``mac`` = base64url(HMAC-SHA256(key, everything before it))[:22]. A client cannot mint one, and
    one is valid ``window`` seconds after it was issued."""

    def __init__(self, key: bytes, track: str, window: float):
        self.key, self.track, self.window = key, track, window
        self._seq = itertools.count()

    def _mac(self, payload: str) -> str:
        digest = hmac.digest(self.key, payload.encode(), "sha256")
        return base64.urlsafe_b64encode(digest[:16]).decode()[:22]

    def issue(self, arm: str, version: str, now: float) -> str:
        payload = f"{arm}:{self.track}:{version}:{int(now):x}:{next(self._seq):x}"
        return f"{payload}:{self._mac(payload)}"

    def verify(self, token: Any, now: float) -> tuple[tuple[str, str] | None, str | None]:
        """((arm, track), None) for a genuine token in its window, else (None, "forged" | "expired"):
        the event is stored but not attributed. Raises BadRequest when it is not a token at all."""
        if not isinstance(token, str) or len(token) > 512:
            raise BadRequest(_NOT_A_TOKEN)
        payload, _, mac = token.rpartition(":")
        parts = payload.split(":")
        if (
            len(parts) < 5
            or parts[0] not in m.ARMS
            or parts[1] not in m.TRACKS
            or not _HEX.fullmatch(parts[-2])
        ):
            raise BadRequest(_NOT_A_TOKEN)
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None, "forged"
        if not now - self.window <= int(parts[-2], 16) <= now + 60:
            return None, "expired"
        return (parts[0], parts[1]), None


class Attributed(NamedTuple):
    """What an attributed event credits: the arm and track that answered, and its order value."""

    arm: str
    track: str
    value: float | None  # price x quantity of a purchase, when the event carries a price


MAX_PRICE = 1e9
MAX_QUANTITY = 100_000


def _order_value(ev: dict, where: str) -> float | None:
    """price x quantity of a purchase (the data contract's optional fields), checked."""
    price, quantity = ev.get("price"), ev.get("quantity", 1)
    if price is None:
        return None
    if type(price) not in (int, float) or not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
        raise BadRequest(f"{where}.price must be a number between 0 and {MAX_PRICE:g}, got {price!r}")
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise BadRequest(
            f"{where}.quantity must be an integer between 1 and {MAX_QUANTITY}, got {quantity!r}"
        )
    return float(price) * quantity


_NOT_A_TOKEN = "attribution_token must be the attribution_token of a recommendation response"
_HEX = re.compile(r"[0-9a-f]{1,12}")


@dataclass
class Server:
    settings: LaunchSettings = field(default_factory=LaunchSettings)
    config: ServeConfig = field(default_factory=ServeConfig)
    # (bundle, its resolved ranking config), swapped as one reference: a request never pairs a new
    # config (whose masks are sized for the new catalogue) with the old bundle
    active: tuple[ModelBundle, ranking.RankConfig] | None = None
    store: SessionStore | None = None
    eventlog: EventLog | None = None  # the clickstream to Kafka (Flink features, training archive)
    inflight: int = 0
    last_error: str | None = None
    reload_failures: int = 0
    tokens: Attribution | None = None
    search: Any = None  # search.service.SearchService over the configured search bundle
    search_error: str | None = None
    visual: Any = None  # search.visual.VisualSearchService when the search bundle has an image index
    assistant: Any = None  # search.assistant.ModelApi while the config names a model API (/v1/answer)
    mirror: shadow.Mirror = field(default_factory=shadow.Mirror)  # shadow traffic to the candidate
    _config_mtime: float = 0.0

    @property
    def bundle(self) -> ModelBundle | None:
        return self.active[0] if self.active else None

    # ------------------------------------------------------------------ lifecycle
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reload(initial=True)
        # what startup made (config, bundle index dicts, libraries) lives as long as the process: out
        # of the collector's reach, so a full collection (a large batch's objects trigger one) scans
        # only what requests made since (~40 ms less held loop per full collection, measured)
        gc.freeze()
        cfg = self.config
        key = self.settings.attribution_key()
        if key is None:  # tokens then verify only on the pod that issued them
            print("recops-serve: no attribution key file: tokens use a per-process key", flush=True)
            key = secrets.token_bytes(32)
        self.tokens = Attribution(key, cfg.track, cfg.attribution_window_seconds)
        url = self.settings.feature_store_url() or cfg.redis_url
        if url:
            # one connection per admitted request: a request waits for none and never fails for lack of one
            self.store = SessionStore(
                url, cfg.session_ttl_seconds, cfg.max_session_events, max_connections=cfg.max_inflight
            )
        m.inflight.set_function(lambda: self.inflight)  # read at scrape time: nothing per request
        loop.create_task(self._watch())
        if bootstrap := self.config.kafka_bootstrap:
            self.eventlog = EventLog(bootstrap, self.config.kafka_topic)
            loop.create_task(self.eventlog.run())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.eventlog:
            self.eventlog.close()
        if self.store:
            loop.run_until_complete(self.store.close())

    def reload(self, initial: bool = False) -> None:
        """(Re)read config and, when the model changed, load the new bundle; keep the old on any failure."""
        try:
            cfg = load_config(self.settings.config, self.settings.override_values())
            uri = cfg.model_uri
            if not uri or (self.bundle and self.bundle.manifest.get("_uri") == uri):
                new = self.bundle
            else:
                new = load_bundle(uri)
                new.manifest["_uri"] = uri
            rank = ranking.RankConfig.resolve(new, cfg) if new else None
            if new is not self.bundle:
                # warm before taking traffic: id lookup tables, session index, arrays paged in
                new.user_index("")
                new.item_index(0)
                _ = new.session_index
                ranking.answer(new, rank, None, [], 10)
        except Exception as e:  # a bad config or bundle never stops serving or later reloads
            m.model_load_failures.inc()
            self.reload_failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            if initial:
                print(f"recops-serve: cannot load: {self.last_error}", flush=True)
            return
        self._reload_search(cfg)
        old = self.bundle
        self.config = cfg
        self.active = (new, rank) if new else None  # in-flight requests finish on what they read
        if new is not old:
            if old:
                m.model_info.labels(old.version).set(0)
            m.model_info.labels(new.version).set(1)
        self.last_error = None

    def _reload_search(self, cfg: ServeConfig) -> None:
        """Load the search bundle when ``search_uri`` changed; on failure keep the old one and say why
        (/readyz, and the 503 of the search routes when there is none). Search never gates readiness."""
        uri = cfg.search_uri
        current = self.search
        if current is not None and current.bundle.manifest.get("_uri") == uri:
            current.alpha = cfg.search_alpha
            return
        if not uri:
            self.search, self.search_error, self.visual = None, None, None
            return
        try:
            from recops_serve.search.index import load_search_bundle
            from recops_serve.search.service import SearchService

            bundle = load_search_bundle(uri)
            bundle.manifest["_uri"] = uri
            svc = SearchService(bundle, alpha=cfg.search_alpha)
            svc.search("warm up", 1)  # faiss, bm25 and the model paged in before traffic
            visual = None
            if bundle.image_index is not None:
                import numpy as np

                from recops_serve.search.visual import VisualSearchService

                visual = VisualSearchService(bundle)
                visual.search(visual.embed(np.full((224, 224, 3), 128, np.uint8)), 1)  # warm up
        except Exception as e:
            self.search_error = f"{type(e).__name__}: {e}"
            m.model_load_failures.inc()
            print(f"recops-serve: cannot load search bundle: {self.search_error}", flush=True)
            return
        if current is not None:
            search_http.search_bundle_info.labels(current.bundle.version).set(0)
        search_http.search_bundle_info.labels(bundle.version).set(1)
        self.search, self.search_error, self.visual = svc, None, visual

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_seconds)
            try:
                path = self.settings.config
                mtime = path.stat().st_mtime if path else 0.0
            except OSError:
                continue
            # a failed reload is retried every poll (the bundle may appear or be fixed in place)
            search_missing = self.config.search_uri and self.search_error is not None
            if (
                mtime != self._config_mtime
                or self.bundle is None
                or self.last_error is not None
                or search_missing
            ):
                self._config_mtime = mtime
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.reload)
                except Exception as e:  # pragma: no cover - reload catches; the loop must never die
                    self.reload_failures += 1
                    self.last_error = f"{type(e).__name__}: {e}"

    # ------------------------------------------------------------------ routing
    async def __rsgi__(self, scope, proto) -> None:
        path, method = scope.path, scope.method
        if path in SEARCH_ROUTES:
            await search_http.handle(self, scope, proto, read_body)
            return
        if path == "/v1/events":
            if method != "POST":
                m.REQS[("events", "model", "405")].inc()
                proto.response_bytes(
                    405, [*JSON, ("allow", "POST")], b'{"error":"method not allowed: use POST"}'
                )
                return
            await self._events_request(scope, proto)
            return
        if path not in GET_ROUTES:
            proto.response_bytes(404, JSON, b'{"error":"not found"}')
            return
        if method != "GET" and method != "HEAD":
            if path == "/v1/recommendations":
                m.REQS[("recommendations", "model", "405")].inc()
            proto.response_bytes(
                405, [*JSON, ("allow", "GET, HEAD")], b'{"error":"method not allowed: use GET"}'
            )
            return
        if path == "/v1/recommendations":
            await self._guarded(proto, "recommendations", self.recommendations(scope.query_string))
        elif path == "/healthz":
            proto.response_bytes(200, JSON, b'{"status":"ok"}')
        elif path == "/readyz":
            ready = self.readiness()
            proto.response_bytes(200 if ready["ready"] else 503, JSON, orjson.dumps(ready))
        elif path == "/metrics":
            proto.response_bytes(200, [("content-type", CONTENT_TYPE_LATEST)], generate_latest(m.REGISTRY))
        else:
            proto.response_bytes(200, JSON, orjson.dumps(OPENAPI))

    def readiness(self) -> dict[str, Any]:
        """Ready with a warm bundle; reload failures and a degraded feature store are shown, never hidden."""
        store = self.store
        fs = "off" if store is None else ("degraded" if store.degraded else "on")
        out: dict[str, Any] = {"ready": self.bundle is not None}
        if self.bundle is None:
            out["error"] = self.last_error or "no bundle loaded"
        else:
            out["model_version"] = self.bundle.version
        out |= {"last_error": self.last_error, "reload_failures": self.reload_failures, "feature_store": fs}
        if store is not None and store.degraded:
            out["feature_store_error"] = store.last_error
        if self.eventlog:  # the clickstream producer (Kafka): an outage is shown, never a 503
            out["event_log"] = self.eventlog.status()
        if self.search is not None or self.search_error or self.config.search_uri:
            out["search"] = {
                "version": self.search.bundle.version if self.search else None,
                "error": self.search_error,
            }
        return out

    async def _events_request(self, scope, proto) -> None:
        """Read the body within the limit (413 before reading on a long Content-Length, or as soon as
        a chunked body passes it), then handle it; a broken upload is a counted 400, never a 500."""
        try:
            body = await read_body(scope, proto, MAX_BODY)
        except BadRequest as e:
            m.REQS[("events", "model", str(e.status))].inc()
            proto.response_bytes(e.status, JSON, orjson.dumps({"error": str(e)}))
            return
        except (
            Exception
        ) as e:  # RSGIProtocolClosed/Error: the client sent less than it announced, bad chunking
            m.REQS[("events", "model", "400")].inc()
            m.aborted_uploads.inc()
            with contextlib.suppress(Exception):
                proto.response_bytes(
                    400, JSON, orjson.dumps({"error": f"incomplete request body: {type(e).__name__}"})
                )
            return
        await self._guarded(proto, "events", self.events(body))

    async def _guarded(self, proto, route: str, work) -> None:
        t0 = time.perf_counter()
        if self.inflight >= self.config.max_inflight:
            work.close()
            m.overload_rejections.inc()
            m.REQS[(route, "model", "503")].inc()
            proto.response_bytes(503, RETRY, b'{"error":"overloaded, retry"}')
            return
        self.inflight += 1
        arm = "model"
        try:
            status, payload, arm = await work
        except BadRequest as e:
            status, payload = e.status, {"error": str(e)}
        except Exception as e:  # pragma: no cover - last resort, still a JSON answer
            status, payload = 500, {"error": f"internal error: {type(e).__name__}"}
        finally:
            self.inflight -= 1
        proto.response_bytes(status, RETRY if status == 503 else JSON, orjson.dumps(payload))
        m.REQS[(route, arm, str(status))].inc()
        (m.REC_LATENCY[arm] if route == "recommendations" else m.EVENT_LATENCY).observe(
            time.perf_counter() - t0
        )

    # ------------------------------------------------------------------ handlers
    async def recommendations(self, query: str) -> tuple[int, dict[str, Any], str]:
        q = parse_query(query)
        user = q.get("user_id") or q.get("session_id")
        if not user:
            raise BadRequest("user_id or session_id is required")
        if len(user) > MAX_ID:
            raise BadRequest(f"user_id/session_id longer than {MAX_ID} characters")
        cfg = self.config
        k = _uint(q["k"], "k") if "k" in q else cfg.top_k
        if not 1 <= k <= 500:
            raise BadRequest(f"k must be between 1 and 500, got {k}")
        active = self.active
        if active is None:
            return 503, {"error": "model not loaded yet"}, "model"
        b, rank = active
        if cfg.fault_latency_ms:  # chaos knob for rollout drills: a slow candidate
            await asyncio.sleep(cfg.fault_latency_ms / 1000)
        if cfg.fault_error_percent and random.random() * 100 < cfg.fault_error_percent:
            return 500, {"error": "injected fault"}, "model"
        category = None
        if q.get("category") not in (None, ""):
            category = _uint(q["category"], "category")
            n_cat = b.cat_ptr.shape[0] - 1
            if category >= n_cat:
                raise BadRequest(
                    f"category {category} is not a category of model {b.version} (0..{n_cat - 1})"
                )
        arm = holdout_arm(user, cfg.holdout_percent, cfg.holdout_salt)
        uidx = b.user_index(user)
        session: list[int] = []
        fs_down = False
        live = None
        if self.store is not None:
            try:
                if cfg.stream_features:  # the session list and the Flink job's signals, one round trip
                    recent, sig = await streamfeatures.read(
                        self.store, user, rank.session_length, category, cfg.stream_trend_ttl_seconds
                    )
                    live = streamfeatures.live(b, sig)
                else:
                    recent = await self.store.recent(user, rank.session_length)
                session = ranking.session_items(b, [ev.item_id for ev in recent], rank.session_length)
            except FeatureStoreDown:
                fs_down = True
                m.FALLBACK["feature_store_down"].inc()
        if arm == "holdout":
            ranked = ranking.popularity(b, rank, uidx, k, category=category, live=live)
        else:
            cats = b.item_category[session].tolist()
            ranked = ranking.answer(
                b, rank, uidx, session, k, category=category, now=time.time(), session_categories=cats,
                live=live,
            )  # fmt: skip
        if ranked.fallback:
            m.FALLBACK.get(ranked.fallback, m.FALLBACK["sparse_candidates"]).inc()
        ids = b.item_ids[ranked.items].tolist()
        payload = {
            "model_version": b.version,
            "arm": arm,
            "user_id": user,
            "feature_store": "down" if fs_down else ("on" if self.store else "off"),
            # echoed by the client on events caused by this answer (lift per arm and track; stateless)
            "attribution_token": self.tokens.issue(arm, b.version, time.time()),
            "items": [{"item_id": i, "reason": r} for i, r in zip(ids, ranked.reasons, strict=True)],
        }
        request = ("GET", f"/v1/recommendations?{query}", b"", "")
        self.mirror.maybe(cfg, "recommendations", request, ids, shadow.item_ids)
        return 200, payload, arm

    async def events(self, body: bytes) -> tuple[int, dict[str, Any], str]:
        items = await parse_events(body)
        now = time.time()
        parsed: list[NewEvent] = []
        credits: list[Attributed | None] = []  # per event: what its genuine attribution token credits
        window = self.config.event_time_window_seconds
        keep = self.eventlog is not None  # else each parsed object is dropped once validated (freed
        turn = Turn()  # as the batch goes, not all at the end)
        for lo in range(0, len(items), VALIDATE_CHUNK):
            if turn.over():
                await turn.next()
            hi = min(lo + VALIDATE_CHUNK, len(items))
            self._validate(items, lo, hi, now, window, parsed, credits)
            if not keep:
                items[lo:hi] = [None] * (hi - lo)
        if self.store is None:
            return 503, {"error": "no feature store configured"}, "model"
        try:
            # shielded: a client that disconnects mid-request must not leave stored events uncounted
            fresh = await asyncio.shield(self._store_and_count(parsed, credits))
        except FeatureStoreDown:
            return (
                503,
                {
                    "error": "feature store unavailable, retry (events with an event_id are never stored twice)"
                },
                "model",
            )
        if self.eventlog:  # after the session path: never blocks, a Kafka outage is counted, not raised
            self.eventlog.publish([ev for ev, f in zip(items, fresh, strict=True) if f], now)
        new = sum(fresh)
        out: dict[str, Any] = {"stored": new}
        if new < len(fresh):
            out["duplicates"] = len(fresh) - new
        return 200, out, "model"

    def _validate(
        self,
        items: list,
        lo: int,
        hi: int,
        now: float,
        window: float,
        parsed: list[NewEvent],
        credits: list[Attributed | None],
    ) -> None:
        """Validate ``items[lo:hi]`` onto ``parsed``/``credits``: one inline pass (no call, no
        intermediate object per event) takes a plain event (a view or add_to_cart, no attribution
        token) that passes every check of ``_event``; any other event, and any the pass doubts, goes
        through ``_event``, which is the rule and names the field (its index added here)."""
        plain = math.isfinite(window)  # else a ts of inf would pass ``abs(ts - now) <= window``
        for n in range(lo, hi):
            ev = items[n]
            if plain and type(ev) is dict:
                get = ev.get
                sid, item = get("user_id") or get("session_id"), get("item_id")
                typ, ts, event_id = get("type", "view"), get("ts", now), get("event_id")
                if (
                    type(sid) is str and 0 < len(sid) <= MAX_ID
                    and type(item) is int and 0 <= item < _ITEM_LIMIT
                    and type(typ) is str and (typ == "view" or typ == "add_to_cart")
                    and (type(ts) is float or type(ts) is int) and abs(ts - now) <= window
                    and (event_id is None or (type(event_id) is str and 0 < len(event_id) <= MAX_ID))
                    and get("attribution_token") is None
                ):  # fmt: skip
                    parsed.append(_new_event(NewEvent, (sid, item, typ, float(ts), event_id)))
                    credits.append(None)
                    continue
            try:
                event, credit = self._event(ev, now, window)
            except BadRequest as e:  # the message names the field; the event's index is added here
                raise BadRequest(f"events[{n}]{e}") from None
            parsed.append(event)
            credits.append(credit)

    def _event(self, ev: Any, now: float, window: float) -> tuple[NewEvent, Attributed | None]:
        """One validated event and what its genuine, unexpired attribution token credits (if any).
        A BadRequest's message starts at the field (".item_id must ..."): the caller prefixes the
        event (no per-event string is built for the events that are fine)."""
        if type(ev) is not dict:
            raise BadRequest(" must be an object")
        get = ev.get
        sid = get("user_id") or get("session_id")
        if type(sid) is not str or not sid or len(sid) > MAX_ID:
            _id(sid, ".user_id/session_id")
        item = get("item_id")
        if type(item) is not int or not 0 <= item < _ITEM_LIMIT:
            raise BadRequest(".item_id must be a non-negative 64-bit integer")
        typ = get("type", "view")
        if type(typ) is not str or typ not in EVENT_TYPES:
            raise BadRequest(f".type must be one of view, add_to_cart, purchase; got {typ!r}")
        ts = get("ts", now)
        if type(ts) not in (int, float) or not math.isfinite(ts) or abs(ts - now) > window:
            raise BadRequest(f".ts must be a unix timestamp within {window:g} s of now, got {ts!r}")
        event_id = get("event_id")
        if event_id is not None:
            _id(event_id, ".event_id")
        value = _order_value(ev, "") if typ == "purchase" else None
        credit = None
        token = get("attribution_token")
        if token is not None:
            try:
                answered, rejected = self.tokens.verify(token, now)
            except BadRequest as e:
                raise BadRequest(f".{e}") from None
            if rejected:  # stored, never counted for lift
                m.ATTRIBUTION_REJECTED[rejected].inc()
            else:
                credit = Attributed(*answered, value)
        return NewEvent(sid, item, typ, float(ts), event_id), credit

    async def _store_and_count(self, parsed: list[NewEvent], credits: list[Attributed | None]) -> list[int]:
        """Store and count the events that were new (a retried event_id counts once); which were.
        Slice by slice (one Redis round trip each), so counting never holds the loop for a whole batch."""
        fresh = [0] * len(parsed)
        async for where, flags in self.store.add_slices(parsed):
            per_type: dict[str, int] = {}
            for n, new in zip(where, flags, strict=True):
                if new:
                    fresh[n] = 1
                    typ = parsed[n].type
                    per_type[typ] = per_type.get(typ, 0) + 1
                    if (credit := credits[n]) is not None:  # the arm and track whose answer the user acted on
                        m.ATTRIBUTED[(credit.arm, typ, credit.track)].inc()
                        if credit.value:
                            m.REVENUE[(credit.arm, credit.track)].inc(credit.value)
                            m.REVENUE_SQ[(credit.arm, credit.track)].inc(credit.value * credit.value)
            for typ, count in per_type.items():
                m.INGESTED[typ].inc(count)
        return fresh


#: a body above this size that has the form {"events": [...]} is parsed in pieces of about this size
SPLIT_BYTES = 8 << 10
_BATCH_HEAD = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"events"[ \t\r\n]*:[ \t\r\n]*\[')
_JSON_BLANK = b" \t\r\n"


async def parse_events(body: bytes) -> list:
    """The events of a body: one event object or ``{"events": [...]}``; BadRequest otherwise.

    A large batch is not parsed in one ``orjson.loads`` (~10-20 ms holding the event loop for 1 MiB):
    its array is cut at ``},`` about every ``SPLIT_BYTES`` and each piece parsed as ``[piece]``,
    giving the loop a turn whenever the batch has held it ``TURN_SECONDS``. Exact, not a heuristic:
    the pieces are the array's text split at commas, so when every ``[piece]`` is valid JSON the
    whole array is too and its elements are the pieces' in order; and the body is
    ``{"events": [array]}`` with nothing else, so it means what one parse would. A cut that falls inside a string or a nested object makes its piece invalid:
    then the whole body is parsed at once, which also gives the canonical error."""
    if len(body) > SPLIT_BYTES and (head := _BATCH_HEAD.match(body)):
        end = len(body)
        while end and body[end - 1] in _JSON_BLANK:
            end -= 1
        if end and body[end - 1] == 0x7D:  # }
            end -= 1
            while end and body[end - 1] in _JSON_BLANK:
                end -= 1
            if end > head.end() and body[end - 1] == 0x5D:  # ]
                items = await _parse_pieces(body, head.end(), end - 1)
                if items:
                    return items
    try:
        doc = orjson.loads(body)  # also refuses invalid UTF-8 and lone surrogates
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    items = doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
    if not isinstance(items, list) or not items:
        raise BadRequest('expected an event object or {"events": [...]} with at least one event')
    return items


async def _parse_pieces(body: bytes, lo: int, hi: int) -> list | None:
    """The elements of the JSON array text ``body[lo:hi]``, piece by piece; None if a piece is not valid."""
    items: list = []
    start = lo
    turn = Turn()
    while True:
        cut = body.find(b"},", min(start + SPLIT_BYTES, hi), hi)
        stop = hi if cut < 0 else cut + 1
        try:
            piece = orjson.loads(b"[" + body[start:stop] + b"]")
        except orjson.JSONDecodeError:
            return None
        if not piece:  # nothing after a comma (a trailing comma): let the full parse refuse it
            return None
        items += piece
        if cut < 0:
            return items
        start = cut + 2  # past the comma
        if turn.over():
            await turn.next()


def parse_query(query: str) -> dict[str, str]:
    """The query string as a dict (last value wins), exactly as ``parse_qsl(keep_blank_values=True,
    errors="strict")``; a plain ASCII query (no escapes) skips the general parser."""
    if query.isascii() and "%" not in query and "+" not in query:
        out = {}
        for part in query.split("&"):
            if part:
                key, _, value = part.partition("=")
                out[key] = value
        return out
    try:  # strict: an invalid UTF-8 id is refused, not collapsed to U+FFFD (distinct ids would collide)
        return dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise BadRequest("query string is not valid UTF-8 (user_id/session_id)") from None


async def read_body(scope, proto, limit: int) -> bytes:
    """The request body, never more than ``limit`` bytes in memory: a longer Content-Length is
    refused before reading, a chunked body as soon as it passes the limit."""
    length = scope.headers.get("content-length")
    if length is not None:
        if _uint(length, "Content-Length") > limit:
            raise TooLarge(f"body of {length} bytes is larger than the {limit} byte limit")
        return await proto()
    chunks, size = [], 0
    async for chunk in proto:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"chunked body larger than the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


_ALLOW_GET = {"405": {"description": "method not allowed (Allow: GET, HEAD)"}}
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "recops-serve", "version": "1"},
    "paths": {
        "/v1/recommendations": {
            "get": {
                "parameters": [
                    {"name": "user_id", "in": "query", "schema": {"type": "string", "maxLength": 128}},
                    {"name": "session_id", "in": "query", "schema": {"type": "string", "maxLength": 128}},
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "category", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {
                        "description": (
                            "model_version, arm (model|holdout), feature_store (on|down|off), attribution_token "
                            "(<arm>:<track>:<model_version>:<issued hex>:<seq hex>:<HMAC-SHA256 mac>), items "
                            "[{item_id, reason: model|session|repeat|popular|boost|fallback}]"
                        )
                    },
                    "400": {
                        "description": "bad input (k/category not ASCII digits, unknown category, invalid UTF-8)"
                    },
                    **_ALLOW_GET,
                    "503": {"description": "overloaded or not ready (Retry-After)"},
                },
            }
        },
        "/v1/events": {
            "post": {
                "description": (
                    'One event {"session_id"|"user_id", "item_id", "type": view|add_to_cart|purchase, "ts"?, '
                    '"event_id"?, "attribution_token"?} or {"events": [...]}, body at most 1 MiB. ts: unix seconds '
                    "within event_time_window_seconds of now. event_id (string, <= 128): the event is stored once "
                    "per session and event_id, so retrying after a 503 is safe. Echo the attribution_token of the "
                    "recommendation response the user acted on: such events count per arm for lift; a value that "
                    "is not a token is a 400, a forged or expired one is stored and not attributed."
                ),
                "responses": {
                    "200": {
                        "description": '{"stored": new events, "duplicates"?: events whose event_id was stored}'
                    },
                    "400": {"description": "bad input, naming the field"},
                    "405": {"description": "method not allowed (Allow: POST)"},
                    "413": {
                        "description": "body larger than 1 MiB (refused on Content-Length before reading)"
                    },
                    "503": {"description": "feature store unavailable or overloaded (Retry-After)"},
                },
            }
        },
        "/v1/search": {
            "get": {
                "description": "Hybrid catalogue search (vector cosine + normalised BM25), available products only "
                "unless include_unavailable=true; the query's first 64 word pieces are embedded.",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 1000},
                    },
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "category", "in": "query", "schema": {"type": "string"}},
                    {"name": "include_unavailable", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {
                    "200": {
                        "description": "search_version, query, items [{item_id, title, category, score}]"
                    },
                    "400": {"description": "empty or over-long q, bad k, unknown category"},
                    **_ALLOW_GET,
                    "503": {"description": "no search bundle loaded (the reason)"},
                },
            }
        },
        "/v1/retrieve": {
            "post": {
                "description": '{"query", "budget_tokens"?: 1..8192 (1000), "k"?: 1..50 (20), "category"?}, body at '
                "most 64 KiB: the best chunks while their tokens (the embedding model's tokenizer) fit the budget.",
                "responses": {
                    "200": {
                        "description": "search_version, query, budget_tokens, tokens, tokenizer, chunks "
                        "[{item_id, title, category, text, tokens, score}]"
                    },
                    "400": {"description": "bad input, naming the field"},
                    "405": {"description": "method not allowed (Allow: POST)"},
                    "413": {"description": "body larger than 64 KiB"},
                    "503": {"description": "no search bundle loaded (the reason)"},
                },
            }
        },
        "/v1/visual-search": {
            "post": {
                "description": "Visually similar available products: the body is the image (JPEG, PNG, WebP, GIF), "
                "decoded, centre-cropped to 224 px and embedded with EfficientNet-Lite0 server-side.",
                "parameters": [
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "category", "in": "query", "schema": {"type": "string"}},
                    {"name": "include_unavailable", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "200": {
                        "description": "search_version, model, items [{item_id, title, category, score}]"
                    },
                    "400": {
                        "description": "empty body, not an image, truncated or corrupt image, bad k or category"
                    },
                    "405": {"description": "method not allowed (Allow: POST)"},
                    "413": {
                        "description": "image over 8 MiB (8388608 bytes) or over 40 Mpx (decompression bomb)"
                    },
                    "503": {"description": "no search bundle loaded, or it has no image index"},
                },
            }
        },
        "/v1/answer": {
            "post": {
                "description": '{"question", "k"?: 1..50 (20), "category"?}, body at most 64 KiB: the chunks '
                "/v1/retrieve finds, answered by the configured OpenAI-compatible chat model; citations of "
                "products that were not retrieved are removed (removed_citations).",
                "responses": {
                    "200": {
                        "description": "search_version, question, model, answer (null: nothing matched), grounded, "
                        "citations [{item_id, title}], removed_citations, finish_reason, usage, chunks"
                    },
                    "400": {"description": "bad input, naming the field"},
                    "405": {"description": "method not allowed (Allow: POST)"},
                    "413": {"description": "body larger than 64 KiB"},
                    "502": {"description": "the model API failed (the reason), with the retrieved chunks"},
                    "503": {
                        "description": "no search bundle, or no model API configured (spec.search.assistant)"
                    },
                    "504": {
                        "description": "the model API did not answer within the deadline, with the chunks"
                    },
                },
            }
        },
        "/healthz": {"get": {"responses": {"200": {"description": "alive"}, **_ALLOW_GET}}},
        "/readyz": {
            "get": {
                "responses": {
                    "200": {
                        "description": "bundle loaded: model_version, last_error, reload_failures, feature_store "
                        "(on|degraded|off)"
                    },
                    "503": {"description": "not ready"},
                    **_ALLOW_GET,
                }
            }
        },
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics"}, **_ALLOW_GET}}},
    },
}
