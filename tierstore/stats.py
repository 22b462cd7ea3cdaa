"""Exact event counters for ``stats()``, cheap enough for the hot path.

``counts[name]()`` adds one: it is the ``__next__`` of an ``itertools.count``,
a single C call, so concurrent increments from many threads are never lost
(``stats[name] += 1`` on a dict is a read, an add and a write, and loses
increments when a thread switch falls between them). ``add(name, n)`` adds any
amount under a lock, for rare bulk updates (a sweep's counts). Reading sums
the two.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable

__all__ = ["Stats"]


class Stats:
    """Named counters; ``counts[name]()`` increments, ``add`` adds, ``snapshot`` reads.

    Thread-safety: increments and additions are exact under any number of threads.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._sources: dict[str, itertools.count[int]] = {}
        self._extra: dict[str, int] = {}
        self.counts: dict[str, Callable[[], int]] = {}
        self._lock = threading.Lock()
        self.declare(names)

    def declare(self, names: Iterable[str]) -> None:
        """Add counters (starting at 0); names already declared keep their counts."""
        for name in names:
            if name not in self._sources:
                source = itertools.count()
                self._sources[name] = source
                self._extra[name] = 0
                self.counts[name] = source.__next__

    def add(self, name: str, amount: int) -> None:
        """Add ``amount`` (any int) to ``name``."""
        with self._lock:
            self._extra[name] += amount

    def __getitem__(self, name: str) -> int:
        return _current(self._sources[name]) + self._extra[name]

    def snapshot(self) -> dict[str, int]:
        """Every counter's current value, in declaration order."""
        with self._lock:
            return {name: _current(source) + self._extra[name] for name, source in self._sources.items()}


def _current(source: itertools.count[int]) -> int:
    """How many times ``source`` was advanced, read without advancing it (``count(n)`` is its repr)."""
    return int(repr(source)[6:-1])
