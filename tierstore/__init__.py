"""tierstore: an embedded, persistent two-tier cache engine for Python services."""

from .bloom import BloomFilter
from .entries import ABSENT, Entry, Versioned
from .errors import (
    CorruptRecord,
    CorruptStore,
    LoadTimeout,
    NotAStore,
    PermissionDenied,
    SchemaTooNew,
    SharedUnavailable,
    StorageFull,
    StoreClosed,
    StoreForked,
    StoreLocked,
    TierStoreError,
)
from .ranking import SortedIndex
from .store import TierStore

__version__ = "0.1.0"

__all__ = [
    "ABSENT",
    "BloomFilter",
    "CorruptRecord",
    "CorruptStore",
    "Entry",
    "LoadTimeout",
    "NotAStore",
    "PermissionDenied",
    "SchemaTooNew",
    "SharedUnavailable",
    "SortedIndex",
    "StorageFull",
    "StoreClosed",
    "StoreForked",
    "StoreLocked",
    "TierStore",
    "TierStoreError",
    "Versioned",
    "__version__",
]
