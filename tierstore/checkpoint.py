"""Checkpoints: copies of the working directory into a LevelDB at ``persist_path``.

Decisions (also in the README, "Decisions"):

- ``persist_path`` is a tierstore-format LevelDB directory (the CLI reads it like a
  working directory). It is opened for each checkpoint and closed afterwards, so
  between checkpoints it is unlocked and consistent: it can be copied, backed up
  or inspected. Two stores checkpointing into the same path at the same moment
  get ``StoreLocked``.
- Change tracking: ``TrackedDisk`` (a ``DiskTier``) records every key written or
  deleted, after the write committed, so no write can slip between the set and
  the snapshot.
- A checkpoint copies the changed keys as read from one snapshot, in batches
  (``checkpoint_copy`` writes them, throttled, and does the merge below),
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
  checkpoint record says the checkpoint is incomplete. Restore (restore.py)
  repairs what such a mix can break.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from ._plyvel import plyvel
from .checkpoint_copy import CopyWriter, merge
from .checkpoint_record import CHECKPOINT_RECORD, META_CHECKPOINT_GENERATION, NOT_DATA, WORKING_ONLY, checkpoint_info
from .directories import foreign_entries, set_aside
from .disk import DEFAULT_CACHE_BYTES, DiskTier, leveldb_message, make_private_dirs, open_leveldb
from .errors import CorruptStore, TierStoreError
from .keyspace import META_SCHEMA, NS_META, Op, check_schema, meta_key
from .leveldb import LEVELDB_FILE, damaged_file, io_failure, os_failure, read_error

__all__ = [
    "TrackedDisk",
    "Checkpointer",
    "STAT_KEYS",
]

log = logging.getLogger("tierstore")

STAT_KEYS = ("checkpoint_ms", "restored_from_checkpoint")

#: Test-only: when set, called with the name of each point a checkpoint passes
#: ("record", "batch", "copied", "synced", "final", "done", "finish"), so a test
#: can kill the process there. ``None`` in normal use (one global test per point).
_hook: Callable[[str], None] | None = None

_SCHEMA_RECORD = meta_key(META_SCHEMA)

_READ_CHUNK = 256


def _at(point: str) -> None:
    hook = _hook
    if hook is not None:
        hook(point)


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


# -- taking checkpoints ------------------------------------------------------------------


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
        """Copy what changed since the last checkpoint (everything, when that is unknown).

        A full disk raises ``StorageFull``; the next checkpoint is then a full
        resync. A damaged checkpoint directory is set aside and written anew.
        """
        with self._lock:
            started = time.monotonic()
            keys = self._disk.take_changes()
            expected, self._expected = self._expected, None  # stays None if this one fails
            try:
                result = self._attempt(keys, expected)
            except _Damaged as damaged:
                self._set_aside(str(damaged))
                result = self._attempt(keys, None)
            _at("done")
            self._expected = result.pop("generation")
            self.count += 1
            result["seconds"] = time.monotonic() - started
            return result

    def finish(self) -> dict[str, Any]:
        """The final checkpoint of a clean close; lets the next session start incrementally."""
        result = self.checkpoint()
        _at("finish")
        self._disk.put_meta(META_CHECKPOINT_GENERATION, self._expected, sync=True)
        return result

    def _attempt(self, keys: set[bytes], expected: str | None) -> dict[str, Any]:
        """One checkpoint into ``persist_path``, errors from below mapped; ``_Damaged`` if it is corrupt."""
        where = f"checkpoint into {self.path}"
        try:
            db = _open_persist(self.path)
            try:
                return self._run(db, keys, expected)
            finally:
                db.close()
        except _WorkingDamaged as exc:  # the checkpoint is not to blame: it is kept
            raise CorruptStore(f"{where} failed: {exc}; the checkpoint there is kept") from None
        except CorruptStore as exc:
            raise _Damaged(str(exc)) from None
        except plyvel.Error as exc:
            if isinstance(exc, plyvel.CorruptionError) or damaged_file(exc):  # a table truncated, replaced, lost
                raise _Damaged(leveldb_message(exc)) from None
            if isinstance(exc, plyvel.IOError):
                raise io_failure(exc, f"{where} failed") from None
            raise TierStoreError(f"{where} failed: {leveldb_message(exc)}") from None
        except OSError as exc:
            raise os_failure(exc, where) from None

    def _set_aside(self, damage: str) -> None:
        """Move a damaged checkpoint directory aside (never deleted) so a new one can be written."""
        real = os.path.realpath(self.path)
        try:
            strangers = [name for name in foreign_entries(real) if not LEVELDB_FILE.fullmatch(name)]
        except OSError as exc:
            raise os_failure(exc, f"checkpoint into {self.path}") from None
        if strangers:
            raise CorruptStore(
                f"checkpoint directory {self.path} is damaged ({damage}) and holds files that are not "
                f"LevelDB's ({', '.join(sorted(strangers)[:3])}): left as it is"
            )
        try:
            aside = set_aside(real)
        except OSError as exc:
            raise os_failure(exc, f"setting the damaged checkpoint {self.path} aside") from None
        log.error("checkpoint %s was damaged (%s); moved to %s, writing a new one", self.path, damage, aside)

    def _run(self, db: Any, keys: set[bytes], expected: str | None) -> dict[str, Any]:
        _check_target(db, self.path)
        previous = checkpoint_info(db.get(CHECKPOINT_RECORD))
        full = expected is None or previous.get("generation") != expected or not previous.get("complete")
        writer = CopyWriter(db, self._rate, on_flush=lambda: _at("batch"))
        snapshot = self._disk.snapshot()
        try:
            # First, in one batch: the record saying a checkpoint is under way, with the
            # schema and the other meta records (such as "the store holds versions"), so a
            # checkpoint killed at any later point opens with the rules its entries need.
            writer.put(CHECKPOINT_RECORD, _pack_info({**previous, "complete": False, "started": time.time()}))
            meta = self._copy_meta(keys, full, snapshot, writer)
            writer.flush()
            _at("record")
            if full:
                scanned = self._copy_all(db, snapshot, writer)
            else:
                rest = sorted(key for key in keys - WORKING_ONLY if key[:1] != NS_META)
                scanned = meta + self._copy_keys(rest, snapshot, writer)
            writer.flush()
        finally:
            self._disk.release(snapshot)
        _at("copied")
        _fsync_logs(self.path)
        _at("synced")
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
        _at("final")
        return {
            "records": writer.puts - 1,
            "deleted": writer.deletes,
            "scanned": scanned,
            "bytes": writer.bytes,
            "full": full,
            "generation": generation,
        }

    def _copy_meta(self, keys: set[bytes], full: bool, snapshot: Any, writer: CopyWriter) -> int:
        """The meta records (all of them, or those that changed), ahead of everything else."""
        if not full:
            return self._copy_keys(sorted(key for key in keys - WORKING_ONLY if key[:1] == NS_META), snapshot, writer)
        for key, value in _from_working(self._disk.scan(NS_META, snapshot=snapshot)):
            if key not in WORKING_ONLY:
                writer.put(key, value)
        return 0

    def _copy_keys(self, keys: list[bytes], snapshot: Any, writer: CopyWriter) -> int:
        """Incremental: each changed key's state in the snapshot (absent means deleted)."""
        disk = self._disk
        for start in range(0, len(keys), _READ_CHUNK):
            chunk = keys[start : start + _READ_CHUNK]
            disk.enter()
            try:
                values = [snapshot.get(key, verify_checksums=True) for key in chunk]
            except plyvel.CorruptionError as exc:
                raise _WorkingDamaged(f"{disk.path}: a read met a corrupt block: {leveldb_message(exc)}") from None
            except plyvel.Error as exc:  # the working directory's, not the checkpoint's
                raise read_error(disk.path, exc, "the changed records") from None
            finally:
                disk.exit()
            for key, value in zip(chunk, values, strict=True):
                if value is None:
                    writer.delete(key)
                else:
                    writer.put(key, value)
        return len(keys)

    def _copy_all(self, db: Any, snapshot: Any, writer: CopyWriter) -> int:
        """Full resync: merge both key orders, write what differs, delete what is gone."""
        ours = db.snapshot()
        try:
            theirs = ours.iterator()
            try:
                return merge(_from_working(self._disk.scan(b"", snapshot=snapshot)), theirs, writer)
            finally:
                theirs.close()
        finally:
            ours.close()


