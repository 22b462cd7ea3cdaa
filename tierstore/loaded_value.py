"""What a loader's value becomes, and how it fills: the value as the tiers give it back, or an error naming the key.

A value tier 2 could not give back raises to the load's callers (the error's own
type, naming the key) rather than being returned uncached: a loader that never
fills the cache is a bug to see at once, not a slowdown to find later. A fill
runs once per load, so packing here as well costs little. ``fill`` writes it
under the version rule of a fill (never lowering the stored version, renewing
at the same version, never resurrecting a tombstone), on the store's primitives.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from . import codec
from .codec import FLAGS, TOMBSTONE, VERSION, Key, Record
from .entries import ABSENT

__all__ = ["plain_value", "fill", "is_coroutine_function", "close_unawaited"]


def is_coroutine_function(fn: object) -> bool:
    """Whether ``fn`` (or, for a callable object, its ``__call__``) is an ``async def``: what a plain caller
    cannot await. The asyncio facade also reads asyncio's own mark (``aio_loading.is_coroutine_loader``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def close_unawaited(awaitable: object) -> None:
    """Close a coroutine (or generator-based awaitable) that will never be awaited: no "never awaited" warning."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def plain_value(key: Key, value: Any) -> Any:
    """``value`` as the tiers would return it (a tuple becomes a list); raises naming ``key`` when it cannot be."""
    try:  # packed even when plain: a lone surrogate or a 65-bit int is refused before the fill
        _, plain = codec.encode_record(codec.new_packer(), value, 0, None, 0, 0.0, None, 0)
        return plain
    except (TypeError, ValueError, OverflowError) as exc:
        if inspect.iscoroutine(value):  # an async def loader on the threaded store: say so, and never run it
            value.close()
            raise TypeError(
                f"the loader of {key!r} returned a coroutine: TierStore calls loaders as plain functions; "
                "use AsyncTierStore (tierstore.aio) to await an async def loader"
            ) from None
        raise _refusal(exc)(f"the loader of {key!r} returned a value that cannot be cached: {exc}") from None


def _refusal(exc: Exception) -> type[Exception]:
    """The plain exception type to re-raise ``exc`` as, with a message of our own."""
    for kind in (TypeError, OverflowError, ValueError):
        if isinstance(exc, kind):
            return kind
    return ValueError


def fill(
    write: Callable[..., bool],
    read: Callable[[Key], Record | None],
    current: Callable[[Key], Record | None],
    key: Key,
    value: Any,
    version: int | None,
    ttl: Any,
    load_time: float,
    admits: Callable[[], bool],
) -> bool:
    """Write a loaded value while ``admits()`` (checked again under the key's lock); ``False`` when dropped.

    ``read`` is the stored record, ``current`` the same under the key's lock (for ``admit``).
    """
    fill_ttl = ... if value is ABSENT else ttl
    if version is None:
        return write(key, value, ttl=fill_ttl, load_time=load_time, admit=admits)
    stored = read(key)
    stored_version = 0 if stored is None else stored[VERSION]
    if version > stored_version:
        return write(key, value, ttl=fill_ttl, version=version, load_time=load_time, admit=admits)
    if version < stored_version or (stored is not None and stored[FLAGS] & TOMBSTONE):
        return False

    def same_version() -> bool:  # an unversioned write keeps it, if it is still the same under the lock
        now_current = current(key)
        if now_current is None:
            return version == 0 and admits()
        return now_current[VERSION] == version and not now_current[FLAGS] & TOMBSTONE and admits()

    return write(key, value, ttl=fill_ttl, load_time=load_time, admit=same_version)
