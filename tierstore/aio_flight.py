"""Single-flight for coroutines: the store's one flight table (``flight.Flights``), awaited without a thread.

A coroutine joins the same table threads use, so a thread and a coroutine asking
for one cold key cause one load. What this module adds:

- *Waiting*: a coroutine waits on a future of its own loop, resolved by the
  flight's ``listen`` hook when the flight ends (in the loop's thread at once, or
  through ``call_soon_threadsafe`` from any other thread or loop); a timer at the
  lease's end or at ``wait_timeout`` resolves it too. Nothing blocks the loop.
- *Leading*: the caller that starts a flight hands its load to ``start``, which
  runs it as a task (see ``aio_loading``) and sets ``flight.cancel``; the caller
  then waits for it like any other. So every caller is a follower, counted in
  ``Flight.following`` while it waits (threads count too, see ``flight``).
- *Cancellation*: a waiter that is cancelled (or times out) stops waiting and
  leaves; the load goes on for the others. When the last caller leaves a flight
  led by a task, the table abandons it (detached at once: the next caller loads
  at once) and cancels the task, whose result is never stored. A follower woken
  by an abandoned flight starts or joins the next one.
- *Interruption*: a leader task its own loop cancels while callers follow it
  (``close`` on that loop, the loop shutting down) ends its flight through
  ``Flights.interrupt``: followers on that loop get ``TierStoreError``
  ("interrupted"), followers on other loops (and threads) start or join the
  next flight, so one loop's close never fails another loop's callers.
- *Reentry*: a loader awaiting its own key (from its task or a task it started)
  would wait for itself: ``RuntimeError`` at once, as in the threaded path.

Thread-safety: every call may run in any thread's loop at once; the state is the
table's, under its lock. The futures are each of their own loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .errors import LoadTimeout
from .flight import NOTHING, WAIT, Flight, Flights

__all__ = ["AsyncFlights", "leading", "lead_context"]

# The flights the current task (or one of its parents) leads: awaiting one of them would deadlock.
_LEADING: contextvars.ContextVar[frozenset[Flight]] = contextvars.ContextVar("tierstore_leading", default=frozenset())


def leading() -> frozenset[Flight]:
    """The flights led by the current context."""
    return _LEADING.get()


def lead_context(flight: Flight) -> contextvars.Context:
    """A copy of the current context in which ``flight`` is being led (the context of its task)."""
    context = contextvars.copy_context()
    context.run(_LEADING.set, _LEADING.get() | {flight})
    return context


class AsyncFlights:
    """Coroutines' access to a ``Flights`` table: lead through a task, follow through a future."""

    def __init__(self, flights: Flights) -> None:
        self._flights = flights

    async def run(
        self,
        key: Hashable,
        start: Callable[[Flight], None],
        *,
        on_busy: str = WAIT,
        busy: Callable[[], Any] | None = None,
        wait_timeout: float | None = None,
    ) -> Any:
        """Load ``key`` once across threads and coroutines; the flight's result.

        A caller that starts the flight calls ``start(flight)`` (which must not block:
        it starts a task) and waits for it without a time limit, as the leader of a
        threaded load does; a caller that finds one running follows ``on_busy``, and
        waits at most ``wait_timeout`` seconds in all (then ``LoadTimeout``).
        """
        flights = self._flights
        loop = asyncio.get_running_loop()
        give_up = None if wait_timeout is None else time.monotonic() + wait_timeout
        counted = False
        while True:
            flight, leader = flights.begin(key)
            if leader:
                start(flight)
                limit = None  # its own load: waited for to its end, as a threaded leader runs its loader
            else:
                if on_busy != WAIT and busy is not None:
                    answer = busy()
                    if answer is not NOTHING:
                        return answer
                _refuse_reentry(flight)
                flights.note_wait(flight, count=not counted)
                counted = True
                limit = give_up
            if await self._follow(flight, limit, until_lease=not leader):
                if flight.starts_over(loop):
                    continue  # abandoned as this one joined, or interrupted by another loop: start over
                return flight.result()
            if limit is not None and time.monotonic() >= limit:
                raise LoadTimeout(f"the load of {key!r} did not end within wait_timeout={wait_timeout}s")

    async def _follow(self, flight: Flight, give_up: float | None, *, until_lease: bool) -> bool:
        """Wait for ``flight`` until it ends, its lease ends (``until_lease``) or ``give_up``; ``True`` when it ended.

        Cancelled, the caller leaves: the last to leave a task's flight cancels the task.
        """
        flights = self._flights
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        wake = _waker(loop, waiter)
        flights.follow(flight)
        timer: asyncio.TimerHandle | None = None
        try:
            if not flights.listen(flight, wake):
                return True
            until = flight.deadline if until_lease else None
            if give_up is not None:
                until = give_up if until is None else min(until, give_up)
            if until is not None:
                timer = loop.call_at(loop.time() + max(0.0, until - time.monotonic()), _resolve, waiter)
            await waiter
            return flight.done
        finally:
            if timer is not None:
                timer.cancel()
            flights.unlisten(flight, wake)
            flights.leave(flight)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _waker(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> Callable[[], None]:
    """What the flight's finisher calls: resolve ``waiter`` in its loop, from whatever thread finishes."""
    owner = threading.get_ident()

    def wake() -> None:
        if threading.get_ident() == owner:
            _resolve(waiter)
            return
        try:
            loop.call_soon_threadsafe(_resolve, waiter)
        except RuntimeError:
            pass  # that loop is closed: nobody waits there any more

    return wake


def _refuse_reentry(flight: Flight) -> None:
    """A loader awaiting its own key would wait for itself: ``RuntimeError``, as for a thread."""
    if flight in _LEADING.get() and not flight.done:
        raise RuntimeError(
            f"a loader of {flight.key!r} awaited get_or_load of its own key; "
            "it would wait for itself (load the value directly, or use another key)"
        )
