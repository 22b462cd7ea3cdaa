"""``max_value_bytes``: a record's value measured, or skipped, without building it.

``max_value_bytes`` bounds the value, not its envelope (``codec.ENVELOPE_ROOM``
covers those fields): only a record longer than the limit is parsed, its value
skipped over (``check_value_size``). A stored record too long for this open's
limit (written under a larger one) is not decoded, but the version rule still
needs its envelope: ``envelope_header`` reads every field but the value.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from .codec import LOAD_TIME, RECORD_ROOM, VALUE, VERSION, WRITTEN_AT, Record, unpack_record
from .errors import CorruptRecord

__all__ = ["UNREADABLE", "check_value_size", "envelope_header", "stored_record"]

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


class _Unreadable:
    """The value slot of a record read by ``envelope_header``: its value was not decoded."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE: Final = _Unreadable()


def envelope_header(data: bytes) -> Record:
    """The record ``data`` holds, checked as ``unpack_record`` checks it, its value skipped: ``UNREADABLE``.

    For a record longer than this open's ``max_value_bytes`` allows (written under a larger
    limit): its value is not built, while the version rule still reads its version, flags and
    expiry. ``CorruptRecord`` when the envelope is damaged.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=len(data), strict_map_key=False)
    unpacker.feed(data)
    try:
        fields = min(unpacker.read_array_header(), LOAD_TIME + 1)
        header = [unpacker.unpack() for _ in range(min(fields, VALUE))]
        if fields > VALUE:
            unpacker.skip()
            header += [None] + [unpacker.unpack() for _ in range(fields - VALUE - 1)]
        # Packing back may fail where reading did not (a field nesting past the packer's limit).
        header_data = msgpack.packb(header)
    except Exception:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord("undecodable record header") from None
    record = unpack_record(header_data)  # the same checks, on the header alone
    return (len(data), *record[VERSION:VALUE], UNREADABLE, *record[WRITTEN_AT:])


def stored_record(data: bytes, max_bytes: int) -> Record:
    """A stored envelope as writes read it (the version rule, ``delete``'s answer): decoded whole, or,
    when longer than ``max_bytes`` (``max_value_bytes``) plus ``RECORD_ROOM``, its header with the
    value ``UNREADABLE``. ``CorruptRecord`` when damaged."""
    return envelope_header(data) if len(data) > max_bytes + RECORD_ROOM else unpack_record(data)
