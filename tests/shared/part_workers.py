"""Process bodies for the tests of counters, indexes and the existence filter in shared mode.

Each runs in a spawned process (nothing inherited) with its own ``TierStore`` on
the test's redis-server, waits for the wall-clock moment ``start_at`` shared by
the racers, does its work and puts its result on ``results``.
"""

from __future__ import annotations

import time
from typing import Any

from tierstore import TierStore


def _open(url: str) -> TierStore:
    return TierStore(shared=url, shared_ping_interval=0.2)


def bump(url: str, key: str, times: int, start_at: float, results: Any) -> None:
    """``incr(key)`` ``times`` times (and as many ``decr(key, 0)``, which change nothing); the last count."""
    with _open(url) as store:
        time.sleep(max(0.0, start_at - time.time()))
        count = 0
        for _ in range(times):
            count = store.incr(key)
            store.decr(key, 0)
        results.put(count)


def add_members(url: str, name: str, prefix: str, count: int, start_at: float, results: Any) -> None:
    """Add ``count`` members ``<prefix><i>`` one by one, then re-score each once; the length seen last."""
    with _open(url) as store:
        index = store.index(name)
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(count):
            index.add(f"{prefix}{i}", i)
        index.add_many({f"{prefix}{i}": -i for i in range(count)})
        results.put(len(index))


def read_pages(url: str, name: str, until: float, results: Any) -> None:
    """Read the whole index page by page (one ``page`` call each) until ``until``; every distinct prefix set seen."""
    with _open(url) as store:
        index = store.index(name)
        seen: set[tuple[str, ...]] = set()
        while time.time() < until:
            members = index.page(0, 10_000)
            seen.add(tuple(sorted({str(member)[:3] for member, _ in members})))
        results.put(sorted(seen))


def admit(url: str, keys: list[str], results: Any) -> None:
    """Open a guarded store, ``set`` every key; the keys its own guard then admits."""
    with TierStore(shared=url, guard=True, bloom_capacity=10_000, shared_ping_interval=0.2) as store:
        for key in keys:
            store.set(key, 1)
        results.put([key for key in keys if store._guard is not None and store._guard.might_contain(key)])
