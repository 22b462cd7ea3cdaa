"""Single-flight for coroutines: stampedes, busy policies, timeouts and cancellation, without stray warnings."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.aio.support import Gate, run, settle
from tierstore import LoadTimeout, TierStore, TierStoreError
from tierstore.aio import AsyncTierStore
from tierstore.deadline import bounded


def store() -> AsyncTierStore:
    return AsyncTierStore(TierStore(None, checkpoint_interval=None, stale_ttl=60.0))


async def closing(s: AsyncTierStore) -> None:
    await s.close()
    assert s.store is not None
    s.store.close()


def test_a_thousand_coroutines_on_one_cold_key_make_one_loader_call() -> None:
    async def body() -> None:
        s = store()
        gate = Gate({"big": 1})
        callers = [asyncio.ensure_future(s.get_or_load("k", gate)) for _ in range(1000)]
        await gate.entered.wait()
        await settle()
        gate.open.set()
        assert await asyncio.gather(*callers) == [{"big": 1}] * 1000
        assert gate.calls == 1 and (await s.stats())["load_waits"] == 999
        assert await s.get("k") == {"big": 1}
        await closing(s)

    run(body)


def test_a_cancelled_waiter_leaves_and_the_load_goes_on_for_the_others() -> None:
    async def body() -> None:
        s = store()
        gate = Gate()
        first = asyncio.ensure_future(s.get_or_load("k", gate))
        await gate.entered.wait()
        others = [asyncio.ensure_future(s.get_or_load("k", gate)) for _ in range(3)]
        await settle()
        first.cancel()  # the caller that started it
        others[0].cancel()
        await settle()
        assert gate.cancelled == 0
        gate.open.set()
        assert await asyncio.gather(*others[1:]) == ["v", "v"]
        for cancelled in (first, others[0]):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        assert gate.calls == 1 and await s.get("k") == "v"
        await closing(s)

    run(body)


def test_when_every_caller_is_gone_the_load_is_cancelled_and_the_key_freed_at_once() -> None:
    async def body() -> None:
        s = store()
        first = Gate("old")
        callers = [asyncio.ensure_future(s.get_or_load("k", first)) for _ in range(3)]
        await first.entered.wait()
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        # the next call loads at once, while the first load is still being torn down
        second = Gate("new")
        second.open.set()
        assert await s.get_or_load("k", second) == "new"
        await settle()
        assert first.cancelled == 1 and second.calls == 1
        assert await s.get("k") == "new"
        await closing(s)

    run(body)


def test_a_cancelled_loader_never_stores_even_when_it_swallows_the_cancellation() -> None:
    async def body() -> None:
        s = store()
        entered, finish = asyncio.Event(), asyncio.Event()

        async def stubborn() -> str:
            entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await finish.wait()  # keeps going after the cancellation
            return "zombie"

        caller = asyncio.ensure_future(s.get_or_load("k", stubborn))
        await entered.wait()
        caller.cancel()
        await settle()
        finish.set()
        await settle()
        # the load ended at its cancellation: the late answer is dropped, no fill even tried
        assert await s.get("k") is None and (await s.stats())["fills_rejected"] == 0
        await closing(s)

    run(body)


def test_a_plain_loader_whose_callers_all_left_frees_the_key_and_its_result_is_dropped() -> None:
    async def body() -> None:
        s = store()
        entered, release = threading.Event(), threading.Event()

        def slow() -> str:
            entered.set()
            release.wait(10)
            return "late"

        caller = asyncio.ensure_future(s.get_or_load("k", slow))
        await asyncio.to_thread(entered.wait, 10)
        caller.cancel()
        await settle()

        async def fresh() -> str:
            return "fresh"

        assert await s.get_or_load("k", fresh) == "fresh"  # no wait for the thread
        release.set()
        await settle()
        await s.drain(5)
        assert await s.get("k") == "fresh"
        await closing(s)

    run(body)


def test_a_waiting_thread_counts_as_a_caller() -> None:
    async def body() -> None:
        s = store()
        sync = s.store
        assert sync is not None
        gate = Gate("kept")
        caller = asyncio.ensure_future(s.get_or_load("k", gate))
        await gate.entered.wait()
        thread = asyncio.get_running_loop().run_in_executor(None, sync.get_or_load, "k", lambda: "thread's")
        while sync.stats()["load_waits"] == 0:
            await asyncio.sleep(0.001)
        caller.cancel()
        await settle()
        assert gate.cancelled == 0  # the thread still waits for it
        gate.open.set()
        assert await thread == "kept" and gate.calls == 1
        await closing(s)

    run(body)


def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    async def body() -> None:
        s = store()
        gate = Gate()

        async def failing() -> str:
            await gate()
            raise LookupError("source down")

        callers = [asyncio.ensure_future(s.get_or_load("k", failing)) for _ in range(10)]
        await gate.entered.wait()
        await settle()
        gate.open.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(o, LookupError) for o in outcomes) and len({id(o) for o in outcomes}) == 1

        async def fine() -> str:
            return "ok"

        assert await s.get_or_load("k", fine) == "ok"
        await closing(s)

    run(body)


def test_busy_policies_and_wait_timeout() -> None:
    async def body() -> None:
        s = store()
        sync = s.store
        assert sync is not None
        gate = Gate("fresh")
        leader = asyncio.ensure_future(s.get_or_load("k", gate))
        await gate.entered.wait()
        assert await s.get_or_load("k", gate, on_busy="default", default="busy") == "busy"
        with pytest.raises(LoadTimeout):  # "stale" with no stale value waits
            await s.get_or_load("k", gate, on_busy="stale", wait_timeout=0.01)
        with pytest.raises(LoadTimeout):
            await s.get_or_load("k", gate, wait_timeout=0.01)
        with pytest.raises(TimeoutError):  # asyncio.timeout (3.11+) around a follower: it just leaves
            async with bounded(0.01):
                await s.get_or_load("k", gate)
        assert gate.cancelled == 0
        gate.open.set()
        assert await leader == "fresh" and gate.calls == 1
        stats = await s.stats()
        assert stats["busy_defaults"] == 1
        await closing(s)

    run(body)


def test_on_busy_stale_serves_the_stale_value_while_one_load_runs() -> None:
    clock = [1000.0]

    async def body() -> None:
        s = AsyncTierStore(TierStore(None, checkpoint_interval=None, stale_ttl=60.0, clock=lambda: clock[0]))
        await s.set("k", "old", ttl=1.0)
        clock[0] += 2.0  # expired, within stale_ttl
        gate = Gate("new")
        leader = asyncio.ensure_future(s.get_or_load("k", gate))
        await gate.entered.wait()
        assert await s.get_or_load("k", gate, on_busy="stale") == "old"
        gate.open.set()
        assert await leader == "new"
        await closing(s)

    run(body)


def test_asyncio_timeout_around_the_only_caller_cancels_the_load() -> None:
    async def body() -> None:
        s = store()
        gate = Gate()
        with pytest.raises(TimeoutError):
            async with bounded(0.01):
                await s.get_or_load("k", gate)
        await settle()
        assert gate.calls == 1 and gate.cancelled == 1
        await closing(s)

    run(body)


def test_close_cancels_the_loads_still_running() -> None:
    async def body() -> None:
        s = AsyncTierStore(None, checkpoint_interval=None)
        gate = Gate()
        caller = asyncio.ensure_future(s.get_or_load("k", gate))
        await gate.entered.wait()
        await s.close()
        assert gate.cancelled == 1 and s.closed
        with pytest.raises(TierStoreError, match="interrupted"):
            await caller

    run(body)


def test_a_load_past_its_lease_lets_the_next_caller_load_and_never_overwrites_it() -> None:
    async def body() -> None:
        s = AsyncTierStore(TierStore(None, checkpoint_interval=None, lock_timeout=0.05))
        slow = Gate("slow")
        starter = asyncio.ensure_future(s.get_or_load("k", slow))
        await slow.entered.wait()
        await asyncio.sleep(0.1)  # past the lease (real time, as leases are)

        async def fast() -> str:
            return "fast"

        assert await s.get_or_load("k", fast) == "fast"
        slow.open.set()
        assert await starter == "slow"  # its caller waited for its own load, to its end
        assert slow.calls == 1 and slow.cancelled == 0
        assert await s.get("k") == "fast" and (await s.stats())["fills_rejected"] == 1
        await closing(s)

    run(body)


def test_a_coroutine_a_plain_loader_returns_after_its_callers_left_is_closed_not_left_unawaited() -> None:
    """``lambda: fetch(k)`` cancelled while its thread runs: the coroutine it returns never warns."""
    awaited: list[str] = []

    async def fetch() -> str:
        awaited.append("fetch")
        return "late"

    async def body() -> None:
        s = store()
        entered, release = threading.Event(), threading.Event()

        def lam() -> Any:
            entered.set()
            release.wait(10)
            return fetch()

        caller = asyncio.ensure_future(s.get_or_load("k", lam))
        await asyncio.to_thread(entered.wait, 10)
        caller.cancel()
        await settle()
        release.set()
        await s.drain(5)
        await asyncio.sleep(0.05)  # let the default executor's thread hand back (never a timing assertion)
        assert awaited == [] and await s.get("k") is None
        await closing(s)

    run(body)


def test_refresh_ahead_renews_in_a_background_task_with_a_coroutine_loader() -> None:
    clock = [1000.0]
    values = iter(["first", "second", "third"])
    calls: list[str] = []

    async def body() -> None:
        s = AsyncTierStore(
            TierStore(
                None, checkpoint_interval=None, refresh_ahead=0.5, min_refresh_interval=0.0, clock=lambda: clock[0]
            )
        )

        async def load() -> str:
            calls.append("load")
            return next(values)

        assert await s.get_or_load("k", load, ttl=10.0) == "first"
        clock[0] += 6.0  # in the last half of the TTL: a hit renews in the background
        assert await s.get_or_load("k", load, ttl=10.0) == "first"  # served at once
        await settle()
        assert calls == ["load", "load"] and await s.get("k") == "second"
        stats = await s.stats()
        assert stats["refreshes"] == 1 and stats["loads"] == 1
        await closing(s)

    run(body)


def test_a_failing_renewal_is_counted_and_the_old_value_stays() -> None:
    clock = [1000.0]

    async def body() -> None:
        s = AsyncTierStore(
            TierStore(
                None, checkpoint_interval=None, refresh_ahead=0.5, min_refresh_interval=0.0, clock=lambda: clock[0]
            )
        )
        await s.set("k", "kept", ttl=10.0)

        async def broken() -> str:
            raise LookupError("source down")

        clock[0] += 6.0  # in the last half of the TTL: the hit renews in the background, and that fails
        assert await s.get_or_load("k", broken, ttl=10.0) == "kept"
        await settle()
        stats = await s.stats()
        assert stats["refresh_errors"] == 1 and stats["load_errors"] == 0 and await s.get("k") == "kept"
        await closing(s)

    run(body)
