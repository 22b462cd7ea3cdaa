"""The store's settings: defaults, validation and the stats keys, in one place.

Every parameter is checked when the store is built, so a typo or a bad value
fails at construction with ``TypeError``/``ValueError`` instead of later.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from .bloom import MAX_FILTER_BYTES, check_filter_size
from .clock import Clock, check_fraction, check_seconds, check_ttl
from .errors import shown

__all__ = ["Options", "STAT_KEYS", "MAX_FILTER_BYTES", "check_persist_path"]

STAT_KEYS = (
    "hits_memory",
    "hits_disk",
    "misses",
    "negative_hits",
    "stale_served",
    "sets",
    "sets_rejected",
    "deletes",
    "loads",
    "load_errors",
    "load_waits",
    "busy_defaults",
    "guard_rejections",
    "fills_rejected",
    "refreshes",
    "refresh_errors",
    "evictions_memory",
    "evictions_disk",
    "expired_purged",
    "corrupt_records",
    "checkpoints",
)


def check_persist_path(path: object, persist_path: object, *, temporary: bool = False) -> None:
    """``persist_path`` must be another directory: not ``path``, not inside it, not around it.

    ``temporary``: ``path`` is the private directory that ``path=None`` made (checked once it exists).
    """
    if path is None or persist_path is None:
        return
    store = os.path.realpath(os.fspath(path))  # type: ignore[call-overload]
    persist = os.path.realpath(os.fspath(persist_path))  # type: ignore[call-overload]
    if os.path.commonpath([store, persist]) in (store, persist):
        where = f"the temporary directory {path!r} of path=None" if temporary else f"path {path!r}"
        raise ValueError(
            f"persist_path {persist_path!r} must be a directory apart from {where}: "
            "not the same, not inside it and not containing it"
        )


def _check_directory(value: object, name: str) -> str | None:
    """A directory setting as a str path: ``str`` or ``os.PathLike``, not empty, not a file."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str, a path or None, not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str path, not {type(path).__name__}")
    if not path:
        raise ValueError(f"{name} must not be empty (None means a private temporary directory)")
    if "\0" in path:
        raise ValueError(f"{name} {path!r} contains a NUL character")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} exists and is not a directory")
    return path


