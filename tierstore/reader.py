"""Reading a store directory without writing to it, for the inspect CLI.

A working directory and a checkpoint directory read alike. The directory is
opened as a plain LevelDB handle with ``create=False`` (not through
``DiskTier``, which records an open session), so a missing directory is not
created and no record changes. LevelDB has no read-only mode: it takes the
directory's ``LOCK`` file while the handle is open, which is how a store in use
by another process is detected.

Every record is decoded by the module that owns it: entries by ``codec``,
counters by ``counters``, indexes by ``index_codec``, the checkpoint record by
``checkpoint``, write-order records by ``capacity``, expiry index records by
``expiry`` (through ``verify``), the filter by ``bloom``, meta
records and the schema by ``keyspace``. This module adds what a reader needs on top:
opening a directory safely, and the state of an entry as ``get`` would see it.
The pass that checks every record is ``verify``; the summary that ``inspect``
shows is ``summary``.

Entry states: ``tombstone`` (deleted), ``expired`` (``expires_at`` passed; a
store with ``stale_ttl`` may still serve it stale, but that setting is not on
disk), ``negative`` (the source had nothing), ``live``, ``flagged`` (flag bits
this version does not know) and ``corrupt``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from ._plyvel import plyvel
from .bloom import BloomFilter
from .checkpoint_record import CHECKPOINT_RECORD
from .codec import FLAGS, NEGATIVE, Key, Record, RecordState, decode_key, record_state, unpack_record
from .counters import counter_name, decode_count
from .disk import leveldb_message, open_leveldb
from .errors import CorruptRecord, CorruptStore, StoreLocked, TierStoreError
from .index_codec import decode_index_meta, index_meta_key, parse_index_key, read_index
from .keyspace import (
    META_SCHEMA,
    NAMESPACES,
    NS_COUNTER,
    NS_ENTRY,
    NS_META,
    SCHEMA_VERSION,
    decode_meta,
    decode_schema,
    entry_key,
    meta_key,
)

__all__ = [
    "Unreadable",
    "check_directory",
    "damage_message",
    "open_store",
    "read_schema",
    "read_meta",
    "LIVE",
    "EXPIRED",
    "NEGATIVE_STATE",
    "TOMBSTONE_STATE",
    "FLAGGED",
    "CORRUPT",
    "STATES",
    "Row",
    "classify",
    "read_entry",
    "entry_rows",
    "CounterRow",
    "counter_rows",
    "IndexInfo",
    "find_index",
    "index_page",
    "namespace_name",
    "decode_bloom",
]

Tick = Callable[[int], None]
"""Called with the number of records read so far, once per record (a progress display)."""


class Unreadable(Exception):
    """The directory cannot be read as a tierstore.

    ``corrupt`` is true when it is damaged, false for a wrong path, a store in
    use, a LevelDB that is not a tierstore or one written by a newer version.
    """

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


# -- opening --------------------------------------------------------------------------


# Files only LevelDB makes: tables, write-ahead logs and manifests (not LOCK/LOG, made at any open).
_LEVELDB_FILE = re.compile(r"(\d+\.(ldb|sst|log)|MANIFEST-\d+)")


def check_directory(path: str) -> None:
    """Refuse, without creating anything, a path that cannot be a LevelDB directory.

    A directory with LevelDB's files but no ``CURRENT`` is a damaged store (a
    finding), not a stranger: LevelDB cannot open it without that file.
    """
    try:
        if not os.path.exists(path):
            raise Unreadable(f"{path}: no such directory")
        if not os.path.isdir(path):
            raise Unreadable(f"{path}: not a directory")
        if os.path.isfile(os.path.join(path, "CURRENT")):
            return
        damaged = any(_LEVELDB_FILE.fullmatch(name) for name in os.listdir(path))
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read the directory: {exc.strerror or exc}") from None
    if damaged:
        raise Unreadable(
            f"{path}: a damaged store: it holds LevelDB files but no CURRENT file (LevelDB cannot open it)",
            corrupt=True,
        )
    raise Unreadable(f"{path}: not a tierstore (no LevelDB files in it)")


def damage_message(path: str, exc: BaseException) -> str:
    """What a LevelDB error met while reading says about the directory (a truncated table, a bad block)."""
    return f"store {path} is damaged: {leveldb_message(exc)}"


@contextlib.contextmanager
def open_store(path: str, *, damaged_ok: bool = False) -> Iterator[Any]:
    """The directory's LevelDB handle, opened without creating or writing a record.

    Damage met while reading the schema is ``Unreadable(corrupt=True)``, unless
    ``damaged_ok`` (``verify``, whose own pass reports it).
    """
    check_directory(path)
    try:
        db = open_leveldb(path, create=False)
    except StoreLocked:
        lock = os.path.join(path, "LOCK")
        raise Unreadable(f"store {path} is in use: its lock file {lock} is held by a running process") from None
    except CorruptStore as exc:
        raise Unreadable(str(exc), corrupt=True) from None
    except TierStoreError as exc:
        raise Unreadable(str(exc)) from None
    try:
        try:
            read_schema(db, path)
        except plyvel.Error as exc:
            if not damaged_ok:
                raise Unreadable(damage_message(path, exc), corrupt=True) from None
        yield db
    finally:
        db.close()


def read_schema(db: Any, path: str) -> int:
    """The schema version; refuse a directory without one or with a newer one."""
    raw = db.get(meta_key(META_SCHEMA))
    if raw is None and db.get(CHECKPOINT_RECORD) is not None:
        return SCHEMA_VERSION  # an interrupted first checkpoint may not have copied it yet (as restore.py reads it)
    if raw is None and any(True for _ in db.iterator(prefix=NS_META, include_value=False)):
        missing = "its schema record is missing beside other meta records"
        raise Unreadable(f"{path}: a damaged store: {missing}", corrupt=True)
    if raw is None:
        raise Unreadable(f"{path}: a LevelDB directory but not a tierstore (no schema record)")
    try:
        schema = decode_schema(raw)
    except CorruptRecord:
        raise Unreadable(f"{path}: the schema record is corrupt", corrupt=True) from None
    if schema > SCHEMA_VERSION:
        raise Unreadable(
            f"{path} was written by a newer tierstore (schema {schema}; this version reads {SCHEMA_VERSION})"
        )
    return schema


def read_meta(db: Any, name: bytes) -> Any:
    """A meta record's value, or None when it is missing or does not decode."""
    raw = db.get(meta_key(name))
    if raw is None:
        return None
    try:
        return decode_meta(raw)
    except Exception:  # msgpack raises several unrelated types on bad input
        return None


