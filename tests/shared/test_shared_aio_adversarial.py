"""Attacks on ``AsyncTierStore`` in shared mode: cancellations at await points, outages, races, loops, bad input.

Real parts only: a real redis-server (paused, killed, restarted empty), real
threads, another store in a real process, loaders held by the test. A call is
cancelled at a chosen point by holding the loop: the test task checks Redis
(a blocking round trip, queued in Redis after whatever the store sent before
it) between ``sleep(0)`` rounds, so once Redis shows the effect of a call, that
call has not read its reply yet and the cancellation lands at its ``await``.
After the dust settles, every store answers what Redis holds.
"""

from __future__ import annotations

import asyncio
import math
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
from tests.shared.workers import Worker
from tierstore import SharedUnavailable, TierStore, TierStoreError, Versioned
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
            await settle()
            finish.set()
            await eventually(lambda: not leaders(s))
            assert seq_of(raw, "k") is None  # nothing written to Redis...
            assert not raw.exists(lease_of("k"))  # ...and the lease freed
            assert await s.get("k") is None
            assert stores().get("k") is None
            assert (await s.stats())["fills_rejected"] == 1
        finally:
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
                    except TimeoutError:
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
            await asyncio.gather(*(s.set(f"w{i}", "before") for i in range(8)))  # several warm connections
            redis_server.pause()
            try:
                stuck = [s.set("w0", "during"), s.get("remote"), s.pop("w1", None), s.set_many({"w2": "during"})]
                for call in stuck:
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(call, 0.05)  # stuck reading the reply: cancelled there
            finally:
                redis_server.resume()
            fresh = stores()
            for key in ("w0", "w1", "w2", "remote"):
                await eventually(lambda: up(s))
                assert await s.get(key) == fresh.get(key), key
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


# -- 3. coroutines, threads and another process racing --------------------------------------------


def test_versioned_writes_from_coroutines_threads_and_a_process_converge_and_never_go_back(
    redis_server: RedisServer, stores: Callable[..., TierStore], workers: Callable[..., Worker]
) -> None:
    keys = ["p", "q"]
    worker = workers()

    async def body() -> None:
        s = await opened(redis_server.url)
        store = s.store
        assert store is not None
        seen: dict[str, list[int]] = {key: [] for key in keys}
        stop = threading.Event()

        def thread_writer(tag: str) -> None:
            for v in range(1, 400, 3):
                store.set(keys[v % 2], [tag, v], version=v)

        async def coroutine_writer(tag: str) -> None:
            for v in range(2, 400, 3):
                await s.set(keys[v % 2], [tag, v], version=v)

        async def loader_caller() -> None:
            for i in range(100):
                await s.get_or_load(keys[i % 2], returning(Versioned(["loader", 0], 0)))

        async def reader(key: str) -> None:
            while not stop.is_set():
                value = await s.get(key)
                if value is not None:
                    seen[key].append(value[1])
                await asyncio.sleep(0)

        try:
            worker.start("write_versions", "p", list(range(3, 400, 3)), "proc", time.time())
            readers = [asyncio.create_task(reader(key)) for key in keys]
            threads = [threading.Thread(target=thread_writer, args=(f"t{n}",)) for n in range(2)]
            for thread in threads:
                thread.start()
            await asyncio.gather(coroutine_writer("c"), loader_caller())
            await asyncio.to_thread(lambda: [thread.join(30) for thread in threads])
            worker.result()
            fresh = stores()
            tops = {key: fresh.get_entry(key) for key in keys}
            for key in keys:
                top = tops[key]
                assert top is not None
                await eventually(lambda key=key, top=top: _same(s, key, top.version))  # type: ignore[misc]
            stop.set()
            await asyncio.gather(*readers)
            for key in keys:
                assert seen[key] == sorted(seen[key]), f"{key} went backwards"
                entry = await s.get_entry(key)
                assert entry is not None and entry.version == tops[key].version  # type: ignore[union-attr]
                assert worker.call("entry", key) == (entry.value, entry.version)
        finally:
            stop.set()
            await s.close()

    run(body)


def _same(s: AsyncTierStore, key: str, version: int) -> bool:
    store = s.store
    assert store is not None
    entry = store.get_entry(key)
    return entry is not None and entry.version == version


# -- 4. several loops on one store ---------------------------------------------------------------


