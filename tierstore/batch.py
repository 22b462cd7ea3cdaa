"""Writes of several keys as one: their stripe locks in order, one LevelDB batch, then tier 1.

The multi-key calls (``set_many``, ``delete_many``, ``delete_prefix``, ``clear``)
and the read-then-write calls of one key (``pop``, ``touch``) write through
``Batch``. It keeps every rule of the single-key write path (``writer``):

- Locks: the stripe locks of every key, taken in ascending stripe order (any
  other holder takes one lock at a time), so two batches never deadlock.
- The version rule: an unversioned entry keeps the key's current version; a
  delete leaves a tombstone at the current version (a key at version 0 is
  removed outright, and so is a damaged record, which reads as a miss and
  keeps no version); a tombstone already there is left as it is.
- Fill generations: every key written or deleted is invalidated in ``Flights``
  (``touch`` keeps the value, so a load in flight may still land after it).
- Tier 1: ``begin_write`` of every key before the tier-2 batch, ``put`` or
  ``discard`` of every key after it (see ``memory``): no reader sees new then old.
- What rides along: the expiry index record of each entry with an expiry and,
  through the composed ``writes`` layers, the capacity's order records, all in
  the same LevelDB batch as the entries: all of it lands, or none.
- Every envelope is packed (and checked to decode) before anything is written,
  so a value that cannot be stored raises with nothing changed.

Thread-safety: every call takes the locks it needs; ``Change`` lists are built
and committed under them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

import msgpack

from . import codec
from .codec import (
    EXPIRES_AT,
    LOAD_TIME,
    NEGATIVE,
    SEQ,
    TOMBSTONE,
    TTL,
    VALUE,
    VERSION,
    Key,
    Record,
    RecordState,
    record_state,
)
from .entries import ABSENT
from .expiry import index_op
from .flight import Flights
from .keyspace import Op
from .memory import MemoryTier
from .options import Options
from .stats import Stats
from .stripes import Stripes
from .values import UNREADABLE, check_value_size
from .writer import Writer
from .writes import BatchItem, EntryWrites, entry_writes

if TYPE_CHECKING:
    from .disk import DiskTier
    from .durability import Durability
    from .guard import Guard

__all__ = ["Batch", "BatchAccess", "Change", "Outcome"]

_LIVE, _TOMBSTONE = RecordState.LIVE, RecordState.TOMBSTONE


def _readable_live(current: Record | None, now: float) -> TypeGuard[Record]:
    """Whether ``current`` is a live entry whose value this open can read (not too long for it)."""
    return current is not None and current[VALUE] is not UNREADABLE and record_state(current, now) is _LIVE


class Change(NamedTuple):
    """One key's write in a batch: its new record and envelope, or ``None``/``None`` to remove it."""

    key: Key
    disk_key: bytes
    stripe: int
    record: Record | None
    data: bytes | None


class Outcome(NamedTuple):
    """What a batch of deletes did: keys that had a live entry, and records changed."""

    live: int
    changed: int


