"""``AsyncTierStore.cached``: a coroutine function memoized through the async ``get_or_load``.

The keys are those of the threaded ``cached`` (``cached_keys``: ``name=`` or the
function's module and qualified name, then the msgpack-encoded arguments;
``key=`` builds them instead), and so is the handle (``memoize.Handle``: the
wrapper binds as a method, its handle with it), except that the calls that
reach the store are coroutines: ``await f(x)``, ``await f.invalidate(x)``,
``await f.cache_clear()``; ``f.key(x)`` stays a plain call. Only a coroutine
function may be decorated (``TypeError`` otherwise: a plain function would
block the loop, and is what the threaded ``cached`` is for).

This module knows the store only through the async callables it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from .aio_loading import is_coroutine_loader, mark_coroutine_function
from .codec import Key
from .memoize import Cached, CallKeys, Handle, check_cached_args

__all__ = ["async_memoizer"]


def async_memoizer(
    *,
    ttl: Any,
    key: Callable[..., Key] | None,
    name: str | None,
    get_or_load: Callable[[Key, Callable[[], Awaitable[Any]], Any], Awaitable[Any]],
    invalidate: Callable[[Key], Awaitable[None]],
    delete_prefix: Callable[[Key], Awaitable[int]],
) -> Callable[[Callable[..., Awaitable[Any]]], Cached[..., Awaitable[Any]]]:
    """The decorator ``AsyncTierStore.cached(ttl=, key=, name=)`` makes; arguments are checked here."""
    named = check_cached_args(ttl, key, name)

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Cached[..., Awaitable[Any]]:
        if not is_coroutine_loader(fn):
            raise TypeError(
                f"AsyncTierStore.cached decorates coroutine functions (async def), not {fn!r}; "
                "use TierStore.cached for plain functions"
            )
        cache_key = CallKeys(fn, named, key)

        # Coroutine functions, as the function they replace: arguments that build no key raise at the
        # await, never at the call (a coroutine made before that raise would go unawaited, and warn).
        async def call(*args: Any, **kwargs: Any) -> Any:
            async def load() -> Any:
                return await fn(*args, **kwargs)

            return await get_or_load(cache_key(*args, **kwargs), load, ttl)

        async def invalidate_call(*args: Any, **kwargs: Any) -> None:
            await invalidate(cache_key(*args, **kwargs))

        async def cache_clear() -> int:
            return sum([await delete_prefix(part) for part in cache_key.clear_prefixes()])

        handle = Handle(fn, call, cache_key, invalidate_call, cache_clear)  # type: ignore[arg-type]
        mark_coroutine_function(handle)  # frameworks that await coroutine functions await it
        return cast("Cached[..., Awaitable[Any]]", handle)

    return decorate
