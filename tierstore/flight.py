"""Single-flight: one loader per key, leases, waiters, busy policies and fill generations.

This module knows nothing of tiers or LevelDB; the store hands it callables.

- A *flight* is one load of one key. The first caller to miss starts it (the
  leader); the others follow ``on_busy``: ``"wait"`` for its result,
  ``"stale"`` or ``"default"`` take a fallback the store supplies (``"stale"``
  waits when the store has no stale value).
- A flight holds its key for a *lease* of ``lease`` seconds (real elapsed time).
  Past it, the flight is detached: the next caller starts a new one, waiters
  stop waiting for it and start or join the new one, and its late result is
  returned to its own caller but never stored.
- *Fill generations*: ``invalidate(key)`` (called by every set, delete and
  invalidate) detaches the key's flight, so a load that began before the write
  never fills the cache, while callers arriving after the write start a fresh
  load. Only keys with a flight in progress carry any state, so memory stays
  bounded by the loads running now.
- A leader that raises: its waiters get the same exception object (re-raised
  with the leader's traceback); a ``BaseException`` that is not an
  ``Exception`` (such as ``KeyboardInterrupt``) reaches waiters as a
  ``TierStoreError`` whose ``__cause__`` is it. Nothing is kept: the key is free.
- A flight *interrupted* (``interrupt``: its leader task cancelled by its own
  loop, at ``close`` or as the loop shuts down) ended through no error of the
  loader: callers in other scopes (threads, other loops) start or join the next
  flight, as after an abandon (it reloads, or finds the value if one landed);
  callers in the interrupted scope get the ``TierStoreError`` above.
- A caller that would wait for a load its own thread is running (a loader
  asking for its own key) raises ``RuntimeError`` at once instead.
- ``invalidate_prefix(prefix)`` does the same for every key in flight that
  starts with ``prefix`` (a str prefix: str keys; bytes: bytes keys; ``None``:
  every key), for ``delete_prefix`` and ``clear``: a load of such a key that
  began before it never fills the cache, whether or not the key was stored.
- Coroutines (``aio_flight``) share the table: ``listen`` wakes them when a flight
  ends, ``follow``/``leave`` count every caller waiting now (threads and
  coroutines), and a flight led by a cancellable task is *abandoned* when its
  last caller leaves: detached at once, so the next caller loads; a follower
  woken by an abandoned flight starts or joins the next one.
- Renewals (loads of a key that still has a value to serve) are rate limited
  per key by ``claim_renewal``; only keys renewed in the last interval are kept.
- A lease runs from ``begin``: a background load queued behind busy workers uses
  up its lease while it waits, and past it its result is not stored either.
- A late fill is refused even when no newer load replaced it: past its lease a
  flight's result is never stored (as with memcache leases).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any, Final

from .clock import wait_bound
from .errors import LoadTimeout, TierStoreError
from .stats import Stats

__all__ = ["Flight", "Flights", "POLICIES", "WAIT", "STALE", "DEFAULT", "NOTHING", "check_policy"]

WAIT: Final = "wait"
STALE: Final = "stale"
DEFAULT: Final = "default"
POLICIES: Final = (WAIT, STALE, DEFAULT)


class _Nothing:
    """The type of ``NOTHING``: a busy fallback that has nothing to give (so: wait)."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Final = _Nothing()

_PRUNE_FLOOR = 1024


def check_policy(on_busy: object) -> str:
    """Validate an ``on_busy`` policy name."""
    if on_busy not in POLICIES or not isinstance(on_busy, str):
        raise ValueError(f"on_busy must be one of {', '.join(map(repr, POLICIES))}, got {on_busy!r}")
    return on_busy


