"""Background work: a small bounded thread pool and a timer scheduler owned by one store.

The store's refresh-ahead loads, periodic refreshes, delayed deletes, index
refreshers, checkpoints and sweeps all run here, so a store never starts more
than ``workers`` pool threads plus one timer thread, and ``close()`` stops all of
it in one place. Threads start lazily: a store that never schedules anything
starts no thread.

Rules (also in the README, "Decisions"):

- Times are real elapsed time (``time.monotonic``), never the injected clock.
- A job's exception is logged on the ``"tierstore"`` logger, counted in
  ``errors`` and passed to the job's ``on_error`` callback when one was given.
- ``every`` runs with a fixed rate but never overlaps itself: the next run is
  due ``interval`` seconds after the previous one *started*, or at once when
  that run took longer than ``interval``. The first run is due after
  ``first_delay`` (default: ``interval``).
- ``close()`` cancels every timer, drops jobs that are queued but not started,
  and waits for running jobs (up to ``timeout``); it is idempotent and safe to
  call from a job (that job is not waited for).
- ``drain()`` waits for the jobs queued or running when it is called and for
  timers already due then; jobs submitted later, and timers due later, do not
  count. Called from a job, it does not wait for that job itself.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .clock import check_seconds, wait_bound
from .errors import StoreClosed

__all__ = ["Scheduler", "Handle"]

log = logging.getLogger("tierstore")

ErrorCallback = Callable[[BaseException], None]


class _Job:
    """One unit of work: a one-shot call or a periodic one (``interval`` set)."""

    __slots__ = ("fn", "on_error", "due", "interval", "cancelled", "seq")

    def __init__(
        self, fn: Callable[[], object], on_error: ErrorCallback | None, due: float, interval: float | None, seq: int
    ) -> None:
        self.fn = fn
        self.on_error = on_error
        self.due = due
        self.interval = interval
        self.cancelled = False
        self.seq = seq

    def __lt__(self, other: _Job) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


class Handle:
    """A scheduled job: ``cancel()`` stops future runs (a run in progress finishes)."""

    __slots__ = ("_job",)

    def __init__(self, job: _Job) -> None:
        self._job = job

    def cancel(self) -> None:
        """Stop the job's future runs; idempotent, never blocks."""
        self._job.cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled


