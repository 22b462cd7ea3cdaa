"""AsyncTierStore at its edges: a cached function's bad arguments, a wrapper closed before it opened,
and callers of every kind (threads, coroutines) on one load's outcome."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.aio.support import Gate, run, settle
from tierstore import BloomFilter, StoreClosed, TierStore, TierStoreError
from tierstore.aio import AsyncSortedIndex, AsyncTierStore
from tierstore.aio_index import INLINE_WALK


class Opaque:
    """An argument msgpack cannot encode: no cache key can be built from it."""


def test_a_cached_function_given_arguments_that_build_no_key_raises_at_the_await_as_an_async_def() -> None:
    """Calling it never raises (it is a coroutine function): gathering it with others leaves no
    coroutine unawaited, and each call's error comes out of its own await."""

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            @s.cached(name="echo")
            async def echo(x: object) -> object:
                return x

            pending = [echo(1), echo(Opaque()), echo(2**70)]  # no raise here
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            assert outcomes[0] == 1
            assert isinstance(outcomes[1], TypeError) and "key" in str(outcomes[1])
            assert isinstance(outcomes[2], (TypeError, OverflowError))
            invalidation = echo.invalidate(Opaque())  # no raise here either
            with pytest.raises(TypeError, match="key"):
                await invalidation
            gc.collect()
            assert await s.get(echo.key(1)) == 1 and (await s.stats())["sets"] == 1

    run(body)


class OrderingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor (a real pool) that holds the calls named ``held`` until ``release`` is set."""

    def __init__(self, held: str) -> None:
        super().__init__(max_workers=4)
        self.held = held
        self.release = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        target: Any = fn
        while isinstance(target, functools.partial):  # to_thread submits partial(context.run, func)
            target = target.args[0] if target.func.__name__ == "run" else target.func
        if getattr(target, "__name__", "") != self.held:
            return super().submit(fn, *args, **kwargs)

        def held_call() -> Any:
            self.release.wait(10)
            return fn(*args, **kwargs)

        return super().submit(held_call)


def test_a_wrapper_closed_before_it_opened_never_opens_and_says_it_is_closed(tmp_path: Path) -> None:
    path = str(tmp_path / "s")

    async def body() -> None:
        s = AsyncTierStore(path, checkpoint_interval=None)
        await s.close()
        assert s.closed
        with pytest.raises(StoreClosed, match="closed before it opened"):
            await s.get("k")
        with pytest.raises(StoreClosed):
            await s.set("k", 1)
        with pytest.raises(StoreClosed):
            async with s:
                pass
        assert s.store is None

    run(body)
    TierStore(path).close()  # nothing holds the directory


@pytest.mark.parametrize("first", ["open", "close"])
def test_a_close_racing_the_first_use_open_leaves_no_store_open(tmp_path: Path, first: str) -> None:
    """The first call opens the store in a thread while ``close`` runs: whichever gets there first, the
    wrapper ends closed and the directory free (an open that finished is closed, one not begun never runs)."""
    path = str(tmp_path / "s")
    executor = OrderingExecutor("_shut_before_open" if first == "open" else "_open_once")

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        s = AsyncTierStore(path, checkpoint_interval=None)
        caller = asyncio.ensure_future(s.set("k", 1))
        await asyncio.sleep(0)  # the caller's open is handed to a thread
        closing = asyncio.ensure_future(s.close())
        if first == "open":
            assert await caller is True  # opened and written while the close is held
            executor.release.set()
            await closing
        else:
            await closing  # while the open is held
            assert s.closed
            executor.release.set()
            with pytest.raises(StoreClosed):
                await caller
        assert s.closed

    run(body)
    executor.shutdown()
    TierStore(path).close()  # nothing holds the directory


def test_update_value_refuses_a_coroutine_function_and_an_awaitable_answer_changing_nothing() -> None:
    """Its function runs under the key's lock and its answer is stored: nothing there can be awaited.
    Neither form leaves a coroutine unawaited (RuntimeWarning is an error in these tests)."""

    async def bump(value: int) -> int:
        return value + 1

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            await s.set("k", 1)
            with pytest.raises(TypeError, match="coroutine function"):
                await s.update_value("k", bump)
            with pytest.raises(TypeError, match="coroutine function"):
                await s.update_value("k", functools.partial(bump))
            with pytest.raises(TypeError, match="awaitable"):
                await s.update_value("k", lambda value: bump(value))
            gc.collect()
            assert await s.get("k") == 1 and (await s.get_entry("k")) is not None
            assert await s.update_value("k", lambda value: value + 1) is True and await s.get("k") == 2

    run(body)


def test_background_jobs_await_what_a_plain_callable_returns_on_the_calling_loop_as_get_or_load_does() -> None:
    """``lambda: fetch(k)`` is a loader ``get_or_load`` awaits; ``refresh_every`` and ``keep_fresh`` take it too
    (it failed every round, "cannot store a coroutine", and left each coroutine unawaited)."""

    async def body() -> None:
        loop_thread = threading.get_ident()
        ran_in: list[int] = []

        async def fetch(tag: str) -> str:
            ran_in.append(threading.get_ident())
            await asyncio.sleep(0)
            return tag

        async def build() -> list[tuple[str, float]]:
            await asyncio.sleep(0)
            return [("a", 2.0), ("b", 1.0)]

        async def source_stamp() -> int:
            return 7

        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            refreshing = await s.refresh_every("k", lambda: fetch("fetched"), 60.0)
            fresh = await s.keep_fresh("top", lambda: build(), stamp=lambda: source_stamp(), interval=60.0)
            assert await s.drain(10.0)
            assert await s.get("k") == "fetched" and ran_in == [loop_thread]
            index = s.index("top")
            assert await index.page() == [("b", 1.0), ("a", 2.0)] and await index.read_stamp() == 7
            assert (await s.stats())["refresh_errors"] == 0
            refreshing.cancel()
            fresh.cancel()

    run(body)


def test_a_redis_asyncio_client_as_shared_is_refused_naming_what_it_is(tmp_path: Path) -> None:
    """An asyncio service may hand its own redis.asyncio client: refused at open, the message naming it
    (it said "not Redis", as if it were a redis.Redis), and nothing left open."""
    redis_asyncio = pytest.importorskip("redis.asyncio")

    async def body() -> None:
        client = redis_asyncio.Redis(unix_socket_path=str(tmp_path / "none.sock"))
        try:
            with pytest.raises(TypeError, match=r"not redis\.asyncio\.client\.Redis .*opens its own"):
                await AsyncTierStore.open(None, shared=client)
        finally:
            await client.aclose()

    run(body)


def test_a_set_crossing_the_filters_save_batch_leaves_the_save_to_the_background() -> None:
    """The existence filter is megabytes (12 MB at 10 million keys: tens of milliseconds to write): the set
    whose key completes a batch returns without writing it on the loop; the store's scheduler saves it.
    Both scheduler threads are held busy meanwhile, so the order is forced, not timed."""
    from tierstore.guard import META_FILTER

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None, guard=True, bloom_capacity=1000) as s:
            store = s.store
            assert store is not None
            entered, release = threading.Semaphore(0), threading.Event()

            def blocker() -> int:
                entered.release()
                release.wait(10)
                return 0

            jobs = [await s.refresh_every(f"busy{i}", blocker, 3600.0) for i in range(2)]  # the 2 workers
            for _ in jobs:
                assert await asyncio.to_thread(entered.acquire, True, 10)
            try:
                for i in range(1200):  # past a batch: 1000 keys that set new bits
                    await s.set(f"k{i}", i)
                assert store._disk.get_meta(META_FILTER) is None  # not written by the set, on the loop
            finally:
                release.set()
            assert await s.drain(10.0)
            raw = store._disk.get_meta(META_FILTER)
            assert raw is not None and "k900" in BloomFilter.from_bytes(raw)
            for job in jobs:
                job.cancel()

    run(body)


@pytest.mark.parametrize("read", ["page", "rank", "range_by_score"])
def test_index_reads_that_walk_many_members_run_in_a_thread_and_short_ones_inline(read: str) -> None:
    """A deep ``page`` offset, a ``rank`` in a large index, an unbounded ``range_by_score``: LevelDB walks
    the members one by one (300,000 of them stalled the loop for about 0.1 s). The executor holds those
    reads until released, so the order is forced: the long read waits there while short ones answer inline."""
    executor = OrderingExecutor(read)
    size = 3 * INLINE_WALK
    long_reads: dict[str, Callable[[AsyncSortedIndex], Awaitable[Any]]] = {
        "page": lambda index: index.page(offset=size - 10, limit=5),
        "rank": lambda index: index.rank(f"m{size - 1:05d}"),
        "range_by_score": lambda index: index.range_by_score(size - 3, size),
    }
    answers = {
        "page": [(f"m{i:05d}", float(i)) for i in range(size - 10, size - 5)],
        "rank": size - 1,
        "range_by_score": [(f"m{i:05d}", float(i)) for i in range(size - 3, size)],
    }

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            await s.get("open")
            index = s.index("big")
            await index.replace([(f"m{i:05d}", float(i)) for i in range(size)])
            long_read = asyncio.ensure_future(long_reads[read](index))
            await settle()
            assert not long_read.done()  # held in the executor: it was not run on the loop
            assert await index.page(limit=2) == [("m00000", 0.0), ("m00001", 1.0)]  # short ones: inline
            assert await index.range_by_score(0, 1, limit=5) == [("m00000", 0.0), ("m00001", 1.0)]
            executor.release.set()
            assert await long_read == answers[read]

    try:
        run(body)
    finally:
        executor.release.set()
        executor.shutdown()


def test_in_and_len_have_no_coroutine_form_and_say_what_to_use() -> None:
    """``in`` said "argument of type 'AsyncTierStore' is not iterable" and ``len`` "has no len()"."""

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            await s.set("k", 1)
            with pytest.raises(TypeError, match="get_entry"):
                assert "k" in s
            with pytest.raises(TypeError, match="keys"):
                len(s)
            assert bool(s) and bool(AsyncTierStore(None))  # truth is not len(): a store is true
            assert s.store is not None and "k" in s.store and len(await s.keys()) == 1

    run(body)


def test_a_load_cancelled_because_its_callers_left_is_not_a_load_error() -> None:
    """``load_errors`` counts loaders that failed; a client that went away (its task cancelled, so the
    load abandoned) is no failure of the source, and dashboards alert on that count."""

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            slow = Gate()
            caller = asyncio.ensure_future(s.get_or_load("k", slow))
            await slow.entered.wait()
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            await settle()
            assert slow.cancelled == 1

            async def failing() -> str:
                raise LookupError("source down")

            with pytest.raises(LookupError):
                await s.get_or_load("j", failing)
            stats = await s.stats()
            assert stats["loads"] == 2 and stats["load_errors"] == 1

    run(body)


def test_a_plain_loader_calling_the_blocking_get_or_load_of_its_own_key_is_refused_at_once() -> None:
    """As in the blocking store, where such a loader gets ``RuntimeError`` in its own thread: here it
    waited for itself until the lease ran out (``lock_timeout``, 30 s by default), then loaded again."""

    async def body() -> None:
        blocking = TierStore(None, checkpoint_interval=None, lock_timeout=1.0)
        s = AsyncTierStore(blocking)
        try:
            with pytest.raises(RuntimeError, match="its own key"):
                await s.get_or_load("k", lambda: blocking.get_or_load("k", lambda: "inner"))
            assert await s.get("k") is None
            # the pool thread that ran it is free of that load: the same call there now loads
            assert await asyncio.to_thread(blocking.get_or_load, "k", lambda: "fresh") == "fresh"
        finally:
            await s.close()
            blocking.close()

    run(body)


def test_close_waits_at_most_lock_timeout_for_a_loader_that_ignores_its_cancellation() -> None:
    """``close`` cancels this loop's loads and waited for them to end: a loader swallowing every
    cancellation hung it (and its callers) for ever, where the blocking store's close waits
    ``lock_timeout`` for its threads. Now its flight is interrupted and the close goes on."""

    async def body() -> None:
        s = AsyncTierStore(None, checkpoint_interval=None, lock_timeout=0.2)
        entered, finish = asyncio.Event(), asyncio.Event()

        async def stubborn() -> str:
            entered.set()
            while not finish.is_set():
                try:
                    await finish.wait()
                except asyncio.CancelledError:
                    pass  # ignores every cancellation
            return "late"

        caller = asyncio.ensure_future(s.get_or_load("k", stubborn))
        await entered.wait()
        asyncio.get_running_loop().call_later(5.0, finish.set)  # so that a close waiting for it ends, and fails
        started = time.monotonic()
        await s.close()
        assert time.monotonic() - started < 4.0 and s.closed
        with pytest.raises(TierStoreError, match="interrupted"):
            await caller
        finish.set()  # the loader ends at last: nothing to store into, nothing left unretrieved
        await settle()

    run(body)
