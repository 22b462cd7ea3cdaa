"""Lease locks: named mutexes over single-flight leases, freed by ``release`` or when the lease ends.

A ``LeaseLock`` is held through a flight of ``flight.Flights`` (the same
leases that single-flight loading uses) in a table of its own: a mutex never
shares a key with a fill of ``get_or_load``. While its lease runs the name is
held; past it the name frees itself, so a holder that hangs, crashes or whose
store was closed never wedges it. A late ``release`` by a holder whose lease
ran out does nothing (the name may belong to someone else by then).

The lock is not reentrant: a second ``acquire`` through any lock of the same
name waits (or, with ``blocking=False``, returns ``False``), even in the thread
that holds it, as ``threading.Lock`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import TypeVar

from .flight import Flight, Flights

__all__ = ["Held", "LeaseLock", "LeaseLocks"]


class LeaseLocks:
    """A table of named lease locks, each held for at most ``lease`` seconds (real elapsed time)."""

    def __init__(self, lease: float) -> None:
        if not lease > 0:
            raise ValueError(f"a lease must be a positive number of seconds, got {lease!r}")
        self._flights = Flights(lease)

    @property
    def lease(self) -> float:
        return self._flights.lease

    def lock(self, name: Hashable) -> LeaseLock:
        """A lock on ``name``; every lock of one name in one table excludes the others."""
        return LeaseLock(self._flights, name)

    def held(self, name: Hashable) -> bool:
        """Whether ``name`` is held now (by a lease that has not ended)."""
        return self._flights.running(name)


class Held:
    """``with lock:`` over ``acquire()``/``release()``, for this table's locks and the shared tier's."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Lock) -> _Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_Lock = TypeVar("_Lock", bound=Held)


class LeaseLock(Held):
    """One handle on a named lease: ``acquire``/``release``/``locked``, and a context manager."""

    __slots__ = ("_flights", "_flight", "name")

    def __init__(self, flights: Flights, name: Hashable) -> None:
        self._flights = flights
        self._flight: Flight | None = None
        self.name = name

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the name; wait for it (at most ``timeout`` seconds) unless ``blocking`` is false."""
        give_up = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while True:
            flight, leader = self._flights.begin(self.name)
            if leader:
                flight.owner = threading.get_ident()
                self._flight = flight
                return True
            now = time.monotonic()
            if not blocking or (give_up is not None and now >= give_up):
                return False
            until = flight.deadline if give_up is None else min(flight.deadline, give_up)
            flight.wait(max(0.0, until - now))

    def release(self) -> None:
        """Give the name back; ``RuntimeError`` when this handle does not hold it."""
        flight = self._flight
        if flight is None:
            raise RuntimeError(f"release of lease lock {self.name!r}, which this handle does not hold")
        self._flight = None
        self._flights.finish(flight)  # frees the name only if this lease still holds it

    def locked(self) -> bool:
        """Whether the name is held now, through this handle or another."""
        return self._flights.running(self.name)

    def __repr__(self) -> str:
        return f"LeaseLock({self.name!r}, {'locked' if self.locked() else 'free'})"
