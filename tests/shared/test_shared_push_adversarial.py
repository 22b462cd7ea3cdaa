"""Adversarial interleavings of a write's pushed record (``Mirror.replace``) against a real redis-server.

B's listener handles A's messages one at a time (``stepping``), so a read of B runs at an
exact point between two of them. Each test asserts a promise of the README's "Shared tier"
section: a process never serves an older value of a key after a newer one, nothing wrong is
served after a resync, version rules hold, and keys of any shape round-trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from tests.shared.support import entry_hash, wait_for
from tests.shared.test_shared_mirror_adversarial import Stores, disk_key_of, drive, heard, stamp_held
from tierstore import TierStore
from tierstore.shared.client import Names
from tierstore.shared.steps import Call


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


def test_a_resync_does_not_push_an_older_record_over_a_copy_it_distrusted(stores: Stores, raw: redis.Redis) -> None:
    """A malformed message is on the channel ahead of A's writes v2 and v3; B, behind on messages, reads
    v3 from Redis. The malformed message resyncs B (its copy of v3 distrusted); v2's pushed record, heard
    next, must not replace that copy: B would serve v2 after v3."""
    a, b = stores(), stores()
    a.set("other", "o")
    wait_for(heard(b, 1))
    with stepping(b) as step:
        raw.publish(Names("tierstore").channel, b"junk")
        a.set("k", "v2")
        a.set("k", "v3")
        assert b.get("k") == "v3"  # read from Redis
        step()  # the malformed message: a resync
        assert b.stats()["resyncs"] == 1
        step()  # v2 pushed (the first message after the resync: the epoch checked)
        assert b.get("k") == "v3"
        step()
        assert b.get("k") == "v3"


def test_a_first_message_from_before_a_reset_pushes_nothing_into_the_new_data_set(
    stores: Stores, raw: redis.Redis
) -> None:
    """B's first message ("old", seq 3) was published before a FLUSHALL; A then wrote "new" (seq 1 of the
    new data set). Hearing "old", B finds the epoch id changed and resyncs; a read of B right then lands
    "new" (stamped in the new data set). The pushed "old", whose data set is gone, must not replace it:
    stamped at seq 3 of the new data set it would look newer, and B would serve "old" after "new"."""
    a = stores()
    a.set("x", 1)
    a.set("y", 2)  # seq 2: "old" comes at seq 3, above the new data set's first writes
    b = stores()
    assert b._shared is not None and b._shared.listener is not None
    listener = b._shared.listener
    real_check = listener._check_epoch
    served: list[object] = []

    def check_then_read() -> None:
        real_check()
        served.append(b.get("k"))  # a read of B between the resync and the message's copy

    listener._check_epoch = check_then_read  # type: ignore[method-assign]
    with stepping(b) as step:
        a.set("k", "old")
        raw.flushall()
        a.set("k", "new")
        step()  # "old": B's first message, from the emptied data set
        assert served == ["new"] and b.stats()["resyncs"] == 1
        assert b.get("k") == "new"


def test_a_message_after_a_malformed_one_pushes_nothing_from_an_emptied_data_set(
    stores: Stores, raw: redis.Redis
) -> None:
    """A malformed message, then "old" (seq 4) are on B's channel when Redis is emptied and A writes
    "new" (seq 1 of the new data set). The malformed message resyncs B and re-reads the epoch id (the
    new one already); B then reads "new". "old" comes next, its data set gone: its record, stamped in
    the new data set at seq 4, must not replace "new"."""
    a, b = stores(), stores()
    a.set("x", 1)
    a.set("y", 2)
    wait_for(heard(b, 2))
    with stepping(b) as step:
        raw.publish(Names("tierstore").channel, b"junk")
        a.set("k", "old")
        raw.flushall()
        a.set("k", "new")
        step()  # the malformed message: a resync, the epoch id re-read
        assert b.get("k") == "new"
        step()  # "old", from the emptied data set
        assert b.get("k") == "new"


@pytest.mark.parametrize("key", ["a+5:b", "1:0+3:x:", ":", "+", b"a+2:\x00"])
def test_a_key_with_colons_and_pluses_round_trips_through_a_push(stores: Stores, raw: redis.Redis, key: Any) -> None:
    """The key is the message's last field and the envelope's length rides on the version field: a key
    spelling ``:`` and ``+`` (or a length) is still the key, and its copy is replaced, not another's."""
    a, b = stores(), stores()
    a.set(key, "v1")
    wait_for(heard(b, 1))
    assert b.get(key) == "v1" and b.stats()["hits_shared"] == 1
    a.set(key, "v2")
    wait_for(heard(b, 2))
    assert b.get(key) == "v2" and b.stats()["hits_shared"] == 1  # replaced, no round trip
    found = entry_hash(raw, key)
    assert stamp_held(b, key) == (int(found[b"s"]), found[b"e"])
    assert b.stats()["resyncs"] == 0


