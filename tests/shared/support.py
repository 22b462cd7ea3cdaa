"""Helpers of the shared tier's tests (no tests here): waiting for a listener, reading an entry's hash."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tierstore import codec
from tierstore.shared.client import Names

LAG = 5.0  # seconds a test waits for an invalidation to arrive (it takes milliseconds)


def wait_for(probe: Callable[[], bool], timeout: float = LAG) -> None:
    """Return once ``probe()`` is true; ``AssertionError`` past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.005)


def entry_hash(raw: redis.Redis, key: str, namespace: str = "tierstore") -> dict[bytes, bytes]:
    """The hash Redis holds for the entry of ``key``."""
    found: dict[bytes, bytes] = raw.hgetall(Names(namespace).entry(codec.encode_key(key)))
    return found
