"""Tier 1: a cachetools ``LRUCache`` of decoded records, bounded by items and bytes.

Writes take the tier's lock. Reads do not: a read is one dict lookup and one
``OrderedDict.move_to_end``, each atomic under the interpreter lock, and
``LRUCache.__getitem__`` already ignores the ``KeyError`` of a key evicted
between the two.

A per-stripe write epoch keeps promotions from going back in time. A write is
``begin_write`` (the epoch turns odd), the tier-2 write, then ``put`` or
``discard`` (the epoch turns even again). A reader that fetched a record from
tier 2 promotes it only if the epoch it read before the fetch was even and is
unchanged: so no record read before or during a write lands in tier 1, and a
reader that saw the new value in tier 2 never finds the old one in tier 1
afterwards. Writers of one stripe hold the store's lock of that stripe, so
epoch updates of a stripe never race each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cachetools import LRUCache

from .codec import Key, Record

__all__ = ["MemoryTier"]

STRIPES = 64


class _RecordLRU(LRUCache[Key, Record]):
    """An LRUCache of records that counts its evictions and answers a miss with None.

    ``__missing__`` is cachetools' hook for misses; returning None instead of raising
    saves a Python-level exception on every tier-1 miss.
    """

    evictions = 0

    def __missing__(self, key: Key) -> None:  # type: ignore[override]  # None marks a miss
        return None

    def popitem(self) -> tuple[Key, Record]:
        item = super().popitem()
        self.evictions += 1
        return item


def _record_size(record: Record) -> int:
    return record.size


class MemoryTier:
    """Decoded records of recently used keys; tier 2 stays authoritative."""

    def __init__(self, max_items: int, max_bytes: int | None = None) -> None:
        # With a byte bound, cachetools keeps the byte total (getsizeof) and the item
        # bound is enforced here; without one, cachetools bounds the items alone.
        if max_bytes is None:
            self._lru = _RecordLRU(max_items)
        else:
            self._lru = _RecordLRU(max_bytes, getsizeof=_record_size)
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._epochs = [0] * STRIPES
        # The record held for a key, or None, marking it recently used (no lock, see module doc).
        self.get: Callable[[Key], Record | None] = self._lru.__getitem__

    def epoch(self, key: Key) -> int:
        """The write epoch of ``key``'s stripe, read before a tier-2 fetch."""
        return self._epochs[hash(key) % STRIPES]

    def begin_write(self, key: Key) -> None:
        """A write of ``key`` to tier 2 starts: no promotion of its stripe lands until it ends."""
        stripe = hash(key) % STRIPES
        self._epochs[stripe] |= 1

    def put(self, key: Key, record: Record) -> None:
        """Hold ``record`` for ``key``: the write ends (promotions read before it fail)."""
        self._lock.acquire()
        try:
            self._end_write(key)
            self._store(key, record)
        finally:
            self._lock.release()

    def discard(self, key: Key) -> None:
        """Forget ``key``: the write that removed it ends (promotions read before it fail)."""
        self._lock.acquire()
        try:
            self._end_write(key)
            if key in self._lru:
                del self._lru[key]
        finally:
            self._lock.release()

    def _end_write(self, key: Key) -> None:
        stripe = hash(key) % STRIPES
        self._epochs[stripe] = (self._epochs[stripe] | 1) + 1  # the next even epoch

    def promote(self, key: Key, record: Record, epoch: int) -> bool:
        """Hold a record read from tier 2 if no write of its stripe ran since ``epoch`` was read."""
        if not self._max_items or epoch & 1:
            return False
        self._lock.acquire()
        try:
            if self._epochs[hash(key) % STRIPES] != epoch or key in self._lru:
                return False
            self._store(key, record)
            return True
        finally:
            self._lock.release()

    def _store(self, key: Key, record: Record) -> None:
        lru = self._lru
        if not self._max_items or (self._max_bytes is not None and record.size > self._max_bytes):
            if key in lru:
                del lru[key]
            return
        lru[key] = record
        if self._max_bytes is not None:
            while len(lru) > self._max_items:
                lru.popitem()

    def clear(self) -> None:
        self._lock.acquire()
        try:
            for stripe in range(STRIPES):
                self._epochs[stripe] = (self._epochs[stripe] | 1) + 1
            self._lru.clear()
        finally:
            self._lock.release()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        """Encoded bytes held (0 when tier 1 has no byte bound and so keeps no total)."""
        return int(self._lru.currsize) if self._max_bytes is not None else 0

    @property
    def evictions(self) -> int:
        return self._lru.evictions
