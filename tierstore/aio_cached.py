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

from .aio_loading import is_coroutine_loader
from .cached_keys import call_key, call_prefixes, function_prefix, name_prefix
from .clock import check_ttl
from .codec import Key
from .memoize import Cached, CommonPrefix, Handle

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
    if ttl is not ...:
        check_ttl(ttl)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the key from the arguments, not {type(key).__name__}")
    if key is not None and name is not None:
        raise TypeError("cached takes name= or key=, not both: key= builds the whole key")
    named = None if name is None else name_prefix(name)

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Cached[..., Awaitable[Any]]:
        if not is_coroutine_loader(fn):
            raise TypeError(
                f"AsyncTierStore.cached decorates coroutine functions (async def), not {fn!r}; "
                "use TierStore.cached for plain functions"
            )
        prefix = named if named is not None or key is not None else function_prefix(fn)
        common = CommonPrefix()

        def cache_key(*args: Any, **kwargs: Any) -> Key:
            if key is None:
                return call_key(prefix or b"", args, kwargs)
            made = key(*args, **kwargs)
            common.see(made)
            return made

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            async def load() -> Any:
                return await fn(*args, **kwargs)

            return get_or_load(cache_key(*args, **kwargs), load, ttl)

        def invalidate_call(*args: Any, **kwargs: Any) -> Awaitable[None]:
            return invalidate(cache_key(*args, **kwargs))

        async def cache_clear() -> int:
            if prefix is not None:
                return sum([await delete_prefix(part) for part in call_prefixes(prefix)])
            shared = common.prefix
            if shared is None:
                return 0  # no call built a key yet
            if not shared:
                raise ValueError(
                    f"cache_clear() of {getattr(fn, '__qualname__', fn)!r}: the keys its key= function built "
                    "share no prefix, and clearing every entry is not what it means; delete them by key"
                )
            return await delete_prefix(shared)

        handle = Handle(fn, call, cache_key, invalidate_call, cache_clear)  # type: ignore[arg-type]
        return cast("Cached[..., Awaitable[Any]]", handle)

    return decorate
