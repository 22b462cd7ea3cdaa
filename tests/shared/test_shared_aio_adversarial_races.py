"""Attacks on ``AsyncTierStore`` in shared mode, part two: races with threads and another process,
several event loops on one store, hostile input through every coroutine call.

Real parts only (a real redis-server, real threads, a store in a spawned process);
see ``test_shared_aio_adversarial`` for cancellations and outages.
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

from tests.aio.support import Gate, run
from tests.conftest import start
from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tests.shared.test_shared_aio import eventually, lease_of, opened, returning
from tests.shared.test_shared_aio_adversarial import leaders, seq_of
from tests.shared.workers import Worker
from tierstore import TierStore, TierStoreError, Versioned
from tierstore.aio import AsyncTierStore

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


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


@pytest.mark.parametrize("when", ["loading", "filled"])
def test_a_leader_task_its_loop_cancels_leaves_a_caller_on_another_loop_the_landed_value_or_the_next_load(
    stores: Callable[..., TierStore], raw: redis.Redis, when: str
) -> None:
    """Cancelled while its loader runs, the lease is freed and the other loop's caller loads at once
    (not after the 60 s lease); cancelled once its fill landed in Redis, that caller gets the value."""
    store = stores(lock_timeout=60.0)
    wrapper = AsyncTierStore(store)
    led = threading.Event()
    calls: list[str] = []

    async def reload() -> str:
        calls.append("other loop")
        return "reloaded"

    async def follower_body() -> Any:
        await asyncio.to_thread(led.wait, 10)
        try:
            return await wrapper.get_or_load("k", reload)
        finally:
            await wrapper.close()  # this loop's connections

    async def leader_body() -> None:
        gate = Gate("filled")
        caller = asyncio.ensure_future(wrapper.get_or_load("k", gate))
        await gate.entered.wait()
        led.set()
        await asyncio.to_thread(wait_for, lambda: store._flights.in_flight["k"].following == 2)
        if when == "filled":
            gate.open.set()
            while seq_of(raw, "k") is None:  # the loop held between rounds: FILL ran, its reply unread
                await asyncio.sleep(0)
        [leader] = leaders(wrapper)
        leader.cancel()  # as this loop's close, or its shutdown, cancels it
        with pytest.raises(TierStoreError, match="interrupted"):
            await caller  # this loop's caller is told
        await wrapper.close()

    follower, out = start(lambda: run(follower_body))
    try:
        run(leader_body)
        follower.join(30)
        expected = "filled" if when == "filled" else "reloaded"
        assert out == [expected] and calls == ([] if when == "filled" else ["other loop"])
        assert store.get("k") == expected and not raw.exists(lease_of("k"))
    finally:
        led.set()


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
