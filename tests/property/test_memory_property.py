"""Tier 1 against two models: a plain list LRU (order, bytes, evictions) and cachetools' LRUCache.

cachetools stays the reference of what an LRU keeps; the plain model also
pins down the order, the byte total and the eviction count of the project's own
``OrderedDict`` LRU, with and without a byte bound, promotions and their epochs.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tierstore.codec import VALUE, Record, make_record
from tierstore.memory import MemoryTier
from tierstore.stripes import Stripes

KEYS = st.sampled_from([f"k{i}" for i in range(12)] + [b"k1", b"k2"])
SIZES = st.integers(min_value=1, max_value=40)

_S = Stripes()


def record(value: int, size: int) -> Record:
    return make_record(value, 0, None, 0, 0.0, None, value, size)


class PlainLRU:
    """The model: a list, oldest first, of (key, value, size)."""

    def __init__(self, max_items: int, max_bytes: int | None) -> None:
        self.items: list[tuple[Any, int, int]] = []
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.evictions = 0

    def _index(self, key: Any) -> int | None:
        for i, (held, _, _) in enumerate(self.items):
            if held == key and type(held) is type(key):
                return i
        return None

    def remove(self, key: Any) -> None:
        i = self._index(key)
        if i is not None:
            del self.items[i]

    def put(self, key: Any, value: int, size: int) -> None:
        if not self.max_items or (self.max_bytes is not None and size > self.max_bytes):
            self.remove(key)
            return
        self.remove(key)
        self.items.append((key, value, size))
        while len(self.items) > self.max_items or (self.max_bytes is not None and self.bytes > self.max_bytes):
            del self.items[0]
            self.evictions += 1

    def get(self, key: Any) -> int | None:
        i = self._index(key)
        if i is None:
            return None
        item = self.items.pop(i)
        self.items.append(item)
        return item[1]

    def holds(self, key: Any) -> bool:
        return self._index(key) is not None

    @property
    def bytes(self) -> int:
        return sum(size for _, _, size in self.items) if self.max_bytes is not None else 0


class MemoryMachine(RuleBasedStateMachine):
    @initialize(max_items=st.integers(min_value=0, max_value=6), max_bytes=st.one_of(st.none(), st.integers(10, 120)))
    def start(self, max_items: int, max_bytes: int | None) -> None:
        self.tier = MemoryTier(max_items, max_bytes, _S)
        self.model = PlainLRU(max_items, max_bytes)
        self.reference = LRUCache(max_items) if max_bytes is None and max_items else None
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    @rule(key=KEYS, size=SIZES)
    def put(self, key: Any, size: int) -> None:
        value = self._next()
        self.tier.begin_write(_S.of(key))
        self.tier.put(key, record(value, size), _S.of(key))
        self.model.put(key, value, size)
        if self.reference is not None:
            self.reference[key] = value

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        got = self.tier.get(key)
        expected = self.model.get(key)
        assert (got[VALUE] if got is not None else None) == expected
        if self.reference is not None:
            assert self.reference.get(key) == expected

    @rule(key=KEYS)
    def discard(self, key: Any) -> None:
        self.tier.discard(key, _S.of(key))
        self.model.remove(key)
        if self.reference is not None:
            self.reference.pop(key, None)

    @rule(key=KEYS, size=SIZES, stale=st.booleans())
    def promote(self, key: Any, size: int, stale: bool) -> None:
        epoch = self.tier.epoch(_S.of(key))
        if stale:  # a write of the key's stripe ran since the read: the promotion must fail
            self.tier.begin_write(_S.of(key))
            assert not self.tier.promote(key, record(-1, size), _S.of(key), epoch)
            self.tier.discard(key, _S.of(key))  # the write ends by removing the key
            self.model.remove(key)
            if self.reference is not None:
                self.reference.pop(key, None)
            return
        value = self._next()
        landed = self.tier.promote(key, record(value, size), _S.of(key), epoch)
        assert landed == (bool(self.model.max_items) and not self.model.holds(key))
        if landed:
            self.model.put(key, value, size)
            if self.reference is not None:
                self.reference[key] = value

    @invariant()
    def same_contents_order_and_totals(self) -> None:
        assert list(self.tier._data.keys()) == [key for key, _, _ in self.model.items]
        assert [r[VALUE] for r in self.tier._data.values()] == [value for _, value, _ in self.model.items]
        assert self.tier.bytes == self.model.bytes
        assert self.tier.evictions == self.model.evictions
        assert len(self.tier) <= self.model.max_items
        if self.reference is not None:
            assert sorted(map(repr, self.reference.keys())) == sorted(repr(k) for k, _, _ in self.model.items)


TestMemoryMachine = MemoryMachine.TestCase
