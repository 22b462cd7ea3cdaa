"""Adversarial interleavings of a write's pushed record (``Mirror.replace``) against a real redis-server.

B's listener handles A's messages one at a time (``stepping``), so a read of B runs at an
exact point between two of them. Each test asserts a promise of the README's "Shared tier"
section: a process never serves an older value of a key after a newer one, nothing wrong is
served after a resync, version rules hold, and keys of any shape round-trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from tests.shared.support import wait_for
from tests.shared.test_shared_mirror_adversarial import Stores, heard
from tierstore import TierStore


@contextmanager
def stepping(store: TierStore) -> Iterator[Callable[[], None]]:
    """``store``'s listener handles a message only when the yielded ``step()`` lets one through (and
    waits until it is handled); every message left is let through when the block ends."""
    assert store._shared is not None and store._shared.listener is not None
    listener = store._shared.listener
    real = listener._on_message
    allowed, handled = threading.Semaphore(0), threading.Semaphore(0)
    free = threading.Event()

    def one_at_a_time(data: bytes, last: int | None) -> int | None:
        if not free.is_set():
            allowed.acquire(timeout=10)
        try:
            return real(data, last)
        finally:
            handled.release()

    def step() -> None:
        allowed.release()
        assert handled.acquire(timeout=10), "no message to let through"

    listener._on_message = one_at_a_time  # type: ignore[method-assign]
    try:
        yield step
    finally:
        free.set()
        for _ in range(64):
            allowed.release()


def test_a_reset_does_not_push_an_older_record_over_a_newer_copy(stores: Stores, raw: redis.Redis) -> None:
    """Redis is emptied (FLUSHALL) and A writes "x" then "y" to ``k``; B, behind on messages, reads "y"
    from Redis (its copy stamped in the new data set). B's listener then hears "x" (seq 1: a reset, so
    a resync distrusts every copy, "y" included). The pushed "x" must not replace that newer copy:
    B would serve "x" after "y"."""
    a, b = stores(), stores()
    a.set("other", "o")
    wait_for(heard(b, 1))
    with stepping(b) as step:
        raw.flushall()
        a.set("k", "x")
        a.set("k", "y")
        assert b.get("k") == "y"  # read from Redis
        step()  # seq 1 ("x"): a reset, the epoch re-read
        assert b.get("k") == "y"
        step()  # seq 2 ("y")
        assert b.get("k") == "y"
