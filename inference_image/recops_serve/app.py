"""The HTTP API, as a lean RSGI app served by granian (Rust HTTP/1.1 stack, one Python
worker per process): no framework routing or validation layers on the hot path.

Routes: ``GET /v1/recommendations?user_id=|session_id=&k=&category=``,
``POST /v1/events`` (one event or ``{"events": [...]}``), ``/healthz``, ``/readyz``
(200 only with a warm bundle), ``/metrics``, ``/openapi.json``.

Config: ``config.ServeConfig`` (the JSON file the operator renders into the ConfigMap, then
``--set`` overrides); a file with an unknown key or a bad value is refused with its error in
``/readyz`` and the running config and bundle stay. The ranking is ``ranking.answer`` with
``RankConfig.resolve(bundle, config)``: the very call offline evaluation and the training
gate make. ``RECOPS_REDIS_URL`` (from the Secret) enables session features.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from recops_serve import metrics as m
from recops_serve import ranking
from recops_serve.bundle import ModelBundle, load_bundle
from recops_serve.config import ServeConfig
from recops_serve.eventlog import EventLog
from recops_serve.features import FeatureStoreDown, SessionStore

JSON = [("content-type", "application/json")]
EVENT_TYPES = set(m.EVENT_TYPES)
MAX_BODY = 1 << 20


class BadRequest(ValueError):
    pass


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
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


@dataclass
class Server:
    config_path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    config: ServeConfig = field(default_factory=ServeConfig)
    # (bundle, its resolved ranking config), swapped as one reference: a request never pairs a new
    # config (whose masks are sized for the new catalogue) with the old bundle
    active: tuple[ModelBundle, ranking.RankConfig] | None = None
    store: SessionStore | None = None
    eventlog: EventLog | None = None  # the clickstream to Kafka (Flink features, training archive)
    inflight: int = 0
    last_error: str | None = None
    _rec_seq: itertools.count = field(default_factory=itertools.count)
    _config_mtime: float = 0.0

    @property
    def bundle(self) -> ModelBundle | None:
        return self.active[0] if self.active else None

    # ------------------------------------------------------------------ lifecycle
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reload(initial=True)
        url = os.environ.get("RECOPS_REDIS_URL") or self.config.redis_url
        if url:
            self.store = SessionStore(url, self.config.session_ttl_seconds, self.config.max_session_events)
        loop.create_task(self._watch())
        if bootstrap := os.environ.get("RECOPS_KAFKA_BOOTSTRAP") or self.config.kafka_bootstrap:
            self.eventlog = EventLog(
                bootstrap, os.environ.get("RECOPS_KAFKA_TOPIC") or self.config.kafka_topic
            )
            loop.create_task(self.eventlog.run())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.eventlog:
            self.eventlog.close()
        if self.store:
            loop.run_until_complete(self.store.close())

    def reload(self, initial: bool = False) -> None:
        """(Re)read config and, when the model changed, load the new bundle; keep the old on any failure."""
        try:
            cfg = load_config(self.config_path, self.overrides)
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
            self.last_error = f"{type(e).__name__}: {e}"
            if initial:
                print(f"recops-serve: cannot load: {self.last_error}", flush=True)
            return
        old = self.bundle
        self.config = cfg
        self.active = (new, rank) if new else None  # in-flight requests finish on what they read
        if new is not old:
            if old:
                m.model_info.labels(old.version).set(0)
            m.model_info.labels(new.version).set(1)
        self.last_error = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_seconds)
            try:
                mtime = Path(self.config_path).stat().st_mtime if self.config_path else 0.0
            except OSError:
                continue
            if mtime != self._config_mtime or (self.bundle is None):
                self._config_mtime = mtime
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.reload)
                except Exception as e:  # pragma: no cover - reload catches; the loop must never die
                    self.last_error = f"{type(e).__name__}: {e}"

    # ------------------------------------------------------------------ routing
    async def __rsgi__(self, scope, proto) -> None:
        path = scope.path
        if path == "/v1/recommendations":
            await self._guarded(proto, "recommendations", self.recommendations(scope.query_string))
        elif path == "/v1/events":
            if scope.method != "POST":
                proto.response_bytes(405, JSON, b'{"error":"use POST"}')
                return
            body = await proto()
            await self._guarded(proto, "events", self.events(body))
        elif path == "/healthz":
            proto.response_bytes(200, JSON, b'{"status":"ok"}')
        elif path == "/readyz":
            if self.bundle is None:
                proto.response_bytes(
                    503, JSON, orjson.dumps({"ready": False, "error": self.last_error or "no bundle loaded"})
                )
            else:
                proto.response_bytes(
                    200,
                    JSON,
                    orjson.dumps(
                        {"ready": True, "model_version": self.bundle.version, "last_error": self.last_error}
                        | ({"event_log": self.eventlog.status()} if self.eventlog else {})
                    ),
                )
        elif path == "/metrics":
            proto.response_bytes(200, [("content-type", CONTENT_TYPE_LATEST)], generate_latest(m.REGISTRY))
        elif path == "/openapi.json":
            proto.response_bytes(200, JSON, orjson.dumps(OPENAPI))
        else:
            proto.response_bytes(404, JSON, b'{"error":"not found"}')

    async def _guarded(self, proto, route: str, work) -> None:
        t0 = time.perf_counter()
        if self.inflight >= self.config.max_inflight:
            work.close()
            m.overload_rejections.inc()
            m.REQS[(route, "model", "503")].inc()
            proto.response_bytes(503, [*JSON, ("retry-after", "1")], b'{"error":"overloaded, retry"}')
            return
        self.inflight += 1
        m.inflight.inc()
        arm = "model"
        try:
            status, payload, arm = await work
        except BadRequest as e:
            status, payload = 400, {"error": str(e)}
        except Exception as e:  # pragma: no cover - last resort, still a JSON answer
            status, payload = 500, {"error": f"internal error: {type(e).__name__}"}
        finally:
            self.inflight -= 1
            m.inflight.dec()
        proto.response_bytes(status, JSON, orjson.dumps(payload))
        m.REQS[(route, arm, str(status))].inc()
        (m.REC_LATENCY[arm] if route == "recommendations" else m.EVENT_LATENCY).observe(
            time.perf_counter() - t0
        )

    # ------------------------------------------------------------------ handlers
    async def recommendations(self, query: str) -> tuple[int, dict[str, Any], str]:
        q = dict(parse_qsl(query, keep_blank_values=True))
        user = q.get("user_id") or q.get("session_id")
        if not user:
            raise BadRequest("user_id or session_id is required")
        if len(user) > 128:
            raise BadRequest("user_id/session_id longer than 128 characters")
        cfg, default_k = self.config, self.config.top_k
        try:
            k = int(q.get("k", default_k))
        except ValueError:
            raise BadRequest(f"k must be an integer, got {q.get('k')!r}") from None
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
            try:
                category = int(q["category"])
            except ValueError:
                raise BadRequest(f"category must be an integer category id, got {q['category']!r}") from None
        arm = holdout_arm(user, cfg.holdout_percent, cfg.holdout_salt)
        uidx = b.user_index(user)
        session: list[int] = []
        fs_down = False
        if self.store is not None:
            try:
                recent = await self.store.recent(user, rank.session_length)
                session = ranking.session_items(b, [ev.item_id for ev in recent], rank.session_length)
            except FeatureStoreDown:
                fs_down = True
                m.FALLBACK["feature_store_down"].inc()
        if arm == "holdout":
            ranked = ranking.popularity(b, rank, uidx, k, category=category)
        else:
            cats = [int(b.item_category[i]) for i in session]
            ranked = ranking.answer(
                b, rank, uidx, session, k, category=category, now=time.time(), session_categories=cats
            )
        if ranked.fallback:
            m.FALLBACK.get(ranked.fallback, m.FALLBACK["sparse_candidates"]).inc()
        ids = b.item_ids[ranked.items].tolist()
        payload = {
            "model_version": b.version,
            "arm": arm,
            "user_id": user,
            "feature_store": "down" if fs_down else ("on" if self.store else "off"),
            # echoed by the client on events caused by this answer (lift per arm; stateless)
            "attribution_token": f"{arm}:{b.version}:{next(self._rec_seq):x}",
            "items": [{"item_id": i, "reason": r} for i, r in zip(ids, ranked.reasons, strict=True)],
        }
        shadow = cfg.shadow_url
        if shadow and random.random() * 100 < cfg.shadow_percent:
            asyncio.get_running_loop().create_task(_mirror(shadow, query, ids))
        return 200, payload, arm

    async def events(self, body: bytes) -> tuple[int, dict[str, Any], str]:
        if len(body) > MAX_BODY:
            raise BadRequest("body larger than 1 MiB")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"body is not valid JSON: {e}") from None
        items = doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
        if not isinstance(items, list) or not items:
            raise BadRequest('expected an event object or {"events": [...]} with at least one event')
        now = time.time()
        parsed = []
        attributed: list[tuple[str, str]] = []
        for n, ev in enumerate(items):
            where = f"events[{n}]"
            if not isinstance(ev, dict):
                raise BadRequest(f"{where} must be an object")
            sid = ev.get("user_id") or ev.get("session_id")
            if not isinstance(sid, str) or not sid or len(sid) > 128:
                raise BadRequest(
                    f"{where}.user_id/session_id must be a non-empty string of at most 128 characters"
                )
            item = ev.get("item_id")
            if not isinstance(item, int) or isinstance(item, bool):
                raise BadRequest(f"{where}.item_id must be an integer")
            typ = ev.get("type", "view")
            if typ not in EVENT_TYPES:
                raise BadRequest(f"{where}.type must be one of view, add_to_cart, purchase; got {typ!r}")
            ts = ev.get("ts", now)
            if not isinstance(ts, int | float):
                raise BadRequest(f"{where}.ts must be a unix timestamp")
            token = ev.get("attribution_token")
            if token is not None:
                arm = token.split(":", 1)[0] if isinstance(token, str) and len(token) <= 256 else None
                if arm not in m.ARMS:
                    raise BadRequest(
                        f"{where}.attribution_token must be the attribution_token of a recommendation response"
                    )
                attributed.append((arm, typ))
            parsed.append((sid, item, typ, float(ts)))
        if self.store is None:
            return 503, {"error": "no feature store configured"}, "model"
        try:
            # shielded: a client that disconnects mid-request must not leave stored events uncounted
            await asyncio.shield(self._store_and_count(parsed, attributed))
        except FeatureStoreDown:
            return 503, {"error": "feature store unavailable, retry"}, "model"
        if self.eventlog:  # after the session path: never blocks, a Kafka outage is counted, not raised
            self.eventlog.publish(items, now)
        return 200, {"stored": len(parsed)}, "model"

    async def _store_and_count(self, parsed: list, attributed: list[tuple[str, str]]) -> None:
        await self.store.add(parsed)
        for _, _, typ, _ in parsed:
            m.INGESTED[typ].inc()
        for arm_typ in attributed:  # the arm whose answer the user acted on
            m.ATTRIBUTED[arm_typ].inc()


async def _mirror(url: str, query: str, ours: list[int]) -> None:
    """Send the same request to the candidate; compare, never return its answer."""
    t0 = time.perf_counter()
    target = urlparse(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.hostname, target.port or 80), 0.2
        )
        writer.write(
            f"GET /v1/recommendations?{query} HTTP/1.1\r\nHost: {target.hostname}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), 0.5)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            m.SHADOW["error"].inc()
            return
        theirs = [i["item_id"] for i in orjson.loads(body)["items"]]
        k = max(1, min(len(ours), len(theirs)))
        m.shadow_overlap.observe(len(set(ours[:k]) & set(theirs[:k])) / k)
        m.SHADOW["ok"].inc()
    except Exception:
        m.SHADOW["error"].inc()
    finally:
        m.shadow_delta.observe(time.perf_counter() - t0)


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
                    {"name": "category", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {
                        "description": (
                            "model_version, arm (model|holdout), attribution_token, items [{item_id, reason: "
                            "model|session|repeat|popular|boost|fallback}]"
                        )
                    },
                    "400": {"description": "bad input"},
                    "503": {"description": "overloaded or not ready"},
                },
            }
        },
        "/v1/events": {
            "post": {
                "description": (
                    'One event {"session_id"|"user_id", "item_id", "type": view|add_to_cart|purchase, "ts"?, '
                    '"attribution_token"?} or {"events": [...]}. Echo the attribution_token of the '
                    "recommendation response the user acted on: such events count per arm for lift."
                ),
                "responses": {"200": {"description": "stored"}, "400": {"description": "bad input"}},
            }
        },
        "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "responses": {"200": {"description": "bundle loaded"}, "503": {"description": "not ready"}}
            }
        },
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics"}}}},
    },
}

app = Server(config_path=os.environ.get("RECOPS_CONFIG"))
with contextlib.suppress(ValueError):
    app.overrides = json.loads(os.environ.get("RECOPS_SERVE_OVERRIDES", "{}"))
