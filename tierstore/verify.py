"""Verifying a store directory: decode every record of every namespace, and report what fails.

Each namespace is checked with the decoders of the module that owns it
(``codec``, ``counters``, ``index_codec``, ``checkpoint``, ``capacity``, ``expiry``, ``guard``
and ``bloom`` through their meta records, ``keyspace`` for the schema; every other
meta record this version writes must hold the type its owner writes); a record
in a namespace ``keyspace`` does not declare is a finding, and LevelDB's own
checksum errors end the pass with one. It is separate from ``reader`` (which
opens a directory and reads what the other commands show) because it is the
only pass that needs every namespace's decoder, and it reads through
``reader``'s open handle like any other command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from ._plyvel import plyvel
from .capacity import META_CAPACITY, decode_order_record
from .checkpoint_record import META_CHECKPOINT, META_CHECKPOINT_GENERATION
from .checkpoint_record import decode_checkpoint_info as check_checkpoint
from .codec import decode_key, unpack_record
from .counters import counter_name, decode_count
from .disk import leveldb_message
from .errors import CorruptRecord
from .expiry import decode_index_record
from .guard import META_CLEAN, META_FILTER
from .index_codec import check_index_record
from .keyspace import (
    META_EXPIRY_INDEX,
    META_OPEN,
    META_SCHEMA,
    META_SEQ,
    META_VERSIONED,
    NAMESPACES,
    NS_COUNTER,
    NS_ENTRY,
    NS_EXPIRY,
    NS_INDEX_MEMBER,
    NS_INDEX_META,
    NS_INDEX_ORDER,
    NS_META,
    NS_WRITE_ORDER,
    decode_meta,
    decode_schema,
)
from .reader import Tick, decode_bloom, namespace_name
from .session import envelope_version

__all__ = ["Problem", "Tally", "verify_records"]


Checker = Callable[[bytes, bytes], object]


def check_entry(raw_key: bytes, data: bytes) -> None:
    decode_key(raw_key[len(NS_ENTRY) :])
    unpack_record(data)


def check_counter(raw_key: bytes, data: bytes) -> None:
    counter_name(raw_key)
    decode_count(raw_key, data)


def _holding(what: str, accepts: Callable[[Any], bool]) -> Checker:
    """A checker of a meta record that must decode to ``what`` (a record of another type is damage:
    the store reads it as missing and rebuilds what it stood for)."""

    def check(raw_key: bytes, data: bytes) -> None:
        value = decode_meta(data)
        if not accepts(value):
            raise CorruptRecord(f"holds {type(value).__name__} {value!r:.60}, not {what}")

    return check


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


META_CHECKERS: dict[bytes, Checker] = {
    META_SCHEMA: lambda _, data: decode_schema(data),
    META_FILTER: lambda _, data: decode_bloom(decode_meta(data)),
    META_CHECKPOINT: lambda _, data: check_checkpoint(data),
    META_CLEAN: _holding("true", lambda value: value is True),
    META_EXPIRY_INDEX: _holding("true", lambda value: value is True),
    META_VERSIONED: _holding("a bool", lambda value: type(value) is bool),
    META_SEQ: _holding("a count", _count),
    META_OPEN: _holding("1", lambda value: value == 1 and type(value) is int),
    META_CHECKPOINT_GENERATION: _holding("a str", lambda value: type(value) is str),
    META_CAPACITY: _holding("a map of the total", lambda value: isinstance(value, dict) and _count(value.get("total"))),
}


def check_meta(raw_key: bytes, data: bytes) -> None:
    checker = META_CHECKERS.get(raw_key[len(NS_META) :])
    if checker is None:
        decode_meta(data)
    else:
        checker(raw_key, data)


CHECKERS: dict[bytes, Checker] = {
    NS_ENTRY: check_entry,
    NS_META: check_meta,
    NS_COUNTER: check_counter,
    NS_INDEX_META: check_index_record,
    NS_INDEX_MEMBER: check_index_record,
    NS_INDEX_ORDER: check_index_record,
    NS_WRITE_ORDER: decode_order_record,
    NS_EXPIRY: decode_index_record,
}
"""The decoder of each namespace this version knows how to check."""


class Problem(NamedTuple):
    """A record that does not decode (``raw_key`` None: damage in LevelDB's own files)."""

    raw_key: bytes | None
    reason: str


class Tally:
    """Records, corrupt records and unchecked records per namespace."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def add(self, namespace: str, *, corrupt: bool = False, checked: bool = True, counted: bool = True) -> None:
        counts = self.counts.setdefault(namespace, [0, 0, 0])
        counts[0] += counted  # False: a finding about a record already counted
        counts[1] += corrupt
        counts[2] += not checked

    @property
    def records(self) -> int:
        return sum(counts[0] for counts in self.counts.values())

    @property
    def corrupt(self) -> int:
        return sum(counts[1] for counts in self.counts.values())


def verify_records(db: Any, tally: Tally, tick: Tick) -> Iterator[Problem]:
    """Decode every record; yield each one that fails, and file-level corruption."""
    last: bytes | None = None
    versioned: bytes | None = None  # an entry with a version (entries sort before the meta records)
    try:
        for count, (raw_key, data) in enumerate(db.iterator(verify_checksums=True, fill_cache=False)):
            tick(count)
            last = raw_key
            problem = check_record(raw_key, data, tally)
            if versioned is None and raw_key[:1] == NS_ENTRY and envelope_version(data):
                versioned = raw_key
            elif raw_key == _VERSIONED_RECORD and problem is None and versioned is not None:
                problem = _contradicted(raw_key, data, versioned, tally)
            if problem is not None:
                yield problem
    except plyvel.Error as exc:  # a bad block (CorruptionError) or a truncated table (IOError)
        where = "at the start" if last is None else f"after key {last!r}"
        tally.add("(files)", corrupt=True)
        yield Problem(None, f"LevelDB damage {where}: {leveldb_message(exc)}")


_VERSIONED_RECORD = NS_META + META_VERSIONED


def _contradicted(raw_key: bytes, data: bytes, versioned: bytes, tally: Tally) -> Problem | None:
    """The "holds versions" record saying no beside a versioned entry: the store would then let an
    unversioned write reset that entry's version, and an older versioned write through."""
    if decode_meta(data) is not False:
        return None
    tally.add(namespace_name(raw_key), corrupt=True, counted=False)
    return Problem(raw_key, f"says the store holds no versions, but entry {versioned!r} has one")


def check_record(raw_key: bytes, data: bytes, tally: Tally) -> Problem | None:
    """Decode one record with its namespace's checker, counting it in ``tally``."""
    namespace = namespace_name(raw_key)
    if raw_key[:1] not in NAMESPACES:
        tally.add(namespace, corrupt=True)
        return Problem(raw_key, "unknown namespace")
    checker = CHECKERS.get(raw_key[:1])
    if checker is None:
        tally.add(namespace, checked=False)
        return None
    try:
        checker(raw_key, data)
    except Exception as exc:  # every decoder's failure is a finding, whatever its type
        tally.add(namespace, corrupt=True)
        return Problem(raw_key, str(exc) or type(exc).__name__)
    tally.add(namespace)
    return None
