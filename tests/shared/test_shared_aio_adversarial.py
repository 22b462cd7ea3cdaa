"""Attacks on ``AsyncTierStore`` in shared mode, part one: cancellations at await points, outages.

Real parts only: a real redis-server (paused, killed, restarted empty), real
threads, loaders held by the test. A call is cancelled at a chosen point by
holding the loop: the test task checks Redis (a blocking round trip, queued in
Redis after whatever the store sent before it) between ``sleep(0)`` rounds, so
once Redis shows the effect of a call, that call has not read its reply yet and
the cancellation lands at its ``await``. After the dust settles, every store
answers what Redis holds. Races, several loops and hostile input:
``test_shared_aio_adversarial_races``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from tests.aio.support import run, settle
from tests.shared.redis_server import RedisServer
from tests.shared.support import entry_hash, wait_for
from tests.shared.test_shared_aio import Gate, eventually, lease_of, opened, returning
from tierstore import SharedUnavailable, TierStore, TierStoreError
from tierstore.aio import AsyncTierStore
from tierstore.shared.client import CALL_TIMEOUT

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

FAST = 1.0  # seconds: any call once an outage is known


def seq_of(raw: redis.Redis, key: str) -> bytes | None:
    """The write seq Redis holds for ``key`` (``None``: no entry)."""
    return entry_hash(raw, key).get(b"s")


async def cancelled_once_landed(call: Awaitable[Any], landed: Callable[[], bool]) -> None:
    """Run ``call`` as a task and cancel it as soon as Redis shows ``landed()`` (checked with the loop held)."""
    task = asyncio.ensure_future(call)
    deadline = time.monotonic() + 5.0
    while not landed():
        assert not task.done(), "the call ended before it was seen landing"
        assert time.monotonic() < deadline, "never landed"
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def leaders(s: AsyncTierStore) -> list[asyncio.Task[None]]:
    """The tasks leading loads of ``s`` on this loop now."""
    parts = s._parts
    assert parts is not None
    return [task for task in parts._tasks if task.get_loop() is asyncio.get_running_loop()]


# -- 1. cancellation at await points -------------------------------------------------------------


def test_a_leader_cancelled_once_redis_gave_it_the_lease_frees_the_lease(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    blocking = stores()

    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        gate = Gate("never stored")
        try:
            caller = asyncio.create_task(s.get_or_load("k", gate))
            while not raw.exists(lease_of("k")):  # the loop held between rounds: TAKE ran, its reply unread
                await asyncio.sleep(0)
            [leader] = leaders(s)
            leader.cancel()  # as the last caller leaving, or a close, cancels it
            with pytest.raises(TierStoreError, match="interrupted"):
                await caller  # not cancelled itself: told its load was
            assert gate.calls == 0  # cancelled in the lease's round trip, before the loader
            await eventually(lambda: not raw.exists(lease_of("k")))  # freed, not left for its 60 s
            answer = await asyncio.to_thread(blocking.get_or_load, "k", lambda: "elsewhere", on_busy="default")
            assert answer == "elsewhere"
            assert await s.get("k") == "elsewhere"
        finally:
            await s.close()

    run(body)


def test_a_loader_that_swallows_its_cancellation_never_stores_in_redis(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        entered, finish = asyncio.Event(), asyncio.Event()

        async def stubborn() -> str:
            entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await finish.wait()  # goes on after its cancellation and returns a value
            return "zombie"

        try:
            caller = asyncio.create_task(s.get_or_load("k", stubborn))
            await entered.wait()
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            # the lease is freed at once, while the loader still ignores its cancellation
            await eventually(lambda: not raw.exists(lease_of("k")), timeout=5.0)  # not its 60 s PX
            assert not leaders(s)
            finish.set()
            await settle()
            assert seq_of(raw, "k") is None  # nothing written to Redis
            assert await s.get("k") is None
            assert stores().get("k") is None
            assert (await s.stats())["fills_rejected"] == 0  # its load was over: no fill even tried
        finally:
            await s.close()

    run(body)


def test_a_leader_cancelled_once_its_fill_landed_leaves_redis_s_value_and_no_lease(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        gate = Gate("filled")
        try:
            caller = asyncio.create_task(s.get_or_load("k", gate))
            await gate.entered.wait()
            gate.open.set()
            while seq_of(raw, "k") is None:  # the loop held between rounds: FILL ran, its reply unread
                await asyncio.sleep(0)
            [leader] = leaders(s)
            leader.cancel()
            with pytest.raises(TierStoreError, match="interrupted"):
                await caller
            assert not raw.exists(lease_of("k"))
            assert await s.get("k") == "filled" == stores().get("k")
        finally:
            await s.close()

    run(body)


def test_a_caller_cancelled_while_waiting_on_another_store_s_lease_leaves_no_waiter_behind(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    blocking = stores()
    entered, release = threading.Event(), threading.Event()

    def held_loader() -> str:
        entered.set()
        release.wait(10)
        return "theirs"

    async def body() -> None:
        s = await opened(redis_server.url)
        store = s.store
        assert store is not None and store._shared is not None
        leases = store._shared.leases
        thread = threading.Thread(target=lambda: blocking.get_or_load("k", held_loader))
        thread.start()
        try:
            await asyncio.to_thread(entered.wait, 10)
            for timeout in (0.0, 0.001, 0.01, 0.05):
                with pytest.raises(asyncio.TimeoutError):  # wait_for's: not the builtin TimeoutError on 3.10
                    await asyncio.wait_for(s.get_or_load("k", returning("ours")), timeout)
            await eventually(lambda: not leaders(s))
            assert not leases._waiting  # every waiter unlistened
            assert raw.exists(lease_of("k"))  # the other store's lease, untouched
            release.set()
            await asyncio.to_thread(thread.join, 10)
            assert await s.get_or_load("k", returning("ours")) == "theirs"
        finally:
            release.set()
            await asyncio.to_thread(thread.join, 10)
            await s.close()

    run(body)


def test_writes_cancelled_after_redis_applied_them_leave_no_copy_that_disagrees(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            for key in ("a", "b", "c", "m1", "m2"):
                assert await s.set(key, "old")
                assert await s.get(key) == "old"  # held in tier 1
            before = {key: seq_of(raw, key) for key in ("a", "b", "c", "m1", "m2")}
            changed = lambda *keys: lambda: all(seq_of(raw, k) != before[k] for k in keys)  # noqa: E731
            await cancelled_once_landed(s.set("a", "new"), changed("a"))
            await cancelled_once_landed(s.pop("b"), changed("b"))
            await cancelled_once_landed(s.delete("c"), changed("c"))
            await cancelled_once_landed(s.set_many({"m1": "n1", "m2": "n2"}), changed("m1", "m2"))
            fresh = stores()  # empty tiers: it answers what Redis holds
            expected = {"a": "new", "b": None, "c": None, "m1": "n1", "m2": "n2"}
            assert {key: fresh.get(key) for key in expected} == expected
            assert {key: await s.get(key) for key in expected} == expected
            assert await s.get_many(list(expected)) == {k: v for k, v in expected.items() if v is not None}
        finally:
            await s.close()

    run(body)


def test_a_counter_cancelled_after_redis_counted_it_reads_redis_count(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    other = stores()

    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            assert await s.incr("c", 5) == 5
            await cancelled_once_landed(s.incr("c", 2), lambda: other.counter("c") == 7)
            assert await s.counter("c") == 7 == other.counter("c")
            assert await s.incr("c") == 8
        finally:
            await s.close()

    run(body)


def test_calls_cancelled_at_any_point_never_garble_the_answers_of_the_next_ones(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    writer = stores()
    timeouts = [0.0, 1e-5, 5e-5, 1e-4, 3e-4, 1e-3]

    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            for i in range(150):
                writer.set(f"r{i}", i)  # not in the async store's tiers: read from Redis
                attack: list[Awaitable[Any]] = [
                    s.set(f"x{i % 4}", i), s.get(f"r{i}"), s.pop(f"x{(i + 1) % 4}", None),
                    s.set_many({f"x{(i + 2) % 4}": i, "y": [i]}), s.incr("attacked"),
                    s.get_or_load(f"l{i}", returning(i)),
                ]  # fmt: skip
                for call in attack:
                    try:
                        await asyncio.wait_for(call, timeouts[i % len(timeouts)])
                    except asyncio.TimeoutError:  # noqa: UP041  # not the builtin on 3.10
                        pass
                assert await s.incr("sequence") == i + 1
                assert await s.get(f"r{i}") == i
                assert await s.set("z", i) and await s.get("z") == i
            fresh = stores()
            for key in ["x0", "x1", "x2", "x3", "y", "z", *(f"l{i}" for i in range(150))]:
                assert await s.get(key) == fresh.get(key), key
            assert await s.counter("attacked") == fresh.counter("attacked")
            assert not (await s.stats()).get("corrupt_records")
        finally:
            await s.close()

    run(body)


def test_calls_cancelled_while_redis_is_paused_leave_every_connection_answering_right(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    writer = stores()

    async def body() -> None:
        s = await opened(redis_server.url, shared_failure="raise")
        try:
            writer.set("remote", "r")
            writer.set_many({"r1": 1, "r2": 2})  # read by one pipeline
            await asyncio.gather(*(s.set(f"w{i}", "before") for i in range(8)))  # several warm connections
            redis_server.pause()
            try:
                stuck = [s.set("w0", "during"), s.get("remote"), s.pop("w1", None), s.set_many({"w2": "during"})]
                stuck.append(s.get_many(["r1", "r2"]))
                for call in stuck:
                    with pytest.raises(asyncio.TimeoutError):  # wait_for's: not the builtin TimeoutError on 3.10
                        await asyncio.wait_for(call, 0.05)  # stuck reading the reply: cancelled there
            finally:
                redis_server.resume()
            fresh = stores()
            for key in ("w0", "w1", "w2", "remote", "r1", "r2"):
                await eventually(lambda: up(s))
                assert await s.get(key) == fresh.get(key), key
            assert await s.get_many(["r1", "r2", "remote"]) == {"r1": 1, "r2": 2, "remote": "r"}
            for i in range(20):
                assert await s.set(f"after{i}", i) and await s.get(f"after{i}") == i
        finally:
            await s.close()

    run(body)


def up(s: AsyncTierStore) -> bool:
    """Whether the store's shared client takes calls (not ``down``)."""
    store = s.store
    assert store is not None and store._shared is not None
    return not store._shared.client.down


