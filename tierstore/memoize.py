"""``cached``: a function memoized through ``get_or_load``, with a handle on its entries.

The wrapper keeps the function's signature and metadata (``functools.update_wrapper``)
and binds as a method like the function it wraps; bound, its handle binds too:
``obj.method.key(x)`` and ``obj.method.invalidate(x)`` are those of the call
``obj.method(x)``, instance included. It has:

- ``wrapper.key(*args, **kwargs)``: the cache key of that call (``cached_keys``);
- ``wrapper.invalidate(*args, **kwargs)``: the store's ``invalidate`` of that key
  (the entry goes, a load of it in flight never lands);
- ``wrapper.cache_clear()``: the store's ``delete_prefix`` of every key the
  function's calls make (its name or module and qualified name, followed by the
  encoded arguments or their hash); returns how many were live. With ``key=``
  the keys are the caller's own: it deletes what the keys its calls built in
  this process share as a prefix (``CommonPrefix``); before any call there is
  none (0), and keys that share no prefix raise ``ValueError`` rather than
  clear every entry.

This module knows the store only through the three callables it is given.
Thread-safety: each call is as thread-safe as the store call it makes; the
common prefix of a ``key=`` function's keys takes a lock only when it shrinks.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from .cached_keys import call_key, call_prefixes, check_plain_function, function_prefix, name_prefix
from .clock import check_ttl
from .codec import Key

__all__ = ["Cached", "memoizer", "CommonPrefix", "Handle"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)


class Cached(Protocol[_P, _R_co]):
    """What ``cached`` returns: the memoized function and its handle on its entries."""

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R_co: ...

    def key(self, *args: _P.args, **kwargs: _P.kwargs) -> Key:
        """The cache key of this call."""
        ...

    def invalidate(self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Delete this call's entry; a load of it in flight never stores its result."""
        ...

    def cache_clear(self) -> int:
        """Delete every entry of this function; how many were live (with ``key=``: see the module doc)."""
        ...


def memoizer(
    *,
    ttl: Any,
    key: Callable[..., Key] | None,
    name: str | None,
    get_or_load: Callable[[Key, Callable[[], Any], Any], Any],
    invalidate: Callable[[Key], None],
    delete_prefix: Callable[[Key], int],
) -> Callable[[Callable[_P, _R]], Cached[_P, _R]]:
    """The decorator ``cached(ttl=, key=, name=)`` makes, over the store's three calls.

    Arguments are checked here, at ``cached(...)``; a lambda or a ``<locals>``
    function without ``name=`` or ``key=`` is refused at decoration (``TypeError``).
    ``get_or_load`` checks that the store is open on every call.
    """
    named = check_cached_args(ttl, key, name)

    def decorate(fn: Callable[_P, _R]) -> Cached[_P, _R]:
        check_plain_function(fn)
        cache_key = CallKeys(fn, named, key)

        def call(*args: Any, **kwargs: Any) -> Any:
            return get_or_load(cache_key(*args, **kwargs), lambda: fn(*args, **kwargs), ttl)

        def invalidate_call(*args: Any, **kwargs: Any) -> None:
            invalidate(cache_key(*args, **kwargs))

        def cache_clear() -> int:
            return sum(delete_prefix(part) for part in cache_key.clear_prefixes())

        return cast("Cached[_P, _R]", Handle(fn, call, cache_key, invalidate_call, cache_clear))

    return decorate


def check_cached_args(ttl: Any, key: object, name: str | None) -> bytes | None:
    """Check ``cached(ttl=, key=, name=)``'s arguments; the key prefix ``name`` gives, if any."""
    if ttl is not ...:
        check_ttl(ttl)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the key from the arguments, not {type(key).__name__}")
    if key is not None and name is not None:
        raise TypeError("cached takes name= or key=, not both: key= builds the whole key")
    return None if name is None else name_prefix(name)


