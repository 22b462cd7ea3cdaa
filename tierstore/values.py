"""What msgpack can store and give back as it was given, and the errors that name a value it cannot.

``codec`` packs every envelope; when msgpack refuses a value, or could not read
it back (an array or map as a dict key, nesting deeper than its reader holds),
the error raised names the offending type or problem rather than msgpack's
internals. A leaf: it imports nothing of the package.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["MAX_DEPTH", "PLAIN_TYPES", "NotPlain", "check_value_size", "new_packer", "pack_naming", "unreadable"]

# Lists/dicts a value may nest: msgpack's unpacker holds 1024 levels and the envelope takes one.
MAX_DEPTH = 1023
PLAIN_TYPES = frozenset({str, bytes, int, float, bool, type(None)})


def pack_naming(packer: msgpack.Packer, obj: Any, value: Any) -> bytes:
    """Pack ``obj`` (which holds ``value``) with ``packer``, turning msgpack's errors into ones that name the value."""
    try:
        data: bytes = packer.pack(obj)
    except TypeError as exc:
        raise TypeError(f"cannot store a value of type {_offending_type(value)}: {exc}") from None
    except OverflowError as exc:
        raise OverflowError(f"cannot store this value: {exc}") from None
    except ValueError as exc:  # UnicodeEncodeError (a lone surrogate) among them
        raise unreadable(value) or ValueError(f"cannot store this value: {exc}") from None
    except BufferError as exc:  # a memoryview that is not C-contiguous (a strided slice)
        raise ValueError(f"cannot store this value: {exc}") from None
    return data


def _offending_type(value: Any) -> str:
    """Name the first type inside ``value`` that msgpack cannot encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) in PLAIN_TYPES or isinstance(item, (str, bytes, int, float)):
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif not isinstance(item, (bytearray, memoryview, msgpack.ExtType, msgpack.Timestamp)):
            return type(item).__name__
    return type(value).__name__


def unreadable(value: Any) -> Exception | None:
    """Why msgpack could not read ``value`` back: an array or map as a dict key, or nesting too deep.

    Walks iteratively (a value too deep for msgpack is too deep for recursion) and
    stops at the first problem, so a cyclic value ends as too deep.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if _is_container(key):
                    return TypeError(
                        f"cannot store a dict key of type {type(key).__name__}: msgpack reads it back as a "
                        "list or dict, which cannot be a dict key"
                    )
            children: Any = item.values()
        elif _is_container(item):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return ValueError(f"cannot store a value that nests lists/dicts more than {MAX_DEPTH} deep")
        stack.extend((child, depth + 1) for child in children)
    return None


def _is_container(item: Any) -> bool:
    """Whether msgpack encodes ``item`` as an array or a map (an ``ExtType`` is a tuple but not an array)."""
    return isinstance(item, (list, tuple, dict)) and not isinstance(item, msgpack.ExtType)


class NotPlain(Exception):
    """Raised by the strict packer at the first object msgpack would not give back as it is."""


def _not_plain(obj: Any) -> Any:
    raise NotPlain


def new_packer() -> msgpack.Packer:
    """A packer for ``codec.encode_record``: one per writer thread or lock (packers are not thread-safe).

    It packs exact plain types only; a tuple, a subclass of dict/list/str/int or
    anything msgpack does not know stops it, and ``codec.encode_record`` takes the slow
    path for that value.
    """
    return msgpack.Packer(strict_types=True, default=_not_plain)


_NO_KEY: Any = object()
_VALUE_FIELD = 4  # the value's place in an envelope (``codec.VALUE``; tests/property/test_inlined_layout.py)


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
    for _ in range(_VALUE_FIELD):
        unpacker.skip()
    start = unpacker.tell()
    unpacker.skip()
    size = unpacker.tell() - start
    if size > max_bytes:
        named = what if key is _NO_KEY else f"{what} {key!r}"
        raise ValueError(f"{named} is {size} bytes encoded; max_value_bytes is {max_bytes}")
