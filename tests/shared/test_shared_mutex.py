"""Lease locks in Redis (``shared.mutexes``): dogpile's ``get_mutex`` excludes every process of a namespace.

Real redis-server, real worker processes: regions in three processes asking
for one cold key call its creator once; the lock itself keeps ``mutex.LeaseLock``'s
contract (not reentrant, frees itself when its lease ends, a late release frees
nothing of the next holder's) and raises ``SharedUnavailable`` while Redis is down.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tests.shared.workers import Worker
from tierstore import SharedUnavailable, StoreClosed, TierStore

pytest.importorskip("dogpile.cache")

from dogpile.cache import make_region

from tierstore.integrations.dogpile import TierStoreBackend


def create_once(store: TierStore, key: str, start_at: float, pause: float) -> tuple[int, int]:
    """In a worker: from ``start_at``, a region over its store asks for ``key``; (the value, creator calls)."""
    region = make_region().configure("tierstore", expiration_time=300, arguments={"store": store})
    calls: list[int] = []

    def create() -> int:
        calls.append(1)
        time.sleep(pause)  # the others arrive meanwhile and wait on the mutex
        return os.getpid()

    time.sleep(max(0.0, start_at - time.time()))
    return region.get_or_create(key, create), len(calls)


def test_regions_in_three_processes_create_a_cold_value_once(workers: Callable[..., Worker]) -> None:
    started = [workers() for _ in range(3)]
    start_at = time.time() + 1.0
    for worker in started:
        worker.start(f"{__name__}:create_once", "cold", start_at, 0.5)
    results = [worker.result() for worker in started]
    assert sum(calls for _, calls in results) == 1
    assert len({value for value, _ in results}) == 1  # every process got the one created value


def test_the_lock_keeps_the_local_lock_s_contract(stores: Callable[..., TierStore]) -> None:
    one, two = stores(lock_timeout=0.5), stores(lock_timeout=0.5)
    mine = TierStoreBackend({"store": one}).get_mutex("k")
    theirs = TierStoreBackend({"store": two}).get_mutex("k")
    assert mine.acquire()
    assert theirs.locked() and not theirs.acquire(False)  # another store, another "process"
    assert not mine.acquire(False)  # not reentrant
    assert TierStoreBackend({"store": two}).get_mutex("other").acquire(False)
    started = time.monotonic()
    assert theirs.acquire()  # waits until the first lease ends by itself
    assert time.monotonic() - started < 5.0
    mine.release()  # late: frees nothing of the new holder's
    assert theirs.locked()
    theirs.release()
    assert not theirs.locked()
    with pytest.raises(RuntimeError, match="does not hold"):
        theirs.release()


def test_a_waiting_acquire_returns_when_the_holder_releases(stores: Callable[..., TierStore]) -> None:
    one, two = stores(lock_timeout=30.0), stores(lock_timeout=30.0)
    held = TierStoreBackend({"store": one}).get_mutex("k")
    assert held.acquire()
    waiting = TierStoreBackend({"store": two}).get_mutex("k")
    lock = waiting._lock
    assert not lock.acquire(timeout=0.2)  # type: ignore[call-arg]
    held.release()
    started = time.monotonic()
    assert lock.acquire(timeout=5.0)  # type: ignore[call-arg]
    assert time.monotonic() - started < 1.0
    waiting.release()


def test_while_redis_is_down_a_lock_cannot_be_taken(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    store = stores(shared_grace=60.0)
    mutex = TierStoreBackend({"store": store}).get_mutex("k")
    client = store._shared.client  # type: ignore[union-attr]
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        with pytest.raises(SharedUnavailable):
            mutex.acquire()
    finally:
        redis_server.resume()


def test_a_release_that_cannot_reach_redis_is_logged_and_the_lease_ends_by_itself(
    redis_server: RedisServer, stores: Callable[..., TierStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(shared_grace=60.0, lock_timeout=1.0)
    mutex = TierStoreBackend({"store": store}).get_mutex("k")
    assert mutex.acquire()
    client = store._shared.client  # type: ignore[union-attr]
    redis_server.pause()
    try:
        wait_for(lambda: client.down, 3.0)
        with caplog.at_level(logging.WARNING, logger="tierstore"):
            mutex.release()  # no SharedUnavailable over the holder's own outcome
        assert "could not free the lease lock" in caplog.text
    finally:
        redis_server.resume()
    other = stores(lock_timeout=1.0)  # opened once Redis answers again
    assert TierStoreBackend({"store": other}).get_mutex("k")._lock.acquire(timeout=5.0)


def test_a_lock_of_a_closed_or_inherited_store_raises_its_error(stores: Callable[..., TierStore]) -> None:
    store = stores()
    mutex = TierStoreBackend({"store": store}).get_mutex("k")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's connections must never be used here
        try:
            mutex.acquire()
            answer = b"acquired"
        except BaseException as exc:
            answer = type(exc).__name__.encode()
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b"StoreForked"
    os.waitpid(pid, 0)
    assert mutex.acquire(False)  # the parent is unharmed
    mutex.release()
    store.close()
    with pytest.raises(StoreClosed):
        mutex.acquire()
    with pytest.raises(StoreClosed):
        mutex.locked()


def test_a_local_store_keeps_the_directory_s_table(tmp_path: Path) -> None:
    backend = TierStoreBackend({"path": str(tmp_path / "s")})
    mutex = backend.get_mutex("k")
    assert type(mutex._lock).__name__ == "LeaseLock"  # no Redis: the process's own table
    assert mutex.acquire() and not backend.get_mutex("k").acquire(False)
    mutex.release()
    backend.close()
