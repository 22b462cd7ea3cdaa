"""Local copies of the shared tier: which commits land while other keys and other reads change meanwhile.

A copy (a read's, a fill's or a write's) lands only if its own key did not change
since the caller noted ``Mirror.seen`` before its Redis call. Changes of other
keys, even of the same stripe, do not refuse it; a concurrent read of the same
key that landed first leaves its copy in place when it is at least as new.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.aio.support import run
from tests.shared.support import wait_for
from tierstore import TierStore, codec
from tierstore.aio import AsyncTierStore
from tierstore.keyspace import NS_ENTRY
from tierstore.shared.mirror import _MARKS, Mirror, envelope_stamp

Record = tuple[Any, ...]


def record_of(value: Any) -> Record:
    return (10, 0, None, 0, value, time.time(), None, 0, 0.0)


def disk_key_of(key: str) -> bytes:
    return NS_ENTRY + codec.encode_key(key)


def keys_apart(count: int, *, stripe: int | None = None, stripes: int = 64) -> list[str]:
    """``count`` keys in distinct mark slots (in one ``stripe`` when given)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < count:
        key = f"key:{i}"
        i += 1
        if stripe is None or hash(key) % stripes == stripe:
            found.setdefault(hash(key) % _MARKS, key)
    return list(found.values())


def stamp_held(store: TierStore, key: str) -> int | None:
    data = store._disk.get(disk_key_of(key))
    found = None if data is None else envelope_stamp(data)
    return None if found is None else found[1][0]


def mirror_of(store: TierStore) -> Mirror:
    assert store._shared is not None
    return store._shared.mirror


def on_key_k(stores: Callable[..., TierStore]) -> tuple[TierStore, Mirror, int]:
    """A store, its mirror and the stripe of the key ``"k"``."""
    store = stores()
    mirror = mirror_of(store)
    return store, mirror, hash("k") % mirror.stripe_count


def test_a_commit_of_another_key_of_the_stripe_meanwhile_does_not_refuse_a_copy(
    stores: Callable[..., TierStore],
) -> None:
    store = stores()
    mirror = mirror_of(store)
    first, other = keys_apart(2, stripe=5, stripes=mirror.stripe_count)
    seen = mirror.seen(first, 5)  # the read of ``first`` notes this, then waits for Redis
    mirror.commit(other, disk_key_of(other), 5, mirror.seen(other, 5), record_of("o"), (1, mirror.epoch), read=False)
    assert mirror.epochs[5] != seen[0]  # the stripe's epoch moved: before, that refused the copy
    mirror.commit(first, disk_key_of(first), 5, seen, record_of("f"), (2, mirror.epoch), read=False)
    assert store.get(first) == "f" and stamp_held(store, first) == 2


def test_a_read_refused_by_a_newer_read_of_the_same_key_keeps_the_newer_copy(stores: Callable[..., TierStore]) -> None:
    store, mirror, stripe = on_key_k(stores)
    key = "k"
    slow, fast = mirror.seen(key, stripe), mirror.seen(key, stripe)
    mirror.commit(key, disk_key_of(key), stripe, fast, record_of("new"), (7, mirror.epoch), read=False)
    answered = mirror.commit(key, disk_key_of(key), stripe, slow, record_of("old"), (5, mirror.epoch), read=True)
    assert answered[codec.VALUE] == "old"  # its caller gets what it read (it began before the newer read ended)
    assert stamp_held(store, key) == 7 and store.get(key) == "new"  # before: the key was dropped, a miss


def test_a_refused_copy_drops_an_older_copy_that_landed_meanwhile(stores: Callable[..., TierStore]) -> None:
    """A write accepted by Redis at seq 5 whose copy is refused must not leave a read's older copy (seq 3)."""
    store, mirror, stripe = on_key_k(stores)
    key = "k"
    write, read = mirror.seen(key, stripe), mirror.seen(key, stripe)
    mirror.commit(key, disk_key_of(key), stripe, read, record_of("older"), (3, mirror.epoch), read=False)
    mirror.commit(key, disk_key_of(key), stripe, write, record_of("written"), (5, mirror.epoch), read=False)
    assert store._disk.get(disk_key_of(key)) is None and store._memory.get(key) is None


def test_a_copy_from_before_a_resync_is_neither_landed_nor_kept(stores: Callable[..., TierStore]) -> None:
    store, mirror, stripe = on_key_k(stores)
    key = "k"
    before = mirror.seen(key, stripe)
    mirror.commit(key, disk_key_of(key), stripe, before, record_of("v"), (9, mirror.epoch), read=False)
    mirror.resync(listening=True)  # what this process held is distrusted now
    mirror.commit(key, disk_key_of(key), stripe, before, record_of("v"), (9, mirror.epoch), read=False)
    assert store._disk.get(disk_key_of(key)) is None  # the copy at seq 9 is older than the floor: dropped


def test_a_listener_drop_of_the_key_meanwhile_refuses_the_copy(stores: Callable[..., TierStore]) -> None:
    store, mirror, stripe = on_key_k(stores)
    key = "k"
    seen = mirror.seen(key, stripe)
    mirror.drop(key, disk_key_of(key), stripe, keep=(4, mirror.epoch))  # an invalidation at seq 4 heard meanwhile
    mirror.commit(key, disk_key_of(key), stripe, seen, record_of("read before"), (3, mirror.epoch), read=True)
    assert store._disk.get(disk_key_of(key)) is None and store._memory.get(key) is None


def test_concurrent_reads_of_distinct_keys_all_keep_their_copies(stores: Callable[..., TierStore]) -> None:
    """200 coroutines read 200 cold keys at once: every copy lands, so reading them again asks Redis nothing.

    With one write epoch per stripe, each landing copy refused the reads of its stripe still in
    flight: most keys were read from Redis again.
    """
    # a long PING interval: a resync (a PING answered late on a loaded machine) would distrust every copy
    writer, store = stores(), stores(memory_items=1_000, shared_ping_interval=10.0)
    keys = keys_apart(200)
    writer.set_many({key: key.upper() for key in keys})
    # every message heard first: one heard while a read of its key is in flight rightly refuses that copy
    wait_for(lambda: store.stats()["invalidations_received"] >= len(keys))

    async def body() -> tuple[list[Any], int]:
        s = AsyncTierStore(store)
        first = await _gather(s, keys)
        before = store.stats()["hits_shared"]
        again = await _gather(s, keys)
        assert again == first
        return first, store.stats()["hits_shared"] - before

    values, asked = run(body)
    assert values == [key.upper() for key in keys]
    assert store.stats()["resyncs"] == 0
    assert asked == 0


async def _gather(s: AsyncTierStore, keys: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(s.get(key) for key in keys)))
