"""The hook through which loading excludes other processes: a load lease in shared mode, none locally.

``Loading`` runs one load per key within the process (``flight``). A store whose
keys other processes load too gives it a ``LoadLease`` (the shared tier's Redis
lease, ``shared.leasing``), so that one load runs across all of them; a local
store gives none (``Loading.lease is None``: one test per miss, nothing on a hit).
This module imports nothing of the shared tier: loading stays free of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .codec import Key, Record

__all__ = ["BUSY", "Held", "LoadLease"]


class _Busy:
    """The type of ``BUSY``: a load that did not run because another process holds the key's lease."""

    def __repr__(self) -> str:
        return "BUSY"


BUSY: Final = _Busy()


@dataclass(frozen=True, slots=True)
class Held:
    """A load lease this process holds: its token and what it saw of the entry (opaque to loading)."""

    token: bytes
    seen: bytes


class LoadLease(Protocol):
    """A key's load lease across processes. Thread-safety: every call may run in any thread."""

    def acquire(self, key: Key, wait: bool, give_up: float | None) -> Held | Record | None:
        """Hold ``key``'s lease for a foreground load.

        The lease, unless the key holds a live or negative entry (then that record,
        copied locally: nothing to load); ``None`` when another holds it and ``wait``
        is false; with ``wait``, until it is free or filled (``LoadTimeout`` past ``give_up``).
        """
        ...

    def try_take(self, key: Key) -> Held | None:
        """Hold ``key``'s lease for a background renewal, whatever it stores; ``None`` when busy."""
        ...

    def held(self, key: Key) -> tuple[Record | None, str]:
        """The copy of ``key`` this process holds (tombstones and expired ones included), Redis not asked,
        and the stat a hit on it counts in.

        A leader's second look (``Loading.filled_since``), and the lookup of a caller that will wait for
        a load of the key already running here: ``acquire`` answers what Redis holds.
        """
        ...

    def fill(self, key: Key, held: Held, value: Any, version: int | None, ttl: Any, load_time: float) -> bool:
        """Store a loaded value while ``held`` is current and the version rule allows; free the lease."""
        ...

    def release(self, key: Key, held: Held) -> None:
        """Free the lease at once if ``held`` is still current (a loader that raised); never raises."""
        ...

    def job(self, kind: bytes, key: Key, period: float) -> Callable[[], bool]:
        """A claim of a periodic job on ``key``: each call, ``True`` when this caller runs the round."""
        ...
