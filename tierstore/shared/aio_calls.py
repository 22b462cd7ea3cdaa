"""The asyncio facade's calls on a store in shared mode: the shared tier's steps awaited on the loop.

``AsyncShared(store, io)`` gives ``aio.AsyncTierStore`` coroutine forms of the
calls that may need Redis, bound over its own (``bind``, as ``SharedTier.bind``
binds the blocking ones over the store's). Each does what the blocking call
does — the same argument checks, counts and answers, through the same
operation of the shared tier (its steps) — with every round trip awaited on a
redis.asyncio connection (``aio_redis``): a read of tier 1 or a trusted tier-2
copy stays inline, with no round trip at all. ``stats`` runs in a thread when
the store has a shared filter (its figures are read from Redis by a blocking call).

It also gives ``aio_leased.AsyncLeasedLoading`` its lease and reads. Delete the
prefix, clear, sweep, checkpoint and the listings run the blocking calls in a
thread, as for a local store (``aio``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..bulk import checked_keys, set_many_items
from ..clock import TTL, check_seconds, check_ttl
from ..codec import Key, Record, encode_key
from ..conditional import _RAISE, checked_update, popped
from ..entries import Entry, entry_of
from ..keyspace import entry_key
from ..load_lease import Held
from .aio_redis import AsyncRedis
from .reading import Ask

if TYPE_CHECKING:
    from ..store import TierStore

__all__ = ["AsyncLeases", "AsyncShared", "BOUND"]

BOUND = (
    "get", "get_entry", "get_many", "set", "add", "touch", "replace_value", "update_value", "pop", "delete",
    "invalidate", "set_many", "delete_many", "incr", "decr", "counter", "stats",
)  # fmt: skip


class AsyncShared:
    """Coroutine calls of one shared store. Thread-safety: as the store's; any loop may call them."""

    def __init__(self, store: TierStore, io: AsyncRedis) -> None:
        shared = store._shared
        assert shared is not None
        self._store = store
        self._shared = shared
        self._run = io.run

    def bind(self, attributes: dict[str, Any]) -> None:
        """Bind these calls over the facade's own, in its instance ``__dict__``."""
        for name in BOUND:
            attributes[name] = getattr(self, name)

    def _open(self) -> TierStore:
        store = self._store
        if store._closed:
            raise store._unusable()
        return store

    # -- reads --------------------------------------------------------------------------------

    async def fetch(self, key: Key) -> Record | None:
        """The record of ``key`` below tier 1: a trusted tier-2 copy inline, else Redis's, awaited."""
        found = self._shared.reads.local(key)
        if type(found) is Ask:
            return await self._run(self._shared.reads.remote_steps(found))
        return found  # type: ignore[return-value]

    async def lookup(self, key: Key) -> tuple[Record | None, str]:
        """``TierStore._lookup``: the stored record and the stat a hit counts in."""
        try:
            record = self._store._memory_get(key)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:
            return record, "hits_memory"
        return await self.fetch(key), "hits_disk"

    def held(self, key: Key) -> tuple[Record | None, str]:
        """``SharedReads.held``: this process's copy, Redis not asked (it blocks on nothing)."""
        self._open()
        return self._shared.reads.held(key)

    async def read(self, key: Key) -> Record | None:
        """``TierStore._read``: the stored record, tombstones and expired ones included."""
        record = self._open()._memory_get(key)
        return record if record is not None else await self.fetch(key)

    async def might_contain(self, key: Key) -> bool | None:
        guard = self._shared.guard
        return None if guard is None else await self._run(guard.might_contain_steps(key))

    async def get(self, key: Key, default: Any = None) -> Any:
        store = self._store
        if store._closed:
            raise store._unusable()
        try:
            record = store._memory_get(key)
        except TypeError:
            encode_key(key)  # raises the key error callers expect
            raise
        if record is not None:  # a tier-1 hit: no round trip, no coroutine of its own
            if not record[3]:  # FLAGS: the LIVE test inlined as in TierStore.get (tests/property/test_record_rule.py)
                expires_at = record[2]  # EXPIRES_AT
                if expires_at is None or expires_at > store._clock():
                    store._hit_memory()
                    return record[4]  # VALUE
            return store._answer(record, default, store._hit_memory)
        record = await self.fetch(key)
        if record is None:
            store._miss()
            return default
        return store._answer(record, default, store._hit_disk)

    async def get_entry(self, key: Key) -> Entry | None:
        record = await self.read(key)
        store = self._store
        return None if record is None else entry_of(record, store._clock(), store._options.stale_ttl)

    async def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        store = self._open()
        found: dict[Key, Any] = {}
        now = store._clock()
        missing = []
        for key, _ in checked_keys(keys):
            record = store._memory_get(key)
            if record is None:
                missing.append(key)
            else:
                store._tally(found, key, record, now, "hits_memory")
        records = await self._run(self._shared.reads.fetch_many_steps(missing)) if missing else []
        for key, record in zip(missing, records, strict=True):
            if record is None:
                store._miss()
            else:
                store._tally(found, key, record, now, "hits_disk")
        return found

    async def counter(self, key: Key) -> int:
        self._open()
        return await self._run(self._shared.counters.get_steps(key))

    async def stats(self) -> dict[str, int]:
        if self._shared.guard is None:
            return self._store.stats()  # local counters only
        return await asyncio.to_thread(self._store.stats)  # the shared filter's figures are read from Redis

    # -- writes -------------------------------------------------------------------------------

    async def set(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        self._open()
        return await self._run(self._shared.writes.write_steps(key, value, ttl, version))

    async def delete(self, key: Key, *, version: int | None = None) -> bool:
        self._open()
        return await self._run(self._shared.writes.delete_steps(key, version))

    async def invalidate(self, key: Key, *, again_after: float | None = None) -> None:
        delay = check_seconds(again_after, "again_after", optional=True)
        await self.delete(key)
        self._store._loading.delete_later(key, delay)

    async def add(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        self._open()
        return await self._run(self._shared.conditional.add_steps(key, value, ttl, version))

    async def touch(self, key: Key, ttl: TTL = ...) -> bool:
        self._open()
        disk_key = entry_key(key)
        if ttl is not ... and ttl is not None:
            check_ttl(ttl)
        return await self._run(self._shared.conditional.touch_steps(key, disk_key, ttl))

    async def replace_value(self, key: Key, value: Any) -> bool:
        self._open()
        return await self._run(self._shared.conditional.replace_value_steps(key, entry_key(key), value))

    async def update_value(self, key: Key, update: Callable[[Any], Any]) -> bool:
        self._open()
        return await self._run(self._shared.conditional.update_value_steps(key, entry_key(key), checked_update(update)))

    async def pop(self, key: Key, default: Any = _RAISE) -> Any:
        store = self._open()
        found, value = await self._run(self._shared.conditional.pop_steps(key, entry_key(key)))
        store._stats.counts["deletes"]()
        return popped(key, found, value, default)

    async def set_many(self, mapping: Mapping[Key, Any], *, ttl: TTL = ...) -> int:
        self._open()
        items = set_many_items(mapping, ttl)
        return await self._run(self._shared.bulk.set_many_steps(items, ttl)) if items else 0

    async def delete_many(self, keys: Iterable[Key]) -> int:
        store = self._open()
        wanted = checked_keys(keys)
        if not wanted:
            return 0
        outcome = await self._run(self._shared.bulk.delete_many_steps(wanted))
        store._stats.add("deletes", len(wanted))
        return int(outcome.live)

    async def incr(self, key: Key, delta: int = 1) -> int:
        self._open()
        return await self._run(self._shared.counters.incr_steps(key, delta))

    async def decr(self, key: Key, delta: int = 1) -> int:
        self._open()
        return await self._run(self._shared.counters.decr_steps(key, delta))


class AsyncLeases:
    """The shared tier's load leases as ``aio_leased.AsyncLease``: each call's steps awaited."""

    def __init__(self, store: TierStore, io: AsyncRedis) -> None:
        assert store._shared is not None
        self._leases = store._shared.leases
        self._run = io.run

    async def acquire(self, key: Key, wait: bool, give_up: float | None) -> Held | Record | None:
        return await self._run(self._leases.acquire_steps(key, wait, give_up))

    async def try_take(self, key: Key) -> Held | None:
        return await self._run(self._leases.try_take_steps(key))

    async def fill(self, key: Key, held: Held, value: Any, version: int | None, ttl: Any, load_time: float) -> bool:
        return await self._run(self._leases.fill_steps(key, held, value, version, ttl, load_time))

    async def release(self, key: Key, held: Held) -> None:
        await self._run(self._leases.release_steps(key, held))
