"""The asyncio load model (``tests.aio.load_model``) against a store in shared mode, on a real redis-server.

The steps of the local Hypothesis test (loads, cancellations, invalidations,
finishes and failures, interleaved on one loop) plus ``invalidate_elsewhere``:
a second, blocking store on the same namespace deletes the key. The model is the
same as for ``invalidate``: the stored value goes and the load in flight is
detached (its callers get its value, its fill is refused in Redis, new callers
start a fresh load).

- Each step is followed by a real quiescence wait, not a count of loop
  iterations: the store's round trips are counted (``Quiet`` wraps its asyncio
  driver's ``_answer``), and a step has settled once none is in flight and 20
  loop iterations in a row started none; bounded by ``HANG`` (a failure).
- Listeners are waited for exactly: every accepted write moves the namespace's
  ``seq`` by one and publishes one message, so the async store has heard
  everything once its ``invalidations_received`` counts the other store's
  deletes, and the other store once it counts the rest of ``seq``.
- Then, besides the local test's comparison, what Redis holds (read through
  the blocking store) must be the model's stored value, and neither store may
  have seen a Redis call fail or its listener resync.
- One server per test function; each example has its own namespace. Budget: 60
  examples of 10 to 30 steps (about 15 s), times ``ROUNDS_FACTOR``.

Below it, the plain regression test of what the model found: a delete in another
store, once heard, detaches the load in flight here (later callers used to join
it and get the value loaded before the delete).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests.aio.load_model import KEYS, NEGATIVE, OPS, Driver, step_invalidate
from tests.aio.support import run
from tests.conftest import ROUNDS_FACTOR
from tests.shared.redis_server import RedisServer
from tests.shared.support import wait_for
from tierstore import TierStore
from tierstore.aio import AsyncTierStore
from tierstore.shared.client import Names

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

SHARED_OPS = st.one_of(OPS, st.tuples(st.just("invalidate_elsewhere"), st.sampled_from(KEYS)))
IDLE_ROUNDS = 20  # loop iterations in a row without a round trip: the step has settled
HANG = 10.0  # seconds: never a hang, not a timing assertion
OPTIONS: dict[str, Any] = {"shared_ping_interval": 5.0, "checkpoint_interval": None}  # no false outage when loaded
_namespaces = itertools.count()


class Quiet:
    """Counts the round trips (and lease pauses) of one async store's driver, to wait until none is left.

    Wraps the driver's ``_answer`` on the instance: every ``Call``, ``Listen`` and
    ``Pause`` of every operation passes through it."""

    def __init__(self, s: AsyncTierStore) -> None:
        io = s._io
        answer = io._answer
        self.in_flight = 0
        self.started = 0

        async def counted(step: Any) -> Any:
            self.in_flight += 1
            self.started += 1
            try:
                return await answer(step)
            finally:
                self.in_flight -= 1

        io._answer = counted

    async def settle(self) -> None:
        """Until no round trip is in flight and ``IDLE_ROUNDS`` loop iterations in a row started none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG
        idle, seen = 0, self.started
        while idle < IDLE_ROUNDS:
            await asyncio.sleep(0)
            if self.in_flight or self.started != seen:
                idle, seen = 0, self.started
            else:
                idle += 1
            assert loop.time() < deadline, f"not quiet within {HANG}s: {self.in_flight} round trips in flight"


