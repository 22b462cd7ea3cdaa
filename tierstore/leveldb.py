"""Opening LevelDB directories: one handle per directory per process, and fork safety.

LevelDB guards a directory with an ``fcntl`` lock on its ``LOCK`` file. POSIX
drops every such lock a process holds on a file when the process closes *any*
descriptor of that file, and LevelDB does exactly that when it refuses a second
open in the same process: after one refused open, another process could open
the directory too, and two writers would then lose acknowledged writes. So a
process-wide registry of open directories, keyed by real path (a symlink and
its target are one directory) and by device and inode (a bind mount, or another
letter case on a case-insensitive filesystem, is one directory under another
real path), is checked before LevelDB is asked.

After ``os.fork()`` a child inherits the parent's handles but not its lock nor
its LevelDB threads. Every handle (and every object registered with
``on_fork``) is marked in the child; the raw plyvel object is kept alive for
good there, so neither a ``close()`` nor the garbage collector ever runs
LevelDB's shutdown in the child (which could wait forever for a compaction
thread that does not exist there, or touch the parent's files). The child may
open a directory of its parent's once the parent has let it go: LevelDB's own
lock table, inherited too, still lists the parent's spelling of the path, so
the child gives LevelDB another spelling and the operating system's lock decides.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ._plyvel import plyvel
from .errors import CorruptStore, PermissionDenied, StorageFull, StoreClosed, StoreForked, StoreLocked, TierStoreError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "LEVELDB_FILE",
    "LevelDB",
    "open_leveldb",
    "leveldb_message",
    "make_private_dirs",
    "holding",
    "on_fork",
    "os_failure",
    "forked_error",
    "write_error",
    "io_failure",
    "refused_access",
    "read_error",
    "damaged_file",
]

DEFAULT_CACHE_BYTES = 32 * 1024 * 1024

#: The names LevelDB gives the files of a directory.
LEVELDB_FILE = re.compile(r"CURRENT|LOCK|LOG|LOG\.old|MANIFEST-\d+|\d+\.(log|ldb|sst|dbtmp)")

# LevelDB's refusal of a held lock: "IO error: lock <dir>/LOCK: already held by process" (this
# process) or "...: Resource temporarily unavailable" (another).
_LOCK_REFUSED = re.compile(r"IO error: lock .*LOCK: ")
# What LevelDB's open says of a file of the directory that is not what it wrote (a directory in
# its place, a truncated table): damage, like its checksum errors.
_DAMAGED_FILE = ("is a directory", "not a directory", "invalid argument", "no such device", "no such file")

_registry_lock = threading.Lock()
_open_dirs: dict[str, int] = {}  # real path -> pid of the process that opened it
# Spellings of a directory that LevelDB's own in-process lock table (inherited through
# fork) still lists: it would refuse them for ever, so a forked child spells the
# directory another way ("real/.") and lets the OS lock decide.
_inherited: dict[str, set[str]] = {}
_spellings: dict[str, str] = {}  # real path -> the spelling LevelDB was given for it
# (device, inode) of each open directory -> its real path: a bind mount, or another case on a
# case-insensitive filesystem, is the same directory under a real path of its own.
_identities: dict[tuple[int, int], str] = {}
_identity_of: dict[str, tuple[int, int]] = {}  # the reverse: real path -> (device, inode)
_forkables: weakref.WeakSet[Any] = weakref.WeakSet()
_kept_in_child: list[Any] = []  # plyvel handles a child must never release


def leveldb_message(exc: BaseException) -> str:
    """LevelDB's own message (plyvel carries it as bytes)."""
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def make_private_dirs(path: str) -> None:
    """Create ``path`` and any missing parents with mode 0o700, whatever the umask.

    ``os.makedirs`` gives parents the umask's default mode (0o755, or 0o777 under
    umask 0); a cache directory and the directories made for it stay private.
    A symlink whose target is missing gets its target made; the link stays.
    """
    missing: list[str] = []
    current = os.path.realpath(path)  # a dangling symlink (its target set aside): the target is made
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask


@contextlib.contextmanager
def holding(path: str) -> Iterator[str]:
    """Hold ``path`` while it is replaced (a restore): ``StoreLocked`` when a store has it open, in this
    process (the registry) or another (LevelDB's lock). Yields its real path.

    Restores of one directory by two processes are serialised already: each holds
    the checkpoint directory open while it restores, and re-checks the working
    path under this hold.
    """
    real, _ = _claim(path)
    try:
        _refuse_if_open_elsewhere(path, real)
        yield real
    finally:
        _release(real)


