"""The asyncio store in shared mode with plain loaders (run in a thread): a load its callers all left frees
its lease in Redis at once, and the thread's late result is dropped, never stored here or in Redis."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import redis

from tests.aio.support import run, settle
from tests.shared.redis_server import RedisServer
from tests.shared.test_shared_aio import eventually, lease_of, opened
from tierstore import TierStore


def test_a_plain_loader_whose_callers_all_left_frees_the_lease_at_once_and_its_result_is_dropped(
    redis_server: RedisServer, stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    blocking = stores()  # another process's store, in effect
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "late, from the thread"

    async def body() -> None:
        s = await opened(redis_server.url, lock_timeout=60.0)
        try:
            callers = [asyncio.create_task(s.get_or_load("k", slow)) for _ in range(3)]
            await asyncio.to_thread(entered.wait, 10)
            assert raw.exists(lease_of("k"))
            for caller in callers:
                caller.cancel()
            for caller in callers:
                with pytest.raises(asyncio.CancelledError):
                    await caller
            await eventually(lambda: not raw.exists(lease_of("k")), timeout=5.0)  # not its 60 s PX
            # another store loads at once, while the thread still runs
            answer = await asyncio.to_thread(blocking.get_or_load, "k", lambda: "elsewhere", on_busy="default")
            assert answer == "elsewhere"
            release.set()
            await asyncio.to_thread(blocking.drain, 5.0)
            await settle()
            await asyncio.sleep(0.05)  # the default executor's thread hands back (never a timing assertion)
            assert await s.get("k") == "elsewhere" and blocking.get("k") == "elsewhere"
            assert (await s.stats())["fills_rejected"] == 0  # dropped before any fill was tried
        finally:
            release.set()
            await s.close()

    run(body)
