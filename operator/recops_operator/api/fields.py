"""Field helpers of the RecommenderService API: one line per field instead of a spelled-out
``Annotated[kind, Field(...)]``. Each one builds exactly that annotation, so the generated CRD
(``api.crd``) is the same as with the long form."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field


def Bounded(kind: Any, description: str, **bounds: float) -> Any:
    """A number bounded (ge/gt/le/lt) both in the CRD schema and in pydantic: one line per field."""
    return Annotated[kind, Field(description=description, **bounds)]


def Seconds(description: str, kind: Any = int, **bounds: float) -> Any:
    """A whole number of seconds, bounded like ``Bounded`` (Kubernetes' ``*Seconds`` fields)."""
    return Bounded(kind, description, **bounds)


def Fraction(description: str, kind: Any = float) -> Any:
    """A share from 0 to 1 (a rate, a tolerance, a weight)."""
    return Bounded(kind, description, ge=0, le=1)


def Confidence(description: str) -> Any:
    """The confidence of a statistical decision (1 - its error rate), from 0.8 to 0.999."""
    return Bounded(float, description, ge=0.8, le=0.999)


def Maybe(kind: Any, description: str, **field: Any) -> Any:
    """A field that may be absent: ``kind | None``, declared ``= None`` (a status section not written
    yet, or a spec field whose absence means a default policy)."""
    return Annotated[kind | None, Field(description=description, **field)]


def Text(description: str, **field: Any) -> Any:
    """A string that may be absent (a name, version or message): ``Maybe(str, ...)``."""
    return Maybe(str, description, **field)


def UnixTime(description: str) -> Any:
    """A moment as seconds since the epoch (``time.time()``), absent until it happened."""
    return Maybe(float, description)


def Timestamp(description: str) -> Any:
    """A moment as an RFC 3339 string (as Kubernetes writes them), absent until it happened."""
    return Text(description)
