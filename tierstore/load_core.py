"""What loading runs on: the store's primitives (``StoreCore``), its write and the renewal hook, as types.

Kept apart from ``loading`` so the store wires them without the algorithm, and
the algorithm stays free of the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .codec import Key, Record

__all__ = ["Renew", "StoreCore", "Write"]

Renew = Callable[[Key, Callable[[], Any], Any, int], None]  # a background renewal: key, loader, ttl, seen seq


class Write(Protocol):
    """The store's version-checked write (the one behind ``set``)."""

    def __call__(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Any = ...,
        version: int | None = None,
        load_time: float = 0.0,
        admit: Callable[[], bool] | None = None,
    ) -> bool:
        """Write under the key's lock unless ``version`` is not newer or ``admit()`` vetoes; ``True`` if written."""
        ...


@dataclass(frozen=True, slots=True)
class StoreCore:
    """The store primitives loading runs on, as bound callables (no extra frame per call).

    ``lookup`` is a key's stored record (tombstones and expired ones included) and
    the stat a hit on it counts in; ``read`` the same record without the stat;
    ``current`` the record as it is now, for an ``admit`` callback running under
    the key's lock; ``write`` the version-checked write; ``delete`` is the store's.
    """

    path: str
    is_closed: Callable[[], bool]
    lookup: Callable[[Key], tuple[Record | None, str]]
    read: Callable[[Key], Record | None]
    current: Callable[[Key], Record | None]
    write: Write
    delete: Callable[[Key], bool]
