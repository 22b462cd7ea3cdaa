"""One store per directory per process, shared by every backend instance that names it, counted.

A backend holds a ``StoreHolder``: its first use opens the directory's store
(or takes a reference on the one already open) and ``close()`` gives the
reference back. The store closes when its last reference is given back and
opens again on the next use. A holder that is garbage collected gives its
reference back too, so a forgotten backend does not keep a store open forever.

A backend's calls go through ``with holder as store:``: a ``close()`` that comes
while calls of that holder are running gives the reference back when the last
of them ends, so no call finds its store closed under it.

The settings of the first open of a directory win for as long as the process
runs: a later holder naming the same directory with other settings shares that
store, and a warning naming the settings that differ is logged (once per
distinct settings). A directory is known by its real path, resolved when the
holder is made (a relative path does not follow later ``chdir``). Each directory
also has a table of lease locks (``mutex.LeaseLocks``) that outlives closes and
reopens, so a lock taken through a store that was closed frees itself when its
lease ends, not before. A forked child starts with an empty registry: a holder
inherited from the parent forgets the parent's store (never touching it) and
its next use opens the directory in the child, which raises ``StoreLocked``
while the parent still has it open.

In shared mode (``shared=``) a backend may name no directory: its process then
keeps tiers 1 and 2 in a private temp directory (each process its own, so every
worker can take the same settings), shared by the backends of the process that
name the same Redis and namespace, as a directory is. Such a store stays open
when its last reference is given back (a reopen would start from a new, empty
directory): it closes at exit. A ``persist_path`` is then refused: every worker
would restore from and checkpoint into that one directory.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import inspect
import logging
import os
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import StoreLocked
from ..mutex import LeaseLocks
from ..options import Options
from ..store import TierStore

__all__ = ["StoreHolder", "STORE_SETTINGS", "store_settings", "lease_locks", "open_count"]

log = logging.getLogger("tierstore.integrations")

STORE_SETTINGS: frozenset[str] = frozenset(inspect.signature(TierStore.__init__).parameters) - {"self", "path"}
_DEFAULTS = {name: p.default for name, p in inspect.signature(TierStore.__init__).parameters.items()}
_DEFAULT_LEASE = float(_DEFAULTS["lock_timeout"])


def store_settings(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``arguments`` into the store's settings and the rest (by name, as given)."""
    settings = {name: value for name, value in arguments.items() if name in STORE_SETTINGS}
    rest = {name: value for name, value in arguments.items() if name not in STORE_SETTINGS}
    return settings, rest


class _Directory:
    """The registry's record of one directory: its store while open, its references, its first settings."""

    def __init__(self, name: str, path: str | None, lease: float) -> None:
        self.name = name  # the real path, or what names a private temp directory (``_named``)
        self.path = path  # None: a private temp directory, made at each open
        self.settings: dict[str, Any] | None = None  # those of the first open
        self.store: TierStore | None = None
        self.refs = 0
        self.lock = threading.Lock()  # guards store and refs; held while opening or closing
        self.locks = LeaseLocks(lease)
        self.warned: set[str] = set()
        self._pending: list[TierStore] = []  # references of collected holders that found the lock taken

    def take(self, settings: dict[str, Any]) -> TierStore:
        with self.locked():
            first = dict(settings) if self.settings is None else self.settings
            if _effective(settings) != _effective(first):
                self._warn(first, settings)
            if self.store is None or self.store.closed:
                self.store = self._open(first)
                self.refs = 0
            self.settings = first  # those of an open that succeeded
            self.refs += 1
            store = self.store
        return store

    def _open(self, settings: dict[str, Any]) -> TierStore:
        try:
            return TierStore(self.path, **settings)
        except StoreLocked as exc:
            if settings.get("shared") is None or self.path is None:
                raise
            # Worker processes share one configuration: in shared mode each needs a directory of its own.
            raise StoreLocked(
                f"{exc}; with shared=, name no directory (an empty LOCATION, no path) and each "
                "process keeps tiers 1 and 2 in a private temporary directory"
            ) from None

    def give_back(self, store: TierStore) -> None:
        with self.locked():
            self._give_back(store)

    def collected(self, store: TierStore) -> None:
        """The give-back of a holder the garbage collector took: it never waits for the lock.

        The collector may run it in a thread that holds the lock already (inside
        ``take``, while the store opens): the reference is then given back by
        whichever thread holds the lock, when it releases it (``locked``).
        """
        self._pending.append(store)
        self._drain()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock; on release, give back what collected holders left while it was held."""
        try:
            with self.lock:
                yield
                self._settle()
        finally:
            self._drain()

    def _drain(self) -> None:
        # A give-back queued after the holder's last check is seen by whoever then takes the lock,
        # or, if the lock is still held, by its holder once it releases it.
        while self._pending and self.lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self.lock.release()

    def _settle(self) -> None:
        while self._pending:
            self._give_back(self._pending.pop())

    def _give_back(self, store: TierStore) -> None:
        if store is not self.store:
            return  # a reference on a store that was replaced (closed by its owner and reopened)
        self.refs -= 1
        if self.refs > 0:
            return
        self.refs = 0
        if self.path is None:
            # A private temp directory stays open until exit (``close_all``): nothing else can use
            # it, and a reopen would start from a new empty one and a new Redis subscription
            # (tens of milliseconds, every tier cold), as Django's close after each request would ask.
            return
        self.store = None
        store.close()  # under the lock: a reopen waits until the directory is released

    def _warn(self, first: dict[str, Any], settings: dict[str, Any]) -> None:
        shown = repr(sorted(settings.items(), key=repr))
        if shown in self.warned:
            return
        self.warned.add(shown)
        mine, theirs = _effective(first), _effective(settings)
        names = mine.keys() | theirs.keys()
        differing = sorted(name for name in names if mine.get(name, _UNSET) != theirs.get(name, _UNSET))
        log.warning(
            "%s is already used in this process with settings %r; the first settings win and %r are ignored "
            "(differing: %s)",
            self.name,
            _redacted(first),
            _redacted(settings),
            ", ".join(differing),
        )


_UNSET: Any = object()


def _redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as a log may show them: a password in the ``shared`` URL reads ``***``."""
    shared = settings.get("shared")
    if not isinstance(shared, str):
        return dict(settings)
    return {**settings, "shared": _redacted_url(shared)}