class CallKeys:
    """The keys of a cached function's calls, and what its ``cache_clear`` deletes (sync and async alike).

    Without ``key=`` a key is the function's prefix (``named``, else its qualified name)
    and its packed arguments; with ``key=`` it is what ``key`` builds, and the prefix
    those keys share is tracked (``CommonPrefix``).
    """

    def __init__(self, fn: Callable[..., Any], named: bytes | None, key: Callable[..., Key] | None) -> None:
        self._fn = fn
        self._key = key
        self._prefix = named if named is not None or key is not None else function_prefix(fn)
        self._common = CommonPrefix()

    def __call__(self, *args: Any, **kwargs: Any) -> Key:
        if self._key is None:
            return call_key(self._prefix or b"", args, kwargs)
        made = self._key(*args, **kwargs)
        self._common.see(made)
        return made

    def clear_prefixes(self) -> tuple[Key, ...]:
        """The prefixes ``cache_clear`` deletes: none before any ``key=`` call built a key.

        ``ValueError`` when the keys ``key=`` built share no prefix: clearing every entry
        is not what ``cache_clear`` means.
        """
        if self._prefix is not None:
            return call_prefixes(self._prefix)
        shared = self._common.prefix
        if shared is None:
            return ()
        if not shared:
            raise ValueError(
                f"cache_clear() of {getattr(self._fn, '__qualname__', self._fn)!r}: the keys its key= function "
                "built share no prefix, and clearing every entry is not what it means; delete them by key"
            )
        return (shared,)


class CommonPrefix:
    """The longest prefix shared by every str or bytes key seen (``""`` once they share none).

    Thread-safety: ``see`` reads without a lock while a key starts with the prefix
    (the common case), and shrinks the prefix under a lock otherwise.
    """

    def __init__(self) -> None:
        self.prefix: Key | None = None
        self._lock = threading.Lock()

    def see(self, key: object) -> None:
        prefix: Any = self.prefix
        if type(key) is type(prefix) and prefix is not None and key.startswith(prefix):  # type: ignore[attr-defined]
            return
        if not isinstance(key, (str, bytes)):
            return  # not a key: the store refuses it
        with self._lock:
            prefix = self.prefix
            if prefix is None:
                self.prefix = key
            elif type(key) is not type(prefix):
                self.prefix = ""  # str and bytes keys never share a prefix
            else:
                both: Any = [prefix, key]  # of one type: str or bytes
                self.prefix = os.path.commonprefix(both)  # noqa: RUF071  # characters are what is wanted


class Handle:
    """A ``cached`` function: its calls and its handle on its entries; a method's binds its instance."""

    def __init__(
        self,
        fn: Callable[..., Any],
        call: Callable[..., Any],
        key: Callable[..., Key],
        invalidate: Callable[..., None],
        cache_clear: Callable[[], int],
    ) -> None:
        functools.update_wrapper(self, fn)  # first: what it copies of fn's __dict__ never replaces the handle
        self._call = call
        self.key = key
        self.invalidate = invalidate
        self.cache_clear = cache_clear

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else _Bound(self, instance)

    def __reduce__(self) -> str:
        """Pickled by reference, as the function it replaces in its module (for multiprocessing)."""
        return str(getattr(self, "__qualname__", ""))

    def __repr__(self) -> str:
        return f"<cached {getattr(self, '__qualname__', '?')}>"


class _Bound:
    """A ``cached`` method bound to an instance: the instance goes first in its calls, keys and invalidations."""

    def __init__(self, handle: Handle, instance: object) -> None:
        self.__func__ = handle
        self.__self__ = instance
        self.__name__ = getattr(handle, "__name__", "?")
        self.__doc__ = getattr(handle, "__doc__", None)
        self.cache_clear = handle.cache_clear

    def __getattr__(self, name: str) -> Any:
        """What the handle has and this does not, as a bound method reads its function's attributes
        (an async handle's coroutine marks among them: the bound method is a coroutine function too)."""
        if name == "__func__":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.__func__, name)

    @property
    def __signature__(self) -> inspect.Signature:
        """The method's signature without its first parameter, as a bound method's."""
        signature = inspect.signature(self.__func__)
        return signature.replace(parameters=list(signature.parameters.values())[1:])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__._call(self.__self__, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> Key:
        return self.__func__.key(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:  # None, or a coroutine for an async handle (aio)
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return getattr, (self.__self__, self.__name__)

    def __eq__(self, other: object) -> bool:  # as bound methods: the same function of the same instance
        return isinstance(other, _Bound) and other.__func__ is self.__func__ and other.__self__ is self.__self__

    def __hash__(self) -> int:
        return hash((id(self.__func__), id(self.__self__)))

    def __repr__(self) -> str:
        return f"<bound cached {self.__name__} of {self.__self__!r}>"