# -- 2. outages ------------------------------------------------------------------------------------


def test_a_killed_server_fails_async_calls_fast_and_a_restart_empty_serves_nothing_stale(
    redis_server: RedisServer,
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, shared_failure="raise")
        try:
            assert await s.set("k", "before")
            assert await s.get("k") == "before"
            redis_server.kill()
            await eventually(lambda: not up(s), timeout=CALL_TIMEOUT + 3)
            for call in (lambda: s.get("k"), lambda: s.set("k", 2), lambda: s.get_or_load("n", returning(1)),
                         lambda: s.incr("c"), lambda: s.pop("k", None), lambda: s.index("i").count()):  # fmt: skip
                started = time.monotonic()
                with pytest.raises(SharedUnavailable):
                    await call()
                assert time.monotonic() - started < FAST
            redis_server.start()  # empty
            await eventually(lambda: up(s), timeout=CALL_TIMEOUT + 5)
            errors = (await s.stats())["shared_errors"]
            assert await s.get("k") is None  # not the copy from before the restart, nor a dead socket's error
            assert await s.set("k", "after") and await s.get("k") == "after"
            assert up(s) and (await s.stats())["shared_errors"] == errors
        finally:
            await s.close()

    run(body)


def test_local_mode_loads_without_storing_during_an_outage_and_serves_copies_within_grace(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, shared_failure="local", shared_grace=30.0)
        try:
            assert await s.set("k", "kept")
            assert await s.get("k") == "kept"
            redis_server.kill()
            await eventually(lambda: not up(s), timeout=CALL_TIMEOUT + 3)
            started = time.monotonic()
            assert await s.get("k") == "kept"  # within the grace
            assert await s.get("never") is None  # needs Redis: a miss
            assert await s.get_or_load("loaded", returning("during")) == "during"
            assert await s.get_or_load("loaded", returning("again")) == "again"  # not stored
            assert time.monotonic() - started < FAST
            redis_server.start()
            await eventually(lambda: up(s), timeout=CALL_TIMEOUT + 5)
            assert raw.dbsize() == 0 or seq_of(raw, "loaded") is None
            assert await s.get("loaded") is None
            assert await s.get("k") is None  # Redis came back empty: the copy is gone
        finally:
            await s.close()

    run(body)


def test_a_blocking_store_s_idle_connection_closed_by_a_restart_is_reconnected_not_an_outage(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    store = stores(shared_failure="raise")
    assert store._shared is not None
    client = store._shared.client
    store.set("k", 1)  # an idle connection from before the restart
    redis_server.kill()
    wait_for(lambda: client.down, CALL_TIMEOUT + 3)  # the listener finds it: no call touched the connection
    redis_server.start()
    wait_for(lambda: not client.down, CALL_TIMEOUT + 5)
    errors = store.stats()["shared_errors"]
    assert store.get("k") is None  # Redis came back empty; not SharedUnavailable from the dead socket
    assert not client.down and store.stats()["shared_errors"] == errors
