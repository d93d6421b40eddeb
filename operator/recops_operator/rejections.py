"""What the API server said about a child, in one line a human can act on.

The API server answers a rejected apply with a Status object (JSON) whose ``details.causes``
name the child's field and the reason. Status conditions, Events and admission messages show
``<Kind> <name>: <child field>: <reason>`` -- and, when the value can be traced back to the
RecommenderService, the spec field that produced it. The full response stays in the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from kubernetes.client.rest import ApiException

MAX_MESSAGE = 300


class ChildRejected(ApiException):
    """An apply of one rendered child failed; keeps which child, and the API server's answer."""

    def __init__(self, obj: dict[str, Any], cause: ApiException):
        super().__init__(status=cause.status, reason=cause.reason)
        self.body, self.headers = cause.body, cause.headers
        self.kind = obj.get("kind", "?")
        self.name = (obj.get("metadata") or {}).get("name", "?")
        self.cause = cause


def status_body(exc: ApiException) -> dict[str, Any]:
    raw = exc.body
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        out = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"message": str(raw or exc.reason or "")}
    return out if isinstance(out, dict) else {"message": str(out)}


def causes(exc: ApiException) -> list[tuple[str, str]]:
    """(child field, reason) pairs; the top-level message when the server gave no causes."""
    st = status_body(exc)
    out = [
        (c.get("field") or "", c.get("message") or c.get("reason") or "")
        for c in (st.get("details") or {}).get("causes") or []
    ]
    if not out:
        msg = st.get("message") or exc.reason or f"HTTP {exc.status}"
        out = [("", re.sub(r'^[\w.]+ "[^"]*" is invalid: ', "", msg))]
    return out


def _leaves(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}[{i}]")
    elif node is not None and not isinstance(node, bool):
        yield path, str(node)


def _tokens(path: str) -> set[str]:
    return {t.lower() for t in re.split(r"[.\[\]]+", path) if t and not t.isdigit()}


def spec_field_for(spec: dict[str, Any] | None, reason: str, child_field: str = "") -> str | None:
    """The spec field holding the value the API server quoted (``Invalid value: "4"``): generic, so
    a future field is attributed without a table. Several fields holding the value are told apart
    by the names they share with the child's field (``resources.requests``); a tie names none."""
    m = re.search(r'Invalid value: "?([^":]+)"?:', reason)
    if not spec or not m:
        return None
    value = m.group(1).strip()
    hits = [p for p, v in _leaves(spec, "spec") if v == value]
    if len(hits) <= 1:
        return hits[0] if hits else None
    want = _tokens(child_field)
    scored = sorted(((len(_tokens(p) & want), p) for p in hits), reverse=True)
    return scored[0][1] if scored[0][0] > scored[1][0] else None


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line, at most ``limit`` characters, cut at a word boundary (never mid-word)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def describe(kind: str, name: str, exc: ApiException, spec: dict[str, Any] | None = None) -> str:
    """``spec.x (v): Deployment foo rejected spec.template...: reason`` in one line."""
    parts = []
    for field, reason in causes(exc):
        where = f"{field}: " if field else ""
        owner = spec_field_for(spec, reason, field)
        prefix = f"{owner}: " if owner else ""
        parts.append(f"{prefix}{kind} {name} rejected {where}{reason}")
    return shorten("; ".join(parts))
