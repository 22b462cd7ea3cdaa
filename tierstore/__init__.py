"""tierstore: an embedded, persistent two-tier cache engine for Python services."""

from .codec import ABSENT, Entry, Versioned
from .errors import (
    CorruptStore,
    LoadTimeout,
    SchemaTooNew,
    StorageFull,
    StoreClosed,
    StoreLocked,
    TierStoreError,
)
from .store import TierStore

__version__ = "0.1.0"

__all__ = [
    "ABSENT",
    "CorruptStore",
    "Entry",
    "LoadTimeout",
    "SchemaTooNew",
    "StorageFull",
    "StoreClosed",
    "StoreLocked",
    "TierStore",
    "TierStoreError",
    "Versioned",
    "__version__",
]
