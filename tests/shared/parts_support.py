"""Helpers of the tests of counters, indexes and the existence filter in shared mode (no tests here)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tierstore import SharedUnavailable, TierStore
from tierstore.shared.client import Names
from tierstore.shared.guarding import SharedGuard

SPAWN = multiprocessing.get_context("spawn")
PREFIX = Names("tierstore").prefix


def dump(raw: redis.Redis) -> dict[bytes, Any]:
    """Every key in Redis with its value (by type), but the seq and epoch: 'nothing changed' compares these."""
    found: dict[bytes, Any] = {}
    for key in raw.keys("*"):
        kind = raw.type(key)
        if kind == b"string":
            found[key] = raw.get(key)
        elif kind == b"hash":
            found[key] = raw.hgetall(key)
        elif kind == b"zset":
            found[key] = raw.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            found[key] = raw.smembers(key)
        else:
            found[key] = raw.lrange(key, 0, -1)
    return found


def round_trips(store: TierStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that records every Redis round trip the store's client makes from now on (the real call runs)."""
    shared = store._shared
    assert shared is not None
    made: list[str] = []
    real = shared.client.call

    def counted(what: str, command: Callable[..., Any], *args: Any) -> Any:
        made.append(what)
        return real(what, command, *args)

    monkeypatch.setattr(shared.client, "call", counted)
    return made


def guard_of(store: TierStore) -> SharedGuard:
    guard = store._guard
    assert isinstance(guard, SharedGuard)
    return guard


def wait_for_answer(probe: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``probe()`` is true, treating ``SharedUnavailable`` as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except SharedUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.05)
