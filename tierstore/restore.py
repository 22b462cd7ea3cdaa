"""Restore on open: fill a missing, empty or corrupt working directory from the checkpoint.

Decisions (DESIGN.md is silent on them):

- A working directory that is missing or empty is filled from the checkpoint;
  one that cannot be opened because it is corrupt (including a directory with
  LevelDB files but no ``CURRENT`` file, or a table file without its footer) is
  moved aside to ``<path>.corrupt-<time>`` (never deleted) and replaced by a
  copy of the checkpoint, built in ``<path>.restoring`` and renamed into place.
  ``StoreLocked`` and ``SchemaTooNew`` never trigger a restore. Without a
  checkpoint a corrupt directory raises ``CorruptStore``. When the working
  directory is missing and the checkpoint itself is unreadable, the store starts
  empty and logs an error: a cold cache beats no service.
- A restored directory is marked as not cleanly closed, so parts that keep
  derived state rebuild it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import plyvel

from .checkpoint import (
    CHECKPOINT_RECORD,
    META_CHECKPOINT_GENERATION,
    NOT_DATA,
    WORKING_ONLY,
    TrackedDisk,
    checkpoint_info,
)
from .disk import (
    DEFAULT_CACHE_BYTES,
    META_OPEN,
    META_SCHEMA,
    SCHEMA_VERSION,
    DiskTier,
    decode_schema,
    leveldb_message,
    meta_key,
    open_leveldb,
)
from .errors import CorruptRecord, CorruptStore, SchemaTooNew, StorageFull, StoreLocked, TierStoreError

__all__ = ["open_disk"]

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


def open_disk(path: str, persist_path: str | None, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> tuple[DiskTier, bool]:
    """Open the working directory (restoring it from ``persist_path`` when needed).

    Returns the disk tier (a ``TrackedDisk`` when ``persist_path`` is set) and
    whether it was restored from the checkpoint.
    """
    kind = _untracked if persist_path is None else TrackedDisk
    factory: Callable[[str], DiskTier] = functools.partial(kind, cache_bytes=cache_bytes)
    problem: TierStoreError | None = None
    state = _directory_state(path)
    if state == "data":
        try:
            return _open_checked(path, factory), False
        except (StoreLocked, SchemaTooNew, StorageFull):
            raise
        except TierStoreError as exc:
            problem = exc
        except plyvel.Error as exc:  # a damaged table read while checking the schema
            problem = CorruptStore(f"store {path} is corrupt: {leveldb_message(exc)}")
    if persist_path is None:
        if problem is not None:
            raise _without_checkpoint(problem, "no persist_path is set")
        return factory(path), False
    source = _open_checkpoint(persist_path, must=problem is not None, working_problem=problem)
    if source is None:
        if problem is not None:
            raise _without_checkpoint(problem, f"there is no checkpoint in {persist_path}")
        return factory(path), False
    try:
        restored = _restore(source, path, aside=problem is not None)
    finally:
        source.close()
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
    return factory(path), True


def _untracked(path: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> DiskTier:
    """A plain ``DiskTier``; its writes are not tracked, so a checkpoint generation it holds is void."""
    disk = DiskTier(path, cache_bytes=cache_bytes)
    try:
        if disk.get_meta(META_CHECKPOINT_GENERATION) is not None:
            disk.put_meta(META_CHECKPOINT_GENERATION, None, sync=True)
    except BaseException:
        disk.close()
        raise
    return disk


def _without_checkpoint(problem: TierStoreError, why: str) -> TierStoreError:
    if isinstance(problem, CorruptStore):
        return CorruptStore(f"{problem}; cannot restore it: {why}")
    return problem


def _directory_state(path: str) -> str:
    """``"new"`` (missing, empty, or an unfinished LevelDB creation), ``"data"`` or ``"headless"``."""
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return "new"
    except NotADirectoryError:
        raise TierStoreError(f"store path {path} is not a directory") from None
    if not names - NOT_DATA:
        return "new"
    return "data"


def _open_checked(path: str, factory: Callable[[str], DiskTier]) -> DiskTier:
    """Open a directory that holds data, with checks LevelDB does not make at open.

    Without ``CURRENT`` LevelDB would start a new, empty database over the old
    files. Table footers are checked once the directory is locked, and only for
    tables that were there before the open: LevelDB deleted the orphans by then,
    and tables it is writing now are not complete yet.
    """
    names = os.listdir(path)
    if "CURRENT" not in names:
        raise CorruptStore(f"store {path} is corrupt: it holds LevelDB files but no CURRENT file")
    disk = factory(path)
    damage = _table_damage(path, [name for name in names if name.endswith((".ldb", ".sst"))])
    if damage is not None:
        disk.close()
        raise CorruptStore(f"store {path} is corrupt: {damage}")
    return disk


def _table_damage(path: str, tables: list[str]) -> str | None:
    """The first table file (of those still present) that lacks its footer, described."""
    for name in tables:
        try:
            with open(os.path.join(path, name), "rb") as table:
                size = table.seek(0, os.SEEK_END)
                if size < _FOOTER_BYTES:
                    return f"table {name} is truncated ({size} bytes)"
                table.seek(size - len(_TABLE_MAGIC))
                if table.read(len(_TABLE_MAGIC)) != _TABLE_MAGIC:
                    return f"table {name} has no valid footer (truncated or overwritten)"
        except FileNotFoundError:
            continue  # an orphan LevelDB removed at open
        except OSError as exc:
            return f"table {name} cannot be read: {exc}"
    return None


def _open_checkpoint(persist_path: str, *, must: bool, working_problem: TierStoreError | None) -> Any:
    """The checkpoint LevelDB when ``persist_path`` holds one, else ``None``."""
    if not os.path.isfile(os.path.join(persist_path, "CURRENT")):
        return None
    try:
        db = open_leveldb(persist_path, create=False)
    except StoreLocked:
        raise
    except TierStoreError as exc:
        if must:
            raise CorruptStore(f"{working_problem}; the checkpoint in {persist_path} is unusable too: {exc}") from None
        log.error("checkpoint %s is unusable, starting with an empty store: %s", persist_path, exc)
        return None
    try:
        if db.get(CHECKPOINT_RECORD) is None:
            db.close()
            return None
        _check_checkpoint_schema(db, persist_path)
    except BaseException:
        db.close()
        raise
    return db


def _check_checkpoint_schema(db: Any, persist_path: str) -> None:
    raw = db.get(_SCHEMA_RECORD)
    try:
        schema = decode_schema(raw) if raw is not None else SCHEMA_VERSION
    except CorruptRecord:
        raise CorruptStore(f"checkpoint {persist_path}: the schema record is corrupt") from None
    if schema > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"checkpoint {persist_path} was written by a newer tierstore (schema {schema}; "
            f"this version reads {SCHEMA_VERSION})"
        )


class _Restored:
    __slots__ = ("records", "complete", "moved_to")

    def __init__(self, records: int, complete: bool, moved_to: str | None) -> None:
        self.records = records
        self.complete = complete
        self.moved_to = moved_to


def _restore(source: Any, path: str, *, aside: bool) -> _Restored:
    """Copy the checkpoint into ``<path>.restoring``, then put it in place of ``path``."""
    staging = path.rstrip(os.sep) + ".restoring"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)
    target = open_leveldb(staging, create=True)
    records = 0
    try:
        batch = target.write_batch()
        for key, value in source.iterator():
            if key == CHECKPOINT_RECORD or key in WORKING_ONLY:
                continue
            batch.put(key, value)
            records += 1
            if records % _BATCH_OPS == 0:
                batch.write()
                _at("restore-batch")
                batch = target.write_batch()
        # Marked as an unclean session: parts with derived state rebuild it.
        batch.put(_OPEN_MARK, b"\x01")
        batch.write()
        info = checkpoint_info(source.get(CHECKPOINT_RECORD))
    finally:
        target.close()
    _at("restore-built")
    moved_to = None
    if os.path.lexists(path):
        if aside:
            moved_to = f"{path.rstrip(os.sep)}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            os.rename(path, moved_to)
        else:
            shutil.rmtree(path)
    os.rename(staging, path)
    return _Restored(records, bool(info.get("complete")), moved_to)