def test_an_unversioned_write_pushes_the_version_it_keeps_and_lower_versions_stay_refused(stores: Stores) -> None:
    """A's versioned write (7) then an unversioned one (which keeps version 7 in Redis) are pushed to B;
    B's copy carries version 7, and B's own writes at a version not above it are refused."""
    a, b = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1"
    assert a.set("k", "v7", version=7)
    assert a.set("k", "plain")
    wait_for(heard(b, 3))
    assert b.get_entry("k").version == 7  # type: ignore[union-attr]
    assert b.stats()["hits_shared"] == 1  # both replaced B's copy: no round trip
    assert not b.set("k", "older", version=6) and not b.set("k", "same", version=7)
    assert b.get("k") == "plain" and a.get("k") == "plain"
    assert b.set("k", "newer", version=8)
    wait_for(heard(a, 1))
    assert a.get("k") == "newer" and a.get_entry("k").version == 8  # type: ignore[union-attr]


def at_write(action: Callable[[], None]) -> Callable[[Call], None]:
    """An ``after`` hook running ``action`` once the write's script answered (before its copy lands)."""

    def hook(call: Call) -> None:
        if call.what == "set":
            action()

    return hook


def holding(stores: Stores) -> tuple[TierStore, TierStore]:
    """A and B, B holding a trusted copy of ``k`` = "v1"."""
    a, b = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and b.stats()["hits_shared"] == 1
    return a, b


def test_an_earlier_write_pushed_during_a_local_write_leaves_the_local_write(stores: Stores) -> None:
    """A writes a2 first; B writes b2 after it in Redis, and hears a2's push before its own copy lands:
    B's copy is refused (a2 is older than b2), so B reads b2 (from Redis), never a2."""
    a, b = holding(stores)
    assert b._shared is not None
    with stepping(b) as step:
        a.set("k", "a2")
        assert drive(b, b._shared.writes.write_steps("k", "b2"), at_write(step))  # a2 heard before b2 lands
        assert stamp_held(b, "k") is None  # a2 was not kept over b2
        assert b.get("k") == "b2"
        step()  # B's own message
        assert b.get("k") == "b2"


def test_a_later_write_pushed_during_a_local_write_is_kept(stores: Stores) -> None:
    """B's write lands in Redis, then A's (a3); B hears both before its copy lands: a3 is kept."""
    a, b = holding(stores)
    assert b._shared is not None

    def write_elsewhere() -> None:
        a.set("k", "a3")
        step()  # B's own message
        step()  # a3 pushed: replaces v1

    with stepping(b) as step:
        assert drive(b, b._shared.writes.write_steps("k", "b2"), at_write(write_elsewhere))
        assert b.get("k") == "a3" and b.stats()["hits_shared"] == 1  # kept: no round trip


@pytest.mark.parametrize(
    "memory", [{}, {"memory_bytes": 100_000}, {"memory_policy": "lfu"}, {"memory_policy": "fifo", "memory_items": 4}]
)
def test_a_pushed_copy_in_tier_1_of_any_policy_replaces_the_held_one(stores: Stores, memory: dict[str, Any]) -> None:
    """Tier 1 of any kind (byte-bounded, a policy tier): the copy it held becomes the pushed record."""
    a, b = stores(**memory), stores(memory_admission="always", **memory)
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and b._memory.lookup("k") is not None
    a.set("k", "v2")
    wait_for(heard(b, 2))
    held = b._memory.lookup("k")
    assert held is not None and held[4] == "v2"
    assert b.get("k") == "v2" and b.stats()["hits_shared"] == 1


