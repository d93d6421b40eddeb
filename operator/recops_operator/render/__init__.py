"""Spec -> desired objects. ``desired_objects`` is the one pipeline the reconcile applies.

Pluggable: a renderer is ``(owner, spec, ctx) -> list[dict]``; add it to
``RENDERERS`` (one line) and the handler applies, owns and garbage-collects its
objects like the serving stack's. Renderers are pure: no API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recops_operator.api.models import RecommenderServiceSpec
from recops_operator.render.network import render_network
from recops_operator.render.search import render_search
from recops_operator.render.serving import Owner, RenderContext, render_serving
from recops_operator.render.stream import render_stream
from recops_operator.rollout.render import render_rollout
from recops_operator.training.render import render_training_objects

Renderer = Callable[[Owner, RecommenderServiceSpec, RenderContext], list[dict[str, Any]]]

RENDERERS: list[Renderer] = [
    render_serving,
    render_rollout,
    render_training_objects,
    render_search,
    render_network,
    render_stream,
]


def desired_objects(
    owner: Owner, spec: RecommenderServiceSpec, ctx: RenderContext | None = None
) -> list[dict[str, Any]]:
    ctx = ctx or RenderContext()
    out: list[dict[str, Any]] = []
    for renderer in RENDERERS:
        out.extend(renderer(owner, spec, ctx))
    return out


__all__ = ["RENDERERS", "Owner", "RenderContext", "Renderer", "desired_objects"]
