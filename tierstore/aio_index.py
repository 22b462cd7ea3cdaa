"""``AsyncSortedIndex``: a local ``SortedIndex`` behind coroutines (``AsyncTierStore.index`` of a local store).

Reads and small writes run inline on the loop (tier-2 reads and one LevelDB
write each); ``replace`` rewrites every member, so it runs in a thread. ``len``,
``in`` and ``stamp`` stay plain, and ``count``, ``contains`` and ``read_stamp``
are their coroutine forms, the ones a shared index (``shared.aio_ranking``)
offers too. Thread-safety: as ``SortedIndex``'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .codec import Key
from .index_codec import Pairs
from .ranking import SortedIndex

__all__ = ["AsyncSortedIndex"]


class AsyncSortedIndex:
    """A ``SortedIndex`` with coroutine methods: reads and small writes inline, ``replace`` in a thread."""

    def __init__(self, index: SortedIndex) -> None:
        self.sync = index

    @property
    def name(self) -> Key:
        return self.sync.name

    @property
    def stamp(self) -> Any:
        return self.sync.stamp

    def __len__(self) -> int:
        return len(self.sync)

    def __contains__(self, member: object) -> bool:
        return member in self.sync

    async def count(self) -> int:
        """How many members the index holds (``len``, as a coroutine: the form a shared index needs)."""
        return len(self.sync)

    async def contains(self, member: Key) -> bool:
        """Whether ``member`` is in the index (``in``, as a coroutine)."""
        return member in self.sync

    async def read_stamp(self) -> Any:
        """The stamp of the index's last ``replace`` (``stamp``, as a coroutine)."""
        return self.sync.stamp

    async def add(self, member: Key, score: float) -> None:
        self.sync.add(member, score)

    async def add_many(self, pairs: Pairs) -> None:
        self.sync.add_many(pairs)

    async def remove(self, member: Key) -> bool:
        return self.sync.remove(member)

    async def mark_dirty(self) -> None:
        self.sync.mark_dirty()

    async def replace(self, pairs: Pairs, stamp: Any = ...) -> None:
        """Rebuild the index atomically (in a thread: it writes every member)."""
        await asyncio.to_thread(self.sync.replace, pairs, stamp)

    async def score(self, member: Key) -> float | None:
        return self.sync.score(member)

    async def rank(self, member: Key, reverse: bool = False) -> int | None:
        return self.sync.rank(member, reverse)

    async def page(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> list[tuple[Key, float]]:
        return self.sync.page(offset, limit, reverse)

    async def page_after(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> tuple[list[tuple[Key, float]], str | None]:
        return self.sync.page_after(cursor, limit, reverse)

    async def range_by_score(self, lo: float, hi: float, limit: int | None = None) -> list[tuple[Key, float]]:
        return self.sync.range_by_score(lo, hi, limit)