def _redacted_url(url: str) -> str:
    """``url`` with its password shown as ``***``, where redis-py reads one: the user part, or a
    ``password=`` query argument (its form for a ``unix://`` socket)."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # a URL that does not parse (a bracket left open) may hold anything
        return "<a URL that does not parse>"
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    arguments = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() == "password" for name, _ in arguments):
        shown = [(name, "***" if name.lower() == "password" else value) for name, value in arguments]
        parts = parts._replace(query=urllib.parse.urlencode(shown, safe="*"))
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}{fragment}"  # urlunsplit drops unix:///'s "//"


def _effective(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without those given at their default: ``memory_items=10_000`` is no difference."""
    return {name: value for name, value in settings.items() if _DEFAULTS.get(name, _UNSET) != value}


_directories: dict[str, _Directory] = {}
_table_lock = threading.Lock()
_fork_lock = threading.Lock()  # one thread of a forked child at a time moves a holder over to it
_forks = 0  # forks this process descends from: a holder made before the last one belongs to a parent


def _forget_the_parent() -> None:
    """In a forked child: an empty registry with new locks (a parent's thread may have held the old ones)."""
    global _table_lock, _fork_lock, _forks
    _table_lock, _fork_lock = threading.Lock(), threading.Lock()
    _directories.clear()
    _forks += 1


os.register_at_fork(after_in_child=_forget_the_parent)


def _directory(name: str, path: str | None, lease: float) -> _Directory:
    with _table_lock:
        directory = _directories.get(name)
        if directory is None:
            directory = _directories[name] = _Directory(name, path, lease)
        return directory


def _named(path: str | os.PathLike[str] | None, settings: Mapping[str, Any]) -> tuple[str, str | None]:
    """The registry's name of a holder's store and its directory (``None``: a private temp directory,
    only in shared mode: per Redis and namespace)."""
    if path is not None and os.fspath(path) != "":
        real = os.path.realpath(os.fspath(path))  # later chdir calls do not move the directory
        return real, real
    shared = settings.get("shared")
    if shared is None:
        raise ValueError("a store's directory is needed (none: only in shared mode, with shared=)")
    if settings.get("persist_path") is not None:  # each worker would restore from and checkpoint into it
        raise ValueError(
            "persist_path needs a directory named for the store: with none, each worker process keeps a "
            "private temp directory, and every one of them would use the one persist_path (StoreLocked)"
        )
    # a URL may carry a password: the name (logged) shows a digest of it
    target = hashlib.sha256(shared.encode()).hexdigest()[:16] if isinstance(shared, str) else f"{id(shared):#x}"
    return f"<temp directory: Redis {target}, namespace {settings.get('namespace', 'tierstore')!r}>", None


