"""Lease locks: mutual exclusion by name, freed by release or when the lease ends."""

from __future__ import annotations

import threading
import time

import pytest

from tierstore.mutex import LeaseLocks


def test_one_holder_per_name_and_release_frees_it() -> None:
    locks = LeaseLocks(30.0)
    first, second = locks.lock("k"), locks.lock("k")
    assert not first.locked()
    assert first.acquire()
    assert first.locked() and second.locked() and locks.held("k")
    assert not first.acquire(blocking=False)  # not reentrant, like threading.Lock
    assert not second.acquire(blocking=False)
    assert locks.lock("other").acquire(blocking=False)  # names are independent
    first.release()
    assert not second.locked()
    assert second.acquire(blocking=False)
    second.release()


def test_the_lease_ends_by_itself() -> None:
    locks = LeaseLocks(0.2)
    holder = locks.lock("k")
    assert holder.acquire()
    started = time.monotonic()
    assert locks.lock("k").acquire()  # waits for the lease to end
    assert time.monotonic() - started >= 0.15
    holder.release()  # late: does nothing, the name is someone else's now
    assert locks.held("k")


def test_a_waiter_wakes_on_release() -> None:
    locks = LeaseLocks(30.0)
    holder = locks.lock("k")
    holder.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(locks.lock("k").acquire(timeout=10)))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    holder.release()
    waiter.join(5)
    assert got == [True]


def test_acquire_timeout_and_release_errors() -> None:
    locks = LeaseLocks(30.0)
    locks.lock("k").acquire()
    started = time.monotonic()
    assert not locks.lock("k").acquire(timeout=0.1)
    assert 0.05 <= time.monotonic() - started < 5
    with pytest.raises(RuntimeError):
        locks.lock("k").release()
    with pytest.raises(ValueError):
        LeaseLocks(0)


def test_context_manager_excludes_threads() -> None:
    locks = LeaseLocks(30.0)
    inside = 0
    overlaps: list[int] = []

    def work() -> None:
        nonlocal inside
        for _ in range(20):
            with locks.lock("k"):
                inside += 1
                overlaps.append(inside)
                time.sleep(0.0005)
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(overlaps) == {1}
