"""Adversarial interleavings of the per-key change marks and of a refused copy kept "as new".

Each test drives one shared operation's steps by hand (``drive``): the competing
operation runs at an exact point (after the caller noted ``Mirror.seen``, after
Redis answered, before the copy is committed), against a real redis-server and,
where a message must arrive, a second store whose listener hears it (or, held
back, has not heard it yet). Each asserts one of the promises of the README's
"Shared tier" section. Two of them (``..._found_the_key_gone_...`` and
``test_a_miss_answered_before_...``) caught a read's miss that moved no change
mark: a value deleted outright elsewhere came back after a miss was answered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from tests.shared.support import entry_hash, wait_for
from tierstore import TierStore, codec
from tierstore.codec import Key
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.mirror import _MARKS, Mirror, envelope_stamp
from tierstore.shared.reading import Ask
from tierstore.shared.steps import Call, Steps, _blocking

Stores = Callable[..., TierStore]


def drive(store: TierStore, steps: Steps[Any], after: Callable[[Call], None] | None = None) -> Any:
    """Run ``steps`` with ``store``'s client; ``after(call)`` runs between each Redis answer and its use."""
    shared = store._shared
    assert shared is not None
    answer: Any = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as stop:
            return stop.value
        answer = _blocking(step, shared.scripts)
        if after is not None and isinstance(step, Call):
            after(step)


def once(action: Callable[[], object]) -> Callable[[Call], None]:
    """An ``after`` hook that runs ``action`` at the first Redis answer only."""
    done: list[bool] = []

    def hook(_: Call) -> None:
        if not done:
            done.append(True)
            action()

    return hook


def mirror_of(store: TierStore) -> Mirror:
    assert store._shared is not None
    return store._shared.mirror


def disk_key_of(key: str) -> bytes:
    return NS_ENTRY + codec.encode_key(key)


def stamp_held(store: TierStore, key: str) -> tuple[int, bytes] | None:
    data = store._disk.get(disk_key_of(key))
    found = None if data is None else envelope_stamp(data)
    return None if found is None else found[1]


def redis_seq(raw: redis.Redis, key: str) -> int:
    return int(entry_hash(raw, key)[b"s"])


def heard(store: TierStore, count: int) -> Callable[[], bool]:
    return lambda: store.stats()["invalidations_received"] >= count


def read_steps(store: TierStore, key: str) -> Steps[Any]:
    """A read of ``key`` that must ask Redis (tier 1 skipped): ``SharedReads.local`` then its remote steps."""
    assert store._shared is not None
    reads = store._shared.reads
    ask = reads.local(key)
    assert type(ask) is Ask, "the read was answered locally"
    return reads.remote_steps(ask)


def same_slot_keys(stripes: int) -> tuple[str, str]:
    """Two distinct keys of one change-mark slot (so of one stripe)."""
    found: dict[int, str] = {}
    i = 0
    while True:
        key = f"slot:{i}"
        i += 1
        slot = hash(key) % _MARKS
        if slot in found:
            assert hash(found[slot]) % stripes == hash(key) % stripes
            return found[slot], key
        found[slot] = key


@contextmanager
def messages_held_back(store: TierStore) -> Iterator[None]:
    """``store``'s listener handles no message until the block ends (it has not heard them yet)."""
    assert store._shared is not None and store._shared.listener is not None
    listener = store._shared.listener
    real = listener._on_message
    gate = threading.Event()

    def held_back(data: bytes, last: int | None) -> int | None:
        gate.wait(10)
        return real(data, last)

    listener._on_message = held_back  # type: ignore[method-assign]
    try:
        yield
    finally:
        gate.set()


# -- a read's copy fetched before a change of its key ------------------------------------


@contextmanager
def a_read_in_flight_across_a_delete(stores: Stores, raw: redis.Redis) -> Iterator[tuple[TierStore, Callable[[], Any]]]:
    """B has read ``k`` = "old" from Redis, its copy not landed yet, when A deletes ``k`` (unversioned:
    removed outright in Redis); B's listener has not heard the delete. Yields B and the call that lands
    the slow read's copy (and returns what the read answers)."""
    b, a = stores(), stores()
    a.set("k", "old")
    wait_for(heard(b, 1))
    assert b._shared is not None
    scripts = b._shared.scripts
    with messages_held_back(b):
        slow = read_steps(b, "k")
        fetched = _blocking(next(slow), scripts)  # "old": read before the delete
        a.delete("k")
        assert not entry_hash(raw, "k")  # an unversioned key: removed outright in Redis

        def slow_lands() -> Any:
            with pytest.raises(StopIteration) as slow_ends:
                slow.send(fetched)
            return slow_ends.value.value

        yield b, slow_lands