def lease_locks(path: str | os.PathLike[str], lease: float = _DEFAULT_LEASE) -> LeaseLocks:
    """The lease-lock table of the directory ``path`` (created with ``lease`` if it has none yet)."""
    real = os.path.realpath(os.fspath(path))
    return _directory(real, real, lease).locks


def open_count(path: str | os.PathLike[str]) -> int:
    """References held now on the store of ``path`` (0 when it is closed); for tests and diagnostics."""
    with _table_lock:
        directory = _directories.get(os.path.realpath(os.fspath(path)))
    if directory is None:
        return 0
    with directory.locked():
        return directory.refs if directory.store is not None and not directory.store.closed else 0


class StoreHolder:
    """One backend's reference on the shared store of a directory, taken on use and given back by ``close()``.

    Thread-safe: a holder may be shared by threads (dogpile's backends are). Calls
    run as ``with holder as store: ...``; ``close()`` during such calls gives the
    reference back when the last of them ends.
    """

    def __init__(self, path: str | os.PathLike[str] | None, settings: Mapping[str, Any]) -> None:
        """``path``: the directory (``None`` or ``""``: a private temp directory, in shared mode only)."""
        unknown = set(settings) - STORE_SETTINGS
        if unknown:
            raise TypeError(f"unknown store settings: {', '.join(sorted(unknown))}")
        self._name, self.path = _named(path, settings)
        self.settings = dict(settings)
        Options(path=self.path, **self.settings)  # a bad value fails here (TypeError/ValueError), not at each use
        self._lease = float(self.settings.get("lock_timeout", _DEFAULT_LEASE))
        self._attach()

    def _attach(self) -> None:
        """Start afresh in this process: no reference, new locks, the directory's record of this process."""
        self._forks = _forks
        self._directory = _directory(self._name, self.path, self._lease)
        self._lock = threading.Lock()
        self._store: TierStore | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._calls = 0  # calls running through ``with holder``
        self._closing = False  # close() came while calls ran: give back when the last ends

    def _check_process(self) -> None:
        if self._forks != _forks:  # a forked child: forget the parent's store, never touch it
            with _fork_lock:
                if self._forks != _forks:
                    if self._finalizer is not None:
                        self._finalizer.detach()
                    self._attach()

    def _take(self) -> TierStore:
        """The open store, taking a reference when this holder has none (the caller holds ``_lock``)."""
        store = self._store
        if store is None or store.closed:
            self._give_back()
            store = self._directory.take(self.settings)
            self._store = store
            finalizer = weakref.finalize(self, self._directory.collected, store)
            finalizer.atexit = False  # at exit, close_all closes what is still open
            self._finalizer = finalizer
        return store

    @property
    def store(self) -> TierStore:
        """The open store, taking a reference on first use (and after ``close()``).

        A store got this way may be closed by a ``close()`` of another thread; the
        backends' own calls use ``with holder as store`` instead.
        """
        store = self._store
        if store is not None and not store.closed:
            return store
        self._check_process()
        with self._lock:
            return self._take()

    def __enter__(self) -> TierStore:
        if self._forks != _forks:
            self._check_process()
        with self._lock:
            store = self._store
            if store is None or store.closed:
                store = self._take()
            self._calls += 1
            self._closing = False  # a use after close() takes the reference again: keep it
            return store

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._calls -= 1
            if self._closing and not self._calls:
                self._closing = False
                self._give_back()

    @property
    def held(self) -> bool:
        """Whether this holder has a reference now."""
        return self._store is not None

    @property
    def locks(self) -> LeaseLocks:
        """The directory's lease locks (they outlive the store's closes)."""
        self._check_process()
        return self._directory.locks

    def close(self) -> None:
        """Give the reference back (the store closes with its last one); the next use takes a new one."""
        self._check_process()
        with self._lock:
            if self._calls:
                self._closing = True
            else:
                self._give_back()

    def _give_back(self) -> None:
        finalizer, self._finalizer, store = self._finalizer, None, self._store
        self._store = None
        if finalizer is not None and finalizer.detach() is not None and store is not None:
            self._directory.give_back(store)  # waits for the lock (collected() never does)


def close_all() -> None:
    """Close every store the registry holds open (at exit: references nobody gave back)."""
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
                log.warning("%s: closing the store failed: %s", directory.name, exc)


atexit.register(close_all)
