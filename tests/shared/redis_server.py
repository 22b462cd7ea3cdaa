"""The shared tier's test server: ``bench.redis_server``'s, which the bench's shared sections start too."""

from __future__ import annotations

from bench.redis_server import RedisServer, find_redis_server

__all__ = ["RedisServer", "find_redis_server"]
