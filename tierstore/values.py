"""``max_value_bytes``: the size of a value inside its envelope, measured without building it.

``max_value_bytes`` bounds the value, not its envelope (``codec.ENVELOPE_ROOM``
covers those fields): only a record longer than the limit is parsed, its value
skipped over.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .codec import VALUE

__all__ = ["check_value_size"]

_NO_KEY: Any = object()


def check_value_size(data: bytes, max_bytes: int, what: str = "value", key: Any = _NO_KEY) -> None:
    """``ValueError`` when the value in the envelope ``data`` takes over ``max_bytes`` encoded.

    ``max_value_bytes`` bounds the value, not its envelope. A record within the limit holds a
    value within it; only a longer one is parsed, its value skipped over rather than built.
    The message names ``what`` and, given, ``key`` (its repr built only for an error).
    """
    if len(data) <= max_bytes:
        return
    unpacker = msgpack.Unpacker(max_buffer_size=len(data))
    unpacker.feed(data)
    unpacker.read_array_header()
    for _ in range(VALUE):
        unpacker.skip()
    start = unpacker.tell()
    unpacker.skip()
    size = unpacker.tell() - start
    if size > max_bytes:
        named = what if key is _NO_KEY else f"{what} {key!r}"
        raise ValueError(f"{named} is {size} bytes encoded; max_value_bytes is {max_bytes}")
