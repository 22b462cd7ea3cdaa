"""``AsyncSortedIndex``: a local ``SortedIndex`` behind coroutines (``AsyncTierStore.index`` of a local store).

Reads and small writes run inline on the loop (tier-2 reads and one LevelDB
write each); ``replace`` rewrites every member, so it runs in a thread, and so
does a read that may walk more than ``INLINE_WALK`` members (a deep ``page``
offset, a ``rank`` in a large index, a long ``range_by_score``: LevelDB walks
them one by one, about half a microsecond each, so 300,000 of them would stall
the loop for a tenth of a second). ``len``,
``in`` and ``stamp`` stay plain, and ``count``, ``contains`` and ``read_stamp``
are their coroutine forms, the ones a shared index (``shared.aio_ranking``)
offers too. Thread-safety: as ``SortedIndex``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .codec import Key
from .index_codec import Pairs
from .ranking import SortedIndex

__all__ = ["AsyncSortedIndex", "INLINE_WALK"]

INLINE_WALK = 1024  # members a read may walk on the loop (about half a millisecond); more: in a thread

_T = TypeVar("_T")


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
        """The member's 0-based position: a walk up to it, in a thread in a large index."""
        return await _walking(len(self.sync), self.sync.rank, member, reverse)

    async def page(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> list[tuple[Key, float]]:
        """``limit`` members from ``offset``: a walk past the offset, in a thread when it is deep."""
        walk = offset + limit if type(offset) is int and type(limit) is int else 0  # bad ones: refused inline
        return await _walking(walk, self.sync.page, offset, limit, reverse)

    async def page_after(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> tuple[list[tuple[Key, float]], str | None]:
        """The page after ``cursor`` (a seek, then ``limit`` members)."""
        return await _walking(limit if type(limit) is int else 0, self.sync.page_after, cursor, limit, reverse)

    async def range_by_score(self, lo: float, hi: float, limit: int | None = None) -> list[tuple[Key, float]]:
        """Members scored ``lo``..``hi``: as many as ``limit``, or the whole index, walked."""
        walk = limit if type(limit) is int else len(self.sync)
        return await _walking(walk, self.sync.range_by_score, lo, hi, limit)


async def _walking(walk: int, read: Callable[..., _T], *args: Any) -> _T:
    """``read(*args)`` inline when it walks at most ``INLINE_WALK`` members, else in a thread."""
    if walk <= INLINE_WALK:
        return read(*args)
    return await asyncio.to_thread(read, *args)