def test_a_read_that_found_the_key_gone_refuses_an_older_copy_landing_after_it(
    stores: Stores, raw: redis.Redis
) -> None:
    """B reads "old" (slowly); A deletes the key (removed outright: no tombstone); before B hears it, a
    second read of B finds the key gone in Redis and returns the miss. The slow read's copy must not land
    after that: a read that starts after the miss returned would serve "old" again, a version older than
    the absence B already answered."""
    with a_read_in_flight_across_a_delete(stores, raw) as (b, slow_lands):
        assert b.get("k") is None  # B asks Redis: the key is gone
        assert slow_lands()[codec.VALUE] == "old"  # the slow read answers what it read
        assert b.get("k") is None  # and no later read goes back to it


def test_a_read_fetched_before_an_invalidation_elsewhere_lands_nothing_older(stores: Stores, raw: redis.Redis) -> None:
    """B's read fetches v1; A writes v2 and B hears it; B's copy of v1 must not land after that."""
    b, a = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    count = b.stats()["invalidations_received"]

    def write_elsewhere() -> None:
        a.set("k", "v2")
        wait_for(heard(b, count + 1))

    answered = drive(b, read_steps(b, "k"), once(write_elsewhere))
    assert answered[codec.VALUE] == "v1"  # it began before the write: it answers what it read
    assert b._disk.get(disk_key_of("k")) is None and b._memory.get("k") is None
    assert b.get("k") == "v2"


def test_a_read_refused_by_a_key_of_its_slot_leaves_no_older_value(stores: Stores) -> None:
    """Two keys of one mark slot: a commit of the other refuses the read's copy (a false conflict), which
    drops the key (no copy of its own is as new); later reads still answer the current value."""
    b, a = stores(), stores()
    mine, other = same_slot_keys(mirror_of(b).stripe_count)
    a.set(mine, "m1")
    wait_for(heard(b, 1))
    answered = drive(b, read_steps(b, mine), once(lambda: b.set(other, "o")))
    assert answered[codec.VALUE] == "m1"
    assert b._disk.get(disk_key_of(mine)) is None  # refused by the slot's mark: nothing of its own kept
    assert b.get(mine) == "m1" and b.get(other) == "o"


def test_a_read_refused_by_a_newer_local_write_keeps_the_write(stores: Stores, raw: redis.Redis) -> None:
    """Read-your-writes: the thread that wrote v2 reads v2 even though an older read's copy arrived after."""
    b = stores()
    b.set("k", "v1")
    b._memory.discard("k", hash("k") % mirror_of(b).stripe_count)  # tier 1 forgets: the next read asks tier 2
    mirror_of(b).resync(listening=True)  # tier 2's copy distrusted: the read asks Redis

    answered = drive(b, read_steps(b, "k"), once(lambda: b.set("k", "v2")))
    assert answered[codec.VALUE] == "v1"
    assert b.get("k") == "v2"
    assert stamp_held(b, "k") == (redis_seq(raw, "k"), mirror_of(b).epoch)


def test_a_read_refused_by_a_local_delete_keeps_the_tombstone(stores: Stores, raw: redis.Redis) -> None:
    b = stores()
    b.set("k", "v1", version=3)
    mirror_of(b).resync(listening=True)
    answered = drive(b, read_steps(b, "k"), once(lambda: b.delete("k")))
    assert answered[codec.VALUE] == "v1"
    assert b.get("k") is None
    held = b._disk.get(disk_key_of("k"))
    assert held is not None and codec.unpack_record(held)[codec.FLAGS] & codec.TOMBSTONE  # kept: as new
    assert stamp_held(b, "k") == (redis_seq(raw, "k"), mirror_of(b).epoch)


def test_a_read_refused_by_a_delete_at_version_0_keeps_nothing(stores: Stores, raw: redis.Redis) -> None:
    """A delete that removed the key outright leaves no copy to keep: the older read's copy is dropped."""
    b = stores()
    b.set("k", "v1")
    mirror_of(b).resync(listening=True)
    answered = drive(b, read_steps(b, "k"), once(lambda: b.delete("k")))
    assert answered[codec.VALUE] == "v1"
    assert b._disk.get(disk_key_of("k")) is None
    assert not entry_hash(raw, "k") and b.get("k") is None


