"""What a loader's value becomes before a fill: the value as the tiers give it back, or an error naming the key.

A value tier 2 could not give back raises to the load's callers (the error's own
type, naming the key) rather than being returned uncached: a loader that never
fills the cache is a bug to see at once, not a slowdown to find later. A fill
runs once per load, so packing here as well costs little.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .codec import Key

__all__ = ["plain_value"]


def plain_value(key: Key, value: Any) -> Any:
    """``value`` as the tiers would return it (a tuple becomes a list); raises naming ``key`` when it cannot be."""
    try:  # packed even when plain: a lone surrogate or a 65-bit int is refused before the fill
        _, plain = codec.encode_record(codec.new_packer(), value, 0, None, 0, 0.0, None, 0)
        return plain
    except (TypeError, ValueError, OverflowError) as exc:
        raise _refusal(exc)(f"the loader of {key!r} returned a value that cannot be cached: {exc}") from None


def _refusal(exc: Exception) -> type[Exception]:
    """The plain exception type to re-raise ``exc`` as, with a message of our own."""
    for kind in (TypeError, OverflowError, ValueError):
        if isinstance(exc, kind):
            return kind
    return ValueError