def _refuse_if_open_elsewhere(path: str, real: str) -> None:
    """``StoreLocked`` when another process holds LevelDB's lock on ``real`` (no handle of ours does)."""
    try:
        fd = os.open(os.path.join(real, "LOCK"), os.O_RDWR)
    except OSError:
        return  # no LOCK file: no LevelDB has it open
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise StoreLocked(f"store {path} is in use by another process") from None
    finally:
        os.close(fd)  # also drops the probe's own lock


def on_fork(obj: Any) -> None:
    """Call ``obj._forked_()`` in the child of every later ``fork()`` (weakly held)."""
    _forkables.add(obj)


def _claim(path: str) -> tuple[str, str]:
    """Register ``path`` as open in this process, or raise ``StoreLocked`` when it already is.

    Returns its real path (the registry key) and the spelling to give LevelDB.
    """
    real = os.path.realpath(path)
    identity = _identity(real)
    with _registry_lock:
        if real in _open_dirs or (identity is not None and identity in _identities):
            raise StoreLocked(f"store {path} is already open in this process (one open store per directory)")
        spelling = real
        while spelling in _inherited.get(real, ()):
            spelling += "/."
        # Registered last, by plain assignments: nothing can fail half way through.
        _open_dirs[real] = os.getpid()
        _spellings[real] = spelling
        if identity is not None:
            _identities[identity] = real
            _identity_of[real] = identity
    return real, spelling


def _identity(real: str) -> tuple[int, int] | None:
    try:
        status = os.stat(real)
    except OSError:
        return None  # not there yet: LevelDB creates it
    return status.st_dev, status.st_ino


def _note_identity(real: str) -> None:
    """Record the identity of a directory LevelDB has just created."""
    identity = _identity(real)
    if identity is not None:
        with _registry_lock:
            if real in _open_dirs and real not in _identity_of:
                _identities[identity] = real
                _identity_of[real] = identity


def _release(real: str) -> None:
    with _registry_lock:
        if _open_dirs.get(real) == os.getpid():
            del _open_dirs[real]
            _spellings.pop(real, None)
            identity = _identity_of.pop(real, None)
            if identity is not None:
                _identities.pop(identity, None)


class LevelDB:
    """An open plyvel DB that holds its directory's place in the registry until closed.

    Attribute access is forwarded to the plyvel object; callers that need speed
    bind its methods once (``db.get``), which then costs nothing per call.
    """

    def __init__(self, db: Any, path: str, real: str) -> None:
        self._db: Any = db
        self.path = path
        self._real = real
        self.forked = False
        self._closed = False
        on_fork(self)

    def __getattr__(self, name: str) -> Any:
        if self.forked:
            raise forked_error(self.path)
        if self._db is None:
            raise StoreClosed(f"store {self.path} is closed")
        return getattr(self._db, name)

    @property
    def raw(self) -> Any:
        return self._db

    def close(self) -> None:
        """Close the handle and release the directory (never in a forked child)."""
        if self.forked:
            raise forked_error(self.path)
        if self._closed:
            return
        self._closed = True
        try:
            self._db.close()
        finally:
            # The plyvel object goes now, while the interpreter is whole: one freed in its
            # last collection (a closed store in a reference cycle) fails in its own
            # finalizer and prints "Error in sys.excepthook" at exit.
            self._db = None
            _release(self._real)

    def _forked_(self) -> None:
        self.forked = True
        if not self._closed:
            _kept_in_child.append(self._db)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._db))  # never deallocated in this process


def open_leveldb(path: str, *, create: bool, cache_bytes: int = DEFAULT_CACHE_BYTES) -> LevelDB:
    """Open a LevelDB directory, checked against the registry, mapping plyvel's errors onto tierstore's.

    ``cache_bytes`` sizes LevelDB's block cache: random reads of a store larger
    than it go to the table files (about 10 µs instead of 2 µs here).
    """
    path = os.fspath(path)
    real, spelling = _claim(path)
    try:
        db = plyvel.DB(spelling, create_if_missing=create, paranoid_checks=True, lru_cache_size=cache_bytes)
    except BaseException as exc:
        _release(real)
        if not isinstance(exc, plyvel.Error):
            raise
        error = _open_error(path, exc)
        if isinstance(error, StoreLocked) and real in _inherited:
            error = StoreLocked(f"{error}; this process was forked from one that had it open")
        raise error from None
    try:
        _note_identity(real)  # a directory LevelDB has just created
        return LevelDB(db, path, real)
    except BaseException:  # even an interrupt here must not leave the directory held
        db.close()
        _release(real)
        raise


