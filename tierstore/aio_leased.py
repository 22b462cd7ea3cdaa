"""``get_or_load`` for coroutines when other processes load the same keys: the load lease, awaited.

``AsyncLeasedLoading`` is ``aio_loading.AsyncLoading`` for a store in shared
mode, with the rules of ``loading`` for leases (``Loading._run_leased``) and
every Redis round trip awaited (``AsyncLease``, ``AsyncReads``: the shared
tier's steps on the loop), so nothing blocks the loop:

- the lookup of a miss and the guard's answer are awaited reads (tier 2 when
  trusted, else Redis); the leader's second look reads this process's copy
  only (taking the lease answers Redis's);
- the leader takes the key's lease (waiting, woken by the fill's message, while
  another process holds it, unless ``on_busy`` answers), calls the loader and
  fills through the lease (the version rule and the token decided in Redis);
- a loader that raises, or a load cancelled because every caller left, frees the
  lease at once (the next call, in any process, loads without waiting for the
  lease to run out); a cancelled loader never stores, even one that swallows
  its cancellation and returns (its flight no longer admits a fill);
- renewals take the lease without waiting and skip while another process holds it.

This module imports nothing of the shared tier; the store's shared parts give it
the two protocols.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .aio_loading import AsyncLoading, invoke, is_coroutine_loader
from .codec import FLAGS, VALUE, Key, Record
from .entries import ABSENT
from .flight import NOTHING, STALE, WAIT, Flight, Flights
from .load_lease import BUSY, Held
from .loading import Loading
from .options import Options
from .stats import Stats

__all__ = ["AsyncLease", "AsyncLeasedLoading", "AsyncReads"]


class AsyncLease(Protocol):
    """``load_lease.LoadLease``'s calls as coroutines."""

    async def acquire(self, key: Key, wait: bool, give_up: float | None) -> Held | Record | None: ...

    async def try_take(self, key: Key) -> Held | None: ...

    async def fill(self, key: Key, held: Held, value: Any, version: int | None, ttl: Any, load_time: float) -> bool: ...

    async def release(self, key: Key, held: Held) -> None: ...


class AsyncReads(Protocol):
    """The reads loading makes, as coroutines."""

    async def lookup(self, key: Key) -> tuple[Record | None, str]:
        """The stored record of ``key`` and the stat a hit on it counts in (``TierStore._lookup``)."""
        ...

    async def read(self, key: Key) -> Record | None:
        """The stored record of ``key``, tombstones and expired ones included (``TierStore._read``)."""
        ...

    def held(self, key: Key) -> tuple[Record | None, str]:
        """The copy of ``key`` this process holds, Redis not asked, and its hit stat (``LoadLease.held``)."""
        ...

    async def might_contain(self, key: Key) -> bool | None:
        """The existence filter's answer; ``None`` without one."""
        ...


class AsyncLeasedLoading(AsyncLoading):
    """The coroutine side of a shared store's loading (see the module doc)."""

    def __init__(
        self,
        loading: Loading,
        flights: Flights,
        options: Options,
        stats: Stats,
        path: str,
        *,
        lease: AsyncLease,
        reads: AsyncReads,
    ) -> None:
        super().__init__(loading, flights, _no_blocking_lookup, options, stats, path)
        self._lease = lease
        self._reads = reads

    async def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        ttl: Any = ...,
        on_busy: str = WAIT,
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """As ``AsyncLoading.get_or_load``, one load across processes (``Loading._run_leased``'s rules)."""
        loading = self._loading
        loading.check_load_args(loader, ttl, on_busy, wait_timeout)
        if loading.joins_running_load(key, on_busy):
            record, hit_stat = self._reads.held(key)  # the running load's take answers Redis's
        else:
            record, hit_stat = await self._reads.lookup(key)
        answer, stale = loading.stored_answer(key, record, hit_stat, loader, ttl, default, self._renew)
        if answer is not NOTHING:
            return answer
        answer = loading.screen_miss(key, default, await self._reads.might_contain(key))
        if answer is not NOTHING:
            return answer
        coroutine = is_coroutine_loader(loader)
        give_up = None if wait_timeout is None else time.monotonic() + wait_timeout
        wait = on_busy == WAIT or (on_busy == STALE and stale is NOTHING)
        busy: Callable[[], Any] = lambda: loading.busy_answer(on_busy, stale, default)  # noqa: E731

        def start(flight: Flight) -> None:
            load = lambda: self._load_leased(flight, key, loader, ttl, coroutine, wait, give_up)  # noqa: E731
            self._start(flight, self._lead(flight, load), cancellable=True)

        while True:  # BUSY: the leader took its own answer; a follower follows its own policy (wait: lead)
            left = None if give_up is None else max(0.0, give_up - time.monotonic())
            value = await self._aflights.run(key, start, on_busy=on_busy, busy=busy, wait_timeout=left)
            if value is not BUSY:
                return default if value is ABSENT else value
            answer = NOTHING if wait else busy()
            if answer is not NOTHING:
                return answer

    async def _load_leased(
        self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any, coroutine: bool, wait: bool,
        give_up: float | None,
    ) -> Any:  # fmt: skip
        """A foreground load as leader: check again, take the lease, load and fill; ``BUSY`` when not waiting.

        The second look reads this process's copy only: taking the lease answers what Redis holds.
        """
        found = self._loading.filled_by(self._reads.held(key)[0])
        if found is not NOTHING:
            return found
        taken = await self._lease.acquire(key, wait, give_up)
        if not isinstance(taken, Held):  # busy, or filled by another process: a live or negative record
            return BUSY if taken is None else (ABSENT if taken[FLAGS] else taken[VALUE])
        self._stats.counts["loads"]()
        try:
            return await self._fill_held(flight, key, loader, ttl, coroutine, taken)
        except BaseException as exc:
            self.count_failure(exc)
            raise

    async def _renewal(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any) -> Any:
        """A renewal: ``BUSY`` (skipped) while another process holds the lease."""
        held = await self._lease.try_take(key)
        if held is None:
            return BUSY
        return await self._fill_held(flight, key, loader, ttl, is_coroutine_loader(loader), held)

    async def _fill_held(
        self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any, coroutine: bool, held: Held
    ) -> Any:
        """Call the loader and fill through the lease; on any error or cancellation free the lease first.

        A load its callers all left (a loader that swallowed its cancellation and returned) fills nothing."""
        try:
            started = time.monotonic()
            value, version = self._loading.loaded(key, await invoke(loader, coroutine, flight))
            if not self._flights.admits(flight):
                await self._lease.release(key, held)
                self._stats.counts["fills_rejected"]()
            elif not await self._lease.fill(key, held, value, version, ttl, time.monotonic() - started):
                self._stats.counts["fills_rejected"]()
            return value
        except BaseException:
            await self._lease.release(key, held)  # at once: the next caller, anywhere, loads in turn
            raise


def _no_blocking_lookup(key: Key) -> tuple[Record | None, str]:
    raise AssertionError("a shared store's asyncio loading reads through AsyncReads")
