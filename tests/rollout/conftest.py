"""Reuse the real bundle/Redis/server fixtures of the serving tests."""

from tests.serve.conftest import bundles, make_server, redis_server  # noqa: F401