def test_a_pushed_copy_with_a_ttl_is_indexed_and_swept(stores: Stores) -> None:
    """A pushed copy carries the writer's expiry and is indexed like any copy: B's sweep purges it once
    it expired (B's clock runs ahead), and B never serves it after that."""
    now = [0.0]
    a = stores()
    b = stores(clock=lambda: time.time() + now[0], sweep_interval=None)
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b.get("k") == "v1"
    a.set("k", "v2", ttl=60)
    wait_for(heard(b, 2))
    assert stamp_held(b, "k") is not None and b.get("k") == "v2"
    now[0] = 120.0
    assert b.sweep()["expired_purged"] == 1
    assert b._disk.get(disk_key_of("k")) is None
    assert b.get("k") is None  # expired in B's time (Redis still holds it: A's clock)


def test_a_push_over_a_local_tombstone_replaces_it_and_versions_hold(stores: Stores) -> None:
    """B deletes ``k`` at version 5 (a tombstone copy); A's later write at version 6 is pushed over it;
    B's write at version 5 stays refused."""
    a, b = stores(), stores()
    assert b.set("k", "b", version=4)
    b.delete("k", version=5)
    wait_for(heard(a, 2))
    assert b.get("k") is None and stamp_held(b, "k") is not None  # B's tombstone, stamped
    assert a.set("k", "a6", version=6)
    wait_for(heard(b, 1))
    assert b.get("k") == "a6" and b.get_entry("k").version == 6  # type: ignore[union-attr]
    assert not b.set("k", "old", version=5)
    assert b.get("k") == "a6"


def test_a_push_during_a_load_in_flight_refuses_the_fill_and_keeps_the_pushed_copy(stores: Stores) -> None:
    """B loads ``k`` (its copy expired); A writes ``k`` meanwhile and B hears it (the expired copy
    replaced by A's record). B's fill is refused: B serves A's value from then on, never the load's."""
    now = [0.0]
    a = stores()
    b = stores(clock=lambda: time.time() + now[0])
    b.set("k", "short", ttl=10)
    wait_for(heard(a, 1))
    now[0] = 20.0  # expired for B
    assert b.get("k") is None

    def loader() -> str:
        a.set("k", "from-a")
        wait_for(heard(b, 1))
        return "loaded"

    answered = b.get_or_load("k", loader)
    assert answered in ("loaded", "from-a")
    assert b.get("k") == "from-a" and a.get("k") == "from-a"
    assert b.get_or_load("k", lambda: "again") == "from-a"


def test_a_push_from_a_data_set_emptied_twice_is_not_stamped_in_the_newest(stores: Stores, raw: redis.Redis) -> None:
    """Redis is emptied twice in a row: A writes "w1" and "w2" into the data set in between, then "z"
    into the newest. B, behind on messages, hears "w1" (seq 1 after seq 1: a reset) and re-reads the
    epoch id: the newest data set's. B then reads "z" from Redis. "w2" comes next at seq 2, the last
    plus one: its record belongs to the data set in between, so it must not replace "z" (stamped
    at seq 2 of the newest data set it would look newer, and B would serve "w2" after "z")."""
    a, b = stores(), stores()
    a.set("other", "o")
    wait_for(heard(b, 1))
    with stepping(b) as step:
        raw.flushall()
        a.set("k", "w1")
        a.set("k", "w2")
        raw.flushall()
        a.set("k", "z")
        step()  # "w1": a reset, the epoch id re-read (the newest)
        assert b.stats()["resyncs"] == 1
        assert b.get("k") == "z"  # read from Redis, stamped in the newest data set
        step()  # "w2", from the data set in between
        assert b.get("k") == "z"
        step()  # "z": seq 1 again, a reset
        assert b.get("k") == "z"