def test_a_read_of_the_old_value_after_a_kept_newer_copy_is_then_invalidated(stores: Stores, raw: redis.Redis) -> None:
    """The copy kept "as new" is itself invalidated after: the listener drops it, and the stale read's
    record never comes back."""
    b, a = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))

    def newer_read_then_write_elsewhere() -> None:
        count = b.stats()["invalidations_received"]
        a.set("k", "v2")
        wait_for(heard(b, count + 1))
        assert b.get("k") == "v2"  # a newer read lands v2
        a.set("k", "v3")
        wait_for(heard(b, count + 2))

    drive(b, read_steps(b, "k"), once(newer_read_then_write_elsewhere))
    assert b.get("k") == "v3"


def test_the_listener_keep_path_does_not_let_an_older_read_overwrite(stores: Stores, raw: redis.Redis) -> None:
    """A copy kept by the listener's ``drop(keep=(seq, epoch))`` (no mark moved) stays; a read fetched before it
    is refused by the copy's own commit and keeps it."""
    b, a = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    hold: list[Any] = []

    def newer_lands_before_its_message() -> None:
        a.set("k", "v2")
        hold.append(redis_seq(raw, "k"))
        # a second read of B lands v2 before its message is handled (the message may have been handled
        # already: either way the copy stays)
        assert b.get("k") == "v2"

    drive(b, read_steps(b, "k"), once(newer_lands_before_its_message))
    wait_for(heard(b, 2))
    assert stamp_held(b, "k") == (hold[0], mirror_of(b).epoch)
    assert b.get("k") == "v2"


def test_a_miss_answered_before_an_older_copy_lands_drops_it(stores: Stores, raw: redis.Redis) -> None:
    """The slow read's copy lands between the miss's Redis answer and its end: the miss drops it."""
    b, a = stores(), stores()
    a.set("k", "old")
    wait_for(heard(b, 1))
    assert b._shared is not None
    with messages_held_back(b):
        slow = read_steps(b, "k")
        fetched = _blocking(next(slow), b._shared.scripts)
        a.delete("k")

        def slow_lands() -> None:
            with pytest.raises(StopIteration):
                slow.send(fetched)
            assert b._disk.get(disk_key_of("k")) is not None  # landed: its mark had not moved yet

        assert drive(b, read_steps(b, "k"), once(slow_lands)) is None
        assert b._disk.get(disk_key_of("k")) is None
        assert b.get("k") is None


def test_a_copy_of_another_data_set_does_not_keep_a_copy_of_this_one(stores: Stores) -> None:
    """Seqs of two data sets (a FLUSHALL between) are not comparable: a refused copy stamped in another
    epoch drops the key, whatever the seqs say."""
    b = stores()
    mirror = mirror_of(b)
    stripe = hash("k") % mirror.stripe_count
    this, other = mirror.seen("k", stripe), mirror.seen("k", stripe)
    record = (10, 0, None, 0, "v", 0.0, None, 0, 0.0)
    mirror.commit("k", disk_key_of("k"), stripe, this, record, (50, mirror.epoch), read=True)
    mirror.commit("k", disk_key_of("k"), stripe, other, record, (3, mirror.epoch + b"-next"), read=True)
    assert b._disk.get(disk_key_of("k")) is None and b._memory.get("k") is None


# -- a write's copy refused ------------------------------------------------------------------


def test_a_write_refused_by_a_read_of_its_own_value_keeps_that_copy(stores: Stores, raw: redis.Redis) -> None:
    b = stores()
    assert b._shared is not None
    steps = b._shared.writes.write_steps("k", "w")
    reads = b._shared.reads
    answered = drive(b, steps, once(lambda: reads.fetch("k")))
    assert answered is True
    assert stamp_held(b, "k") == (redis_seq(raw, "k"), mirror_of(b).epoch)  # the read's copy, same stamp: kept
    asked = b.stats()["hits_shared"]
    assert b.get("k") == "w" and b.stats()["hits_shared"] == asked  # answered locally


def test_a_write_refused_by_a_resync_keeps_a_read_of_it_landed_after_the_resync(
    stores: Stores, raw: redis.Redis
) -> None:
    """A write's copy refused by a resync during its script: a read after the resync copied the write itself
    (the same stamp, trusted: above the new floor), and that copy stays."""
    b = stores()
    assert b._shared is not None

    def resync_then_read() -> None:
        mirror_of(b).resync(listening=True)
        assert b._shared.reads.fetch("k")[codec.VALUE] == "w"  # type: ignore[union-attr,index]

    assert drive(b, b._shared.writes.write_steps("k", "w"), once(resync_then_read)) is True
    assert stamp_held(b, "k") == (redis_seq(raw, "k"), mirror_of(b).epoch)  # the read's, after the resync
    asked = b.stats()["hits_shared"]
    assert b.get("k") == "w" and b.stats()["hits_shared"] == asked


