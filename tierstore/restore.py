"""Restore on open: fill a missing, empty or corrupt working directory from the checkpoint.

Decisions (also in the README, "Decisions"):

- A working directory that is missing or empty is filled from the checkpoint;
  one that cannot be opened because it is corrupt (including a directory with
  LevelDB files but no ``CURRENT`` file, or a table file without its footer) is
  moved aside to ``<path>.corrupt-<time>`` (never deleted) and replaced by a
  copy of the checkpoint, built in ``<path>.restoring`` and renamed into place.
  ``StoreLocked``, ``SchemaTooNew``, ``StorageFull`` and ``PermissionDenied``
  (a file the process may not read: its data may be sound and newer than the
  checkpoint) never trigger a restore. Without a
  checkpoint a corrupt directory raises ``CorruptStore``. When the working
  directory is missing and the checkpoint itself is unreadable, the store starts
  empty and logs an error: a cold cache beats no service.
- A restored directory is marked as not cleanly closed, so parts that keep
  derived state rebuild it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from ._plyvel import plyvel
from .checkpoint import TrackedDisk
from .checkpoint_record import CHECKPOINT_RECORD, META_CHECKPOINT_GENERATION, NOT_DATA, WORKING_ONLY, checkpoint_info
from .directories import foreign_entries, install, staging_for
from .disk import DEFAULT_CACHE_BYTES, DiskTier, leveldb_message, make_private_dirs, open_leveldb
from .errors import (
    CorruptRecord,
    CorruptStore,
    NotAStore,
    PermissionDenied,
    SchemaTooNew,
    StorageFull,
    StoreLocked,
    TierStoreError,
)
from .index_repair import repair_indexes
from .keyspace import META_OPEN, META_SCHEMA, SCHEMA_VERSION, check_schema, meta_key
from .leveldb import LEVELDB_FILE, holding, os_failure, refused_access, write_error

__all__ = ["open_disk", "restore_damaged"]

log = logging.getLogger("tierstore")

#: Test-only: when set, called with the name of each point a restore passes
#: ("restore-batch", "restore-built"), so a test can kill the process there.
_hook: Callable[[str], None] | None = None

_OPEN_MARK = meta_key(META_OPEN)
_SCHEMA_RECORD = meta_key(META_SCHEMA)
_BATCH_OPS = 1000
# LevelDB table footer magic (fixed64, little endian), the last 8 bytes of a table file.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_FOOTER_BYTES = 48


def _at(point: str) -> None:
    hook = _hook
    if hook is not None:
        hook(point)


def open_disk(
    path: str | os.PathLike[str], persist_path: str | os.PathLike[str] | None, *, cache_bytes: int = DEFAULT_CACHE_BYTES
) -> tuple[DiskTier, bool]:
    """Open the working directory (restoring it from ``persist_path`` when needed).

    Returns the disk tier (a ``TrackedDisk`` when ``persist_path`` is set) and
    whether it was restored from the checkpoint.
    """
    path = os.fspath(path)
    persist = None if persist_path is None else os.fspath(persist_path)
    kind = _untracked if persist is None else TrackedDisk
    factory: Callable[[str], DiskTier] = functools.partial(kind, cache_bytes=cache_bytes)
    problem: TierStoreError | None = None
    if _directory_state(path) == "data":
        try:
            return _open_checked(path, factory), False
        except (StoreLocked, SchemaTooNew, StorageFull, NotAStore, PermissionDenied):
            raise  # never a reason to restore over the directory: its data may be sound
        except TierStoreError as exc:
            problem = exc
        except plyvel.Error as exc:  # a damaged table read while checking the schema
            if refused_access(exc):
                raise PermissionDenied(f"cannot open store {path}: {leveldb_message(exc)}") from None
            problem = CorruptStore(f"store {path} is corrupt: {leveldb_message(exc)}")
    if persist is None:
        if problem is not None:
            raise _without_checkpoint(problem, "no persist_path is set")
        return _create(path, factory), False
    restored = _restore_from(persist, path, problem)
    return (factory(path) if restored else _create(path, factory)), restored


def restore_damaged(
    path: str, persist_path: str | os.PathLike[str] | None, damage: CorruptStore, cache_bytes: int
) -> DiskTier:
    """Damage met by the scans of an open that LevelDB's own open did not see (a corrupt table
    block): move the released working directory aside and restore it from the checkpoint.

    Raises the damage (with why it cannot be restored) when there is no usable checkpoint.
    """
    if persist_path is None:
        raise _without_checkpoint(damage, "no persist_path is set")
    _restore_from(os.fspath(persist_path), path, damage)  # True, or raises: a problem is never ignored
    return TrackedDisk(path, cache_bytes=cache_bytes)


def _create(path: str, factory: Callable[[str], DiskTier]) -> DiskTier:
    """Open a directory that holds no data; a creation that fails (a full disk, say) removes the
    files LevelDB made, which would otherwise read as a damaged store (LevelDB files, no ``CURRENT``)."""
    try:
        before = set(os.listdir(path))
    except FileNotFoundError:
        before = set()
    except OSError:
        return factory(path)  # the open reports it
    try:
        return factory(path)
    except BaseException:
        _remove_unfinished_creation(path, before)
        raise


def _remove_unfinished_creation(path: str, before: set[str]) -> None:
    try:
        names = set(os.listdir(path))
    except OSError:
        return
    if "CURRENT" in names and "CURRENT" not in before:
        return  # the creation finished: what failed came later
    for name in names - before:
        if LEVELDB_FILE.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))


def _restore_from(persist_path: str, path: str, problem: TierStoreError | None) -> bool:
    """Restore ``path`` from the checkpoint; whether there was one to restore.

    A damaged checkpoint is an error only when the working directory is damaged
    too; in place of a missing one the store starts cold, and says so in the log.
    """
    try:
        restored = _restore_checkpoint(persist_path, path, problem)
    except (CorruptStore, CorruptRecord, plyvel.CorruptionError) as exc:
        damage = leveldb_message(exc) if isinstance(exc, plyvel.Error) else str(exc)
        if problem is not None:
            raise CorruptStore(f"{problem}; the checkpoint in {persist_path} is unusable too: {damage}") from None
        log.error("%s: the checkpoint in %s is unusable, starting with an empty store: %s", path, persist_path, damage)
        return False
    except plyvel.IOError as exc:  # a write into the copy being built (a full disk)
        raise write_error(path, exc) from None
    except OSError as exc:
        raise os_failure(exc, f"restoring {path} from {persist_path}") from None
    if restored is None and problem is not None:
        raise _without_checkpoint(problem, f"there is no checkpoint in {persist_path}")
    if not isinstance(restored, _Restored):
        return False
    reason = "missing or empty" if problem is None else f"unusable ({problem})"
    log.warning(
        "%s: working directory was %s; restored %d records from the checkpoint in %s%s",
        path,
        reason,
        restored.records,
        persist_path,
        "" if restored.complete else " (its last checkpoint was interrupted: newer records mixed in)",
    )
    if restored.moved_to:
        log.warning("%s: the unusable directory was moved to %s", path, restored.moved_to)
    return True


def _restore_checkpoint(persist_path: str, path: str, problem: TierStoreError | None) -> _Restored | bool | None:
    """The restore itself: ``None`` without a checkpoint, ``False`` when another open restored
    ``path`` meanwhile (it is then opened as it is)."""
    source = _open_checkpoint(persist_path)
    if source is None:
        return None
    try:
        with holding(path):  # StoreLocked, before anything is touched, if a store opened it meanwhile
            if problem is None and _directory_state(path) == "data":
                return False
            return _restore(source, path, aside=problem is not None)
    finally:
        source.close()


def _untracked(path: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> DiskTier:
    """A plain ``DiskTier``; its writes are not tracked, so a checkpoint generation it holds is void."""
    disk = DiskTier(path, cache_bytes=cache_bytes)
    try:
        if disk.get_meta(META_CHECKPOINT_GENERATION) is not None:
            disk.put_meta(META_CHECKPOINT_GENERATION, None, sync=True)
    except BaseException:
        disk.abandon()
        raise
    return disk


def _unreadable_checkpoint(persist_path: str, exc: BaseException) -> TierStoreError:
    """A checkpoint table LevelDB cannot read: refused to us (``PermissionDenied``), else damaged."""
    error = PermissionDenied if refused_access(exc) else CorruptStore
    return error(f"checkpoint {persist_path} cannot be read: {leveldb_message(exc)}")


def _without_checkpoint(problem: TierStoreError, why: str) -> TierStoreError:
    if isinstance(problem, CorruptStore):
        return CorruptStore(f"{problem}; cannot restore it: {why}")
    return problem


def _directory_state(path: str) -> str:
    """``"new"`` (missing, empty, or an unfinished LevelDB creation) or ``"data"``."""
    try:
        names = set(foreign_entries(path))
    except FileNotFoundError:
        return "new"
    except NotADirectoryError:
        raise TierStoreError(f"store path {path} is not a directory") from None
    except OSError as exc:
        raise os_failure(exc, f"opening the store {path}") from None
    if not names - NOT_DATA:
        return "new"
    return "data"


def _open_checked(path: str, factory: Callable[[str], DiskTier]) -> DiskTier:
    """Open a directory that holds data, with checks LevelDB does not make at open.

    Without ``CURRENT`` LevelDB would start a new, empty database over the old
    files. Once the directory is locked, the tables LevelDB lists as live are
    checked for their size and footer: orphans are left out, because LevelDB
    deletes them at open and may reuse their numbers for tables it is still
    writing (a half-written table is no damage).
    """
    names = os.listdir(path)
    if not any(map(LEVELDB_FILE.fullmatch, names)):
        raise NotAStore(f"{path} is not a tierstore directory: it holds other files and no LevelDB files")
    if "CURRENT" not in names:
        raise CorruptStore(f"store {path} is corrupt: it holds LevelDB files but no CURRENT file")
    disk = factory(path)
    try:
        damage = _table_damage(path, disk.live_tables())
    except BaseException:
        disk.abandon()
        raise
    if damage is not None:
        disk.abandon()
        raise CorruptStore(f"store {path} is corrupt: {damage}")
    return disk


def _table_damage(path: str, live: dict[int, int] | None) -> str | None:
    """The first live table file that is shorter than LevelDB recorded or lacks its footer, described."""
    for number, recorded in sorted((live or {}).items()):
        name, table = _open_table(path, number)
        if table is None:
            continue  # compacted away since the listing (or missing: reads of it fail as corrupt)
        with table:
            try:
                size = table.seek(0, os.SEEK_END)
                if size < max(recorded, _FOOTER_BYTES):
                    return f"table {name} is truncated ({size} of {recorded} bytes)"
                table.seek(size - len(_TABLE_MAGIC))
                if table.read(len(_TABLE_MAGIC)) != _TABLE_MAGIC:
                    return f"table {name} has no valid footer (truncated or overwritten)"
            except OSError as exc:
                return f"table {name} cannot be read: {exc}"
    return None


def _open_table(path: str, number: int) -> tuple[str, Any]:
    """The file of table ``number`` (``.ldb``, or ``.sst`` from older LevelDBs), opened; ``None`` if absent."""
    for suffix in (".ldb", ".sst"):
        name = f"{number:06d}{suffix}"
        try:
            return name, open(os.path.join(path, name), "rb")  # closed by the caller
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            raise PermissionDenied(f"cannot open store {path}: table {name}: {exc.strerror}") from None
        except OSError as exc:
            raise CorruptStore(f"store {path} is corrupt: table {name} cannot be opened: {exc}") from None
    return f"{number:06d}.ldb", None


def _open_checkpoint(persist_path: str) -> Any:
    """The checkpoint LevelDB when ``persist_path`` holds one, else ``None``.

    A directory without ``CURRENT`` or without a checkpoint record is a
    checkpoint whose creation was interrupted: ignored.
    """
    if not os.path.isfile(os.path.join(persist_path, "CURRENT")):
        return None
    db = open_leveldb(persist_path, create=False)
    try:
        if db.get(CHECKPOINT_RECORD) is None:
            db.close()
            return None
        _check_checkpoint_schema(db, persist_path)
    except plyvel.Error as exc:  # a table LevelDB cannot read (truncated, replaced; or refused to us)
        db.close()
        raise _unreadable_checkpoint(persist_path, exc) from None
    except BaseException:
        db.close()
        raise
    return db


def _check_checkpoint_schema(db: Any, persist_path: str) -> None:
    raw = db.get(_SCHEMA_RECORD)
    if raw is not None:
        check_schema(raw, f"checkpoint {persist_path}")


class _Restored:
    __slots__ = ("records", "complete", "moved_to")

    def __init__(self, records: int, complete: bool, moved_to: str | None) -> None:
        self.records = records
        self.complete = complete
        self.moved_to = moved_to


def _restore(source: Any, path: str, *, aside: bool) -> _Restored:
    """Copy the checkpoint into a staging directory beside ``path``'s real directory, then rename it in.

    A symlinked working directory is restored into the link's target; the link stays.
    """
    real = os.path.realpath(path)
    staging = staging_for(real)
    shutil.rmtree(staging, ignore_errors=True)  # left by a restore that was killed
    make_private_dirs(staging)
    try:
        target = open_leveldb(staging, create=True)
        try:
            records = _copy(source, target, os.fspath(source.path))
            repair_indexes(target)
            info = checkpoint_info(source.get(CHECKPOINT_RECORD))
        finally:
            target.close()
    except BaseException:  # a full disk, a damaged checkpoint: the half-built copy would only take space
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _at("restore-built")
    moved_to = install(staging, real, aside=aside)  # else it held what LevelDB leaves of a creation
    return _Restored(records, bool(info.get("complete")), moved_to)


def _checkpoint_rows(source: Any, persist_path: str) -> Iterator[tuple[bytes, bytes]]:
    """The checkpoint's records; a table LevelDB cannot read (truncated, replaced) is ``CorruptStore``."""
    iterator = None
    try:
        while True:
            try:  # plyvel reads the first block as it makes the iterator
                iterator = source.iterator() if iterator is None else iterator
                row = next(iterator, None)
            except plyvel.Error as exc:
                raise _unreadable_checkpoint(persist_path, exc) from None
            if row is None:
                return
            yield row
    finally:
        if iterator is not None:
            iterator.close()


def _copy(source: Any, target: Any, persist_path: str) -> int:
    """Copy the store's records; add what an interrupted checkpoint may lack. Returns the count.

    The schema record may be missing from a checkpoint killed early (an older
    checkpoint may also lack the "store holds versions" record: the store's open
    derives a missing one from the entries). The copy is marked as an unclean
    session: parts with derived state rebuild it.
    """
    records = 0
    batch = target.write_batch()
    for key, value in _checkpoint_rows(source, persist_path):
        if key == CHECKPOINT_RECORD or key in WORKING_ONLY:
            continue
        batch.put(key, value)
        records += 1
        if records % _BATCH_OPS == 0:
            batch.write()
            _at("restore-batch")
            batch = target.write_batch()
    if source.get(_SCHEMA_RECORD) is None:
        batch.put(_SCHEMA_RECORD, msgpack.packb(SCHEMA_VERSION))
    batch.put(_OPEN_MARK, b"\x01")
    batch.write()
    return records
