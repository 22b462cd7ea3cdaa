"""``AsyncTierStore`` in shared mode: the same calls as the blocking store, every round trip awaited on the loop.

Real stores over one real redis-server: an async store and a blocking one (its
own tiers, its own lease tokens: another process as far as Redis can tell) or a
second namespace for side-by-side answers. Loaders are held by the test, so the
interleavings are forced. Every test runs with ResourceWarning, RuntimeWarning
and unraisable exceptions as errors, and fails if its loop's exception handler
was called (``tests.aio.support.run``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.aio.support import Gate, run, settle
from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tierstore import LoadTimeout, SharedUnavailable, TierStore, codec
from tierstore.aio import AsyncTierStore
from tierstore.shared.client import CALL_TIMEOUT, Names
from tierstore.shared.mirror import mark_slot

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

NAMES = Names("tierstore")


def lease_of(key: str) -> bytes:
    return NAMES.lease(codec.encode_key(key))


async def opened(url: str, **options: Any) -> AsyncTierStore:
    options.setdefault("shared_ping_interval", 0.2)
    return await AsyncTierStore.open(None, shared=url, **options)


def returning(value: Any) -> Callable[[], Any]:
    """A coroutine loader answering ``value`` at once."""

    async def load() -> Any:
        return value

    return load


async def eventually(probe: Callable[[], Any], timeout: float = 5.0) -> None:
    """Return once ``probe()`` is true, polling on the loop; ``AssertionError`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.005)


# -- coherence and parity ------------------------------------------------------------------------


def test_an_async_store_and_a_blocking_one_see_each_others_writes(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    blocking = stores()

    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            assert await s.set("k", 1)
            assert blocking.get("k") == 1
            assert await s.get("k") == 1  # its own copy now, in tier 1
            blocking.set("k", 2)
            await eventually(lambda: blocking.get("k") == 2)
            for _ in range(1000):  # the listener replaces the copy: the new value, never the old one after it
                if await s.get("k") == 2:
                    break
                await asyncio.sleep(0.005)
            assert await s.get("k") == 2
            assert (await s.stats())["hits_shared"] == 0  # the message carried the new record: no round trip
            blocking.delete("k")
            for _ in range(1000):
                if await s.get("k") is None:
                    break
                await asyncio.sleep(0.005)
            assert await s.get("k", "gone") == "gone"
        finally:
            await s.close()

    run(body)


async def script(s: Any, awaiting: bool) -> list[Any]:
    """Every call that may need Redis, in turn, with its answer (errors as their type name)."""

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = getattr(s, name)(*args, **kwargs)
            return await result if awaiting else result
        except Exception as exc:  # the error's type is the answer compared
            return type(exc).__name__

    answers: list[Any] = []
    for name, args, kwargs in [
        ("set", ("a", {"x": [1, 2]}), {}),
        ("get", ("a",), {}),
        ("set", ("v", "one"), {"version": 5}),
        ("set", ("v", "old"), {"version": 4}),
        ("get", ("v",), {}),
        ("add", ("a", "again"), {}),
        ("add", ("b", "new"), {"ttl": 60}),
        ("touch", ("b",), {"ttl": 120}),
        ("touch", ("missing",), {}),
        ("replace_value", ("b", "newer"), {}),
        ("get", ("b",), {}),
        ("update_value", ("b", lambda value: value + "!"), {}),
        ("update_value", ("missing", lambda value: value + "!"), {}),
        ("update_value", ("b", lambda value: value + 1), {}),
        ("update_value", ("b", "not callable"), {}),
        ("get", ("b",), {}),
        ("pop", ("b",), {}),
        ("pop", ("b", "default"), {}),
        ("pop", ("b",), {}),
        ("delete", ("v",), {"version": 3}),
        ("get", ("v",), {}),
        ("delete", ("v",), {"version": 9}),
        ("get", ("v", "none"), {}),
        ("set_many", ({"m1": 1, "m2": None, "m3": [3]},), {"ttl": 60}),
        ("get_many", (["m1", "m2", "m3", "mx"],), {}),
        ("delete_many", (["m1", "m3", "mx"],), {}),
        ("get_many", (["m1", "m2", "m3"],), {}),
        ("incr", ("c", 5), {}),
        ("decr", ("c", 2), {}),
        ("counter", ("c",), {}),
        ("counter", ("never",), {}),
        ("invalidate", ("a",), {}),
        ("get", ("a",), {}),
        ("set", ("bad key", object()), {}),
        ("set", (b"", 1), {"ttl": -1}),
        ("touch", ("a",), {"ttl": float("nan")}),
        ("set_many", ([("no", "mapping")],), {}),
        ("incr", ("c", 2**63), {}),
        ("set", ("p:1", 1), {}),
        ("set", ("p:2", 2), {}),
        ("delete_prefix", ("p:",), {}),
        ("get_many", (["p:1", "p:2"],), {}),
        ("clear", (), {}),
        ("get", ("m2", "cleared"), {}),
    ]:
        answers.append((name, await call(name, *args, **kwargs)))
    entry = await call("get_entry", "none-such")
    answers.append(("get_entry", entry))
    return answers


def test_every_call_answers_as_the_blocking_call_does(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    expected = asyncio.run(script(stores(namespace="blocking"), awaiting=False))

    async def body() -> list[Any]:
        s = await opened(redis_server.url, namespace="async")
        try:
            return await script(s, awaiting=True)
        finally:
            await s.close()

    assert run(body) == expected


# -- never blocking the loop -----------------------------------------------------------------------


def test_a_call_waiting_on_a_paused_redis_leaves_the_loop_running(redis_server: RedisServer) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, shared_failure="raise")
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        try:
            assert await s.set("k", 1)
            ticking = asyncio.create_task(ticker())
            redis_server.pause()
            try:
                started = time.monotonic()
                with pytest.raises(SharedUnavailable):
                    await s.set("other", 2)  # not in tier 1: Redis must answer
                waited = time.monotonic() - started
            finally:
                redis_server.resume()
                stop.set()
                await ticking
            assert waited >= CALL_TIMEOUT * 0.9  # it did wait for the socket timeout...
            assert ticks >= 20  # ...and the loop ran meanwhile (a blocking call would have stopped it)
            for _ in range(1000):  # the listener reconnects and resyncs: calls work again
                try:
                    if await s.set("other", 3):
                        break
                except SharedUnavailable:
                    await asyncio.sleep(0.01)
            assert await s.get("other") == 3
        finally:
            await s.close()

    run(body)


# -- one load across stores, cancellation, errors ----------------------------------------------


def test_coroutines_here_and_threads_of_another_store_make_one_load(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    blocking = stores()
    calls: list[str] = []
    release = threading.Event()

    def thread_loader() -> str:
        calls.append("thread")
        release.wait(10)
        return "value"

    async def body() -> None:
        s = await opened(redis_server.url)

        async def coroutine_loader() -> str:
            calls.append("coroutine")
            await asyncio.to_thread(release.wait, 10)
            return "value"

        try:
            results: list[Any] = []
            threads = [
                threading.Thread(target=lambda: results.append(blocking.get_or_load("cold", thread_loader)))
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            answers = asyncio.gather(*(s.get_or_load("cold", coroutine_loader) for _ in range(200)))
            await eventually(lambda: len(calls) >= 1)
            await asyncio.sleep(0.2)  # every caller has asked meanwhile: none of them may load
            release.set()
            assert await answers == ["value"] * 200
            await asyncio.to_thread(lambda: [thread.join(10) for thread in threads])
            assert results == ["value"] * 8
            assert len(calls) == 1
        finally:
            release.set()
            await s.close()

    run(body)


def test_a_load_cancelled_by_its_last_caller_frees_the_lease_at_once_and_never_stores(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    blocking = stores()

    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        gate = Gate("from the cancelled load")
        try:
            caller = asyncio.create_task(s.get_or_load("k", gate))
            await gate.entered.wait()
            assert raw.exists(lease_of("k"))
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            await eventually(lambda: not raw.exists(lease_of("k")), timeout=5.0)  # not its 60 s PX
            assert gate.cancelled == 1
            # another store loads at once: the lease is free, nothing was stored
            answer = await asyncio.to_thread(blocking.get_or_load, "k", lambda: "elsewhere", on_busy="default")
            assert answer == "elsewhere"
            assert await s.get_or_load("k", Gate("unused")) == "elsewhere"
            gate.open.set()
            await settle()
            assert await s.get("k") == "elsewhere"
        finally:
            await s.close()

    run(body)


def test_a_loader_error_reaches_every_waiter_is_not_stored_and_frees_the_lease(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        calls = 0

        async def failing() -> Any:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            raise ValueError("source down")

        try:
            answers = await asyncio.gather(*(s.get_or_load("k", failing) for _ in range(20)), return_exceptions=True)
            assert calls == 1
            assert all(isinstance(answer, ValueError) for answer in answers)
            assert not raw.exists(lease_of("k"))
            assert await s.get_or_load("k", returning("after")) == "after"
        finally:
            await s.close()

    run(body)


def test_an_invalidation_in_another_store_refuses_the_fill_of_a_load_in_flight(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    blocking = stores()

    async def body() -> None:
        s = await opened(redis_server.url)
        gate = Gate("stale by now")
        try:
            loading = asyncio.create_task(s.get_or_load("k", gate))
            await gate.entered.wait()
            blocking.invalidate("k")
            gate.open.set()
            assert await loading == "stale by now"  # its callers get it...
            assert blocking.get("k") is None  # ...but it is not stored, here or there
            assert await s.get("k") is None
            assert (await s.stats())["fills_rejected"] == 1
        finally:
            await s.close()

    run(body)


def test_waiting_on_another_stores_load_follows_on_busy_without_blocking_the_loop(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    blocking = stores()
    release = threading.Event()
    entered = threading.Event()

    def held_loader() -> str:
        entered.set()
        release.wait(10)
        return "theirs"

    async def body() -> None:
        s = await opened(redis_server.url)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        own = Gate("ours")
        own.open.set()
        thread = threading.Thread(target=lambda: blocking.get_or_load("k", held_loader))
        thread.start()
        ticking = asyncio.create_task(ticker())
        try:
            await asyncio.to_thread(entered.wait, 10)
            assert await s.get_or_load("k", own, on_busy="default", default="busy") == "busy"
            with pytest.raises(LoadTimeout):
                await s.get_or_load("k", own, wait_timeout=0.2)
            waiting = asyncio.create_task(s.get_or_load("k", own))
            before = ticks
            await asyncio.sleep(0.2)
            assert not waiting.done() and ticks - before >= 10  # waits, and the loop runs on
            release.set()
            assert await waiting == "theirs"
            assert own.calls == 0
        finally:
            release.set()
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
            await asyncio.to_thread(thread.join, 10)
            await s.close()

    run(body)


# -- wrapping, loops ---------------------------------------------------------------------------


def test_a_wrapped_shared_store_is_served_on_several_loops_and_left_open(stores: Callable[..., TierStore]) -> None:
    store = stores()
    wrapper = AsyncTierStore(store)
    errors: list[BaseException] = []

    def on_its_own_loop(tag: int) -> None:
        async def body() -> None:
            for i in range(50):
                assert await wrapper.set(f"{tag}:{i}", i)
                assert await wrapper.get(f"{tag}:{i}") == i
            assert await wrapper.get_or_load(f"{tag}:loaded", returning(tag)) == tag
            await wrapper.close()  # this loop's connections only; the store stays open

        try:
            run(body)
        except BaseException as exc:  # reported to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=on_its_own_loop, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert not store.closed
    assert [store.get(f"{tag}:49") for tag in range(4)] == [49, 49, 49, 49]
    wait_for(lambda: store.get("3:loaded") == 3)


def test_an_index_and_the_existence_filter_through_the_async_store(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    blocking = stores(guard=True, bloom_capacity=10_000)

    async def body() -> None:
        s = await opened(redis_server.url, guard=True, bloom_capacity=10_000)
        try:
            board = s.index("board")
            await board.add_many([("ann", 3.0), ("bob", 1.0), ("cy", 2.0)])
            await board.add("dee", 2.5)
            assert await board.page(0, 2, reverse=True) == [("ann", 3.0), ("dee", 2.5)]
            assert await board.count() == 4 and await board.contains("cy") and not await board.contains("zed")
            assert await board.rank("cy") == 1 and await board.score("zed") is None
            assert blocking.index("board").page(0, 10) == await board.page(0, 10)
            with pytest.raises(TypeError, match="count"):
                len(board)
            with pytest.raises(TypeError, match="contains"):
                "ann" in board  # noqa: B015  # the refusal is the point
            await board.replace([("solo", 1.0)], stamp="v2")
            assert await board.page() == [("solo", 1.0)] and await board.read_stamp() == "v2"

            source = Gate("never")
            assert await s.get_or_load("never-admitted", source, default="absent") == "absent"
            assert source.calls == 0  # the filter ruled it out: no load, no lease
            assert (await s.stats())["guard_rejections"] == 1
            assert await s.set("admitted", 1)
            assert blocking.get_or_load("admitted", lambda: "unused") == 1
            assert blocking._shared is not None and blocking._shared.guard is not None
            assert blocking._shared.guard.might_contain("admitted")
            blocking.guard_keys(["known"])  # admitted elsewhere: loaded here
            assert await s.get_or_load("known", returning("v")) == "v"
            assert blocking.get("known") == "v"
        finally:
            await s.close()

    run(body)


def test_the_first_calls_of_a_store_not_yet_open_await_redis_too(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tierstore.shared.aio_redis import AsyncRedis

    driven: list[str] = []
    drive = AsyncRedis.run

    async def counted(self: AsyncRedis, steps: Any) -> Any:
        driven.append(steps.__name__)
        return await drive(self, steps)

    monkeypatch.setattr(AsyncRedis, "run", counted)

    async def body() -> None:
        for call, expected in [("set", "write_steps"), ("get", "remote_steps"), ("incr", "incr_steps")]:
            s = AsyncTierStore(None, shared=redis_server.url, namespace=call)  # opened by its first call
            try:
                args = ("k", 1) if call == "set" else ("k",)
                await getattr(s, call)(*args)
                assert driven[-1] == expected  # the asyncio driver ran it: no blocking call on the loop
            finally:
                await s.close()

    run(body)


def signature_of(call: Callable[..., Any]) -> inspect.Signature:
    """``call``'s signature as its callers see it (without ``self``)."""
    signature = inspect.signature(call)
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return signature.replace(parameters=parameters)


def test_every_coroutine_call_takes_the_blocking_call_s_arguments_opened_or_not(redis_server: RedisServer) -> None:
    """``inspect.signature`` of each coroutine call, on a shared store not opened yet, opened, and on
    the class, is the blocking call's: the calls bound before the open name their arguments too."""

    async def body() -> None:
        s = AsyncTierStore(None, shared=redis_server.url, shared_ping_interval=0.2)
        try:
            names = [name for name, call in vars(s).items() if not name.startswith("_") and callable(call)]
            assert "get" in names
            for state in ("not opened", "opened"):
                for name in names:
                    call = getattr(s, name)
                    assert inspect.iscoroutinefunction(call), (state, name)
                    expected = signature_of(getattr(TierStore, name))
                    assert signature_of(call) == expected, (state, name)
                    assert signature_of(getattr(AsyncTierStore, name)) == expected, name
                await s.get("k")
        finally:
            await s.close()

    run(body)


def test_a_thousand_concurrent_calls_share_a_bounded_number_of_connections(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    from tierstore.shared.aio_redis import MAX_CONNECTIONS

    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            before = int(raw.info("stats")["total_connections_received"])
            assert all(await asyncio.gather(*(s.set(f"k{i}", i) for i in range(1000))))
            assert await asyncio.gather(*(s.get(f"absent{i}", i) for i in range(1000))) == list(range(1000))
            opened_now = int(raw.info("stats")["total_connections_received"]) - before
            assert opened_now <= MAX_CONNECTIONS < 1000  # not one per coroutine in flight
            assert [await s.get(f"k{i}") for i in (0, 499, 999)] == [0, 499, 999]
        finally:
            await s.close()

    run(body)


def test_a_tier1_read_answers_and_counts_as_the_blocking_get_in_every_state(
    stores: Callable[..., TierStore],
) -> None:
    now = [1_000_000.0]
    store = stores(clock=lambda: now[0], stale_ttl=2.0, negative_ttl=100.0)
    wrapper = AsyncTierStore(store)
    store.set("live", 1, ttl=100)
    store.set("expires", 2, ttl=1)
    store.set("stale", 3, ttl=4)
    store.set("forever", 4, ttl=None)
    assert store.get_or_load("negative", lambda: None, default="none") == "none"
    store.set("deleted", 5)
    store.delete("deleted")
    keys = ["live", "expires", "stale", "forever", "negative", "deleted"]
    for key in keys:  # into tier 1 (a first read may only remember the key)
        store.get(key)
        store.get(key)
    now[0] += 5.0  # "expires" is past its stale window, "stale" within it

    async def read_each() -> list[tuple[Any, dict[str, int]]]:
        answers = []
        for key in keys:
            before = store.stats()
            value = await wrapper.get(key, "default")
            after = store.stats()
            answers.append((value, {name: after[name] - before[name] for name in after if after[name] != before[name]}))
        await wrapper.close()
        return answers

    def blocking_each() -> list[tuple[Any, dict[str, int]]]:
        answers = []
        for key in keys:
            before = store.stats()
            value = store.get(key, "default")
            after = store.stats()
            answers.append((value, {name: after[name] - before[name] for name in after if after[name] != before[name]}))
        return answers

    expected = blocking_each()
    assert [value for value, _ in expected] == [1, "default", "default", 4, "default", "default"]
    assert run(read_each) == expected


def test_a_cold_load_asks_redis_once_then_takes_the_lease_and_fills(redis_server: RedisServer) -> None:
    """As the blocking store: the leader's second look is local, so a cold key costs three round trips."""

    async def body() -> tuple[Any, int]:
        s = await opened(redis_server.url)
        try:
            store = s.store
            assert store is not None
            calls = store.stats()["shared_calls"]
            value = await s.get_or_load("cold", returning("loaded"))
            return value, store.stats()["shared_calls"] - calls
        finally:
            await s.close()

    assert run(body) == ("loaded", 3)  # HMGET (a miss), TAKE, FILL


def test_coroutines_joining_a_load_running_here_ask_redis_nothing(redis_server: RedisServer) -> None:
    """200 coroutines arrive while a load of the cold key runs on their loop: no Redis read of their own."""

    async def body() -> tuple[list[Any], int, int]:
        s = await opened(redis_server.url)
        try:
            store = s.store
            assert store is not None
            gate = asyncio.Event()

            async def load() -> str:
                await gate.wait()
                return "loaded"

            calls = store.stats()["shared_calls"]
            leader = asyncio.ensure_future(s.get_or_load("cold", load))
            await eventually(lambda: "cold" in store._flights.in_flight)
            followers = [asyncio.ensure_future(s.get_or_load("cold", returning("second"))) for _ in range(200)]
            await eventually(lambda: store._flights.in_flight["cold"].following >= 200)
            while_loading = store.stats()["shared_calls"] - calls
            gate.set()
            answers = await asyncio.gather(leader, *followers)
            return list(answers), while_loading, store.stats()["shared_calls"] - calls
        finally:
            await s.close()

    answers, while_loading, in_all = run(body)
    assert answers == ["loaded"] * 201
    assert while_loading == 2 and in_all == 3  # the leader's HMGET and TAKE, then its FILL


def test_listings_and_coroutine_jobs_of_a_shared_store_see_every_process_s_writes(redis_server: RedisServer) -> None:
    """``keys``/``items`` list Redis's live entries (written by another store too); a ``refresh_every``
    coroutine loader runs on the caller's loop and its value reaches the other store."""

    async def body() -> None:
        a, b = await opened(redis_server.url), await opened(redis_server.url)
        try:
            await a.set("k1", 1)
            await b.set("k2", 2)
            assert await a.keys() == ["k1", "k2"] and [pair async for pair in b.items("k")] == [("k1", 1), ("k2", 2)]

            async def loader() -> str:
                await asyncio.sleep(0)
                return "fresh"

            handle = await a.refresh_every("r", loader, 60.0)
            assert await a.drain(10.0)
            handle.cancel()
            assert await b.get("r") == "fresh"
        finally:
            await a.close()
            await b.close()

    run(body)


def test_get_many_pipelines_its_round_trips_as_the_blocking_one_does(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < 602:  # no two in one change-mark slot (str hashes vary by process)
        keys.setdefault(mark_slot(f"k{candidate}"), f"k{candidate}")
        candidate += 1
    *present, absent, bad = keys.values()
    values = {key: [index] for index, key in enumerate(present)}
    stores().set_many(values)
    raw.set(NAMES.entry(codec.encode_key(bad)), b"not a hash")  # its HMGET: a WRONGTYPE reply

    async def body() -> None:
        s = await opened(redis_server.url)
        try:
            before = await s.stats()
            assert await s.get_many([*values, absent, bad]) == values
            after = await s.stats()
            assert after["shared_calls"] - before["shared_calls"] == 3  # 602 reads, 256 to a round trip
            assert after["hits_shared"] - before["hits_shared"] == 600
            assert after["corrupt_records"] - before["corrupt_records"] == 1
            assert await s.get_many(list(values)) == values  # every copy kept: no round trip now
            assert (await s.stats())["shared_calls"] == after["shared_calls"]
        finally:
            await s.close()

    run(body)
