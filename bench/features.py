"""Which of tierstore's features exist in this tree, so sections skip rather than crash."""

from __future__ import annotations

import importlib
from typing import Any

from tierstore import TierStore

__all__ = ["has", "method", "bloom_class"]

# feature -> the TierStore methods it needs
_FEATURES = {
    "get_or_load": ("get_or_load",),
    "drain": ("drain",),
    "guard": ("get_or_load", "guard_keys"),
    "counters": ("incr", "counter"),
    "index": ("index",),
    "checkpoint": ("checkpoint",),
}


def has(feature: str) -> bool:
    """True when TierStore has every method ``feature`` needs."""
    return all(callable(getattr(TierStore, name, None)) for name in _FEATURES[feature])


def method(store: TierStore, name: str) -> Any:
    """A bound method looked up by name (typed ``Any``: the feature may not exist yet)."""
    return getattr(store, name, None)


def bloom_class() -> Any:
    """``tierstore.BloomFilter``, else ``tierstore.bloom.BloomFilter``, else ``None``."""
    import tierstore

    found = getattr(tierstore, "BloomFilter", None)
    if found is not None:
        return found
    try:
        return getattr(importlib.import_module("tierstore.bloom"), "BloomFilter", None)
    except ImportError:
        return None
