"""Tier 1 with cachetools' eviction policies: least frequently used, or first in first out.

``memory_policy="lru"`` (the default) is ``memory.MemoryTier``, the project's own
``OrderedDict`` LRU with lock-free reads. Where recency is the wrong signal (a
few keys read steadily among many read in bursts), ``"lfu"`` keeps the most
often read keys and ``"fifo"`` evicts in insertion order; cachetools'
``LFUCache`` and ``FIFOCache`` hold the records. Their reads update the policy's
bookkeeping in Python, so every read here takes the tier's lock: a little
slower than the LRU's read, never a torn structure. Epochs, admission and the
byte bound work as in ``MemoryTier``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import cachetools

from .codec import SIZE, Key, Record
from .memory import MemoryTier
from .stripes import Stripes

__all__ = ["PolicyTier", "Policy", "memory_tier"]

Policy = Literal["lru", "lfu", "fifo"]

_CACHES: dict[str, type[cachetools.Cache[Key, Record]]] = {
    "lfu": cachetools.LFUCache,
    "fifo": cachetools.FIFOCache,
}
_peek = cachetools.Cache.__getitem__  # the record held, without counting it as a use


def memory_tier(
    policy: Policy, max_items: int, max_bytes: int | None, stripes: Stripes, *, second_read: bool = False
) -> MemoryTier:
    """Tier 1 for ``policy``: the plain LRU, or a cachetools policy behind the same interface."""
    if policy == "lru":
        return MemoryTier(max_items, max_bytes, stripes, second_read=second_read)
    return PolicyTier(policy, max_items, max_bytes, stripes, second_read=second_read)


class PolicyTier(MemoryTier):
    """``MemoryTier`` over a cachetools cache. Thread-safety: every call takes the tier's lock."""

    def __init__(
        self, policy: Policy, max_items: int, max_bytes: int | None, stripes: Stripes, *, second_read: bool = False
    ) -> None:
        super().__init__(max_items, max_bytes, stripes, second_read=second_read)
        self._cache = _counting(_CACHES[policy], max(max_items, 1), self._evicted)
        self._data = self._cache  # type: ignore[assignment]  # the base class's calls work on any mapping
        self._simple = False  # every insert goes through _store
        self.get = self.lookup = self._reader()
        self.touch = _counted

    def _reader(self) -> Callable[[Key], Record | None]:
        """A read under the lock: the policy counts it (LFU) or ignores it (FIFO)."""
        lock = self._lock

        def get(key: Key) -> Record | None:
            with lock:
                record: Record | None = self._cache.get(key)
                return record

        return get

    def clear(self) -> None:
        evictions = self.evictions
        super().clear()  # a cachetools clear pops item by item: not evictions
        self.evictions = evictions

    def _evicted(self, record: Record) -> None:
        """Called by the cache when its policy evicts (the caller holds the tier's lock)."""
        self.evictions += 1
        if self._max_bytes is not None:
            self._bytes -= record[SIZE]

    def _store(self, key: Key, record: Record) -> None:
        max_bytes = self._max_bytes
        if not self._max_items or (max_bytes is not None and record[SIZE] > max_bytes):
            self._remove(key)
            return
        cache = self._cache
        if max_bytes is not None:
            old = _peek(cache, key) if key in cache else None
            self._bytes += record[SIZE] - (old[SIZE] if old is not None else 0)
        cache[key] = record  # past max_items the cache evicts by its policy (and calls _evicted)
        while max_bytes is not None and self._bytes > max_bytes:
            cache.popitem()


def _counted(key: Key) -> None:
    """A policy tier's ``touch``: its ``lookup`` (the policy's own read) already counted the use."""


def _counting(
    base: type[cachetools.Cache[Key, Record]], maxsize: int, on_evict: Callable[[Record], None]
) -> cachetools.Cache[Key, Record]:
    """A ``base`` cache that reports each record its policy evicts."""

    class Counting(base):  # type: ignore[valid-type,misc]
        def popitem(self) -> tuple[Key, Any]:
            key, record = super().popitem()
            on_evict(record)
            return key, record

    cache: cachetools.Cache[Key, Record] = Counting(maxsize)
    return cache
