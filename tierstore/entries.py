"""What a read hands back: ``ABSENT``, ``Entry``, ``Versioned``, and the entry a stored record is at a moment.

The record rule itself (live, negative, stale, expired, tombstone) is ``codec``'s;
this module only shapes its answer for callers (``get_entry``, loaders).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .codec import EXPIRES_AT, VALUE, VERSION, Record, RecordState, record_state

__all__ = ["ABSENT", "Absent", "Entry", "Versioned", "entry_of"]

_LIVE, _STALE, _NEGATIVE = RecordState.LIVE, RecordState.STALE, RecordState.NEGATIVE


class Absent:
    """The type of ``ABSENT``: the source has no value for a key (a negative entry)."""

    _instance: Absent | None = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT = Absent()


class Entry(NamedTuple):
    """What ``get_entry`` returns: a value and its metadata."""

    value: Any
    version: int
    expires_at: float | None
    negative: bool
    stale: bool


class Versioned(NamedTuple):
    """A loader's result stamped with the source's version."""

    value: Any
    version: int


def entry_of(record: Record, now: float, stale_ttl: float = 0.0) -> Entry | None:
    """What ``get_entry`` returns for ``record`` at ``now``: live, negative or stale, else ``None``."""
    state = record_state(record, now, stale_ttl)
    if state is _LIVE or state is _STALE:
        return Entry(record[VALUE], record[VERSION], record[EXPIRES_AT], False, state is _STALE)
    if state is _NEGATIVE:
        return Entry(ABSENT, record[VERSION], record[EXPIRES_AT], True, False)
    return None
