"""AsyncTierStore at its edges: a cached function's bad arguments, a wrapper closed before it opened,
and callers of every kind (threads, coroutines) on one load's outcome."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tests.aio.support import run
from tierstore.aio import AsyncTierStore


class Opaque:
    """An argument msgpack cannot encode: no cache key can be built from it."""


def test_a_cached_function_given_arguments_that_build_no_key_raises_at_the_await_as_an_async_def() -> None:
    """Calling it never raises (it is a coroutine function): gathering it with others leaves no
    coroutine unawaited, and each call's error comes out of its own await."""

    async def body() -> None:
        async with AsyncTierStore(None, checkpoint_interval=None) as s:

            @s.cached(name="echo")
            async def echo(x: object) -> object:
                return x

            pending = [echo(1), echo(Opaque()), echo(2**70)]  # no raise here
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            assert outcomes[0] == 1
            assert isinstance(outcomes[1], TypeError) and "key" in str(outcomes[1])
            assert isinstance(outcomes[2], (TypeError, OverflowError))
            invalidation = echo.invalidate(Opaque())  # no raise here either
            with pytest.raises(TypeError, match="key"):
                await invalidation
            gc.collect()
            assert await s.get(echo.key(1)) == 1 and (await s.stats())["sets"] == 1

    run(body)