def _open_persist(path: str) -> Any:
    make_private_dirs(path)
    if not os.path.isfile(os.path.join(path, "CURRENT")) and set(foreign_entries(path)) - NOT_DATA:
        raise CorruptStore(f"checkpoint directory {path} holds files but no LevelDB CURRENT file")
    return open_leveldb(path, create=True)


def _check_target(db: Any, path: str) -> None:
    """Refuse to write into a LevelDB that is not a tierstore checkpoint, or one of a newer schema.

    Every checkpoint's first batch carries its checkpoint record, so a directory
    holding records but no checkpoint record is someone else's: a store's working
    directory, or another program's database. A full resync would delete its records.
    """
    if db.get(CHECKPOINT_RECORD) is None:
        iterator = db.iterator(include_value=False)
        try:
            holds_records = next(iterator, None) is not None
        finally:
            iterator.close()
        if holds_records:
            raise TierStoreError(
                f"persist_path {path} holds a LevelDB that is not a tierstore checkpoint (a store's working "
                "directory, or another program's database): refusing to write into it"
            )
        return
    raw = db.get(_SCHEMA_RECORD)
    if raw is not None:
        check_schema(raw, f"checkpoint {path}")  # a newer tierstore's checkpoint is never overwritten


class _Damaged(Exception):
    """The checkpoint directory is corrupt (internal: it is set aside and written anew)."""


class _WorkingDamaged(Exception):
    """A read of the working directory met damage (internal: never blamed on the checkpoint)."""


def _from_working(rows: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """``rows`` of a scan of the working directory, its damage told apart from the checkpoint's."""
    try:
        yield from rows
    except CorruptStore as exc:
        raise _WorkingDamaged(str(exc)) from None


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
