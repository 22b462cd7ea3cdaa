"""One store per directory per process, shared by every backend instance that names it, counted.

A backend holds a ``StoreHolder``: its first use opens the directory's store
(or takes a reference on the one already open) and ``close()`` gives the
reference back. The store closes when its last reference is given back and
opens again on the next use. A holder that is garbage collected gives its
reference back too, so a forgotten backend does not keep a store open forever.

The settings of the first open of a directory win for as long as the process
runs: a later holder naming the same directory with other settings shares that
store, and a warning is logged (once per distinct settings). Each directory also
has a table of lease locks (``mutex.LeaseLocks``) that outlives closes and
reopens, so a lock taken through a store that was closed frees itself when its
lease ends, not before. A forked child starts with an empty registry (the
parent's stores are the parent's).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..mutex import LeaseLocks
from ..store import TierStore

__all__ = ["StoreHolder", "STORE_SETTINGS", "store_settings", "lease_locks", "open_count"]

log = logging.getLogger("tierstore.integrations")

STORE_SETTINGS: frozenset[str] = frozenset(inspect.signature(TierStore.__init__).parameters) - {"self", "path"}
_DEFAULT_LEASE = float(inspect.signature(TierStore.__init__).parameters["lock_timeout"].default)


def store_settings(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``arguments`` into the store's settings and the rest (by name, as given)."""
    settings = {name: value for name, value in arguments.items() if name in STORE_SETTINGS}
    rest = {name: value for name, value in arguments.items() if name not in STORE_SETTINGS}
    return settings, rest


class _Directory:
    """The registry's record of one directory: its store while open, its references, its first settings."""

    def __init__(self, path: str, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.store: TierStore | None = None
        self.refs = 0
        self.lock = threading.Lock()  # guards store and refs; held while opening or closing
        self.update_lock = threading.RLock()  # read-modify-write calls of the backends (incr, decr)
        self.locks = LeaseLocks(float(settings.get("lock_timeout", _DEFAULT_LEASE)))
        self.warned: set[str] = set()

    def take(self, settings: dict[str, Any]) -> TierStore:
        with self.lock:
            if settings != self.settings:
                self._warn(settings)
            if self.store is None or self.store.closed:
                self.store = TierStore(self.path, **self.settings)
                self.refs = 0
            self.refs += 1
            return self.store

    def give_back(self, store: TierStore) -> None:
        with self.lock:
            if store is not self.store:
                return  # a reference on a store that was replaced (closed by its owner and reopened)
            self.refs -= 1
            if self.refs > 0:
                return
            self.store = None
            self.refs = 0
            store.close()  # under the lock: a reopen waits until the directory is released

    def _warn(self, settings: dict[str, Any]) -> None:
        shown = repr(sorted(settings.items()))
        if shown in self.warned:
            return
        self.warned.add(shown)
        log.warning(
            "%s is already used in this process with settings %r; the first settings win and %r are ignored",
            self.path,
            self.settings,
            settings,
        )


_directories: dict[str, _Directory] = {}
_table_lock = threading.Lock()
_table_pid = os.getpid()


def _directory(path: str | os.PathLike[str], settings: dict[str, Any]) -> _Directory:
    global _table_lock, _table_pid
    real = os.path.realpath(os.fspath(path))
    if _table_pid != os.getpid():  # a forked child: the parent's stores are the parent's
        _table_lock, _table_pid = threading.Lock(), os.getpid()
        _directories.clear()
    with _table_lock:
        directory = _directories.get(real)
        if directory is None:
            directory = _directories[real] = _Directory(os.fspath(path), dict(settings))
        return directory


def lease_locks(path: str | os.PathLike[str], lease: float = _DEFAULT_LEASE) -> LeaseLocks:
    """The lease-lock table of the directory ``path`` (created with ``lease`` if it has none yet)."""
    return _directory(path, {"lock_timeout": lease}).locks


def open_count(path: str | os.PathLike[str]) -> int:
    """References held now on the store of ``path`` (0 when it is closed); for tests and diagnostics."""
    with _table_lock:
        directory = _directories.get(os.path.realpath(os.fspath(path)))
    if directory is None:
        return 0
    with directory.lock:
        return directory.refs if directory.store is not None and not directory.store.closed else 0


class StoreHolder:
    """One backend's reference on the shared store of a directory, taken on use and given back by ``close()``.

    Thread-safe: a holder may be shared by threads (dogpile's backends are).
    """

    def __init__(self, path: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
        unknown = set(settings) - STORE_SETTINGS
        if unknown:
            raise TypeError(f"unknown store settings: {', '.join(sorted(unknown))}")
        self.path = os.fspath(path)
        self.settings = dict(settings)
        self._directory = _directory(path, self.settings)
        self._lock = threading.Lock()
        self._store: TierStore | None = None
        self._finalizer: Callable[[], Any] | None = None

    @property
    def store(self) -> TierStore:
        """The open store, taking a reference on first use (and after ``close()``)."""
        store = self._store
        if store is not None and not store.closed:
            return store
        with self._lock:
            if self._store is None or self._store.closed:
                self._give_back()
                store = self._directory.take(self.settings)
                self._store = store
                finalizer = weakref.finalize(self, self._directory.give_back, store)
                finalizer.atexit = False  # at exit, close_all closes what is still open
                self._finalizer = finalizer
            return self._store

    @property
    def held(self) -> bool:
        """Whether this holder has a reference now."""
        return self._store is not None

    @property
    def locks(self) -> LeaseLocks:
        """The directory's lease locks (they outlive the store's closes)."""
        return self._directory.locks

    @property
    def update_lock(self) -> threading.RLock:
        """The directory's lock for read-modify-write calls in this process."""
        return self._directory.update_lock

    def close(self) -> None:
        """Give the reference back (the store closes with its last one); the next use takes a new one."""
        with self._lock:
            self._give_back()

    def _give_back(self) -> None:
        finalizer, self._finalizer, self._store = self._finalizer, None, None
        if finalizer is not None:
            finalizer()


def close_all() -> None:
    """Close every store the registry holds open (at exit: references nobody gave back)."""
    if _table_pid != os.getpid():
        return  # a forked child: the stores are the parent's
    with _table_lock:
        directories = list(_directories.values())
    for directory in directories:
        with directory.lock:
            store, directory.store, directory.refs = directory.store, None, 0
            if store is None:
                continue
            try:
                store.close()
            except Exception as exc:  # one store that cannot close must not keep the others open
                log.warning("%s: closing the store failed: %s", directory.path, exc)


atexit.register(close_all)
