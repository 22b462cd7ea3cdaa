"""The keys of ``cached``: a prefix per function (``name=`` or its module and qualified name) and one key per call.

A call's key is the prefix followed by its msgpack-encoded arguments, or by
their SHA-256 when that would pass the key size limit. This is how a call
becomes a key, not how it is loaded, so it lives apart from ``loading``.

Arguments that differ never share a key: a tuple is packed as an extension type
of its own, not as the list msgpack makes of it, so ``f((1, 2))`` and
``f([1, 2])`` are two entries. A subclass of a plain type (an ``IntEnum``, a str
subclass) is keyed as its base value, which it equals, as ``functools.lru_cache``
keys it.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import msgpack

from . import codec
from .loaded_value import is_coroutine_function

__all__ = ["name_prefix", "function_prefix", "check_plain_function", "call_key", "call_prefixes"]

_HASHED = b"sha256:"
_HASHED_TAIL = len(_HASHED) + hashlib.sha256().digest_size
_ARGS_HEADER = b"\x92"  # msgpack's header of the 2-element array [args, kwargs] every key packs


def name_prefix(name: object) -> bytes:
    """The key prefix of ``cached(name=...)``: ``TypeError``/``ValueError`` for a name no key could start with."""
    if not isinstance(name, str):
        raise TypeError(f"cached name= must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("cached name= must not be empty")
    try:
        prefix = f"{name}:".encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"cached name= is not valid Unicode: {exc}") from None
    if len(prefix) + _HASHED_TAIL > codec.MAX_KEY_BYTES:
        raise ValueError(f"cached name= is {len(prefix) - 1} bytes encoded; keys are limited to {codec.MAX_KEY_BYTES}")
    return prefix


def check_plain_function(fn: object) -> None:
    """What ``TierStore.cached`` decorates: a callable that is not a coroutine function (``TypeError``).

    Checked at decoration whether or not ``name=``/``key=`` is given: a ``classmethod``
    object is not callable until bound, and a coroutine function would cache nothing
    but fail at every call (its coroutine cannot be stored) and leave it never awaited.
    """
    if isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(
            f"cached decorates a function, not a {type(fn).__name__} object: put @{type(fn).__name__} above "
            "the cached decorator"
        )
    if not callable(fn):
        raise TypeError(f"cached decorates a function, not {type(fn).__name__}")
    if is_coroutine_function(fn):
        raise TypeError(
            f"TierStore.cached decorates plain functions, not the coroutine function {fn!r}; "
            "use AsyncTierStore.cached (tierstore.aio) for async def"
        )


def function_prefix(fn: object) -> bytes:
    """The default key prefix of a ``cached`` function: its module and qualified name.

    A lambda, a function defined inside another or a bound method is refused
    (``TypeError``): every closure a factory makes, and every instance's method,
    has the same qualified name, so they would share entries.
    """
    if not callable(fn):
        raise TypeError(f"cached decorates a function, not {type(fn).__name__}")
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        raise TypeError(f"cached needs name= (or key=) for {fn!r}, which has no __qualname__")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"cached needs name= (or key=) for {qualname}: lambdas, and functions defined inside another, "
            "share their qualified name with every other one made there"
        )
    bound_to = getattr(fn, "__self__", None)
    if bound_to is not None and not inspect.ismodule(bound_to):
        raise TypeError(
            f"cached needs name= (or key=) for the bound method {qualname}: the methods of every instance "
            "share its qualified name, and the instance is not among the arguments"
        )
    prefix = f"{getattr(fn, '__module__', None)}:{qualname}:".encode(errors="surrogatepass")
    if len(prefix) + _HASHED_TAIL > codec.MAX_KEY_BYTES:  # no call's key would fit, hashed or not
        raise ValueError(
            f"cached needs name= (or key=) for {qualname[:80]}...: its module and qualified name take "
            f"{len(prefix)} bytes, and keys are limited to {codec.MAX_KEY_BYTES}"
        )
    return prefix


_TUPLE_EXT = 1  # the msgpack extension type code of a tuple in a key


def _pack_arguments(value: Any) -> bytes:
    """msgpack of a call's arguments, each type exactly: a tuple is not a list (see the module doc)."""
    data: bytes = msgpack.packb(value, use_bin_type=True, strict_types=True, default=_argument)
    return data


def _argument(value: Any) -> Any:
    """What ``strict_types`` hands over: a tuple (an extension of its own) or a subclass of a plain type."""
    if isinstance(value, tuple):
        return msgpack.ExtType(_TUPLE_EXT, _pack_arguments(list(value)))
    if isinstance(value, int):  # bool is never subclassed: an int subclass, such as an IntEnum
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes.__getitem__(value, slice(None))
    if isinstance(value, list):
        return list.copy(value)
    if isinstance(value, dict):
        return dict.copy(value)
    raise TypeError(f"can not serialize {type(value).__name__!r} object")


def call_key(prefix: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The ``cached`` key of one call: the function's prefix and its msgpack-encoded arguments."""
    try:
        packed = _pack_arguments([list(args), [[name, kwargs[name]] for name in sorted(kwargs)]])
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise TypeError(f"cannot build a cache key from the arguments ({exc}); pass key= to build one") from None
    if len(prefix) + len(packed) >= codec.MAX_KEY_BYTES:
        return prefix + _HASHED + hashlib.sha256(packed).digest()
    return prefix + packed


def call_prefixes(prefix: bytes) -> tuple[bytes, bytes]:
    """What every ``call_key(prefix, ...)`` starts with: the prefix and the packed arguments' header, or
    the prefix and the hash's tag. Narrower than ``prefix`` alone, so clearing ``name="f"`` leaves the
    keys of ``name="f:g"`` alone (a name never encodes to the header byte, which UTF-8 never starts a
    character with)."""
    return prefix + _ARGS_HEADER, prefix + _HASHED