def test_loops_in_several_threads_share_one_load_and_one_loop_closing_leaves_the_others_working(
    stores: Callable[..., TierStore],
) -> None:
    store = stores()
    wrapper = AsyncTierStore(store)
    calls: list[int] = []
    release = threading.Event()
    closed = threading.Event()
    errors: list[BaseException] = []
    answers: list[Any] = []

    async def load() -> str:
        calls.append(1)
        await asyncio.to_thread(release.wait, 10)
        return "shared"

    def on_its_own_loop(tag: int) -> None:
        async def body() -> None:
            try:
                answers.append(await wrapper.get_or_load("cold", load))
                if tag == 0:
                    return
                await asyncio.to_thread(closed.wait, 10)
                for i in range(30):
                    assert await wrapper.set(f"{tag}:{i}", i)
                    assert await wrapper.get(f"{tag}:{i}") == i
                assert await wrapper.get_or_load(f"{tag}:own", returning(tag)) == tag
            finally:
                await wrapper.close()  # this loop's connections and loads only
                if tag == 0:
                    closed.set()  # the others go on after this loop closed its part

        try:
            run(body)
        except BaseException as exc:  # reported to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=on_its_own_loop, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: (f := store._flights.in_flight.get("cold")) is not None and f.following == 4)
    release.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert answers == ["shared"] * 4 and len(calls) == 1
    assert [store.get(f"{tag}:29") for tag in (1, 2, 3)] == [29, 29, 29]


@pytest.mark.xfail(
    strict=True,
    reason="close() cancels this loop's leader tasks (aio_loading.cancel_all); a caller on another loop "
    "following that load gets TierStoreError('interrupted') instead of starting the next load",
)
def test_a_loop_closing_its_wrapper_while_it_leads_a_load_others_follow_does_not_cancel_them(
    stores: Callable[..., TierStore],
) -> None:
    store = stores()
    wrapper = AsyncTierStore(store)
    entered, release = threading.Event(), threading.Event()
    outcome: list[Any] = []

    async def load() -> str:
        entered.set()
        await asyncio.to_thread(release.wait, 10)
        return "value"

    async def leader_body() -> None:
        caller = asyncio.ensure_future(wrapper.get_or_load("k", load))
        await asyncio.to_thread(entered.wait, 10)
        await asyncio.to_thread(wait_for, lambda: store._flights.in_flight["k"].following == 2)
        await wrapper.close()  # cancels this loop's load: its own caller goes, the other loop's stays
        release.set()
        await asyncio.gather(caller, return_exceptions=True)

    async def follower_body() -> None:
        await asyncio.to_thread(entered.wait, 10)
        try:
            outcome.append(await wrapper.get_or_load("k", returning("reloaded")))
        finally:
            await wrapper.close()  # this loop's connections

    follower = threading.Thread(target=lambda: outcome.append(_caught(lambda: run(follower_body))))
    follower.start()
    run(leader_body)
    follower.join(30)
    assert "reloaded" in outcome or "value" in outcome, outcome


def _caught(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BaseException as exc:  # reported to the test's thread
        return exc


# -- 5. hostile input --------------------------------------------------------------------------


HOSTILE: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("set", ("k", object()), {}),
    ("set", (["list"], 1), {}),
    ("set", ("k", 1), {"ttl": "10"}),
    ("set", ("k", 1), {"ttl": math.nan}),
    ("set", ("k", 1), {"ttl": -5}),
    ("set", ("k", 1), {"version": "3"}),
    ("set", ("k", 1), {"version": -1}),
    ("set", ("k", 1), {"version": 2**70}),
    ("set", ("k", 1), {"version": 1.5}),
    ("set", ("k", b"x" * 300_000), {}),
    ("add", ("k", object()), {}),
    ("add", ("k", b"x" * 300_000), {"version": 1}),
    ("touch", ("k",), {"ttl": math.inf}),
    ("touch", (3.5,), {}),
    ("replace_value", ("k", b"x" * 300_000), {}),
    ("replace_value", ({"a": 1}, 1), {}),
    ("pop", (None,), {}),
    ("delete", ("k",), {"version": "x"}),
    ("delete", (object(),), {}),
    ("invalidate", ("k",), {"again_after": -1}),
    ("set_many", ([("no", "mapping")],), {}),
    ("set_many", ({"a": object()},), {}),
    ("set_many", ({"a": 1, ("t",): 2},), {}),
    ("set_many", ({"a": 1},), {"ttl": "x"}),
    ("set_many", ({"a": b"x" * 300_000},), {}),
    ("delete_many", (5,), {}),
    ("delete_many", ([object()],), {}),
    ("get_many", ([object()],), {}),
    ("get", (object(),), {}),
    ("get_entry", ([],), {}),
    ("incr", ("c", 1.5), {}),
    ("incr", ("c", "1"), {}),
    ("incr", ("c", 2**64), {}),
    ("decr", ("c", None), {}),
    ("counter", (object(),), {}),
    ("get_or_load", ("k", "not callable"), {}),
    ("get_or_load", ("k", returning(1)), {"ttl": "x"}),
    ("get_or_load", ("k", returning(1)), {"on_busy": "never"}),
    ("get_or_load", ("k", returning(1)), {"wait_timeout": -1}),
    ("get_or_load", (object(), returning(1)), {}),
]

