"""One local store used from several event loops (a thread each): what one loop does to a load it
leads (closing its wrapper, cancelling the leader task, shutting down) never fails a caller on
another loop or in a thread; the loader's own error still reaches them all.

The test's loop leads the load of ``"k"`` (its loader held on a ``Gate``); the other caller joins
once the loader runs, and the test acts only once the flight counts both callers.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.aio.support import Gate, run
from tests.conftest import start, wait_until
from tierstore import TierStore, TierStoreError
from tierstore.aio import AsyncTierStore

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


class Elsewhere:
    """A caller of ``get_or_load("k")`` that joins once ``led`` is set: on a loop of its own in its
    own thread, or a blocking call in a plain thread. Its loader answers ``"reloaded"``, counted."""

    def __init__(self, s: AsyncTierStore, *, on_a_loop: bool = True) -> None:
        self.led = threading.Event()
        self.calls = 0
        store = s.store
        assert store is not None

        def reload() -> str:
            self.calls += 1
            return "reloaded"

        async def reload_async() -> str:
            return reload()

        async def on_its_loop() -> Any:
            await asyncio.to_thread(self.led.wait, 10)
            try:
                return await s.get_or_load("k", reload_async)
            finally:
                await s.close()  # this loop's part

        def blocking() -> Any:
            self.led.wait(10)
            return store.get_or_load("k", reload)

        self._thread, self._out = start((lambda: run(on_its_loop)) if on_a_loop else blocking)

    def result(self) -> Any:
        """What its call returned (or raised)."""
        self._thread.join(30)
        [outcome] = self._out
        return outcome


def wrapped() -> AsyncTierStore:
    return AsyncTierStore(TierStore(None, checkpoint_interval=None))


def leader_tasks(s: AsyncTierStore) -> list[asyncio.Task[None]]:
    """The tasks leading loads of ``s`` on the running loop."""
    parts = s._parts
    assert parts is not None
    loop = asyncio.get_running_loop()
    return [task for task in parts._tasks if task.get_loop() is loop]


async def lead_until_followed(s: AsyncTierStore, gate: Gate, other: Elsewhere) -> asyncio.Future[Any]:
    """Start the load of ``"k"`` on this loop; return its caller once ``other`` follows it too."""
    store = s.store
    assert store is not None
    caller = asyncio.ensure_future(s.get_or_load("k", gate))
    await gate.entered.wait()
    other.led.set()
    await asyncio.to_thread(wait_until, lambda: store._flights.in_flight["k"].following == 2)
    return caller


async def close(s: AsyncTierStore) -> None:
    await s.close()


async def cancel_leader(s: AsyncTierStore) -> None:
    [leader] = leader_tasks(s)
    leader.cancel()


@pytest.mark.parametrize("stop", [close, cancel_leader], ids=["close", "cancelled-leader"])
@pytest.mark.parametrize("on_a_loop", [True, False], ids=["other-loop", "thread"])
def test_a_load_its_loop_stops_lets_a_caller_elsewhere_load_again_and_fails_only_this_loop_s_caller(
    stop: Callable[[AsyncTierStore], Awaitable[None]], on_a_loop: bool
) -> None:
    s = wrapped()
    store = s.store
    assert store is not None
    other = Elsewhere(s, on_a_loop=on_a_loop)
    gate = Gate("first")

    async def body() -> None:
        caller = await lead_until_followed(s, gate, other)
        await stop(s)
        with pytest.raises(TierStoreError, match="interrupted"):
            await caller  # on the loop that stopped it: told its load was interrupted
        await s.close()

    try:
        run(body)
        assert other.result() == "reloaded"  # not TierStoreError: it led the next load
        assert gate.cancelled == 1 and other.calls == 1
        assert store.get("k") == "reloaded"
    finally:
        other.led.set()
        store.close()


def test_a_loop_shutting_down_mid_load_lets_a_caller_on_another_loop_load_again() -> None:
    s = wrapped()
    store = s.store
    assert store is not None
    other = Elsewhere(s)
    gate = Gate("first")

    async def body() -> None:
        await lead_until_followed(s, gate, other)
        # returns with the load running: asyncio.run cancels its caller and its leader task

    try:
        run(body)
        assert gate.cancelled == 1
        assert other.result() == "reloaded" and other.calls == 1
        assert store.get("k") == "reloaded"
    finally:
        other.led.set()
        store.close()


_OWN_CANCEL = pytest.param(
    asyncio.CancelledError,
    marks=pytest.mark.skipif(
        sys.version_info < (3, 11),
        reason="Python 3.10 has no Task.cancelling(): a loader's own CancelledError counts as its task's (README)",
    ),
)


# Error types, raised afresh in each test: an instance kept in the parameters would keep the
# test's frames (its traceback) alive until the interpreter's finalization.
@pytest.mark.parametrize("error_type", [LookupError, _OWN_CANCEL], ids=lambda kind: kind.__name__)
def test_the_loader_s_own_error_still_reaches_a_caller_on_another_loop(error_type: type[BaseException]) -> None:
    """Even ``CancelledError`` raised by the loader itself (its task not cancelled): an error of the
    load, reported to every caller, not an interruption that makes the others load again."""
    error = error_type("source down")
    s = wrapped()
    store = s.store
    assert store is not None
    other = Elsewhere(s)

    class Failing(Gate):
        async def __call__(self) -> Any:
            await super().__call__()
            raise error

    gate = Failing()
    errors: list[BaseException] = []

    async def body() -> None:
        caller = await lead_until_followed(s, gate, other)
        gate.open.set()
        with pytest.raises(BaseException) as raised:
            await caller
        errors.append(raised.value)
        await s.close()

    try:
        run(body)
        answer = other.result()
        assert other.calls == 0 and store.get("k") is None
        if isinstance(error, Exception):
            assert errors == [error] and answer is error  # the same exception object
        else:
            assert isinstance(answer, TierStoreError) and answer.__cause__ is error
            assert isinstance(errors[0], TierStoreError) and errors[0].__cause__ is error
    finally:
        other.led.set()
        store.close()
