"""``get_or_load`` for coroutines: the rules of ``loading`` with loads run as tasks on the caller's loop.

The hit path reads tiers 1 and 2 inline (microseconds, no thread hop); a miss
goes through the one flight table (``aio_flight``) that threads use too. The
caller that starts a flight starts a task that leads it:

- a coroutine function as loader (or a ``functools.partial`` of one) is awaited
  in that task; any other callable runs in a thread (``asyncio.to_thread``: the
  loop's default executor, with the caller's context variables), since it may
  block, and what it returns is awaited in the task when it is awaitable (so
  ``lambda: fetch(key)`` works, one thread hop slower than ``partial(fetch, key)``);
- the task re-checks the tiers (another flight may have filled the key), calls
  the loader and fills through ``Loading.fill_loaded`` (the version rule, fills
  dropped after a write or past the lease), then ends the flight for every
  waiter, threads and coroutines alike;
- the loader's coroutine runs in a task of its own (``_in_own_task``), so a cancelled
  load ends at once even when its loader ignores the cancellation;
- cancelled because every caller left (``aio_flight``), it ends the flight at
  once and stores nothing; a plain loader's thread cannot be stopped: its result
  is dropped. Cancelled by its loop while callers follow (``cancel_all`` at
  close, the loop shutting down), it *interrupts* the flight: callers on other
  loops and in threads load again (``Flights.interrupt``); a loader that raises
  ``CancelledError`` of its own, its task not cancelled, fails its callers as any error.

Renewals ahead of expiry (refresh-ahead, XFetch) run as background tasks on the
loop, single-flight with the rest and rate limited as in ``loading``. The tasks
are kept referenced until they end (never "destroyed but pending"), and their
outcomes are always retrieved.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .aio_flight import AsyncFlights, lead_context
from .codec import Key, RecordState
from .entries import ABSENT
from .flight import NOTHING, WAIT, Flight, Flights
from .load_lease import BUSY
from .loaded_value import close_unawaited, is_coroutine_function
from .loading import Loading
from .options import Options
from .stats import Stats

__all__ = ["AsyncLoading", "invoke", "is_coroutine_loader"]

log = logging.getLogger("tierstore")

_LIVE, _NEGATIVE, _STALE = RecordState.LIVE, RecordState.NEGATIVE, RecordState.STALE


def is_coroutine_loader(loader: object) -> bool:
    """Whether ``loader`` is a coroutine function (awaited in a task) rather than a plain one (run in a thread).

    A callable marked as one (``mark_coroutine_function``, as ``AsyncTierStore.cached`` marks its
    functions) counts on every Python version: ``inspect`` reads the mark only from 3.12 on.
    """
    return is_coroutine_function(loader) or getattr(loader, "_is_coroutine", None) is _ASYNCIO_MARK


_ASYNCIO_MARK = getattr(asyncio.coroutines, "_is_coroutine", None)  # asyncio's own mark (asgiref sets it too)


def mark_coroutine_function(obj: Any) -> None:
    """Mark a callable object that returns coroutines so that frameworks await it: ``inspect`` (3.12+),
    ``asyncio.iscoroutinefunction`` and ``asgiref`` (Django's async views) see a coroutine function."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(obj)
    if _ASYNCIO_MARK is not None:
        obj._is_coroutine = _ASYNCIO_MARK


class AsyncLoading:
    """The coroutine side of one store's loading, over its ``Loading``, ``Flights`` and lookup."""

    def __init__(
        self,
        loading: Loading,
        flights: Flights,
        lookup: Callable[[Key], tuple[Any, str]],
        options: Options,
        stats: Stats,
        path: str,
    ) -> None:
        self._loading = loading
        self._flights = flights
        self._aflights = AsyncFlights(flights)
        self._lookup = lookup
        self._options = options
        self._clock = options.clock
        self._stats = stats
        self._path = path
        self._tasks: dict[asyncio.Task[None], Flight] = {}  # leaders and renewals running now, and their flights

    async def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        ttl: Any = ...,
        on_busy: str = WAIT,
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """The value of ``key``; on a miss ``loader`` runs once across threads and coroutines (see the module doc)."""
        loading = self._loading
        loading.check_load_args(loader, ttl, on_busy, wait_timeout)
        record, hit_stat = self._lookup(key)
        answer, stale = loading.stored_answer(key, record, hit_stat, loader, ttl, default, self._renew)
        if answer is not NOTHING:
            return answer
        answer = loading.screen_miss(key, default)
        if answer is not NOTHING:
            return answer
        coroutine = is_coroutine_loader(loader)
        value = await self._aflights.run(
            key,
            lambda flight: self._start(
                flight, self._lead(flight, lambda: self._load(flight, key, loader, ttl, coroutine)), cancellable=True
            ),
            on_busy=on_busy,
            busy=lambda: loading.busy_answer(on_busy, stale, default),
            wait_timeout=wait_timeout,
        )
        return default if value is ABSENT else value

    def _start(self, flight: Flight, body: Any, *, cancellable: bool) -> None:
        """Run ``body`` as the task leading ``flight``; with ``cancellable``, the last caller to leave cancels it."""
        loop = asyncio.get_running_loop()
        task: asyncio.Task[None] = lead_context(flight).run(loop.create_task, body)
        self._tasks[task] = flight
        flights = self._flights

        def ended(task: asyncio.Task[None]) -> None:
            self._tasks.pop(task, None)
            if not flight.done:  # cancelled before its first step: its body never ran to end the flight
                flights.interrupt(flight, loop, asyncio.CancelledError())

        task.add_done_callback(ended)
        if cancellable:
            flight.cancel = lambda: _cancel_soon(loop, task)

    async def _lead(self, flight: Flight, load: Callable[[], Awaitable[Any]]) -> None:
        """The leader task of a load: its outcome goes to the flight's waiters, never to the task."""
        try:
            value = await load()
        except BaseException as exc:
            self._end(flight, exc)
            if not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise  # KeyboardInterrupt, SystemExit: the loop's to handle
            return
        if not flight.done:  # else ended by ``cancel_all`` while its loader ignored the cancellation
            self._flights.finish(flight, value)

    def _end(self, flight: Flight, exc: BaseException) -> None:
        """End the flight this task leads with what it raised: interrupted when the task itself was
        cancelled (its loop's doing, not the loader's error: callers elsewhere load again)."""
        task = asyncio.current_task()
        if flight.done:
            return  # ended by ``cancel_all`` while its loader ignored the cancellation
        if isinstance(exc, asyncio.CancelledError) and task is not None and _cancelled_itself(task):
            self._flights.interrupt(flight, task.get_loop(), exc)
        else:
            self._flights.finish(flight, error=exc)

    async def _load(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any, coroutine: bool) -> Any:
        """A foreground load as leader: check again, call the loader, fill; the plain value."""
        value = self._loading.filled_since(key)
        if value is NOTHING:
            self._stats.counts["loads"]()
            try:
                value = await self._call(flight, key, loader, ttl, coroutine)
            except BaseException as exc:
                self.count_failure(exc)
                raise
        return value

    def count_failure(self, exc: BaseException) -> None:
        """Count a foreground load's failure in ``load_errors``; not its task's cancellation (every caller
        left, or its loop stopped it): the loader did not fail."""
        if not isinstance(exc, asyncio.CancelledError) or not _cancelled_itself(asyncio.current_task()):
            self._stats.counts["load_errors"]()

    async def _call(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any, coroutine: bool) -> Any:
        """Call the loader (awaited, or in a thread) and fill from its result; the plain value."""
        started = time.monotonic()
        result = await invoke(loader, coroutine, flight)
        return self._loading.fill_loaded(key, result, ttl, flight, time.monotonic() - started)

    def _renew(self, key: Key, loader: Callable[[], Any], ttl: Any, seen_seq: int) -> None:
        """Start one background renewal task of ``key`` unless one runs or ran too recently (as ``loading``)."""
        flight = self._loading.renewal_flight(key, seen_seq)
        if flight is not None:
            self._start(flight, self._refresh(flight, key, loader, ttl), cancellable=False)

    async def _refresh(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any) -> None:
        """A renewal: failures are logged and counted, the old value stays."""
        try:
            value = await self._renewal(flight, key, loader, ttl)
        except BaseException as exc:
            self._end(flight, exc)
            if isinstance(exc, Exception):
                self._stats.counts["refresh_errors"]()
                log.warning("%s: background refresh of %r failed; the old value stays", self._path, key, exc_info=True)
            elif not isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not flight.done:
            self._flights.finish(flight, value)
        if value is not BUSY:
            self._stats.counts["refreshes"]()

    async def _renewal(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any) -> Any:
        """A renewal's load and fill; the plain value (``BUSY``: skipped, another process renews)."""
        return await self._call(flight, key, loader, ttl, is_coroutine_loader(loader))

    async def cancel_all(self) -> None:
        """Cancel the tasks of this loop still running (at close) and wait for them to end, at most
        ``lock_timeout`` (as the store's close waits for its threads): a loader that ignores its
        cancellation has its flight interrupted instead, so neither ``close`` nor its callers wait on it."""
        loop = asyncio.get_running_loop()
        mine = [task for task in list(self._tasks) if task.get_loop() is loop]
        for task in mine:
            task.cancel()
        if not mine:
            return
        _, stubborn = await asyncio.wait(mine, timeout=self._options.lock_timeout)
        for task in stubborn:
            flight = self._tasks.get(task)
            if flight is not None and not flight.done:
                self._flights.interrupt(flight, loop, asyncio.CancelledError())


async def invoke(loader: Callable[[], Any], coroutine: bool, flight: Flight | None = None) -> Any:
    """What ``loader`` returns: awaited when a coroutine function, else called in a thread (an awaitable
    it returns is awaited here: ``lambda: fetch(k)`` works, one thread hop later). That thread owns
    ``flight`` while the loader runs: a blocking ``get_or_load`` of its own key there is refused at once."""
    if coroutine:
        return await _in_own_task(loader())
    call = _InThread(loader, flight)
    try:
        result = await asyncio.to_thread(call)
    except BaseException:
        call.leave()  # an awaitable it returns now is closed, never left unawaited
        raise
    return (await _in_own_task(result)) if inspect.isawaitable(result) else result


_DETACHED: set[asyncio.Future[Any]] = set()  # loaders still running after their load was cancelled


async def _in_own_task(awaitable: Any) -> Any:
    """What ``awaitable`` gives, awaited in a task of its own: a cancelled load ends at once (its lease
    freed, its flight ended) even when the loader ignores the cancellation; such a loader is left to
    end by itself, referenced until it does and its outcome retrieved (never stored: its load is over)."""
    inner = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait((inner,))
    except BaseException:
        inner.cancel()
        if not inner.done():
            _DETACHED.add(inner)
            inner.add_done_callback(_forget)
        raise
    return inner.result()


def _forget(inner: asyncio.Future[Any]) -> None:
    _DETACHED.discard(inner)
    if not inner.cancelled():
        inner.exception()  # retrieved: no "exception was never retrieved" for an outcome nobody wants


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Cancel ``task`` from any thread (a thread or another loop may be the last caller to leave)."""
    try:
        loop.call_soon_threadsafe(task.cancel)
    except RuntimeError:
        pass  # its loop is closed: the task is gone with it


class _InThread:
    """A plain loader's call in a thread. An awaitable it returns after its caller left is closed
    (a coroutine nobody awaits would warn "never awaited"). Thread-safety: ``leave`` may run
    while the call runs; a lock orders them."""

    def __init__(self, loader: Callable[[], Any], flight: Flight | None) -> None:
        self._loader = self.__wrapped__ = loader  # __wrapped__: what it calls, for introspection
        self._flight = flight
        self._lock = threading.Lock()
        self._left = False
        self._pending: Any = None

    def __call__(self) -> Any:
        flight = self._flight
        if flight is None:
            result = self._loader()
        else:
            flight.owner = threading.get_ident()  # as a thread leading a load: reentry is refused
            try:
                result = self._loader()
            finally:
                flight.owner = None  # the pool thread goes on to other work
        if inspect.isawaitable(result):
            with self._lock:
                if not self._left:
                    self._pending = result
                    return result
            close_unawaited(result)
            return None
        return result

    def leave(self) -> None:
        with self._lock:
            self._left = True
            pending, self._pending = self._pending, None
        if pending is not None:
            close_unawaited(pending)


def _cancelled_itself(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` was cancelled (``Task.cancelling``, Python 3.11+). Python 3.10 cannot tell it
    from a loader raising ``CancelledError`` of its own: there a leader's ``CancelledError`` counts as
    its task's cancellation."""
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0
