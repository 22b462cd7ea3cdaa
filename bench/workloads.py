"""Seeded key sequences: Zipf(s) or uniform over a key space, with a share of sets.

Every system replays the same sequence. Zipf ranks are mapped to keys through a
seeded permutation, so the hot keys are scattered over LevelDB's key order
rather than bunched at its start.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["Workload", "READ_HEAVY", "WRITE_HEAVY", "KeySpace", "Sequence", "make_sequence", "sample_value"]


@dataclass(frozen=True)
class Workload:
    """A mix of gets and sets over a key distribution."""

    name: str
    distribution: str  # "zipf" or "uniform"
    set_fraction: float


READ_HEAVY = Workload("read-heavy", "zipf", 0.05)
WRITE_HEAVY = Workload("write-heavy", "uniform", 0.50)

_VALUE_VARIANTS = 64


def sample_value(i: int) -> dict[str, Any]:
    """A small record-like value (about 60 bytes of msgpack), the kind services cache."""
    return {"id": i, "name": f"user-{i:07d}", "score": i * 0.5, "tags": ["alpha", "beta"], "active": True}


@dataclass(frozen=True)
class Sequence:
    """Keys to touch, in order, with the value to set (``None`` for a get)."""

    keys: list[str]
    values: list[dict[str, Any] | None]

    def __len__(self) -> int:
        return len(self.keys)

    def head(self, share: int) -> Sequence:
        """The first ``1/share`` of the operations (the whole sequence for 1)."""
        if share == 1:
            return self
        count = max(1, len(self.keys) // share)
        return Sequence(self.keys[:count], self.values[:count])

    def split(self, parts: int) -> list[Sequence]:
        """Contiguous slices, one per thread."""
        size = -(-len(self.keys) // parts)
        return [Sequence(self.keys[i : i + size], self.values[i : i + size]) for i in range(0, len(self.keys), size)]


class KeySpace:
    """Key names, their Zipf ranking and the values they are set to."""

    def __init__(self, size: int, zipf_s: float, seed: int) -> None:
        self.size = size
        self.names = [f"key:{i:07d}" for i in range(size)]
        order = list(range(size))
        random.Random(seed).shuffle(order)
        self.by_rank = order  # by_rank[r] is the key index of Zipf rank r (0 = hottest)
        weights = (1.0 / (rank + 1) ** zipf_s for rank in range(size))
        self._cum_weights = list(itertools.accumulate(weights))
        self.values = [sample_value(i) for i in range(_VALUE_VARIANTS)]

    def value(self, index: int) -> dict[str, Any]:
        return self.values[index % _VALUE_VARIANTS]

    def prefill_order(self) -> list[int]:
        """All key indexes, coldest first, so an LRU filled in this order ends up holding the hottest."""
        return self.by_rank[::-1]

    def draw(self, distribution: str, count: int, rng: random.Random) -> list[int]:
        """``count`` key indexes from ``distribution``."""
        if distribution == "uniform":
            return [rng.randrange(self.size) for _ in range(count)]
        if distribution == "zipf":
            ranks = rng.choices(range(self.size), cum_weights=self._cum_weights, k=count)
            by_rank = self.by_rank
            return [by_rank[rank] for rank in ranks]
        raise ValueError(f"unknown distribution {distribution!r}")


def make_sequence(space: KeySpace, workload: Workload, count: int, seed: int) -> Sequence:
    """A seeded sequence of ``count`` operations of ``workload``."""
    rng = random.Random(f"{seed}:{workload.name}:{count}")
    indexes = space.draw(workload.distribution, count, rng)
    keys = [space.names[i] for i in indexes]
    values = [space.value(i) if rng.random() < workload.set_fraction else None for i in indexes]
    return Sequence(keys, values)
