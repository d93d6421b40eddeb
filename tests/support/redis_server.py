"""The real redis-server launcher lives with the local stand-ins (recops-demo uses it too)."""

from recops_localcluster.cluster import free_port
from recops_localcluster.redis_server import RedisServer

__all__ = ["RedisServer", "free_port"]
