"""The asyncio form of ``keys()``/``items()``: live entries read in a thread, a chunk at a time.

A listing scans tier 2 (or, in shared mode, Redis with the blocking client), so
it never runs on the event loop. ``async for key in s.keys()`` reads the next
chunk in a thread whenever the last one is used up; ``await s.keys()`` reads
every chunk and gives a list. The blocking iterator is made on first use, so
each ``async for`` (or ``await``) is a fresh listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from itertools import islice
from typing import Any, Generic, TypeVar

__all__ = ["AsyncListing", "CHUNK"]

CHUNK = 256  # items read per hop to a thread (a hop costs about 100 µs)

_T = TypeVar("_T")


class AsyncListing(Generic[_T]):
    """Live entries of a store: ``async for`` them, or ``await`` the list of them all."""

    def __init__(self, listing: Callable[[], Awaitable[Iterator[_T]]], chunk: int = CHUNK) -> None:
        self._listing = listing  # opens the store if need be, then makes the blocking iterator
        self._chunk = chunk

    def __aiter__(self) -> AsyncIterator[_T]:
        return self._iterate()

    def __await__(self) -> Generator[Any, None, list[_T]]:
        return self._all().__await__()

    async def _all(self) -> list[_T]:
        return [item async for item in self]

    async def _iterate(self) -> AsyncIterator[_T]:
        iterator = await self._listing()
        try:
            while True:
                chunk = await asyncio.to_thread(_take, iterator, self._chunk)
                for item in chunk:
                    yield item
                if len(chunk) < self._chunk:
                    return
        finally:
            _close(iterator)


def _take(iterator: Iterator[_T], count: int) -> list[_T]:
    return list(islice(iterator, count))


def _close(iterator: Iterator[Any]) -> None:
    """Release the listing's snapshot now; one still read by a cancelled hop is released when collected."""
    close = getattr(iterator, "close", None)
    if close is not None:
        try:
            close()
        except ValueError:  # "generator already executing": its thread has it
            pass
