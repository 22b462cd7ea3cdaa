"""The test harness itself: a real redis-server that starts, dies, pauses and comes back empty."""

from __future__ import annotations

import redis

from tests.shared.redis_server import RedisServer, find_redis_server


def test_a_binary_is_found() -> None:
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