async def until(probe: Callable[[], bool], what: str) -> None:
    """Poll ``probe`` on the loop (another thread makes it true); a failure past ``HANG``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG
    while not probe():
        assert loop.time() < deadline, f"{what}: not reached within {HANG}s"
        await asyncio.sleep(0.001)


class SharedCheck:
    """One example: an async store and a blocking one on a fresh namespace, driven through the model."""

    def __init__(self, s: AsyncTierStore, other: TierStore, raw: redis.Redis, namespace: str) -> None:
        self.s = s
        self.other = other
        self.raw = raw
        self.seq_key = Names(namespace).seq
        self.driver = Driver(s)
        self.quiet = Quiet(s)
        self.elsewhere = 0  # deletes by the other store: the messages the async store must hear

    async def step(self, op: str, arg: Any) -> None:
        model, started, loads = self.driver.model, self.quiet.started, len(self.driver.model.loads)
        if op == "invalidate_elsewhere":
            step_invalidate(model, arg)
            self.other.delete(arg)  # blocks the loop for one round trip: nothing else is running
            self.elsewhere += 1
        elif not await self.driver.apply(op, arg):
            return
        await self.quiet.settle()
        if len(model.loads) > loads:  # a new load takes its lease in Redis: the count must have seen it
            assert self.quiet.started > started, "no round trip counted: Quiet is not hooked in"
        await self.heard_everything()
        await self.driver.compare()
        self.compare_redis()

    async def heard_everything(self) -> None:
        """Wait until each store's listener has heard every message the other one's writes published."""
        assert self.s.store is not None
        mine, theirs = self.s.store._stats, self.other._stats
        await until(lambda: mine["invalidations_received"] >= self.elsewhere, "the async store's listener")
        published = int(self.raw.get(self.seq_key) or 0)
        await until(lambda: theirs["invalidations_received"] >= published - self.elsewhere, "the other listener")
        assert mine["invalidations_received"] == self.elsewhere
        assert theirs["invalidations_received"] == published - self.elsewhere
        for stats in (mine, theirs):
            assert stats["shared_errors"] == 0 and stats["resyncs"] == 0

    def compare_redis(self) -> None:
        """What Redis holds for each key (through the blocking store) is the model's stored value."""
        for key in KEYS:
            entry = self.other.get_entry(key)
            stored = self.driver.model.stored.get(key)
            if stored is None:
                assert entry is None, key
            elif stored is NEGATIVE:
                assert entry is not None and entry.negative, key
            else:
                assert entry is not None and not entry.negative and entry.value == stored, key


async def check(url: str, raw: redis.Redis, namespace: str, ops: list[tuple[str, Any]]) -> None:
    s = await AsyncTierStore.open(None, shared=url, namespace=namespace, **OPTIONS)
    other = await asyncio.to_thread(TierStore, None, shared=url, namespace=namespace, **OPTIONS)
    example = SharedCheck(s, other, raw, namespace)
    try:
        for op, arg in ops:
            await example.step(op, arg)
    finally:
        await example.driver.stop()
        await s.close()
        await asyncio.to_thread(other.close)


def test_interleaved_loads_and_invalidations_here_and_elsewhere_follow_the_model(redis_server: RedisServer) -> None:
    raw = redis.Redis(unix_socket_path=redis_server.socket)

    @settings(max_examples=60 * ROUNDS_FACTOR, deadline=None)
    @given(st.lists(SHARED_OPS, min_size=10, max_size=30))
    def examples(ops: list[tuple[str, Any]]) -> None:
        namespace = f"model-{next(_namespaces)}"  # each example its own data set in the one server
        note(f"namespace {namespace!r}")
        run(check, redis_server.url, raw, namespace, ops)

    try:
        examples()
    finally:
        raw.close()


# -- what the model found ----------------------------------------------------------------------


class Held:
    """A coroutine loader answering ``value`` once the test opens it; counts its calls."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        self.open = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.open.wait()
        return self.value


def test_a_delete_elsewhere_heard_here_detaches_the_load_in_flight_so_later_callers_load_afresh(
    redis_server: RedisServer, stores: Callable[..., TierStore]
) -> None:
    other = stores()

    async def body() -> None:
        s = await AsyncTierStore.open(None, shared=redis_server.url, shared_ping_interval=0.2)
        assert s.store is not None
        stats = s.store._stats
        before, after = Held("before the delete"), Held("after the delete")
        try:
            early = asyncio.create_task(s.get_or_load("k", before))
            await until(lambda: before.calls == 1, "the first load")
            other.delete("k")  # frees the lease: the first load's fill will be refused
            await until(lambda: stats["invalidations_received"] == 1, "the listener")
            late = asyncio.create_task(s.get_or_load("k", after, on_busy="default", default="joined the old load"))
            await until(lambda: after.calls == 1 or late.done(), "the second caller")
            assert not late.done() and after.calls == 1  # a fresh load, not the one from before the delete
            after.open.set()
            assert await late == "after the delete"
            before.open.set()
            assert await early == "before the delete"  # its own caller still gets it...
            assert await s.get("k") == "after the delete"  # ...but it never replaces the newer fill
            assert stats["fills_rejected"] == 1
        finally:
            before.open.set()
            after.open.set()
            await s.close()

    run(body)
    wait_for(lambda: other.get("k") == "after the delete")