def test_a_write_refused_by_a_newer_write_elsewhere_heard_meanwhile(stores: Stores, raw: redis.Redis) -> None:
    b, a = stores(), stores()
    assert b._shared is not None

    def write_elsewhere() -> None:
        count = b.stats()["invalidations_received"]
        a.set("k", "a")
        wait_for(heard(b, count + 1))

    assert drive(b, b._shared.writes.write_steps("k", "b"), once(write_elsewhere)) is True
    assert b._disk.get(disk_key_of("k")) is None  # its own copy is older than what it heard
    assert b.get("k") == "a"


def test_a_bulk_write_and_a_read_of_one_of_its_keys(stores: Stores, raw: redis.Redis) -> None:
    """``set_many``'s copy of a key refused by a read's commit of the same key meanwhile is dropped,
    never left older than the bulk write."""
    b, a = stores(), stores()
    a.set("k", "old")
    wait_for(heard(b, 1))
    assert b._shared is not None
    items: list[tuple[Key, bytes, Any]] = [("k", disk_key_of("k"), "bulk"), ("j", disk_key_of("j"), "bulk-j")]
    read = read_steps(b, "k")
    call = next(read)
    fetched = _blocking(call, b._shared.scripts)  # the read's answer: "old", before the bulk write

    def land_the_read() -> None:
        try:
            read.send(fetched)
        except StopIteration:
            pass

    drive(b, b._shared.bulk.set_many_steps(items, ...), once(land_the_read))
    assert b.get("k") == "bulk" and b.get("j") == "bulk-j"


# -- the leader's local-only second look ----------------------------------------------------


def test_a_take_answer_refused_by_an_invalidation_heard_before_its_commit(stores: Stores, raw: redis.Redis) -> None:
    """TAKE reads v1; another store writes v2 and B hears it before TAKE's copy commits: v1 never lands."""
    b, a = stores(), stores()
    a.set("k", "v1")
    wait_for(heard(b, 1))
    assert b._shared is not None
    b._memory.discard("k", hash("k") % mirror_of(b).stripe_count)
    mirror_of(b).resync(listening=True)
    count = b.stats()["invalidations_received"]

    def write_elsewhere() -> None:
        a.set("k", "v2")
        wait_for(heard(b, count + 1))

    take = b._shared.leases._take_steps("k", codec.encode_key("k"), answer=True)
    _, record = drive(b, take, once(write_elsewhere))
    assert record is not None and record[codec.VALUE] == "v1"
    assert b._disk.get(disk_key_of("k")) is None
    assert b.get("k") == "v2"


def test_a_delete_in_another_thread_between_the_second_look_and_the_take(stores: Stores) -> None:
    """The leader's second look finds v1 gone locally; a delete lands before its TAKE: the load runs and its
    fill lands after the delete (it began after it), and every later read answers the loaded value."""
    b = stores()
    b.set("k", "v1", version=1)
    b.delete("k")
    assert b._loading.lease is not None
    real_held = b._loading.lease.held

    def delete_in_between(key: Any) -> Any:
        found = real_held(key)
        b.set("k", "v2", version=2)
        b.delete("k")
        return found

    b._loading.lease.held = delete_in_between  # type: ignore[method-assign]
    assert b.get_or_load("k", lambda: "loaded") == "loaded"
    assert b.get("k") == "loaded"


@pytest.mark.parametrize("call", ["touch", "replace_value"])
def test_a_touch_that_found_the_key_gone_refuses_an_older_copy_landing_after_it(
    stores: Stores, raw: redis.Redis, call: str
) -> None:
    """As a read's miss: ``touch``/``replace_value`` answered ``False`` (Redis holds no live entry), so no
    copy read before the delete may land after it, nor a copy held be served."""
    with a_read_in_flight_across_a_delete(stores, raw) as (b, slow_lands):
        answered = b.touch("k", ttl=60) if call == "touch" else b.replace_value("k", "new")
        assert answered is False
        slow_lands()
        assert b.get("k") is None  # the slow read's copy did not land after the miss