# -- entries ----------------------------------------------------------------------------

LIVE, EXPIRED, NEGATIVE_STATE, TOMBSTONE_STATE, FLAGGED, CORRUPT = (
    "live",
    "expired",
    "negative",
    "tombstone",
    "flagged",
    "corrupt",
)
STATES = (LIVE, EXPIRED, NEGATIVE_STATE, TOMBSTONE_STATE, FLAGGED, CORRUPT)
_STATE_NAMES = {
    RecordState.LIVE: LIVE,
    RecordState.NEGATIVE: NEGATIVE_STATE,
    RecordState.STALE: EXPIRED,  # not reached without a stale window
    RecordState.EXPIRED: EXPIRED,
    RecordState.TOMBSTONE: TOMBSTONE_STATE,
}


class Row(NamedTuple):
    """One record of the entry namespace, decoded as far as it goes."""

    raw_key: bytes
    key: Key | None
    record: Record | None
    state: str
    error: str | None


def entry_state(record: Record, now: float) -> str:
    """Why ``get`` would or would not return this record: live, tombstone, expired, negative, flagged.

    The rule is ``codec.record_state`` without a stale window (``stale_ttl`` is not on disk).
    """
    state = record_state(record, now)
    if state is RecordState.NEGATIVE and not record[FLAGS] & NEGATIVE:
        return FLAGGED
    return _STATE_NAMES[state]


