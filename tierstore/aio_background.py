"""Coroutine functions as the callables of a store's background jobs (``refresh_every``, ``keep_fresh``).

Background jobs run in the store's scheduler thread and call plain callables.
A callable given to the asyncio facade is called there too, and what it returns
that is awaitable (a coroutine function's coroutine, or ``lambda: fetch(k)``'s,
as ``get_or_load`` takes them) is awaited on the event loop the job was made
from while the scheduler thread waits, so the coroutine sees its own loop (its
connections, its locks) and the loop is never blocked. The wait is bounded by
the store's ``lock_timeout`` (a load's lease): a loop that stopped running
fails that round (logged and counted, as any failed round), it never hangs the
scheduler or ``close()``; if the loop runs again later, that round's coroutine
is closed, never run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

from .clock import wait_bound
from .loaded_value import close_unawaited

__all__ = ["on_loop"]


def on_loop(fn: Callable[..., Any], loop: asyncio.AbstractEventLoop, timeout: float) -> Callable[..., Any]:
    """``fn`` as a plain callable of the scheduler thread: what it returns that is awaitable (a coroutine
    function's coroutine, or ``lambda: fetch(k)``'s, as ``get_or_load`` takes them) is awaited on ``loop``."""
    if not callable(fn):
        return fn  # the store refuses it, naming it

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        answer = fn(*args)
        if inspect.isawaitable(answer):
            return _awaited_on(loop, answer, timeout, getattr(fn, "__qualname__", repr(fn)))
        return answer

    return call


def _awaited_on(loop: asyncio.AbstractEventLoop, awaitable: Any, timeout: float, name: str) -> Any:
    """What ``awaitable`` gives, awaited on ``loop`` from this (another) thread, waiting at most ``timeout``."""
    given_up = threading.Event()

    async def round_on_loop() -> Any:
        if given_up.is_set():  # the loop came back after the wait ended: the round is over
            close_unawaited(awaitable)
            return None
        return await awaitable

    coroutine = round_on_loop()
    try:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except RuntimeError:  # the loop is closed
        coroutine.close()  # never run: no "was never awaited" warning, for it or what it awaits
        close_unawaited(awaitable)
        raise
    # Waited for apart from the result: a TimeoutError the coroutine raised itself (a source
    # that timed out) is its own error, not the wait's.
    done, _ = concurrent.futures.wait((future,), wait_bound(timeout))
    if not done:
        given_up.set()
        future.cancel()
        raise TimeoutError(f"{name} did not finish on its event loop within {timeout} s")
    return future.result()
