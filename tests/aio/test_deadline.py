"""``deadline``: a bound over a block of awaits, ``Deadline`` (3.10) and ``bounded`` (asyncio.timeout from 3.11).

``Deadline`` runs on every version, so its rules are checked on each; ``bounded``
is whichever the running Python uses. The timer's firing is forced where it
must land at a chosen point (``_expire``, what the timer calls), never waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from tests.aio.support import run, settle
from tierstore.deadline import Deadline, bounded

BOUNDS: list[Callable[[float], AbstractAsyncContextManager[object]]] = [Deadline, bounded]


@pytest.mark.parametrize("bound", BOUNDS, ids=["Deadline", "bounded"])
def test_a_block_past_its_bound_leaves_with_the_builtin_timeout_error_and_the_task_goes_on(
    bound: Callable[[float], AbstractAsyncContextManager[object]],
) -> None:
    async def body() -> None:
        never = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError) as raised:
            async with bound(0.001):
                await never
        assert type(raised.value) is TimeoutError  # the builtin, not 3.10's asyncio.TimeoutError
        assert never.cancelled()  # the block was cancelled where it waited
        await settle()  # no cancellation left pending: the task awaits on

    run(body)


@pytest.mark.parametrize("bound", BOUNDS, ids=["Deadline", "bounded"])
def test_a_block_within_its_bound_returns_and_its_timer_never_fires_later(
    bound: Callable[[float], AbstractAsyncContextManager[object]],
) -> None:
    async def body() -> None:
        async with bound(0):  # due at the next loop iteration: the block ends before it
            value = 1
        await settle()  # iterations past the due time: a timer left running would cancel this task here
        assert value == 1

    run(body)


@pytest.mark.parametrize("bound", BOUNDS, ids=["Deadline", "bounded"])
def test_a_reply_and_a_cancellation_arriving_together_leave_as_the_cancellation(
    bound: Callable[[float], AbstractAsyncContextManager[object]],
) -> None:
    """asyncio.wait_for on 3.10 returns the result here: the cancellation would be lost."""

    async def body() -> None:
        reply = asyncio.get_running_loop().create_future()

        async def call() -> int:
            async with bound(30):
                result: int = await reply
                return result

        task = asyncio.ensure_future(call())
        await settle()  # waiting on the reply
        reply.set_result(1)
        task.cancel()  # in the same loop iteration as the reply
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body)


def test_a_cancellation_from_outside_then_the_timer_in_one_iteration_leaves_as_the_cancellation() -> None:
    async def body() -> None:
        entered: list[Deadline] = []

        async def call() -> None:
            async with Deadline(30) as deadline:
                entered.append(deadline)
                await asyncio.get_running_loop().create_future()

        task = asyncio.ensure_future(call())
        await settle()
        task.cancel()
        entered[0]._expire()  # the timer fires before the task resumes
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body)


def test_a_block_that_swallows_the_timers_cancellation_ends_as_it_returns() -> None:
    async def body() -> None:
        async with Deadline(0.001):
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                pass  # as asyncio.timeout: the block decides; nothing is raised for it
        await settle()

    run(body)


def test_a_deadline_outside_a_task_is_refused() -> None:
    async def enter() -> None:
        async with Deadline(1):
            pass

    async def body() -> None:
        refused = asyncio.get_running_loop().create_future()

        def drive() -> None:  # a loop callback: a running loop, no current task
            coroutine = enter()
            try:
                coroutine.send(None)
            except RuntimeError as exc:
                refused.set_result(str(exc))
            finally:
                coroutine.close()

        asyncio.get_running_loop().call_soon(drive)
        assert "inside a task" in await refused

    run(body)