def _check_count(value: object, name: str, *, minimum: int, optional: bool = False) -> int | None:
    """An int setting in ``[minimum, sys.maxsize]``: LevelDB, msgpack and bytearray take sizes in C."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {shown(value)}")
    if value > sys.maxsize:
        raise ValueError(f"{name} must be at most {sys.maxsize} (sys.maxsize, a C size), got {shown(value)}")
    return value


def _check_ending_ttl(value: object, name: str) -> None:
    """A TTL that must end: a tombstone's expiry is computed at every delete, so ``None`` cannot stand."""
    if value is None:
        raise TypeError(f"{name} must be a number of seconds, not None: these records always expire")
    check_ttl(value, name)


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    """A setting that names one of ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {', '.join(map(repr, choices))}; not {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass(frozen=True)
class Options:
    """Validated store settings (the README's "Options" says what each one means)."""

    path: str | None = None
    memory_items: int = 10_000
    memory_bytes: int | None = None
    memory_admission: str = "second_read"
    memory_policy: str = "lru"
    default_ttl: float | None = None
    ttl_jitter: float = 0.0
    negative_ttl: float = 60.0
    stale_ttl: float = 0.0
    refresh_ahead: float = 0.0
    lock_timeout: float = 30.0
    guard: bool = False
    bloom_capacity: int = 1_000_000
    bloom_error_rate: float = 0.01
    persist_path: str | None = None
    checkpoint_interval: float | None = 60.0
    disk_capacity_bytes: int | None = None
    clock: Clock = field(default=time.time)
    min_refresh_interval: float = 1.0
    early_beta: float = 0.0
    tombstone_ttl: float = 86_400.0
    sweep_interval: float | None = 60.0
    persist_rate: float | None = None
    max_value_bytes: int = 64 * 1024 * 1024
    disk_cache_bytes: int = 32 * 1024 * 1024
    shared: object = None
    namespace: str = "tierstore"
    shared_failure: str = "local"
    shared_grace: float = 5.0
    shared_ping_interval: float = 1.0

    def __post_init__(self) -> None:
        # Paths are kept as str: plyvel takes nothing else.
        object.__setattr__(self, "path", _check_directory(self.path, "path"))
        object.__setattr__(self, "persist_path", _check_directory(self.persist_path, "persist_path"))
        check_persist_path(self.path, self.persist_path)
        _check_count(self.memory_items, "memory_items", minimum=0)
        _check_count(self.memory_bytes, "memory_bytes", minimum=1, optional=True)
        _check_choice(self.memory_policy, "memory_policy", ("lru", "lfu", "fifo"))
        _check_choice(self.memory_admission, "memory_admission", ("always", "second_read"))
        _check_count(self.bloom_capacity, "bloom_capacity", minimum=1)
        _check_count(self.disk_capacity_bytes, "disk_capacity_bytes", minimum=1, optional=True)
        _check_count(self.max_value_bytes, "max_value_bytes", minimum=1)
        _check_count(self.disk_cache_bytes, "disk_cache_bytes", minimum=0)
        check_ttl(self.default_ttl, "default_ttl")
        check_ttl(self.negative_ttl, "negative_ttl")  # None: negative entries never expire, as default_ttl's
        _check_ending_ttl(self.tombstone_ttl, "tombstone_ttl")
        check_fraction(self.ttl_jitter, "ttl_jitter", upper=10.0)
        check_fraction(self.refresh_ahead, "refresh_ahead", upper=0.99)
        check_seconds(self.stale_ttl, "stale_ttl")
        check_seconds(self.lock_timeout, "lock_timeout", allow_zero=False)
        check_seconds(self.min_refresh_interval, "min_refresh_interval")
        check_seconds(self.early_beta, "early_beta")
        check_seconds(self.checkpoint_interval, "checkpoint_interval", allow_zero=False, optional=True)
        check_seconds(self.sweep_interval, "sweep_interval", allow_zero=False, optional=True)
        check_seconds(self.persist_rate, "persist_rate", allow_zero=False, optional=True)
        if not isinstance(self.guard, bool):
            raise TypeError(f"guard must be a bool, not {type(self.guard).__name__}")
        if isinstance(self.bloom_error_rate, bool) or not isinstance(self.bloom_error_rate, (int, float)):
            raise TypeError(f"bloom_error_rate must be a number, not {type(self.bloom_error_rate).__name__}")
        if not 0.0 < self.bloom_error_rate < 1.0:
            raise ValueError(f"bloom_error_rate must be in (0, 1), got {self.bloom_error_rate!r}")
        check_filter_size(self.bloom_capacity, self.bloom_error_rate, ("bloom_capacity", "bloom_error_rate"))
        if not callable(self.clock):
            raise TypeError("clock must be a callable returning wall-clock seconds")
        _check_shared(self)


SHARED_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_shared(options: Options) -> None:
    """The shared tier's settings (checked whether or not ``shared`` is given: a typo fails at once)."""
    shared = options.shared
    if isinstance(shared, str):
        if not shared.startswith(SHARED_SCHEMES):
            raise ValueError(f"shared must be a URL starting with {', '.join(SHARED_SCHEMES)}; got {shared!r}")
    elif shared is not None and not hasattr(shared, "connection_pool"):
        raise TypeError(f"shared must be None, a redis:// or unix:// URL or a redis.Redis, not {type(shared).__name__}")
    namespace = options.namespace
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not namespace or len(namespace) > 200 or any(c in namespace for c in "{}") or not namespace.isprintable():
        raise ValueError(f"namespace must be 1 to 200 printable characters without braces, got {namespace!r}")
    _check_choice(options.shared_failure, "shared_failure", ("local", "raise"))
    check_seconds(options.shared_grace, "shared_grace")
    check_seconds(options.shared_ping_interval, "shared_ping_interval", allow_zero=False)
