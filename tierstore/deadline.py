"""A time bound over a block of awaits in the current task, for Python 3.10, which lacks ``asyncio.timeout``.

``bounded(seconds)`` is ``asyncio.timeout`` where there is one (3.11+). On 3.10
it is a ``Deadline``: one timer that cancels the current task when ``seconds``
have passed, its cancellation turned into the builtin ``TimeoutError`` (as
``asyncio.timeout`` raises) when it leaves the block. The block runs in the
caller's task, as under ``asyncio.timeout``; ``asyncio.wait_for`` would run it
in a task of its own and, on 3.10, return its result when the caller's
cancellation arrives as the block ends, so that cancellation would be lost.

The timer cancels with a message of its own, so a cancellation from outside that
reached the task first leaves the block as a cancellation, not a timeout. 3.10
has no ``Task.cancelling``: one arriving after the timer fired and before the
block left cannot be told apart and is absorbed into the ``TimeoutError``.

Thread-safety: one ``Deadline`` per ``async with``, on its loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

__all__ = ["Deadline", "bounded"]

_EXPIRED = "tierstore deadline expired"  # the message of the timer's cancellation


class Deadline:
    """``async with Deadline(seconds)``: the block is cancelled after ``seconds``, leaving with a TimeoutError."""

    __slots__ = ("_seconds", "_task", "_timer", "_expired")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        assert self._task is not None
        self._expired = True
        self._task.cancel(_EXPIRED)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._timer is not None
        self._timer.cancel()
        if self._expired and isinstance(error, asyncio.CancelledError) and error.args == (_EXPIRED,):
            raise TimeoutError from None


def _bound() -> Callable[[float], AbstractAsyncContextManager[object]]:
    found: Callable[[float], AbstractAsyncContextManager[object]] | None = getattr(asyncio, "timeout", None)
    return Deadline if found is None else found


bounded = _bound()  # asyncio.timeout from Python 3.11, a Deadline on 3.10
