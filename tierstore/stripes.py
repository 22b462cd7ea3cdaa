"""Striped locks: one lock per slice of the key space, shared by the parts that lock by key.

The store's writers (version rule), tier 1's write epochs (see ``memory``) and
the counters all index the same ``Stripes``: 64 locks let unrelated keys be
written in parallel while a key's writes stay serial. A key's stripe is
``hash(key) % count``, computed once per call and passed along.
"""

from __future__ import annotations

import threading

__all__ = ["Stripes", "STRIPES"]

STRIPES = 64


class Stripes:
    """``count`` locks; ``of(key)`` names a key's stripe, ``locks[stripe]`` is its lock."""

    def __init__(self, count: int = STRIPES) -> None:
        self.count = count
        self.locks = [threading.Lock() for _ in range(count)]

    def of(self, key: object) -> int:
        return hash(key) % self.count

    def lock_for(self, key: object) -> threading.Lock:
        return self.locks[hash(key) % self.count]
