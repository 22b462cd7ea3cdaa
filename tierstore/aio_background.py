"""Coroutine functions as the callables of a store's background jobs (``refresh_every``, ``keep_fresh``).

Background jobs run in the store's scheduler thread and call plain callables.
A coroutine function given to the asyncio facade is turned into one that runs
it on the event loop it was given from and waits for its result there, so the
coroutine sees its own loop (its connections, its locks) and the loop is never
blocked. The wait is bounded by the store's ``lock_timeout`` (a load's lease):
a loop that stopped running fails that round (logged and counted, as any
failed round), it never hangs the scheduler or ``close()``; if the loop runs
again later, that round's coroutine function is not called any more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any

from .aio_loading import is_coroutine_loader
from .clock import wait_bound

__all__ = ["on_loop"]


def on_loop(fn: Callable[..., Any], loop: asyncio.AbstractEventLoop, timeout: float) -> Callable[..., Any]:
    """``fn`` itself when it is plain; for a coroutine function, a plain callable that awaits it on ``loop``."""
    if not is_coroutine_loader(fn):
        return fn

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        given_up = threading.Event()

        async def round_on_loop() -> Any:
            if given_up.is_set():  # the loop came back after the wait ended: the round is over
                return None
            return await fn(*args)

        coroutine = round_on_loop()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop is closed
            coroutine.close()  # never run: no "was never awaited" warning
            raise
        # Waited for apart from the result: a TimeoutError the coroutine raised itself (a source
        # that timed out) is its own error, not the wait's.
        done, _ = concurrent.futures.wait((future,), wait_bound(timeout))
        if not done:
            given_up.set()
            future.cancel()
            raise TimeoutError(f"{fn.__qualname__} did not finish on its event loop within {timeout} s")
        return future.result()

    return call