INDEX_HOSTILE: list[tuple[str, tuple[Any, ...]]] = [
    ("add", ("m", math.nan)),
    ("add", ("m", "1")),
    ("add", (object(), 1.0)),
    ("add_many", ([("m", math.nan)],)),
    ("add_many", ([("m",)],)),
    ("add_many", (5,)),
    ("remove", (object(),)),
    ("score", (object(),)),
    ("page", (-1, 10)),
    ("page", (0, -1)),
    ("range_by_score", (math.nan, 1.0)),
    ("page_after", ("garbage-cursor",)),
]


def snapshot(raw: redis.Redis) -> dict[bytes, Any]:
    """Everything Redis holds, by key and type."""
    found: dict[bytes, Any] = {}
    for key in raw.keys("*"):
        kind = raw.type(key)
        if kind == b"hash":
            found[key] = raw.hgetall(key)
        elif kind == b"zset":
            found[key] = raw.zrange(key, 0, -1, withscores=True)
        elif kind == b"string":
            found[key] = raw.get(key)
        else:
            found[key] = kind
    return found


def commands(raw: redis.Redis) -> int:
    """Commands Redis ran so far, but for the listener's and this probe's own."""
    stats = raw.info("commandstats")
    skip = {"cmdstat_info", "cmdstat_ping", "cmdstat_subscribe", "cmdstat_psubscribe", "cmdstat_client|setinfo"}
    return sum(int(value["calls"]) for name, value in stats.items() if name not in skip)


def outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as exc:  # the error's type is what is compared
        return type(exc).__name__
    return "no error"


def test_hostile_input_raises_as_the_blocking_call_changes_nothing_and_asks_redis_no_more(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    blocking = stores(max_value_bytes=100_000, shared_ping_interval=60.0)

    async def body() -> None:
        s = await opened(redis_server.url, max_value_bytes=100_000, shared_ping_interval=60.0)
        board, sync_board = s.index("board"), blocking.index("board")
        try:
            await s.set("k", "v")
            await board.add("seed", 1.0)
            cases: list[tuple[str, Callable[[], Any], Callable[[], Awaitable[Any]]]] = [
                (f"{name}{args}{kwargs}"[:80], (lambda n=name, a=args, k=kwargs: getattr(blocking, n)(*a, **k)),
                 (lambda n=name, a=args, k=kwargs: getattr(s, n)(*a, **k)))
                for name, args, kwargs in HOSTILE
            ] + [
                (f"index.{name}{args}"[:80], (lambda n=name, a=args: getattr(sync_board, n)(*a)),
                 (lambda n=name, a=args: getattr(board, n)(*a)))
                for name, args in INDEX_HOSTILE
            ]  # fmt: skip
            for label, blocking_call, async_call in cases:
                before, counted = snapshot(raw), commands(raw)
                expected = outcome(blocking_call)
                blocking_trips = commands(raw) - counted
                if expected == "no error":
                    continue  # accepted input: not hostile
                assert snapshot(raw) == before, label
                counted = commands(raw)
                got = await _async_outcome(async_call)
                async_trips = commands(raw) - counted
                assert got == expected, label
                assert snapshot(raw) == before, label
                if blocking_trips == 0:
                    assert async_trips == 0, label
            assert await s.get("k") == "v" and await board.score("seed") == 1.0
        finally:
            await s.close()

    run(body)


async def _async_outcome(call: Callable[[], Awaitable[Any]]) -> str:
    try:
        await call()
    except Exception as exc:  # the error's type is what is compared
        return type(exc).__name__
    return "no error"