class Flight:
    """One load of one key: its lease, its result and the event its waiters wait on."""

    __slots__ = (
        "key", "deadline", "waiters", "owner", "following", "cancel", "abandoned", "interrupted_in", "listeners",
        "_done", "_value", "_error", "_traceback",
    )  # fmt: skip

    def __init__(self, key: Hashable, deadline: float) -> None:
        self.key = key
        self.deadline = deadline
        self.owner: int | None = None  # the thread running the load, once it runs
        self.waiters = 0  # callers that waited on it (exact: counted under the table lock)
        self.following = 0  # callers waiting on it now, threads and coroutines (under the table lock)
        self.cancel: Callable[[], None] | None = None  # stops its leader (a task) once nobody follows
        self.abandoned = False  # cancelled because every caller left: followers start over
        self.interrupted_in: object = None  # the scope (an event loop) that stopped its leader: others start over
        self.listeners: list[Callable[[], None]] | None = None  # wake-ups of coroutines (aio_flight)
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._traceback: TracebackType | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Block until the flight ends or ``timeout`` passes; ``True`` when it ended."""
        return self._done.wait(wait_bound(timeout))

    def starts_over(self, scope: object) -> bool:
        """Whether a caller in ``scope`` (its event loop; ``None`` for a thread) woken by this ended
        flight starts or joins the next one rather than take its result (see the module doc)."""
        interrupted_in = self.interrupted_in
        return self.abandoned or (interrupted_in is not None and interrupted_in is not scope)

    def result(self) -> Any:
        """The loaded value, or raise what the loader raised."""
        error = self._error
        if error is not None:
            raise error.with_traceback(self._traceback)
        return self._value

    def _publish(self, value: Any, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, Exception):
            wrapped = TierStoreError(f"the loader of {self.key!r} was interrupted: {error!r}")
            wrapped.__cause__ = error
            error = wrapped
        self._value = value
        self._error = error
        self._traceback = None if error is None else error.__traceback__
        self._done.set()


class Flights:
    """The flights in progress, one per key, under one lock.

    ``in_flight`` is the live table; a writer may test it without the lock
    (``if flights.in_flight:``) to skip ``invalidate`` at nearly no cost.
    ``stats``, when given, gets ``load_waits`` incremented once per caller that waits.
    """

    def __init__(self, lease: float, stats: Stats | None = None) -> None:
        self.lease = lease
        self.in_flight: dict[Hashable, Flight] = {}
        self._lock = threading.Lock()
        self._stats = stats
        self._renewed: dict[Hashable, float] = {}
        self._prune_at = _PRUNE_FLOOR

    # -- the table ------------------------------------------------------------------------

    def begin(self, key: Hashable) -> tuple[Flight, bool]:
        """Join the key's live flight, or start one; ``(flight, True)`` when the caller leads."""
        now = time.monotonic()
        with self._lock:
            flight = self.in_flight.get(key)
            if flight is not None and now < flight.deadline:
                return flight, False
            flight = self.in_flight[key] = Flight(key, now + self.lease)
            return flight, True

    def running(self, key: Hashable) -> bool:
        """Whether a flight of ``key`` holds an unexpired lease."""
        flight = self.in_flight.get(key)
        return flight is not None and time.monotonic() < flight.deadline

    def admits(self, flight: Flight) -> bool:
        """Whether ``flight`` may still store its result: current, not invalidated, lease held."""
        with self._lock:
            return self.in_flight.get(flight.key) is flight and time.monotonic() < flight.deadline

    def finish(self, flight: Flight, value: Any = None, error: BaseException | None = None) -> None:
        """End ``flight``: free its key (if it still holds it) and wake its waiters."""
        with self._lock:
            if self.in_flight.get(flight.key) is flight:
                del self.in_flight[flight.key]
        flight._publish(value, error)
        if flight.listeners is not None:  # else a listen after the publish sees it done
            with self._lock:
                listeners, flight.listeners = flight.listeners, []
            for wake in listeners:
                wake()

    def interrupt(self, flight: Flight, scope: object, error: BaseException) -> None:
        """End ``flight`` whose leader ``scope`` stopped (not the loader's own error): callers in
        ``scope`` get ``error`` (as ``finish``), callers elsewhere start or join the next flight."""
        flight.interrupted_in = scope  # before the publish that wakes the callers
        self.finish(flight, error=error)

    def listen(self, flight: Flight, wake: Callable[[], None]) -> bool:
        """Call ``wake()`` (in the finishing thread) when ``flight`` ends; ``False`` when it has ended."""
        with self._lock:
            if flight.done:
                return False
            if flight.listeners is None:
                flight.listeners = []
            flight.listeners.append(wake)
        if flight.done:  # ended meanwhile: its finisher may have looked for listeners before the append
            self.unlisten(flight, wake)
            return False
        return True

    def unlisten(self, flight: Flight, wake: Callable[[], None]) -> None:
        """Forget a ``listen`` whose caller left."""
        with self._lock:
            if flight.listeners and wake in flight.listeners:
                flight.listeners.remove(wake)

    def follow(self, flight: Flight) -> None:
        """A caller (thread or coroutine) waits for ``flight`` now."""
        with self._lock:
            flight.following += 1

    def leave(self, flight: Flight) -> bool:
        """A caller stops waiting; ``True`` when that abandoned a cancellable flight nobody follows.

        An abandoned flight is detached at once (the next caller loads), its ``cancel()``
        is called (outside the lock), and what it loads is never stored.
        """
        with self._lock:
            flight.following -= 1
            cancel = flight.cancel
            if flight.following or cancel is None or flight.done or flight.abandoned:
                return False
            flight.abandoned = True
            if self.in_flight.get(flight.key) is flight:
                del self.in_flight[flight.key]
        cancel()
        return True

    def invalidate(self, key: Hashable) -> None:
        """A write to ``key``: the load in progress, if any, may no longer fill the cache."""
        with self._lock:
            self.in_flight.pop(key, None)

    def invalidate_prefix(self, prefix: str | bytes | None) -> int:
        """``invalidate`` every key in flight under ``prefix`` (``None``: all); how many were detached."""
        with self._lock:
            doomed = [key for key in self.in_flight if prefix is None or _under(key, prefix)]
            for key in doomed:
                del self.in_flight[key]
            return len(doomed)

    def lead(self, flight: Flight, load: Callable[[Flight], Any]) -> Any:
        """Run ``load(flight)`` as the flight's leader and publish its outcome."""
        flight.owner = threading.get_ident()
        try:
            value = load(flight)
        except BaseException as exc:
            self.finish(flight, error=exc)
            raise
        self.finish(flight, value)
        return value

    # -- the protocol -------------------------------------------------------------------------

    def run(
        self,
        key: Hashable,
        load: Callable[[Flight], Any],
        *,
        on_busy: str = WAIT,
        busy: Callable[[], Any] | None = None,
        wait_timeout: float | None = None,
    ) -> Any:
        """Load ``key`` once across callers: lead a flight, or follow the one in progress.

        A follower with ``on_busy`` other than ``"wait"`` returns ``busy()`` unless it
        returns ``NOTHING``; otherwise it waits, at most ``wait_timeout`` seconds in
        all (then ``LoadTimeout``). A follower whose leader's lease runs out starts
        or joins the next flight, so a hung loader never wedges its key.
        """
        give_up = None if wait_timeout is None else time.monotonic() + wait_timeout
        counted = False
        while True:
            flight, leader = self.begin(key)
            if leader:
                return self.lead(flight, load)
            if on_busy != WAIT and busy is not None:
                answer = busy()
                if answer is not NOTHING:
                    return answer
            _refuse_reentry(flight)
            self.note_wait(flight, count=not counted)
            counted = True
            if self._follow(flight, give_up):
                if flight.starts_over(None):
                    continue  # abandoned as this thread joined, or its task's loop stopped it: start over
                return flight.result()
            if give_up is not None and time.monotonic() >= give_up:
                raise LoadTimeout(f"the load of {key!r} did not end within wait_timeout={wait_timeout}s")

    def note_wait(self, flight: Flight, *, count: bool) -> None:
        """A caller waits for ``flight``: counted in ``waiters`` (and ``load_waits`` when ``count``)."""
        with self._lock:
            flight.waiters += 1
            if count and self._stats is not None:
                self._stats.counts["load_waits"]()

    def _follow(self, flight: Flight, give_up: float | None) -> bool:
        """Wait for ``flight`` until its lease ends or ``give_up``; ``True`` when it ended.

        The thread counts among the flight's callers meanwhile, so a task leading it is
        not cancelled under it.
        """
        until = flight.deadline if give_up is None else min(flight.deadline, give_up)
        self.follow(flight)
        try:
            return flight.wait(max(0.0, until - time.monotonic()))
        finally:
            self.leave(flight)

    # -- renewals ------------------------------------------------------------------------------

    def claim_renewal(self, key: Hashable, min_interval: float) -> bool:
        """Claim the key's next renewal: ``False`` if one was claimed less than ``min_interval`` ago."""
        if min_interval <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._renewed.get(key)
            if last is not None and now - last < min_interval:
                return False
            self._renewed.pop(key, None)
            self._renewed[key] = now  # re-inserted last: the dict stays in claim order
            if len(self._renewed) > self._prune_at:
                self._prune(now - min_interval)
            return True

    def _prune(self, horizon: float) -> None:
        for key, claimed in list(self._renewed.items()):
            if claimed >= horizon:
                break
            del self._renewed[key]
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._renewed))


def _under(key: Hashable, prefix: str | bytes) -> bool:
    """Whether ``key`` is of the prefix's kind (str or bytes) and starts with it."""
    if isinstance(prefix, str):
        return isinstance(key, str) and key.startswith(prefix)
    return isinstance(key, bytes) and key.startswith(prefix)


def _refuse_reentry(flight: Flight) -> None:
    """Refuse to wait for a load the calling thread is itself running (it would wait for itself).

    ``RuntimeError``, as for ``Thread.join`` of the current thread: it is a bug in
    the loader, not a condition of the store, so it is not a ``TierStoreError`` that
    code falling back to the source on store errors would swallow.
    """
    if flight.owner == threading.get_ident() and not flight.done:
        raise RuntimeError(
            f"a loader of {flight.key!r} called get_or_load on its own key in the same thread; "
            "it would wait for itself (load the value directly, or use another key)"
        )
