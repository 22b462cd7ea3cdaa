"""A shared sorted index with coroutine methods: ``SharedIndex``'s steps awaited on an event loop.

``AsyncSharedIndex`` is ``aio.AsyncSortedIndex``'s API for an index in shared
mode. Each call awaits ``run`` (the asyncio driver of ``steps``, such as
``aio_redis.AsyncRedis.run``) on the index's ``<call>_steps`` generator, so no
call blocks the loop on Redis; ``replace``, many round trips, runs the blocking
one in a thread. What cannot be awaited (``len``, ``in``, the ``stamp``
property) raises ``TypeError`` naming the coroutine to await instead: a
blocking round trip on the loop is what this class exists to avoid.
Thread-safety: as ``SharedIndex``; the object holds no state beyond the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from ..codec import Key
from ..index_codec import Pairs
from .ranking import SharedIndex
from .steps import Steps

__all__ = ["AsyncSharedIndex", "StepsRunner"]

_T = TypeVar("_T")


class StepsRunner(Protocol):
    """An asyncio driver of steps: ``AsyncRedis.run``'s signature."""

    def __call__(self, steps: Steps[_T], /) -> Awaitable[_T]: ...


class AsyncSharedIndex:
    """``SharedIndex``'s calls as coroutines, each one driven by ``run`` on the loop (``replace`` in a thread)."""

    def __init__(self, index: SharedIndex, run: StepsRunner) -> None:
        self.sync = index
        self._drive = run

    @property
    def name(self) -> Key:
        return self.sync.name

    @property
    def stamp(self) -> Any:
        """Refused: reading the stamp is a round trip; ``await index.read_stamp()``."""
        raise TypeError("the stamp of a shared index is read from Redis: use 'await index.read_stamp()'")

    async def read_stamp(self) -> Any:
        """The source stamp the last ``replace`` reflects; ``None`` if never built."""
        return await self._drive(self.sync.stamp_steps())

    async def count(self) -> int:
        """The number of members (what ``len`` answers on the blocking index)."""
        return await self._drive(self.sync.len_steps())

    async def contains(self, member: object) -> bool:
        """Whether ``member`` is in the index (what ``in`` answers on the blocking index)."""
        return await self._drive(self.sync.contains_steps(member))

    def __len__(self) -> int:
        raise TypeError("len() of a shared index is a round trip to Redis: use 'await index.count()'")

    def __contains__(self, member: object) -> bool:
        raise TypeError("'in' on a shared index is a round trip to Redis: use 'await index.contains(member)'")

    def __repr__(self) -> str:
        return f"AsyncSortedIndex({self.sync.name!r}, shared)"

    async def add(self, member: Key, score: float) -> None:
        await self._drive(self.sync.add_steps(member, score))

    async def add_many(self, pairs: Pairs) -> None:
        await self._drive(self.sync.add_many_steps(pairs))

    async def remove(self, member: Key) -> bool:
        return await self._drive(self.sync.remove_steps(member))

    async def mark_dirty(self) -> None:
        await self._drive(self.sync.mark_dirty_steps())

    async def replace(self, pairs: Pairs, stamp: Any = ...) -> None:
        """Rebuild the index atomically (in a thread: it writes every member in chunks)."""
        await asyncio.to_thread(self.sync.replace, pairs, stamp)

    async def score(self, member: Key) -> float | None:
        return await self._drive(self.sync.score_steps(member))

    async def rank(self, member: Key, reverse: bool = False) -> int | None:
        return await self._drive(self.sync.rank_steps(member, reverse))

    async def page(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> list[tuple[Key, float]]:
        return await self._drive(self.sync.page_steps(offset, limit, reverse))

    async def page_after(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> tuple[list[tuple[Key, float]], str | None]:
        return await self._drive(self.sync.page_after_steps(cursor, limit, reverse))

    async def range_by_score(self, lo: float, hi: float, limit: int | None = None) -> list[tuple[Key, float]]:
        return await self._drive(self.sync.range_by_score_steps(lo, hi, limit))
