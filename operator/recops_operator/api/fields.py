"""Field helpers of the RecommenderService API: one line per field instead of a spelled-out
``Annotated[kind, Field(...)]``. Each one builds exactly that annotation, so the generated CRD
(``api.crd``) is the same as with the long form."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field


def Bounded(kind: Any, description: str, **bounds: float) -> Any:
    """A number bounded (ge/gt/le/lt) both in the CRD schema and in pydantic: one line per field."""
    return Annotated[kind, Field(description=description, **bounds)]


def Maybe(kind: Any, description: str, **field: Any) -> Any:
    """A field that may be absent: ``kind | None``, declared ``= None`` (a status section not written
    yet, or a spec field whose absence means a default policy)."""
    return Annotated[kind | None, Field(description=description, **field)]


def UnixTime(description: str) -> Any:
    """A moment as seconds since the epoch (``time.time()``), absent until it happened."""
    return Maybe(float, description)


def Timestamp(description: str) -> Any:
    """A moment as an RFC 3339 string (as Kubernetes writes them), absent until it happened."""
    return Maybe(str, description)