class Scheduler:
    """A bounded pool of daemon threads plus one timer thread, on real elapsed time."""

    def __init__(self, workers: int = 2, name: str = "tierstore") -> None:
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.name = name
        self.errors = 0
        self._max_workers = workers
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Job] = deque()
        self._timers: list[_Job] = []
        self._running: dict[int, _Job] = {}  # thread ident -> job it runs
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._timer_thread: threading.Thread | None = None
        self._seq = itertools.count()
        self._closed = False

    # -- scheduling -------------------------------------------------------------------

    def submit(self, fn: Callable[[], object], *, on_error: ErrorCallback | None = None) -> None:
        """Run ``fn()`` soon on the pool."""
        _check_callable(fn)
        with self._cond:
            self._check_open()
            self._enqueue(_Job(fn, on_error, time.monotonic(), None, next(self._seq)))

    def after(self, delay_seconds: float, fn: Callable[[], object], *, on_error: ErrorCallback | None = None) -> Handle:
        """Run ``fn()`` once, ``delay_seconds`` from now."""
        delay = _check_delay(delay_seconds, "delay_seconds", allow_zero=True)
        _check_callable(fn)
        return self._schedule(fn, delay, None, on_error)

    def every(
        self,
        interval_seconds: float,
        fn: Callable[[], object],
        *,
        first_delay: float | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Handle:
        """Run ``fn()`` every ``interval_seconds`` until cancelled, never two runs at once."""
        interval = _check_delay(interval_seconds, "interval_seconds", allow_zero=False)
        first = interval if first_delay is None else _check_delay(first_delay, "first_delay", allow_zero=True)
        _check_callable(fn)
        return self._schedule(fn, first, interval, on_error)

    def _schedule(
        self, fn: Callable[[], object], delay: float, interval: float | None, on_error: ErrorCallback | None
    ) -> Handle:
        with self._cond:
            self._check_open()
            job = _Job(fn, on_error, time.monotonic() + delay, interval, next(self._seq))
            self._arm(job)
        return Handle(job)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"scheduler {self.name!r} is closed")

    # -- under self._cond ---------------------------------------------------------------

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        if self._idle:
            self._cond.notify_all()
        elif len(self._threads) < self._max_workers:
            self._start_thread(self._work, f"{self.name}-worker-{len(self._threads)}", self._threads)

    def _arm(self, job: _Job) -> None:
        heapq.heappush(self._timers, job)
        if self._timer_thread is None:
            self._timer_thread = self._start_thread(self._tick, f"{self.name}-timer", None)
        elif self._timers[0] is job:
            self._cond.notify_all()  # the timer thread sleeps until an older, later due time

    def _start_thread(
        self, target: Callable[[], None], name: str, registry: list[threading.Thread] | None
    ) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        if registry is not None:
            registry.append(thread)
        thread.start()
        return thread

    def _drop_cancelled_head(self) -> None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)

    # -- threads --------------------------------------------------------------------------

    def _tick(self) -> None:
        """The timer thread: moves due timers onto the pool's queue."""
        with self._cond:
            while not self._closed:
                self._drop_cancelled_head()
                if not self._timers:
                    self._cond.wait()
                    continue
                wait = self._timers[0].due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait_bound(wait))
                    continue
                self._enqueue(heapq.heappop(self._timers))

    def _work(self) -> None:
        """A pool thread: runs queued jobs until the scheduler closes."""
        me = threading.get_ident()
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if self._closed:
                    return
                job = self._queue.popleft()
                if job.cancelled:
                    self._cond.notify_all()
                    continue
                self._running[me] = job
                self._cond.release()
                try:
                    started = time.monotonic()
                    self._run(job)
                finally:
                    self._cond.acquire()
                    del self._running[me]
                    if job.interval is not None and not job.cancelled and not self._closed:
                        job.due = max(started + job.interval, time.monotonic())
                        job.seq = next(self._seq)
                        self._arm(job)
                    self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        try:
            job.fn()
        except BaseException as exc:  # a background job must never kill its thread
            self._report(job, exc)

    def _report(self, job: _Job, exc: BaseException) -> None:
        with self._cond:
            self.errors += 1
        log.error("%s: background job %r failed", self.name, job.fn, exc_info=exc)
        if job.on_error is not None:
            try:
                job.on_error(exc)
            except Exception:
                log.exception("%s: on_error callback of %r failed", self.name, job.fn)

    # -- waiting and stopping -------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for work queued or running now and timers already due; ``False`` on timeout."""
        start = time.monotonic()
        deadline = None if timeout is None else start + _check_delay(timeout, "timeout", allow_zero=True)
        me = threading.get_ident()
        with self._cond:
            while self._busy_before(start, me):
                if self._closed:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(wait_bound(remaining))
            return not self._busy_before(start, me)

    def _busy_before(self, moment: float, me: int) -> bool:
        """Whether a job due at or before ``moment`` is queued, armed or running (not ours)."""
        self._drop_cancelled_head()
        if self._timers and self._timers[0].due <= moment:
            return True
        if any(job.due <= moment and not job.cancelled for job in self._queue):
            return True
        return any(ident != me for ident in self._running)

    def close(self, timeout: float | None = None) -> bool:
        """Cancel timers, drop queued jobs, wait for running ones; ``False`` if some still run."""
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + _check_delay(timeout, "timeout", allow_zero=True)
        with self._cond:
            if not self._closed:
                self._closed = True
                for job in itertools.chain(self._timers, self._queue):
                    job.cancelled = True
                self._timers.clear()
                self._queue.clear()
                self._cond.notify_all()
            while any(ident != me for ident in self._running):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(wait_bound(remaining))
            threads = [*self._threads, *([self._timer_thread] if self._timer_thread else [])]
        for thread in threads:
            if thread.ident != me:
                thread.join(wait_bound(None if deadline is None else max(0.0, deadline - time.monotonic())))
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads(self) -> int:
        """How many pool threads were started (at most ``workers``)."""
        return len(self._threads)


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")


def _check_delay(value: object, name: str, *, allow_zero: bool) -> float:
    seconds = check_seconds(value, name, allow_zero=allow_zero)
    assert seconds is not None  # not optional, so never None
    return seconds
