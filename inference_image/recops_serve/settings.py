"""What a ``recops-serve serve`` process is launched with: one typed object, CLI to worker.

granian imports the app in its worker process, so the CLI cannot hand it a Python object. It
validates these settings once (a bad value exits 2 before granian starts) and passes them as JSON
to granian's target loader, which runs in the worker and parses them with this same strict model
(an unknown key is refused): the process arguments, not the environment, carry them. The app
reads its settings only from here.

Not here: the serving config itself, the file ``config`` names (``ServeConfig``, re-read when it
changes; track, Kafka topic and the rest are in it, ``--set`` overrides them). Secrets arrive as
files (the pod's Secret mounts), never as environment variables, and are read where they are used.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recops_contracts.serving import ServeConfig
from recops_serve.redislink import RedisLink


def read_secret_file(path: Path) -> str:
    """A Secret mounted as a file (one value, a trailing newline tolerated)."""
    return path.read_text().strip()


def check_redis_url(url: str) -> str:
    """``url`` when the server's own Redis client can connect with it; ValueError naming the problem
    (never the URL: it may hold a password)."""
    RedisLink(url)  # parses scheme, host, port, db; connects only on the first command
    return url


class LaunchSettings(BaseModel):
    """The serve command's options, validated; the worker's app is built from exactly this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the JSON serving config (the operator's ConfigMap file), re-read every ``reload_seconds``
    config: Path | None = None
    #: config keys that win over the file's (``--set``, ``--bundle``): only the keys given count
    overrides: ServeConfig = Field(default_factory=ServeConfig)
    #: the feature store, given directly (local runs) ...
    redis_url: str | None = None
    #: ... or as the file of a mounted Secret (pods): read at start, never put in the environment
    redis_url_file: Path | None = None
    #: the attribution-token HMAC key's Secret file; optional (the Secret key may be absent)
    attribution_key_file: Path | None = None
    #: the answer-synthesis model API's bearer key (a mounted Secret), read with each answer so a
    #: rotated Secret is used as soon as kubelet updates the file
    assistant_key_file: Path | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    #: requests granian admits at once; more wait in the listen backlog
    backpressure: int = Field(default=512, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return None if url is None else check_redis_url(url)

    @model_validator(mode="after")
    def _one_feature_store(self) -> LaunchSettings:
        if self.redis_url is not None and self.redis_url_file is not None:
            raise ValueError("give redis_url or redis_url_file, not both")
        return self

    def override_values(self) -> dict:
        """The overrides as config keys, only those given (what is merged over the file)."""
        return self.overrides.model_dump(mode="json", exclude_unset=True)

    def feature_store_url(self) -> str | None:
        """``redis_url``, else the URL in ``redis_url_file`` (checked), else None.
        Raises ValueError (unreadable file, bad URL) with a reason that never shows the URL."""
        if self.redis_url_file is None:
            return self.redis_url
        try:
            url = read_secret_file(self.redis_url_file)
        except OSError as e:
            raise ValueError(f"redis_url_file {self.redis_url_file}: {e.strerror}") from None
        try:
            return check_redis_url(url)
        except ValueError as e:
            raise ValueError(f"redis_url_file {self.redis_url_file}: {e}") from None

    def attribution_key(self) -> bytes | None:
        """The HMAC key from the Secret file; None when there is no file or it is empty."""
        path = self.attribution_key_file
        if path is not None and path.is_file() and (key := path.read_bytes().strip()):
            return key
        return None

    def assistant_key(self) -> str | None:
        """The model API key; None without a file. Raises ValueError when the file is unreadable or
        empty (the reason names the file, never the key)."""
        path = self.assistant_key_file
        if path is None:
            return None
        try:
            key = read_secret_file(path)
        except OSError as e:
            raise ValueError(f"assistant_key_file {path}: {e.strerror}") from None
        if not key:
            raise ValueError(f"assistant_key_file {path} is empty")
        return key

    def to_json(self) -> str:
        """What the worker parses back (unset fields omitted: the override keys stay the ones given)."""
        return self.model_dump_json(exclude_unset=True)

    @classmethod
    def from_json(cls, raw: str) -> LaunchSettings:
        return cls.model_validate_json(raw)


def problems(error: ValidationError) -> list[tuple[tuple, str]]:
    """(field path, reason) of every problem of a validation error, without the input values (a
    feature-store URL may hold a password)."""
    return [(tuple(e["loc"]), e["msg"]) for e in error.errors(include_url=False, include_input=False)]