class Batch:
    """Multi-key and read-then-write changes of entries over both tiers (see the module doc)."""

    def __init__(
        self,
        *,
        writer: Writer,
        disk_get: Callable[[bytes], bytes | None],
        writes: EntryWrites,
        memory: MemoryTier,
        stripes: Stripes,
        flights: Flights,
        stats: Stats,
        options: Options,
        seq: Iterator[int],
        admit_key: Callable[[Key], None] | None,
    ) -> None:
        self._writer = writer
        self._disk_get = disk_get
        self._writes = writes
        self._memory = memory
        self._locks = stripes.locks
        self._count = stripes.count
        self._flights = flights
        self._stats = stats
        self._options = options
        self._seq = seq
        self._admit_key = admit_key
        self._max_bytes = options.max_value_bytes

    # -- locking -----------------------------------------------------------------------

    def stripe(self, key: Key) -> int:
        return hash(key) % self._count

    @contextmanager
    def locked(self, stripes: Iterable[int]) -> Iterator[None]:
        """Hold the locks of ``stripes`` (each once, in ascending order) for the block."""
        held: list[threading.Lock] = []
        try:
            for stripe in sorted(set(stripes)):
                lock = self._locks[stripe]
                lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()

    def barrier(self) -> None:
        """Wait for every write holding a stripe lock now (a fill admitted before an invalidation lands first)."""
        with self.locked(range(self._count)):
            pass

    # -- the calls ---------------------------------------------------------------------

    def set_many(self, items: list[tuple[Key, bytes, Any]], ttl: Any) -> int:
        """Store every ``(key, disk_key, value)`` (distinct keys) or, when one cannot be stored, none."""
        packer = codec.new_packer()
        with self.locked(self.stripe(key) for key, _, _ in items):
            now = self._writer.write_time()
            versioned = self._writer.versioned
            changes = []
            for key, disk_key, value in items:
                negative = value is ABSENT
                version = 0
                if versioned:
                    current = self._writer.current(key, disk_key)
                    version = 0 if current is None else current[VERSION]
                expires_at, drawn = self._expiry(ttl, negative, now)
                flags = NEGATIVE if negative else 0
                stored = None if negative else value
                changes.append(self._entry(packer, key, disk_key, stored, version, expires_at, flags, now, drawn))
            for key, _, _ in items:  # every envelope is packed: nothing was written if one raised
                self._invalidate(key)
            self._commit(changes)
            if self._admit_key is not None:
                for change in changes:
                    if change.record is not None and not change.record[codec.FLAGS]:
                        self._admit_key(change.key)
        self._stats.add("sets", len(changes))
        return len(changes)

    def delete_many(self, keys: list[tuple[Key, bytes]]) -> Outcome:
        """Delete every ``(key, disk_key)`` (distinct keys) as ``delete`` does, in one batch."""
        packer = codec.new_packer()
        live = 0
        with self.locked(self.stripe(key) for key, _ in keys):
            now = self._writer.write_time()
            changes = []
            for key, disk_key in keys:
                self._invalidate(key)
                current = self._writer.current(key, disk_key)
                if current is None:
                    if self._damaged(disk_key):
                        changes.append(Change(key, disk_key, self.stripe(key), None, None))
                    continue
                state = record_state(current, now)
                live += state is _LIVE
                if state is not _TOMBSTONE:
                    changes.append(self._removal(packer, key, disk_key, current, now))
            self._commit(changes)
        return Outcome(live, len(changes))

    def pop(self, key: Key, disk_key: bytes) -> tuple[bool, Any]:
        """Delete ``key`` as ``delete`` does; ``(True, value)`` when it had a live entry, else ``(False, None)``."""
        with self.locked([self.stripe(key)]):
            current = self._writer.current(key, disk_key)
            now = self._writer.write_time()
            self._invalidate(key)
            if current is None:
                if self._damaged(disk_key):
                    self._commit([Change(key, disk_key, self.stripe(key), None, None)])
                return False, None
            if current[VALUE] is UNREADABLE:  # too long for this open: a miss to it, left in place
                return False, None
            state = record_state(current, now)
            if state is not _TOMBSTONE:
                self._commit([self._removal(codec.new_packer(), key, disk_key, current, now)])
            return (True, current[VALUE]) if state is _LIVE else (False, None)

    def touch(self, key: Key, disk_key: bytes, ttl: Any) -> bool:
        """Give the live entry of ``key`` a new expiry, its value and version unchanged; ``False`` if none."""
        with self.locked([self.stripe(key)]):
            current = self._writer.current(key, disk_key)
            now = self._writer.write_time()
            if not _readable_live(current, now):
                return False
            expires_at, drawn = self._expiry(ttl, False, now)
            change = self._entry(
                codec.new_packer(),
                key,
                disk_key,
                current[VALUE],
                current[VERSION],
                expires_at,
                0,
                now,
                drawn,
                current[LOAD_TIME],
            )
            self._commit([change])  # the value stays: a load in flight may still land
            return True

    def replace_value(self, key: Key, disk_key: bytes, value: Any) -> bool:
        """Store ``value`` in the live entry of ``key``, its expiry, TTL and version unchanged; ``False`` if none."""
        return self.update_value(key, disk_key, lambda _: value)

    def update_value(self, key: Key, disk_key: bytes, update: Callable[[Any], Any]) -> bool:
        """Store ``update(value)`` in the live entry of ``key`` as ``replace_value`` does; ``False`` if none.

        ``update`` runs under the key's lock; what it raises propagates, nothing written."""
        with self.locked([self.stripe(key)]):
            current = self._writer.current(key, disk_key)
            now = self._writer.write_time()
            if not _readable_live(current, now):
                return False
            expires_at, ttl, value = current[EXPIRES_AT], current[TTL], update(current[VALUE])
            change = self._entry(codec.new_packer(), key, disk_key, value, current[VERSION], expires_at, 0, now, ttl)
            self._invalidate(key)  # a new value: a load in flight must not land over it
            self._commit([change])
            self._stats.add("sets", 1)
            return True

    # -- building and committing changes -------------------------------------------------

    def _expiry(self, ttl: Any, negative: bool, now: float) -> tuple[float | None, float | None]:
        """``(expires_at, ttl drawn)`` of an entry written at ``now``, as ``set`` decides them."""
        drawn = self._writer.drawn_ttl(ttl, negative)
        return (None, None) if drawn is None else (now + drawn, drawn)

    def _entry(
        self,
        packer: msgpack.Packer,
        key: Key,
        disk_key: bytes,
        value: Any,
        version: int,
        expires_at: float | None,
        flags: int,
        now: float,
        ttl: float | None,
        load_time: float = 0.0,
    ) -> Change:
        """The change writing an entry: its envelope packed (and checked) now, nothing written yet."""
        seq = next(self._seq)
        data, value = codec.encode_record(packer, value, version, expires_at, flags, now, ttl, seq, load_time)
        check_value_size(data, self._max_bytes, "value of", key)
        record = (len(data), version, expires_at, flags, value, now, ttl, seq, load_time)  # codec.Record's order
        return Change(key, disk_key, self.stripe(key), record, data)

    def _removal(self, packer: msgpack.Packer, key: Key, disk_key: bytes, current: Record, now: float) -> Change:
        """The change deleting a stored record: a tombstone at its version, or removal at version 0."""
        version = current[VERSION]
        if not version:
            return Change(key, disk_key, self.stripe(key), None, None)
        ttl = self._options.tombstone_ttl
        return self._entry(packer, key, disk_key, None, version, now + ttl, TOMBSTONE, now, ttl)

    def _damaged(self, disk_key: bytes) -> bool:
        """Whether tier 2 holds a record for a key ``Writer.current`` found none: a damaged one (counted
        there), which reads as a miss and keeps no version, so a delete removes it outright."""
        return self._disk_get(disk_key) is not None

    def _invalidate(self, key: Key) -> None:
        if self._flights.in_flight:
            self._flights.invalidate(key)  # bump the fill generation

    def _commit(self, changes: list[Change]) -> None:
        """Write ``changes`` (distinct keys, their locks held): tier 1 forgets them, one tier-2 batch, tier 1."""
        if not changes:
            return
        memory = self._memory
        items: list[BatchItem] = []
        for change in changes:
            memory.begin_write(change.stripe, change.key)  # until put/discard, tier 1 holds no record of it
            record = change.record
            if record is None:
                items.append((change.disk_key, None, 0, None))
            else:
                expires_at = record[EXPIRES_AT]
                extra: list[Op] | None = None if expires_at is None else [index_op(change.disk_key, expires_at)]
                items.append((change.disk_key, change.data, record[SEQ], extra))
        try:
            self._writes.batch(items)
        except BaseException:
            for change in changes:
                memory.discard(change.key, change.stripe)  # what tier 2 holds is unknown: tier 1 forgets
            raise
        for change in changes:
            if change.record is None:
                memory.discard(change.key, change.stripe)
            else:
                memory.put(change.key, change.record, change.stripe)


class BatchAccess:
    """The store's ``Batch``, built from its parts on first use (the calls that write through it inherit this)."""

    _writer: Writer
    _disk: DiskTier
    _durability: Durability
    _memory: MemoryTier
    _stripes: Stripes
    _flights: Flights
    _stats: Stats
    _options: Options
    _seq: Iterator[int]
    _guard: Guard | None

    @functools.cached_property
    def _batch(self) -> Batch:
        return Batch(
            writer=self._writer,
            disk_get=self._disk.get,
            writes=entry_writes(self._disk, self._durability.capacity),
            memory=self._memory,
            stripes=self._stripes,
            flights=self._flights,
            stats=self._stats,
            options=self._options,
            seq=self._seq,
            admit_key=None if self._guard is None else self._guard.add,
        )
