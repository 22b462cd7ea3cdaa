"""Running coroutines in tests: each test's loop turns its exception handler into a failure.

``run(fn, *args)`` is ``asyncio.run(fn(*args))`` with a loop whose exception handler
records what it is called with ("Future exception was never retrieved", "Task was
destroyed but it is pending", an exception in a callback), a generous never-a-hang
bound, and a garbage collection afterwards (so a task or future dropped by the test
reports to the handler before the check). Every test here also runs with
ResourceWarning, RuntimeWarning ("coroutine ... was never awaited") and unraisable
exceptions as errors.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

from tierstore.deadline import bounded

HANG = 30.0  # seconds: never a hang, not a timing assertion


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh event loop; fail if the loop's exception handler was called."""
    problems: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
        async with bounded(HANG):  # asyncio.timeout (3.11+)
            return await fn(*args)

    result = asyncio.run(main())
    gc.collect()
    assert not problems, [context.get("message") for context in problems]
    return result


async def settle(rounds: int = 20) -> None:
    """Let every task that can progress without outside help do so (loop iterations, not time)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Gate:
    """A coroutine loader held until the test opens it; records its calls and whether it was cancelled."""

    def __init__(self, value: Any = "v") -> None:
        self.value = value
        self.calls = 0
        self.cancelled = 0
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.entered.set()
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.value
