"""Routines running ``get_or_load`` inside a store process (``workers.Worker``): ``"tests.shared.lease_routines:name"``.

Each loader counts its calls with ``INCR test:loads`` on the test's Redis, so a
test sees how many loads ran in all processes together; the blocking ones wait
for the test to ``LPUSH test:go`` (a forced interleaving, not a sleep).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from tierstore import TierStore

LOADS = "test:loads"
GO = "test:go"
LOADED_AT = "test:loaded_at"


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=60)


def load_in_threads(store: TierStore, url: str, key: str, threads: int, start_at: float, pause: float) -> list[Any]:
    """From the wall-clock moment ``start_at``, ``threads`` threads call ``get_or_load`` of ``key`` at once."""
    client = _raw(url)

    def loader() -> str:
        client.incr(LOADS)
        time.sleep(pause)  # long enough for every caller everywhere to miss meanwhile
        return "loaded"

    results: list[Any] = [None] * threads
    errors: list[str] = []

    def run(index: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            results[index] = store.get_or_load(key, loader)
        except BaseException as exc:
            errors.append(repr(exc))

    runners = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    if errors:
        raise AssertionError(errors)
    return results


def load_when_told(store: TierStore, url: str, key: str, value: Any, raises: bool) -> Any:
    """``get_or_load`` whose loader blocks until the test pushes ``GO``, then returns ``value`` (or raises)."""
    client = _raw(url)

    def loader() -> Any:
        client.incr(LOADS)
        if client.blpop([GO], timeout=30) is None:
            raise TimeoutError("the test never said go")
        if raises:
            raise ValueError("the source failed")
        return value

    return store.get_or_load(key, loader)


def load_noting_when(store: TierStore, url: str, key: str, value: Any) -> Any:
    """``get_or_load`` whose loader notes the wall-clock time it ran at (``LOADED_AT``)."""
    client = _raw(url)

    def loader() -> Any:
        client.incr(LOADS)
        client.set(LOADED_AT, repr(time.time()))
        return value

    return store.get_or_load(key, loader)


def load_and_hang(store: TierStore, url: str, key: str) -> Any:
    """``get_or_load`` whose loader never returns (the test kills the process inside it)."""
    client = _raw(url)

    def loader() -> Any:
        client.incr(LOADS)
        time.sleep(3600)

    return store.get_or_load(key, loader)
