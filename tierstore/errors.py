"""The exception hierarchy: every error the store raises on purpose is a TierStoreError."""

from __future__ import annotations

__all__ = [
    "TierStoreError",
    "StoreLocked",
    "StoreClosed",
    "LoadTimeout",
    "CorruptStore",
    "CorruptRecord",
    "SchemaTooNew",
    "StorageFull",
    "StoreForked",
    "PermissionDenied",
    "NotAStore",
    "SharedUnavailable",
    "shown",
]


def shown(number: object) -> str:
    """A number as an error message names it: in full up to 30 digits, else an int by its size.

    ``str()`` of an int past 4,300 digits raises ``ValueError`` (Python's guard against slow
    conversions), which would replace the error being raised; shorter huge ints only make
    the message as long as the number.
    """
    if isinstance(number, int) and not -(10**30) < number < 10**30:
        sign = "a negative" if number < 0 else "an"
        return f"{sign} int of {number.bit_length()} bits"
    return repr(number)


class TierStoreError(Exception):
    """Base class of tierstore's own errors."""


class StoreLocked(TierStoreError):
    """The LevelDB directory is held by another process (or another open store)."""


class StoreClosed(TierStoreError):
    """The store was closed; no call can use it any more."""


class LoadTimeout(TierStoreError):
    """A caller waited longer than ``wait_timeout`` for another caller's load."""


class CorruptStore(TierStoreError):
    """The working directory cannot be opened and there is no checkpoint to restore."""


class CorruptRecord(TierStoreError):
    """One record failed to decode; the store treats it as a miss."""


class SchemaTooNew(TierStoreError):
    """The directory was written by a newer tierstore schema than this one reads."""


class StorageFull(TierStoreError):
    """A write failed because the disk is full (or otherwise refused the write)."""


class StoreForked(TierStoreError):
    """The store was opened by the parent of this process; a forked child must open its own."""


class PermissionDenied(TierStoreError):
    """The operating system refused access to a store or checkpoint directory."""


class NotAStore(TierStoreError):
    """The directory holds someone else's data (files, or a LevelDB without tierstore's records).

    It is never restored over, moved aside nor written: point ``path`` elsewhere.
    """


class SharedUnavailable(TierStoreError):
    """The shared tier (Redis) did not answer, or refused the call; nothing changed locally."""
