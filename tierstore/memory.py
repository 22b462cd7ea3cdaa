"""Tier 1: a cachetools ``LRUCache`` of decoded records, bounded by items and bytes.

Writes take the tier's lock. Reads do not: a read is one dict lookup and one
``OrderedDict.move_to_end``, each atomic under the interpreter lock, and
``LRUCache.__getitem__`` already ignores the ``KeyError`` of a key evicted
between the two. A per-stripe write epoch lets a reader that fetched a record
from tier 2 promote it only if no writer touched that stripe meanwhile, so a
slow reader never puts an older record over a newer one.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import LRUCache

from .codec import Key, Record

__all__ = ["MemoryTier"]

STRIPES = 64


class _RecordLRU(LRUCache[Key, Record]):
    """An LRUCache that keeps a byte total of its records and counts evictions."""

    def __init__(self, max_items: int) -> None:
        super().__init__(max_items)
        self.bytes = 0
        self.evictions = 0

    def __setitem__(self, key: Key, record: Record) -> None:
        old = self.get(key)
        super().__setitem__(key, record)
        self.bytes += record.size - (old.size if old is not None else 0)

    def __delitem__(self, key: Key) -> None:
        record = super().__getitem__(key)
        super().__delitem__(key)
        self.bytes -= record.size

    def popitem(self) -> tuple[Key, Record]:
        item = super().popitem()
        self.evictions += 1
        return item


class MemoryTier:
    """Decoded records of recently used keys; tier 2 stays authoritative."""

    def __init__(self, max_items: int, max_bytes: int | None = None) -> None:
        self._lru = _RecordLRU(max_items)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._epochs = [0] * STRIPES
        self.get = self._lookup

    def _lookup(self, key: Key) -> Record | None:
        """The record held for ``key``, marking it recently used (no lock, see module doc)."""
        try:
            return self._lru[key]
        except KeyError:
            return None

    def peek(self, key: Key) -> Record | None:
        """The record held for ``key`` without touching its recency."""
        return self._lru.get(key) if key in self._lru else None

    def epoch(self, key: Key) -> int:
        """The write epoch of ``key``'s stripe, read before a tier-2 fetch."""
        return self._epochs[hash(key) % STRIPES]

    def put(self, key: Key, record: Record) -> None:
        """Hold ``record`` for ``key`` after a write; invalidates promotions in flight."""
        self._lock.acquire()
        try:
            self._epochs[hash(key) % STRIPES] += 1
            self._store(key, record)
        finally:
            self._lock.release()

    def discard(self, key: Key) -> None:
        """Forget ``key`` after a write that removed it; invalidates promotions in flight."""
        self._lock.acquire()
        try:
            self._epochs[hash(key) % STRIPES] += 1
            if key in self._lru:
                del self._lru[key]
        finally:
            self._lock.release()

    def promote(self, key: Key, record: Record, epoch: int) -> bool:
        """Hold a record read from tier 2, unless a write to its stripe came after ``epoch``."""
        self._lock.acquire()
        try:
            if self._epochs[hash(key) % STRIPES] != epoch or key in self._lru:
                return False
            self._store(key, record)
            return True
        finally:
            self._lock.release()

    def _store(self, key: Key, record: Record) -> None:
        max_bytes = self._max_bytes
        if not self._lru.maxsize or (max_bytes is not None and record.size > max_bytes):
            if key in self._lru:
                del self._lru[key]
            return
        self._lru[key] = record
        if max_bytes is not None:
            lru = self._lru
            while lru.bytes > max_bytes:
                lru.popitem()

    def clear(self) -> None:
        self._lock.acquire()
        try:
            for stripe in range(STRIPES):
                self._epochs[stripe] += 1
            self._lru.clear()
            self._lru.bytes = 0
        finally:
            self._lock.release()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        return self._lru.bytes

    @property
    def evictions(self) -> int:
        return self._lru.evictions

    def snapshot(self) -> dict[str, Any]:
        return {"items": len(self._lru), "bytes": self._lru.bytes, "evictions": self._lru.evictions}