def classify(raw_key: bytes, data: bytes, now: float) -> Row:
    """Decode one entry record; a corrupt one becomes a row with state ``corrupt``."""
    try:
        key: Key | None = decode_key(raw_key[len(NS_ENTRY) :])
    except (CorruptRecord, ValueError) as exc:
        return Row(raw_key, None, None, CORRUPT, f"undecodable key: {exc}")
    try:
        record = unpack_record(data)
    except CorruptRecord as exc:
        return Row(raw_key, key, None, CORRUPT, str(exc))
    return Row(raw_key, key, record, entry_state(record, now), None)


def read_entry(db: Any, key: Key, now: float) -> Row | None:
    """The entry record of ``key`` (None when there is none); ``ValueError`` for a key tierstore refuses."""
    raw_key = entry_key(key)
    data = db.get(raw_key)
    return None if data is None else classify(raw_key, data, now)


def entry_rows(db: Any, prefix: bytes, now: float) -> Iterator[Row]:
    """Every entry record under ``prefix`` (a tagged key prefix), streamed in key order."""
    for raw_key, data in db.iterator(prefix=NS_ENTRY + prefix, fill_cache=False):
        yield classify(raw_key, data, now)


# -- counters ------------------------------------------------------------------------------


class CounterRow(NamedTuple):
    """One counter record: its name and count (``value``), or why it does not decode."""

    name: Key | None
    raw_key: bytes
    value: int | None
    error: str | None


def counter_rows(db: Any) -> Iterator[CounterRow]:
    """Every counter record, streamed in key order."""
    for raw_key, data in db.iterator(prefix=NS_COUNTER, fill_cache=False):
        try:
            name: Key | None = counter_name(raw_key)
        except (CorruptRecord, ValueError) as exc:
            yield CounterRow(None, raw_key, None, f"undecodable name: {exc}")
            continue
        try:
            yield CounterRow(name, raw_key, decode_count(raw_key, data), None)
        except CorruptRecord as exc:
            yield CounterRow(name, raw_key, None, str(exc))


# -- sorted indexes --------------------------------------------------------------------------


class IndexInfo(NamedTuple):
    """What an index's meta record says about it."""

    name: Key
    size: int
    stamp: Any
    built: bool
    generation: int


def index_info(raw_key: bytes, data: bytes) -> IndexInfo:
    """Decode an index meta record (``CorruptRecord`` or ``ValueError`` when damaged)."""
    name = parse_index_key(raw_key).name
    meta = decode_index_meta(data, raw_key)
    return IndexInfo(name, meta.count, meta.stamp if meta.built else None, meta.built, meta.gen)


def find_index(db: Any, name: Key) -> IndexInfo | None:
    """The index ``name``, or None when the store has none of that name."""
    raw_key = index_meta_key(name)
    data = db.get(raw_key)
    return None if data is None else index_info(raw_key, data)


def index_page(db: Any, info: IndexInfo, offset: int, limit: int | None) -> Iterator[tuple[Key, float]]:
    """Members of the live generation in ``(score, member)`` order, from ``offset``, streamed."""
    return read_index(db, info.name, info.generation, offset, limit)


# -- shared by verify and summary------------------------------------------------------------


def namespace_name(raw_key: bytes) -> str:
    """The name of a record's namespace, as ``keyspace.NAMESPACES`` gives it."""
    return NAMESPACES.get(raw_key[:1], f"unknown {raw_key[:1]!r}")


def decode_bloom(saved: Any) -> BloomFilter:
    """The filter from its meta record's value (``ValueError`` when damaged)."""
    if not isinstance(saved, bytes):
        raise ValueError(f"the filter record holds {type(saved).__name__}, not bytes")
    return BloomFilter.from_bytes(saved)