def refused_access(exc: BaseException) -> bool:
    """Whether a LevelDB error is the operating system refusing access (not damage, not a full disk)."""
    lowered = leveldb_message(exc).lower()
    return isinstance(exc, plyvel.IOError) and any(refusal in lowered for refusal in _REFUSALS)


_REFUSALS = ("permission denied", "read-only file system", "operation not permitted")


def _open_error(path: str, exc: BaseException) -> TierStoreError:
    text = leveldb_message(exc)
    lowered = text.lower()
    if isinstance(exc, plyvel.IOError):
        if refused_access(exc):
            return PermissionDenied(f"cannot open store {path}: permission denied ({text})")
        if "no space" in lowered:
            return StorageFull(f"cannot open store {path}: the disk is full ({text})")
        if _LOCK_REFUSED.match(text):  # not any mention of "lock": a path may hold the word
            return StoreLocked(f"store {path} is in use by another process ({text})")
        if damaged_file(exc):
            return CorruptStore(f"store {path} is corrupt: {text}")
        return TierStoreError(f"cannot open store {path}: {text}")
    if isinstance(exc, plyvel.CorruptionError):
        return CorruptStore(f"store {path} is corrupt: {text}")
    return CorruptStore(f"cannot open store {path}: {text}")


def damaged_file(exc: BaseException) -> bool:
    """Whether a LevelDB IO error says a file of the directory is not what LevelDB wrote (a table
    truncated or replaced by a directory): damage, like its checksum errors."""
    lowered = leveldb_message(exc).lower()
    return isinstance(exc, plyvel.Error) and any(damage in lowered for damage in _DAMAGED_FILE)


def forked_error(path: str) -> StoreForked:
    """The error of every call on a store inherited through ``fork()``."""
    return StoreForked(
        f"store {path} was opened by the parent process (a store belongs to the process that opened it); "
        "open a store of its own in this forked child"
    )


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    for real in _open_dirs:  # the parent's: its lock table entries stay in this process for ever
        _inherited.setdefault(real, set()).add(_spellings[real])
    _open_dirs.clear()
    _spellings.clear()
    _identities.clear()
    _identity_of.clear()
    for obj in list(_forkables):
        obj._forked_()


def os_failure(exc: OSError, doing: str) -> TierStoreError:
    """An OS error as the ``TierStoreError`` it means, naming what was being done."""
    message = f"{doing}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(message)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(message)
    return TierStoreError(message)


os.register_at_fork(after_in_child=_after_fork_in_child)


def write_error(path: str, exc: BaseException) -> TierStoreError:
    """The typed error of a write LevelDB refused: a full disk, or a store damaged below."""
    text = leveldb_message(exc)
    if isinstance(exc, plyvel.CorruptionError):
        return CorruptStore(
            f"store {path} is damaged and LevelDB refuses every write ({text}); reads still work where they can. "
            f"To recover: close it, run 'tierstore verify {path}', then move the directory aside "
            "(a store with a persist_path restores its last checkpoint at the next open)"
        )
    if isinstance(exc, plyvel.IOError):
        return io_failure(exc, f"write to {path} failed")
    return TierStoreError(f"write to {path} failed: {text}")


def read_error(path: str, exc: BaseException, what: str) -> TierStoreError:
    """The typed error of a read LevelDB could not make for another reason than a damaged block:
    a table file it could not open (refused access, too many open files, an I/O error)."""
    text = leveldb_message(exc)
    if refused_access(exc):
        return PermissionDenied(f"{path}: reading {what} failed: permission denied ({text})")
    return TierStoreError(f"{path}: reading {what} failed: {text}")


def io_failure(exc: BaseException, doing: str) -> TierStoreError:
    """A LevelDB IO error of a write: ``PermissionDenied`` when the OS refused access, else ``StorageFull``
    (no space, a quota, a file size limit)."""
    text = leveldb_message(exc)
    if refused_access(exc):
        return PermissionDenied(f"{doing}: permission denied ({text})")
    return StorageFull(f"{doing}: {text}")
