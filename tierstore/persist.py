"""Checkpoints of the working directory into a LevelDB at ``persist_path``, and restore on open.

Decisions (DESIGN.md is silent on them):

- ``persist_path`` is a tierstore-format LevelDB directory (the CLI reads it like a
  working directory). It is opened for each checkpoint and closed afterwards, so
  between checkpoints it is unlocked and consistent: it can be copied, backed up
  or inspected. Two stores checkpointing into the same path at the same moment
  get ``StoreLocked``.
- Change tracking: ``TrackedDisk`` (a ``DiskTier``) records every key written or
  deleted, after the write committed, so no write can slip between the set and
  the snapshot.
- A checkpoint copies the changed keys as read from one snapshot, in batches,
  then fsyncs the log files of ``persist_path`` and writes a checkpoint record
  (generation, time, counts) with ``sync=True``. The cost follows the changes.
- A full resynchronisation (merge of both key orders: write what differs, delete
  what the working directory no longer has) runs when the changed set may be
  incomplete: the first checkpoint after an unclean shutdown, after a session
  that did not end with a completed final checkpoint (the working directory's
  generation record is consumed at open and written back only by ``close()``),
  after a failed checkpoint, or when the generation in ``persist_path`` is not
  the one this store wrote last (another store wrote there).
- A checkpoint killed half way leaves a mix of the previous checkpoint and newer
  records in ``persist_path``; every record is one the store really held, and the
  checkpoint record says the checkpoint is incomplete. Records that belong
  together across namespaces (an index's member and order records) may disagree
  in such a mix; a restore therefore marks the store as not cleanly closed so
  parts that keep derived state rebuild it.
- Restore: a working directory that is missing or empty is filled from the
  checkpoint; one that cannot be opened because it is corrupt (including a
  directory with LevelDB files but no ``CURRENT`` file, or a table file without
  its footer) is moved aside to ``<path>.corrupt-<time>`` (never deleted) and
  replaced by a copy of the checkpoint, built in ``<path>.restoring`` and renamed
  into place. ``StoreLocked`` and ``SchemaTooNew`` never trigger a restore.
  Without a checkpoint a corrupt directory raises ``CorruptStore``. When the
  working directory is missing and the checkpoint itself is unreadable, the
  store starts empty and logs an error: a cold cache beats no service.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack
import plyvel

from .disk import (
    DEFAULT_CACHE_BYTES,
    META_OPEN,
    META_SCHEMA,
    SCHEMA_VERSION,
    DiskTier,
    Op,
    decode_schema,
    leveldb_message,
    meta_key,
    open_leveldb,
)
from .errors import CorruptRecord, CorruptStore, SchemaTooNew, StorageFull, StoreLocked, TierStoreError

__all__ = [
    "TrackedDisk",
    "Checkpointer",
    "open_disk",
    "STAT_KEYS",
    "CHECKPOINT_RECORD",
    "META_CHECKPOINT",
    "META_CHECKPOINT_GENERATION",
    "decode_checkpoint_info",
    "checkpoint_info",
]

log = logging.getLogger("tierstore")

STAT_KEYS = ("checkpoint_ms", "restored_from_checkpoint")

# In the working directory only: the session marker (disk.py's) and the generation
# of the checkpoint taken at the last clean close.
META_CHECKPOINT_GENERATION = b"checkpoint_generation"
_OPEN_MARK = meta_key(META_OPEN)
_WORKING_ONLY = frozenset({_OPEN_MARK, meta_key(META_CHECKPOINT_GENERATION)})
# In the checkpoint directory only: what the last checkpoint did (a msgpack map:
# number, generation, time, complete, full, records, ...).
META_CHECKPOINT = b"checkpoint"
CHECKPOINT_RECORD = meta_key(META_CHECKPOINT)
_SCHEMA_RECORD = meta_key(META_SCHEMA)

_BATCH_OPS = 1000
_BATCH_BYTES = 1 << 20
_READ_CHUNK = 256
# LevelDB table footer magic (fixed64, little endian), the last 8 bytes of a table file.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_FOOTER_BYTES = 48
# Files LevelDB may leave in a directory it never finished creating.
_NOT_DATA = frozenset({"LOCK", "LOG", "LOG.old"})


class TrackedDisk(DiskTier):
    """A ``DiskTier`` that remembers which keys changed since the last ``take_changes()``.

    A key is recorded after its write committed, under a small lock that
    ``take_changes`` also takes: a key recorded in the old set was committed
    before the swap, hence before the checkpoint's snapshot; a write that
    commits later is recorded in the new set. (``DiskTier.changed`` records a
    batch's keys before it commits, which could let a checkpoint miss one.)
    """

    def __init__(self, path: str, *, create: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._changes: set[bytes] = set()
        self._changes_lock = threading.Lock()
        super().__init__(path, create=create, cache_bytes=cache_bytes)

    def put(self, key: bytes, value: bytes) -> None:
        super().put(key, value)
        with self._changes_lock:
            self._changes.add(key)

    def write(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        batch = ops if isinstance(ops, (list, tuple)) else list(ops)
        super().write(batch, sync=sync)
        with self._changes_lock:
            self._changes.update(key for key, _ in batch)

    def take_changes(self) -> set[bytes]:
        """The keys written since the last call; starts a new set."""
        with self._changes_lock:
            changes, self._changes = self._changes, set()
        return changes


# -- opening the working directory, restoring it when needed -----------------------------


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
    if not names - _NOT_DATA:
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
    try:
        damage = _table_damage(path, [name for name in names if name.endswith((".ldb", ".sst"))])
    except BaseException:
        disk.abandon()
        raise
    if damage is not None:
        disk.abandon()
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
            if key == CHECKPOINT_RECORD or key in _WORKING_ONLY:
                continue
            batch.put(key, value)
            records += 1
            if records % _BATCH_OPS == 0:
                batch.write()
                batch = target.write_batch()
        # Marked as an unclean session: parts with derived state rebuild it.
        batch.put(_OPEN_MARK, b"\x01")
        batch.write()
        info = checkpoint_info(source.get(CHECKPOINT_RECORD))
    finally:
        target.close()
    moved_to = None
    if os.path.lexists(path):
        if aside:
            moved_to = f"{path.rstrip(os.sep)}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            os.rename(path, moved_to)
        else:
            shutil.rmtree(path)
    os.rename(staging, path)
    return _Restored(records, bool(info.get("complete")), moved_to)


def decode_checkpoint_info(data: bytes) -> dict[str, Any]:
    """The map a checkpoint record holds; ``CorruptRecord`` when it is not a msgpack map."""
    try:
        info = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord(str(exc) or type(exc).__name__) from None
    if not isinstance(info, dict):
        raise CorruptRecord("the checkpoint record is not a map")
    return info


def checkpoint_info(raw: bytes | None) -> dict[str, Any]:
    """What a checkpoint record says; ``{}`` when it is missing or damaged."""
    if raw is None:
        return {}
    try:
        return decode_checkpoint_info(raw)
    except CorruptRecord:
        return {}


# -- taking checkpoints ------------------------------------------------------------------


class _Writer:
    """Batches of puts and deletes into the checkpoint LevelDB, throttled to ``rate`` bytes/s."""

    def __init__(self, db: Any, rate: float | None) -> None:
        self._db = db
        self._rate = rate
        self._ops: list[Op] = []
        self._pending = 0
        self._started = time.monotonic()
        self.puts = 0
        self.deletes = 0
        self.bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((key, value))
        self.puts += 1
        self._grow(len(key) + len(value))

    def delete(self, key: bytes) -> None:
        self._ops.append((key, None))
        self.deletes += 1
        self._grow(len(key))

    def _grow(self, size: int) -> None:
        self._pending += size
        self.bytes += size
        if len(self._ops) >= _BATCH_OPS or self._pending >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._ops:
            return
        with self._db.write_batch() as batch:
            for key, value in self._ops:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        self._ops = []
        self._pending = 0
        if self._rate is not None:
            ahead = self._started + self.bytes / self._rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


class Checkpointer:
    """Takes checkpoints of one store's working directory into ``persist_path``."""

    def __init__(self, disk: TrackedDisk, persist_path: str, *, rate: float | None = None) -> None:
        self._disk = disk
        self.path = persist_path
        self._rate = rate
        self._lock = threading.Lock()
        generation = disk.get_meta(META_CHECKPOINT_GENERATION)
        if generation is not None:
            # Consumed: only a clean close() writes it back, after its final checkpoint.
            disk.put_meta(META_CHECKPOINT_GENERATION, None, sync=True)
        self._expected: str | None = generation if disk.was_clean and isinstance(generation, str) else None
        self.count = 0

    def checkpoint(self) -> dict[str, Any]:
        """Copy what changed since the last checkpoint (everything, when that is unknown)."""
        with self._lock:
            started = time.monotonic()
            keys = self._disk.take_changes()
            expected, self._expected = self._expected, None  # stays None if this one fails
            db = _open_persist(self.path)
            try:
                result = self._run(db, keys, expected)
            finally:
                db.close()
            self._expected = result.pop("generation")
            self.count += 1
            result["seconds"] = time.monotonic() - started
            return result

    def finish(self) -> dict[str, Any]:
        """The final checkpoint of a clean close; lets the next session start incrementally."""
        result = self.checkpoint()
        self._disk.put_meta(META_CHECKPOINT_GENERATION, self._expected, sync=True)
        return result

    def _run(self, db: Any, keys: set[bytes], expected: str | None) -> dict[str, Any]:
        previous = checkpoint_info(db.get(CHECKPOINT_RECORD))
        full = expected is None or previous.get("generation") != expected or not previous.get("complete")
        writer = _Writer(db, self._rate)
        writer.put(CHECKPOINT_RECORD, _pack_info({**previous, "complete": False, "started": time.time()}))
        snapshot = self._disk.snapshot()
        try:
            if full:
                scanned = self._copy_all(db, snapshot, writer)
            else:
                scanned = self._copy_keys(sorted(keys - _WORKING_ONLY), snapshot, writer)
            writer.flush()
        finally:
            self._disk.release(snapshot)
        _fsync_logs(self.path)
        generation = secrets.token_hex(8)
        info = {
            "generation": generation,
            "complete": True,
            "time": time.time(),
            "full": full,
            "records": writer.puts - 1,
            "deleted": writer.deletes,
            "bytes": writer.bytes,
            "number": int(previous.get("number", 0)) + 1,
        }
        db.put(CHECKPOINT_RECORD, _pack_info(info), sync=True)
        return {
            "records": writer.puts - 1,
            "deleted": writer.deletes,
            "scanned": scanned,
            "bytes": writer.bytes,
            "full": full,
            "generation": generation,
        }

    def _copy_keys(self, keys: list[bytes], snapshot: Any, writer: _Writer) -> int:
        """Incremental: each changed key's state in the snapshot (absent means deleted)."""
        disk = self._disk
        for start in range(0, len(keys), _READ_CHUNK):
            chunk = keys[start : start + _READ_CHUNK]
            disk.enter()
            try:
                values = [snapshot.get(key) for key in chunk]
            finally:
                disk.exit()
            for key, value in zip(chunk, values, strict=True):
                if value is None:
                    writer.delete(key)
                else:
                    writer.put(key, value)
        return len(keys)

    def _copy_all(self, db: Any, snapshot: Any, writer: _Writer) -> int:
        """Full resync: merge both key orders, write what differs, delete what is gone."""
        ours = db.snapshot()
        try:
            theirs = ours.iterator()
            try:
                return _merge(self._disk.scan(b"", snapshot=snapshot), theirs, writer)
            finally:
                theirs.close()
        finally:
            ours.close()


def _merge(source: Iterator[tuple[bytes, bytes]], target: Iterator[tuple[bytes, bytes]], writer: _Writer) -> int:
    scanned = 0
    src = next(source, None)
    dst = next(target, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src[0] < dst[0]):
            assert src is not None
            scanned += 1
            if src[0] not in _WORKING_ONLY:
                writer.put(src[0], src[1])
            src = next(source, None)
        elif src is None or dst[0] < src[0]:
            if dst[0] != CHECKPOINT_RECORD:
                writer.delete(dst[0])
            dst = next(target, None)
        else:
            scanned += 1
            if src[0] in _WORKING_ONLY:
                writer.delete(src[0])
            elif src[1] != dst[1]:
                writer.put(src[0], src[1])
            src = next(source, None)
            dst = next(target, None)
    return scanned


def _open_persist(path: str) -> Any:
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not os.path.isfile(os.path.join(path, "CURRENT")) and set(os.listdir(path)) - _NOT_DATA:
        raise CorruptStore(f"checkpoint directory {path} holds files but no LevelDB CURRENT file")
    return open_leveldb(path, create=True)


def _pack_info(info: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(info)
    return data


def _fsync_logs(path: str) -> None:
    """Make the unsynced batches durable before the checkpoint record says they are there.

    A ``sync=True`` write syncs only LevelDB's current log; a log rotated during
    the checkpoint may still sit in the page cache.
    """
    for name in os.listdir(path):
        if name.endswith(".log"):
            try:
                fd = os.open(os.path.join(path, name), os.O_RDONLY)
            except FileNotFoundError:
                continue  # compacted away meanwhile: its records are in a synced table
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
