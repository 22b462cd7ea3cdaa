"""AsyncTierStore: every call as a coroutine with the sync store's semantics; what runs on the loop and what not."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.aio.support import run
from tierstore import ABSENT, SharedUnavailable, StoreClosed, TierStore, TierStoreError, Versioned
from tierstore.aio import AsyncSortedIndex, AsyncTierStore


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to it (a real pool, not a mock)."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        target: Any = fn
        while isinstance(target, functools.partial):  # to_thread submits partial(context.run, func, ...)
            target = target.args[0] if target.func.__name__ == "run" else target.func
        target = getattr(target, "__wrapped__", target)  # a plain loader's call in its thread
        self.submitted.append(getattr(target, "__name__", repr(target)))
        return super().submit(fn, *args, **kwargs)


def test_every_call_has_the_sync_semantics(tmp_path: Path) -> None:
    async def body() -> None:
        async with AsyncTierStore(str(tmp_path / "s"), persist_path=str(tmp_path / "p")) as s:
            assert await s.set("a", {"x": (1, 2)}) is True
            assert await s.get("a") == {"x": [1, 2]}
            assert await s.get("missing", "d") == "d"
            entry = await s.get_entry("a")
            assert entry is not None and entry.value == {"x": [1, 2]}
            assert await s.add("a", 2) is False and await s.add("b", 2) is True
            assert await s.touch("b", 60.0) is True
            assert await s.replace_value("b", 3) is True and await s.get("b") == 3
            assert await s.update_value("b", lambda value: value * 2) is True and await s.get("b") == 6
            assert await s.update_value("b", lambda value: value // 2) is True
            assert await s.pop("b") == 3 and await s.pop("b", "gone") == "gone"
            with pytest.raises(KeyError):
                await s.pop("b")
            assert await s.set("v", 1, version=5) is True and await s.set("v", 0, version=4) is False
            assert await s.delete("v") is True and await s.get("v") is None
            assert await s.set_many({"m1": 1, "m2": 2, b"m3": 3}) == 3
            assert await s.get_many(["m1", "m2", b"m3", "nope"]) == {"m1": 1, "m2": 2, b"m3": 3}
            assert await s.delete_many(["m1", "nope"]) == 1
            assert await s.delete_prefix("m") == 1 and await s.get(b"m3") == 3
            await s.invalidate("a")
            assert await s.get("a") is None
            assert await s.incr("c") == 1 and await s.incr("c", 5) == 6 and await s.decr("c", 2) == 4
            assert await s.counter("c") == 4
            index = s.index("scores")
            assert isinstance(index, AsyncSortedIndex)
            await index.add("ada", 3.0)
            await index.add_many([("bob", 1.0), ("cy", 2.0)])
            assert await index.page() == [("bob", 1.0), ("cy", 2.0), ("ada", 3.0)]
            assert await index.rank("ada") == 2 and await index.score("cy") == 2.0 and len(index) == 3
            assert "ada" in index and "nobody" not in index and index.name == "scores"
            items, cursor = await index.page_after(None, limit=2)
            assert items == [("bob", 1.0), ("cy", 2.0)] and cursor is not None
            assert await index.range_by_score(1.5, 3.0) == [("cy", 2.0), ("ada", 3.0)]
            assert await index.remove("bob") is True
            await index.replace([("z", 9.0)], stamp=7)
            assert await index.page() == [("z", 9.0)] and index.stamp == 7
            assert (await s.checkpoint())["full"] in (True, False)
            assert "expired_purged" in await s.sweep()
            assert await s.drain(5.0) is True
            assert await s.clear() == 1  # b"m3"
            stats = await s.stats()
            assert stats["sets"] >= 5 and stats["hits_memory"] >= 1
        assert s.closed  # async with closed the store it opened
        with pytest.raises(StoreClosed):
            await s.get("a")

    run(body)


def test_a_wrapper_never_closes_the_store_it_was_given(tmp_path: Path) -> None:
    store = TierStore(str(tmp_path / "s"), checkpoint_interval=None)
    try:
        store.set("k", 1)

        async def body() -> None:
            async with AsyncTierStore(store) as s:
                assert s.store is store
                assert await s.get("k") == 1
                await s.set("k", 2)
            await s.close()

        run(body)
        assert not store.closed and store.get("k") == 2
    finally:
        store.close()


def test_opening_runs_off_the_loop_once_and_open_raises_its_errors(tmp_path: Path) -> None:
    executor = CountingExecutor()

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        s = AsyncTierStore(str(tmp_path / "s"), checkpoint_interval=None)
        assert s.store is None and not s.closed
        with pytest.raises(StoreClosed, match="open"):
            s.index("early")  # a plain call cannot open the store
        # many first uses at once: one open, in a thread
        assert await asyncio.gather(*[s.get("k") for _ in range(20)]) == [None] * 20
        assert executor.submitted.count("_open_once") >= 1 and s.store is not None
        opened = s.store
        await s.set("k", 1)
        assert s.store is opened
        await s.close()
        with pytest.raises(ValueError):
            await AsyncTierStore.open(str(tmp_path / "t"), memory_items=-1)

    run(body)
    executor.shutdown()


def test_reads_writes_and_hits_stay_on_the_loop_while_long_work_goes_to_threads(tmp_path: Path) -> None:
    executor = CountingExecutor()

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        s = await AsyncTierStore.open(str(tmp_path / "s"), persist_path=str(tmp_path / "p"), checkpoint_interval=None)
        executor.submitted.clear()
        await s.set("a", 1)
        await s.get("a")
        await s.get("cold")
        await s.incr("c")
        await s.get_or_load("a", lambda: 2)  # a hit: the loader never runs
        assert executor.submitted == []

        def plain() -> int:
            return 5

        async def coroutine() -> int:
            return 6

        assert await s.get_or_load("p", plain) == 5
        assert executor.submitted == ["plain"]
        assert await s.get_or_load("q", coroutine) == 6
        assert executor.submitted == ["plain"]  # a coroutine loader runs as a task
        await s.checkpoint()
        await s.sweep()
        await s.close()
        assert executor.submitted[1:] == ["checkpoint", "sweep", "close"]

    run(body)
    executor.shutdown()


def test_the_existence_filter_calls_are_coroutines_run_in_threads(tmp_path: Path) -> None:
    """``guard_keys`` and ``rebuild_guard`` take the sync calls' arguments and rules; they write the
    filter (in shared mode, to Redis), so they run in a thread."""
    executor = CountingExecutor()

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        async with AsyncTierStore(str(tmp_path / "s"), guard=True) as s:
            for name in ("guard_keys", "rebuild_guard"):
                call = getattr(AsyncTierStore, name)
                assert asyncio.iscoroutinefunction(call)
                assert inspect.signature(call) == inspect.signature(getattr(TierStore, name))
            executor.submitted.clear()
            await s.guard_keys(["known"])
            assert executor.submitted == ["guard_keys"]
            assert await s.get_or_load("known", lambda: "loaded") == "loaded"
            assert await s.get_or_load("unknown", lambda: "loaded", default="ruled out") == "ruled out"
            with pytest.raises(TypeError, match=r"\[key\]"):
                await s.guard_keys("one-key")
            await s.rebuild_guard(["unknown"])
            assert await s.get_or_load("unknown", lambda: "loaded") == "loaded"
        async with AsyncTierStore(str(tmp_path / "unguarded")) as s:
            with pytest.raises(TierStoreError, match="guard=True"):
                await s.guard_keys(["k"])

    run(body)
    executor.shutdown()


def test_every_coroutine_of_an_async_index_takes_the_sync_index_s_arguments() -> None:
    from tierstore.ranking import SortedIndex

    calls = [name for name in vars(AsyncSortedIndex) if asyncio.iscoroutinefunction(getattr(AsyncSortedIndex, name))]
    shared = [name for name in calls if hasattr(SortedIndex, name)]
    assert {"add", "page", "page_after", "replace"} <= set(shared)
    for name in shared:
        assert inspect.signature(getattr(AsyncSortedIndex, name)) == inspect.signature(getattr(SortedIndex, name)), name


def test_an_unreachable_shared_tier_raises_at_open_and_a_wrapped_store_takes_no_options(tmp_path: Path) -> None:
    async def body() -> None:
        s = AsyncTierStore(str(tmp_path / "s"), shared="redis://127.0.0.1:1/0", shared_failure="raise")
        assert not (tmp_path / "s").exists()  # nothing is opened before first use
        with pytest.raises(SharedUnavailable, match="unreachable at open"):
            await s.get("k")
        assert s.store is None

    run(body)
    with pytest.raises(TypeError, match="takes no options"):
        store = TierStore(None, checkpoint_interval=None)
        try:
            AsyncTierStore(store, memory_items=3)
        finally:
            store.close()


def test_get_or_load_values_negative_entries_versions_and_errors(tmp_path: Path) -> None:
    calls: list[str] = []

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            async def nothing() -> None:
                calls.append("nothing")

            assert await s.get_or_load("n", nothing, default="d") == "d"
            assert await s.get_or_load("n", nothing, default="d2") == "d2"  # a negative entry: no second call
            assert calls == ["nothing"]
            assert (await s.get_entry("n")) is not None

            async def absent() -> Any:
                return ABSENT

            assert await s.get_or_load("n2", absent) is None

            async def versioned() -> Versioned:
                return Versioned((1, 2), 7)

            assert await s.get_or_load("v", versioned) == [1, 2]
            entry = await s.get_entry("v")
            assert entry is not None and entry.version == 7

            async def boom() -> int:
                calls.append("boom")
                raise LookupError("source down")

            for _ in range(2):  # not cached: the second call loads again
                with pytest.raises(LookupError, match="source down"):
                    await s.get_or_load("e", boom)
            assert calls.count("boom") == 2
            stats = await s.stats()
            assert stats["load_errors"] == 2 and stats["negative_hits"] == 1

            assert await s.get_or_load("w", lambda: versioned()) == [1, 2]  # awaited after its thread
            with pytest.raises(TypeError):
                await s.get_or_load("x", 5)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await s.get_or_load("x", nothing, on_busy="never")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await s.get_or_load(3, nothing)  # type: ignore[arg-type]

    run(body)


def test_a_loader_awaiting_its_own_key_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            async def selfish() -> Any:
                return await s.get_or_load("k", selfish)

            with pytest.raises(RuntimeError, match="wait for itself"):
                await s.get_or_load("k", selfish)

            async def other() -> Any:
                return await s.get_or_load("j", lambda: 3)

            assert await s.get_or_load("k", other) == 3

    run(body)


def test_cached_coroutine_functions_have_the_handle(tmp_path: Path) -> None:
    calls: list[int] = []

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            @s.cached(name="double")
            async def double(x: int) -> int:
                calls.append(x)
                return 2 * x

            assert await double(3) == 6 and await double(3) == 6 and calls == [3]
            assert await s.get(double.key(3)) == 6
            await double.invalidate(3)
            assert await double(3) == 6 and calls == [3, 3]
            await double(4)
            assert await double.cache_clear() == 2
            assert await s.get(double.key(4)) is None

            class Repo:
                def __init__(self, tag: str) -> None:
                    self.tag = tag

                @s.cached(key=lambda self, x: f"repo:{self.tag}:{x}")
                async def find(self, x: int) -> str:
                    return f"{self.tag}{x}"

            a, b = Repo("a"), Repo("b")
            assert await a.find(1) == "a1" and await b.find(1) == "b1"
            assert a.find.key(1) == "repo:a:1"
            await a.find.invalidate(1)
            assert await s.get("repo:a:1") is None and await s.get("repo:b:1") == "b1"
            assert await Repo.find.cache_clear() == 1

            with pytest.raises(TypeError, match="coroutine functions"):
                s.cached(name="plain")(lambda: 1)

    run(body)


@pytest.mark.parametrize("leader", ["thread", "coroutine"])
def test_a_thread_and_a_coroutine_on_one_cold_key_cause_one_load(leader: str) -> None:
    """Real threads: whichever starts the load, the other waits for it."""
    store = TierStore(None, checkpoint_interval=None)
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def sync_loader() -> str:
        calls.append("thread")
        started.set()
        release.wait(10)
        return "value"

    async def async_loader() -> str:
        calls.append("coroutine")
        started.set()
        await asyncio.to_thread(release.wait, 10)
        return "value"

    def thread_call() -> Any:
        return store.get_or_load("k", sync_loader)

    async def waits_grow(before: int) -> None:
        while store.stats()["load_waits"] == before:
            await asyncio.sleep(0.001)

    async def body() -> list[Any]:
        s = AsyncTierStore(store)
        loop = asyncio.get_running_loop()
        if leader == "thread":
            thread_result = loop.run_in_executor(None, thread_call)
            await asyncio.to_thread(started.wait, 10)
            coroutine_result = asyncio.ensure_future(s.get_or_load("k", async_loader))
        else:
            coroutine_result = asyncio.ensure_future(s.get_or_load("k", async_loader))
            await asyncio.to_thread(started.wait, 10)
            thread_result = loop.run_in_executor(None, thread_call)
        await waits_grow(0)
        release.set()
        return [await coroutine_result, await thread_result]

    try:
        assert run(body) == ["value", "value"]
        assert calls == [leader]
    finally:
        store.close()


def test_one_store_serves_several_event_loops(tmp_path: Path) -> None:
    """Threads each running a loop share one wrapper: one load across the loops, every loop's waiters woken."""
    s = AsyncTierStore(str(tmp_path / "s"), checkpoint_interval=None)
    calls: list[int] = []
    release = threading.Event()
    ready = threading.Barrier(3)

    async def loader() -> str:
        calls.append(1)
        await asyncio.to_thread(release.wait, 10)
        return "shared"

    async def in_loop() -> list[Any]:
        await s.get("warm")  # opens once, whichever loop comes first
        first = asyncio.ensure_future(s.get_or_load("k", loader))
        await asyncio.to_thread(ready.wait, 10)
        return await asyncio.gather(first, *[s.get_or_load("k", loader) for _ in range(50)])

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(run(in_loop))) for _ in range(2)]
    for thread in threads:
        thread.start()
    ready.wait(10)
    release.set()
    for thread in threads:
        thread.join(30)
    assert [len(r) for r in results] == [51, 51] and {v for r in results for v in r} == {"shared"}
    assert calls == [1]

    async def close() -> None:
        await s.close()

    run(close)
