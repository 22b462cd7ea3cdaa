"""The read-then-write calls of ``TierStore`` on one key: ``add``, ``touch``, ``pop``.

``TierStore`` inherits ``ConditionalCalls``. Each call reads the key's record
and writes under the key's stripe lock, so it is atomic per key: of many
threads racing ``add`` on one key exactly one stores, of many racing ``pop``
exactly one gets the value. ``add`` goes through the writer (the version rule,
the guard, the expiry index, tier-1 epochs as ``set``); ``touch`` and ``pop``
through ``batch.Batch``. This module never imports the store.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .batch import BatchAccess
from .clock import TTL, Clock, check_ttl
from .codec import Key, RecordState, record_state
from .errors import TierStoreError
from .keyspace import entry_key
from .loaded_value import close_unawaited, is_coroutine_function

__all__ = ["ConditionalCalls", "checked_update", "popped"]

_LIVE = RecordState.LIVE


class _Raise:
    """The type of ``pop``'s default default: raise ``KeyError``."""

    def __repr__(self) -> str:
        return "<raise KeyError>"


_RAISE: Any = _Raise()


def checked_update(update: Any) -> Callable[[Any], Any]:
    """``update_value``'s function, refused before anything is read unless it is a plain callable.

    It runs under the key's lock and its answer is stored, so it cannot be awaited: a coroutine
    function is refused up front, and an awaitable a plain one returns is closed (never left
    unawaited, which would warn) and refused, nothing written."""
    if not callable(update):
        raise TypeError(f"update_value needs a callable taking the current value, got {type(update).__name__}")
    if is_coroutine_function(update):
        raise TypeError(f"update_value needs a plain function, not the coroutine function {update!r}: {_AWAIT_FIRST}")

    def plain_update(value: Any) -> Any:
        answer = update(value)
        if inspect.isawaitable(answer):
            close_unawaited(answer)
            raise TypeError(f"update_value's function returned {type(answer).__name__}, an awaitable: {_AWAIT_FIRST}")
        return answer

    return plain_update


_AWAIT_FIRST = "it runs under the key's lock; await what it needs first, then call update_value or replace_value"


def popped(key: Key, found: bool, value: Any, default: Any) -> Any:
    """What ``pop`` returns: the value it removed, else ``default`` (``KeyError`` without one)."""
    if found:
        return value
    if default is _RAISE:
        raise KeyError(key)
    return default


class ConditionalCalls(BatchAccess):
    """``add``, ``touch`` and ``pop``; the store sets the attributes declared here when it opens."""

    _closed: bool
    _clock: Clock

    if TYPE_CHECKING:

        def _unusable(self) -> TierStoreError: ...

    def add(self, key: Key, value: Any, *, ttl: TTL = ..., version: int | None = None) -> bool:
        """Store ``value`` only if ``key`` has no live entry (a negative or expired one counts as absent).

        The version rule still applies (with ``version``, only above the stored one,
        tombstones included; without, the current version is kept). ``True`` when
        stored; a lost ``add`` counts in ``sets_rejected``. Thread-safety: the check
        and the write hold the key's stripe lock: one of many racing adds stores.
        """
        if self._closed:
            raise self._unusable()
        return self._add(key, value, ttl, version)

    def _add(self, key: Key, value: Any, ttl: TTL, version: int | None) -> bool:
        """``add`` of an open store (the shared tier binds its own over this)."""
        disk_key = entry_key(key)
        writer, clock = self._writer, self._clock

        def absent() -> bool:  # called by the writer under the key's lock
            current = writer.current(key, disk_key)
            return current is None or record_state(current, clock()) is not _LIVE

        return writer.write(key, value, ttl, version, admit=absent, detach=True)  # a write: bumps the fill generation

    def touch(self, key: Key, ttl: TTL = ...) -> bool:
        """Give the live entry of ``key`` a new expiry (``ttl`` as in ``set``), its value and version unchanged.

        ``False`` for a missing, negative, expired (stale included) or deleted entry.
        The expiry index and tier 1 follow; the TTL jitter applies. Thread-safety:
        holds the key's stripe lock.
        """
        if self._closed:
            raise self._unusable()
        disk_key = entry_key(key)
        if ttl is not ... and ttl is not None:
            check_ttl(ttl)
        return self._batch.touch(key, disk_key, ttl)

    def replace_value(self, key: Key, value: Any) -> bool:
        """Store ``value`` in the live entry of ``key``, its expiry (exactly: no new jitter) and version kept.

        ``False``, with nothing written, for a missing, negative, expired (stale
        included) or deleted entry. For read-modify-write layers such as the Django
        backend's ``incr``. Thread-safety: holds the key's stripe lock.
        """
        if self._closed:
            raise self._unusable()
        return self._batch.replace_value(key, entry_key(key), value)

    def update_value(self, key: Key, update: Callable[[Any], Any]) -> bool:
        """Store ``update(value)`` in the live entry of ``key``, as ``replace_value`` stores a value.

        An atomic read-modify-write (an increment never lost to a concurrent one): ``update``
        gets the current value and runs under the key's stripe lock, or, in shared mode, once
        per attempt of a compare-and-set in Redis (so it must not have side effects beyond its
        answer). ``False``, nothing written, without a live entry; what ``update`` raises
        propagates with nothing written.
        """
        if self._closed:
            raise self._unusable()
        return self._batch.update_value(key, entry_key(key), checked_update(update))

    def pop(self, key: Key, default: Any = _RAISE) -> Any:
        """The live value of ``key``, deleted in the same step (as ``delete`` does: tombstone, fill generation).

        Without a live entry: ``default``, or ``KeyError`` when none is given (a
        negative or expired entry is still deleted). Thread-safety: the read and
        the delete hold the key's stripe lock: one of many racing pops gets the value.
        """
        if self._closed:
            raise self._unusable()
        disk_key = entry_key(key)
        found, value = self._batch.pop(key, disk_key)
        self._stats.counts["deletes"]()
        return popped(key, found, value, default)
