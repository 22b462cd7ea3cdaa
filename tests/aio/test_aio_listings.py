"""AsyncTierStore's listings and background jobs: ``keys``/``items`` read in threads a chunk at a time,
``refresh_every``/``keep_fresh`` taking coroutine functions that run on the caller's loop, and every
public call of ``TierStore`` present as a coroutine call with the same arguments."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.aio.support import run
from tests.aio.test_aio_store import CountingExecutor
from tierstore import TierStore
from tierstore.aio import AsyncTierStore
from tierstore.aio_background import on_loop
from tierstore.aio_listing import CHUNK


def signature_of(call: Callable[..., Any]) -> inspect.Signature:
    """``call``'s parameters as its callers see them: names, kinds and defaults (no ``self``)."""
    signature = inspect.signature(call)
    parameters = [
        p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values() if p.name != "self"
    ]  # annotations aside: a coroutine call's callables may be coroutine functions
    return signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)


def test_every_public_call_of_the_store_is_a_call_of_the_wrapper_with_its_arguments() -> None:
    names = [name for name in dir(TierStore) if not name.startswith("_") and callable(getattr(TierStore, name))]
    assert {"keys", "items", "refresh_every", "keep_fresh", "report_corrupt"} <= set(names)
    for name in names:
        assert hasattr(AsyncTierStore, name), name
        assert signature_of(getattr(AsyncTierStore, name)) == signature_of(getattr(TierStore, name)), name


def test_keys_and_items_list_what_the_store_lists_a_chunk_per_thread_hop(tmp_path: Path) -> None:
    count = 2 * CHUNK + 7  # three chunks, the last one short

    async def body() -> None:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        async with AsyncTierStore(str(tmp_path / "s"), checkpoint_interval=None) as s:
            await s.set_many({f"k{index:04d}": index for index in range(count)})
            await s.set_many({b"b1": "bytes", "other": 0})
            await s.delete("k0003")
            sync = s.store
            assert sync is not None
            executor.submitted.clear()
            assert await s.keys() == list(sync.keys())
            assert executor.submitted.count("_take") == 3  # every chunk read in a thread, none on the loop
            assert await s.items("k") == list(sync.items("k")) and len(await s.items("k")) == count - 1
            seen = [key async for key in s.keys(b"")]
            assert seen == [b"b1"]
            pairs = []
            async for key, value in s.items("k00"):
                pairs.append((key, value))
                if len(pairs) == 3:
                    break  # an abandoned listing: its snapshot is let go
            assert pairs == [("k0000", 0), ("k0001", 1), ("k0002", 2)]
        executor.shutdown()

    run(body)


def test_a_listing_opens_the_store_first_and_reads_a_fresh_scan_each_time(tmp_path: Path) -> None:
    with TierStore(str(tmp_path / "s"), checkpoint_interval=None) as store:
        store.set("a", 1)

    async def body() -> None:
        s = AsyncTierStore(str(tmp_path / "s"), checkpoint_interval=None)  # not opened yet
        listing = s.keys()
        assert await listing == ["a"]
        await s.set("b", 2)
        assert await listing == ["a", "b"]  # the same listing, listed again: what is live now
        assert [pair async for pair in s.items()] == [("a", 1), ("b", 2)]
        await s.close()

    run(body)


def test_report_corrupt_is_counted(tmp_path: Path) -> None:
    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            await s.report_corrupt("k", "a forged payload")
            assert (await s.stats())["corrupt_records"] == 1

    run(body)


def test_refresh_every_awaits_a_coroutine_loader_on_the_calling_loop(tmp_path: Path) -> None:
    async def body() -> None:
        loop_thread = threading.get_ident()
        ran_in: list[int] = []

        async def loader() -> str:
            ran_in.append(threading.get_ident())
            await asyncio.sleep(0)  # a real coroutine: it awaits on its loop
            return f"round {len(ran_in)}"

        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            handle = await s.refresh_every("k", loader, 60.0)
            assert await s.drain(10.0)
            assert await s.get("k") == "round 1"
            assert ran_in == [loop_thread]  # on this loop, not in the scheduler's thread
            handle.cancel()

    run(body)


def test_keep_fresh_awaits_coroutine_rebuild_and_stamp_on_the_calling_loop(tmp_path: Path) -> None:
    async def body() -> None:
        calls: list[str] = []

        async def rebuild() -> list[tuple[str, float]]:
            calls.append("rebuild")
            return [("a", 2.0), ("b", 1.0)]

        async def stamp() -> int:
            calls.append("stamp")
            return 7

        async with AsyncTierStore(None, checkpoint_interval=None) as s:
            handle = await s.keep_fresh("top", rebuild, stamp=stamp, interval=60.0)
            assert await s.drain(10.0)
            index = s.index("top")
            assert await index.page() == [("b", 1.0), ("a", 2.0)]
            assert await index.read_stamp() == 7
            assert calls == ["stamp", "rebuild"]
            handle.cancel()

    run(body)


def test_a_coroutine_job_whose_loop_does_not_run_fails_its_round_and_never_hangs() -> None:
    loop = asyncio.new_event_loop()
    started: list[bool] = []

    async def loader() -> int:
        started.append(True)
        return 1

    call = on_loop(loader, loop, 0.5)
    assert call is not loader and on_loop(len, loop, 0.5)([1, 2]) == 2  # a plain answer is returned as it is
    with pytest.raises(TimeoutError, match=r"did not finish on its event loop within 0\.5 s"):
        call()  # the loop exists but does not run
    loop.run_until_complete(asyncio.sleep(0))  # running again, it drops the round's coroutine unstarted
    assert started == []
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        call()  # and no "coroutine was never awaited" warning (warnings are errors here)


def test_a_cached_coroutine_function_is_seen_as_one_by_frameworks_and_by_the_store(tmp_path: Path) -> None:
    """Django's async views (asgiref) and Starlette's endpoints await what they see as a coroutine function:
    a cached one, and a cached method bound to its instance, must look like one."""
    asgiref_sync = pytest.importorskip("asgiref.sync")
    from tierstore.aio_loading import is_coroutine_loader

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            @s.cached(name="square")
            async def square(x: int) -> int:
                return x * x

            class Rows:
                @s.cached(key=lambda self, x: f"rows:{x}")
                async def get(self, x: int) -> int:
                    return -x

            bound = Rows().get
            for function in (square, bound):
                assert asgiref_sync.iscoroutinefunction(function)
                assert is_coroutine_loader(function)
                if sys.version_info >= (3, 12):
                    assert inspect.iscoroutinefunction(function)
            assert await square(3) == 9 and await bound(2) == -2
            assert s.store is not None
            assert not asgiref_sync.iscoroutinefunction(s.store.cached(name="plain")(lambda: 1))

    run(body)


def test_a_coroutine_job_that_raises_timeout_error_itself_fails_with_its_own_error() -> None:
    """A source that timed out (``asyncio.wait_for``, a client's own timeout) is not a loop that did not run."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=lambda: (loop.call_soon(ready.set), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10.0)

    async def loader() -> int:
        raise TimeoutError("the source timed out")

    try:
        with pytest.raises(TimeoutError, match="the source timed out"):
            on_loop(loader, loop, 30.0)()  # at once, not after the 30 s wait
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        loop.close()
