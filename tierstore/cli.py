"""The ``tierstore`` command: see what a store directory holds without opening a TierStore.

Commands (each takes ``PATH``, a working directory or a checkpoint directory)::

    tierstore inspect PATH                  summary: entries by state, counters, indexes, filter, checkpoint
    tierstore get PATH KEY [--bytes]        one entry; exit 1 when it has no live entry, saying why
    tierstore scan PATH [--prefix P] [--limit N] [--all]
    tierstore dump PATH                     every live entry as JSON lines
    tierstore verify PATH                   decode every record of every namespace; exit 1 on corruption
    tierstore counters PATH
    tierstore index PATH NAME [--offset N] [--limit N]

``--json`` on every command prints one JSON document (JSON lines for ``scan`` and
``dump``; ``dump`` always prints JSON lines).

JSON encoding of keys and values: whatever JSON says exactly stays plain JSON;
everything else becomes an object with a single ``$`` marker key:

- ``{"$bytes": "<base64>"}``: bytes (a bytes key ``b"a"`` versus the str key ``"a"``);
- ``{"$float": "nan" | "inf" | "-inf"}``: a float JSON cannot carry;
- ``{"$map": [[key, value], ...]}``: a map with a key that is not a str or starts with ``$``;
- ``{"$ext": [code, "<base64>"]}``: a msgpack extension value.

So a JSON object whose keys do not start with ``$`` is always a plain map.

Exit codes: 0 fine; 1 a finding (no live entry for the key, a corrupt record);
2 a usage error, a directory that does not exist or is not a tierstore, or a
store held by a running process.

Entry states, as ``get`` on a store would see them: ``tombstone`` (deleted),
``expired`` (``expires_at`` passed; a store with ``stale_ttl`` may still serve it
stale, but that setting is not on disk), ``negative`` (the source had nothing),
``live``, ``flagged`` (flag bits this version does not know) and ``corrupt``.
``--now SECONDS`` judges expiry at another Unix time (for stores on an injected clock).

``verify`` decodes each namespace with its module's decoders (codec, counters,
ranking, guard/bloom, persist, sweep); a record in a namespace ``disk.py`` does
not declare is reported as corrupt, and LevelDB checksum errors end the pass
with a finding. Human tables stream: column widths come from the first rows.

The command never writes: it opens the LevelDB directory itself with
``create=False`` (not through ``DiskTier``, which records an open session), so
a missing directory is not created and no record changes. LevelDB has no
read-only mode: it takes the directory's ``LOCK`` file while the command runs,
which is how a store in use by another process is detected.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NamedTuple

import msgpack
import plyvel

from . import disk
from .bloom import BloomFilter
from .codec import NEGATIVE, TOMBSTONE, Key, Record, decode_key, encode_key, unpack_record
from .counters import Counters
from .disk import (
    NS_COUNTER,
    NS_ENTRY,
    NS_INDEX_MEMBER,
    NS_INDEX_META,
    NS_INDEX_ORDER,
    NS_META,
    NS_WRITE_ORDER,
    SCHEMA_VERSION,
    open_leveldb,
)
from .errors import CorruptRecord, CorruptStore, StoreLocked, TierStoreError
from .guard import META_CLEAN, META_FILTER
from .persist import _GENERATION, CHECKPOINT_RECORD, _unpack_info
from .ranking import SortedIndex, _Meta, decode_score
from .sweep import order_key

__all__ = ["main", "build_parser", "to_json"]

log = logging.getLogger("tierstore.cli")

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
RECURSION_LIMIT = 10_000

META_SCHEMA = b"schema"
META_OPEN = b"open"
META_SEQ = b"seq"
META_CHECKPOINT_GENERATION = _GENERATION

LIVE, EXPIRED, NEGATIVE_STATE, TOMBSTONE_STATE, FLAGGED, CORRUPT = (
    "live",
    "expired",
    "negative",
    "tombstone",
    "flagged",
    "corrupt",
)
STATES = (LIVE, EXPIRED, NEGATIVE_STATE, TOMBSTONE_STATE, FLAGGED, CORRUPT)

NAMESPACES: dict[bytes, str] = {getattr(disk, name): name[3:].lower() for name in dir(disk) if name.startswith("NS_")}

JSON_HELP = """\
JSON (--json, dump): keys and values are plain JSON where JSON is exact; otherwise an
object with one "$" marker key: {"$bytes": "<base64>"} for bytes, {"$float": "nan"|"inf"|"-inf"},
{"$map": [[key, value], ...]} for a map with a non-str key or a key starting with "$",
{"$ext": [code, "<base64>"]} for a msgpack extension value.

exit codes: 0 fine, 1 a finding (no live entry, corruption), 2 usage error, missing
directory, not a tierstore, or a store in use by a running process."""


class CliError(Exception):
    """Stop with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- JSON ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_json(value: Any) -> Any:
    """A decoded msgpack value as JSON-ready data, with the ``$`` markers of the module docstring."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": _b64(bytes(value))}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: to_json(v) for k, v in value.items()}
        return {"$map": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if isinstance(value, msgpack.ExtType):
        return {"$ext": [value.code, _b64(value.data)]}
    if isinstance(value, msgpack.Timestamp):
        return {"$ext": [-1, _b64(value.to_bytes())]}
    raise TypeError(f"cannot show a value of type {type(value).__name__}")


def json_text(document: Any) -> str:
    """One line of strict JSON (ASCII, no NaN)."""
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


# -- opening --------------------------------------------------------------------------


def check_directory(path: str) -> None:
    """Refuse, without creating anything, a path that cannot be a LevelDB directory."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise CliError(f"{path}: not a directory")
    if not os.path.isfile(os.path.join(path, "CURRENT")):
        raise CliError(f"{path}: not a tierstore (no LevelDB files in it)")


@contextlib.contextmanager
def open_store(path: str) -> Iterator[Any]:
    """The directory's LevelDB handle, opened without creating or writing a record."""
    check_directory(path)
    try:
        db = open_leveldb(path, create=False)
    except StoreLocked:
        lock = os.path.join(path, "LOCK")
        raise CliError(f"store {path} is in use: its lock file {lock} is held by a running process") from None
    except CorruptStore as exc:
        raise CliError(str(exc), EXIT_FINDING) from None
    except TierStoreError as exc:
        raise CliError(str(exc)) from None
    try:
        read_schema(db, path)
        yield db
    finally:
        db.close()


def read_schema(db: Any, path: str) -> int:
    """The schema version; refuse a directory without one or with a newer one."""
    raw = db.get(NS_META + META_SCHEMA)
    if raw is None and db.get(CHECKPOINT_RECORD) is not None:
        return SCHEMA_VERSION  # an interrupted first checkpoint may not have copied it yet (as persist.py reads it)
    if raw is None:
        raise CliError(f"{path}: a LevelDB directory but not a tierstore (no schema record)")
    try:
        schema = msgpack.unpackb(raw)
    except Exception:
        schema = None
    if type(schema) is not int:
        raise CliError(f"{path}: the schema record is corrupt", EXIT_FINDING)
    if schema > SCHEMA_VERSION:
        raise CliError(
            f"{path} was written by a newer tierstore (schema {schema}; this version reads {SCHEMA_VERSION})"
        )
    return schema


def read_meta(db: Any, name: bytes) -> Any:
    """A msgpack meta record, or None when it is missing or does not decode."""
    raw = db.get(NS_META + name)
    if raw is None:
        return None
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return None


# -- entries ----------------------------------------------------------------------------


class Row(NamedTuple):
    """One record of the entry namespace, decoded as far as it goes."""

    raw_key: bytes
    key: Key | None
    record: Record | None
    state: str
    error: str | None


def entry_state(record: Record, now: float) -> str:
    """Why ``get`` would or would not return this record: live, tombstone, expired, negative, flagged."""
    if record.flags & TOMBSTONE:
        return TOMBSTONE_STATE
    if record.expires_at is not None and record.expires_at <= now:
        return EXPIRED
    if record.flags & NEGATIVE:
        return NEGATIVE_STATE
    return FLAGGED if record.flags else LIVE


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


def entry_rows(db: Any, prefix: bytes, now: float) -> Iterator[Row]:
    """Every entry record under ``prefix`` (a tagged key prefix), streamed in key order."""
    for raw_key, data in db.iterator(prefix=NS_ENTRY + prefix, fill_cache=False):
        yield classify(raw_key, data, now)


def key_prefix(prefix: str | None, hex_bytes: bool) -> bytes:
    """The tagged prefix of ``--prefix`` (hex of a bytes prefix with ``--bytes``)."""
    if prefix is None:
        return b""
    try:
        return encode_key(parse_key(prefix, hex_bytes))
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None


def parse_key(text: str, hex_bytes: bool) -> Key:
    """A command-line key: str, or bytes from hex with ``--bytes``."""
    if not hex_bytes:
        return text
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CliError(f"--bytes takes the key in hex, got {text!r}") from None


def flag_names(flags: int) -> list[str]:
    names = [name for bit, name in ((NEGATIVE, "negative"), (TOMBSTONE, "tombstone")) if flags & bit]
    unknown = flags & ~(NEGATIVE | TOMBSTONE)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


def row_document(row: Row, now: float) -> dict[str, Any]:
    """A scan row as JSON-ready data."""
    if row.record is None:
        return {
            "key": None if row.key is None else to_json(row.key),
            "raw_key": to_json(row.raw_key),
            "state": CORRUPT,
            "error": row.error,
        }
    record = row.record
    return {
        "key": to_json(row.key),
        "state": row.state,
        "version": record.version,
        "expires_at": record.expires_at,
        "ttl_left": None if record.expires_at is None else round(record.expires_at - now, 3),
        "size": record.size,
        "flags": flag_names(record.flags),
        "written_at": record.written_at,
    }


def record_document(key: Key, record: Record, state: str, now: float) -> dict[str, Any]:
    """Everything ``get`` shows about one record, JSON-ready."""
    return {
        "key": to_json(key),
        "state": state,
        "live": state == LIVE,
        "value": to_json(record.value),
        "version": record.version,
        "expires_at": record.expires_at,
        "remaining": None if record.expires_at is None else round(record.expires_at - now, 3),
        "flags": flag_names(record.flags),
        "written_at": record.written_at,
        "ttl": record.ttl,
        "seq": record.seq,
        "load_time": record.load_time,
        "size": record.size,
    }


# -- human formatting ----------------------------------------------------------------------


def fmt_key(key: Key | None, raw_key: bytes) -> str:
    """A key as Python would write it (so ``'a'`` and ``b'a'`` differ and control bytes are escaped)."""
    return repr(key) if key is not None else f"<raw {raw_key!r}>"


def fmt_duration(seconds: float) -> str:
    """``59.2s``, ``12m30s``, ``3h05m``, ``2d04h``; negative for the past."""
    sign = "-" if seconds < 0 else ""
    left = abs(seconds)
    if left < 60:
        return f"{sign}{left:.1f}s"
    if left < 3600:
        return f"{sign}{int(left // 60)}m{int(left % 60):02d}s"
    if left < 86400:
        return f"{sign}{int(left // 3600)}h{int(left % 3600 // 60):02d}m"
    return f"{sign}{int(left // 86400)}d{int(left % 86400 // 3600):02d}h"


def fmt_time(stamp: float) -> str:
    """A wall-clock time in UTC."""
    try:
        moment = datetime.datetime.fromtimestamp(stamp, tz=datetime.timezone.utc)  # noqa: UP017 (3.10 has no UTC)
    except (OverflowError, OSError, ValueError):
        return repr(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_expiry(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "never"
    left = expires_at - now
    when = f"in {fmt_duration(left)}" if left > 0 else f"{fmt_duration(-left)} ago"
    return f"{fmt_time(expires_at)} ({when})"


def fmt_ttl_left(expires_at: float | None, now: float) -> str:
    return "never" if expires_at is None else fmt_duration(expires_at - now)


def fmt_size(size: int) -> str:
    """Bytes with a binary unit."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def write_fields(out: IO[str], fields: Sequence[tuple[str, str]]) -> None:
    """``label  value`` lines with the values aligned."""
    width = max((len(label) for label, _ in fields), default=0)
    for label, value in fields:
        out.write(f"{label.ljust(width)}  {value}\n")


class Table:
    """Aligned text columns, streamed: widths come from the first rows and only grow.

    The last column is never padded, so put the widest, most variable one (the key) last.
    """

    def __init__(self, out: IO[str], headers: Sequence[str], right: Sequence[bool], block: int = 256) -> None:
        self._out = out
        self._right = right
        self._widths = [0] * len(headers)
        self._pending: list[Sequence[str]] | None = [headers]
        self._block = block
        self.rows = 0

    def add(self, row: Sequence[str]) -> None:
        self.rows += 1
        if self._pending is None:
            self._write(row)
            return
        self._pending.append(row)
        if len(self._pending) > self._block:
            self._flush()

    def close(self) -> None:
        if self._pending is not None and self.rows:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending or [], None
        for row in pending:
            self._widths = [max(width, len(cell)) for width, cell in zip(self._widths, row, strict=True)]
        for row in pending:
            self._write(row)

    def _write(self, row: Sequence[str]) -> None:
        cells = []
        last = len(row) - 1
        for i, cell in enumerate(row):
            self._widths[i] = max(self._widths[i], len(cell))
            if i == last and not self._right[i]:
                cells.append(cell)
            else:
                cells.append(cell.rjust(self._widths[i]) if self._right[i] else cell.ljust(self._widths[i]))
        self._out.write("  ".join(cells).rstrip() + "\n")


class Progress:
    """A progress line on stderr once a pass has taken more than a second, on a terminal only."""

    def __init__(self, label: str, stream: IO[str] | None = None, delay: float = 1.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._label = label
        self._enabled = self._stream.isatty()
        self._next = time.monotonic() + delay
        self._shown = 0

    def update(self, count: int) -> None:
        """Called per record; looks at the clock every 4096 records."""
        if not self._enabled or count & 0xFFF:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.25
        line = f"\r{self._label}: {count:,} records"
        self._shown = len(line)
        self._stream.write(line)
        self._stream.flush()

    def done(self) -> None:
        if self._shown:
            self._stream.write("\r" + " " * self._shown + "\r")
            self._stream.flush()
            self._shown = 0


# -- commands ------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace, out: IO[str]) -> int:
    """Show one entry; exit 1 when the key has no live entry."""
    key = parse_key(args.key, args.bytes)
    try:
        tagged = encode_key(key)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    now = args.now
    with open_store(args.path) as db:
        data = db.get(NS_ENTRY + tagged)
    if data is None:
        return report_missing(args, out, key, "absent", "no record")
    row = classify(NS_ENTRY + tagged, data, now)
    if row.record is None:
        return report_missing(args, out, key, CORRUPT, row.error or "corrupt")
    document = record_document(key, row.record, row.state, now)
    if args.json:
        out.write(json_text(document) + "\n")
    else:
        write_fields(out, get_fields(key, row.record, row.state, now))
    if row.state == LIVE:
        return EXIT_OK
    log.error("no live entry for %r: %s", key, row.state)
    return EXIT_FINDING


def get_fields(key: Key, record: Record, state: str, now: float) -> list[tuple[str, str]]:
    value = "ABSENT (negative entry)" if record.flags & NEGATIVE else repr(record.value)
    if record.flags & TOMBSTONE:
        value = "(tombstone)"
    return [
        ("key", repr(key)),
        ("state", state),
        ("value", value),
        ("version", str(record.version)),
        ("expires", fmt_expiry(record.expires_at, now)),
        ("ttl", "none" if record.ttl is None else f"{record.ttl:g}s"),
        ("written", fmt_time(record.written_at)),
        ("flags", ", ".join(flag_names(record.flags)) or "-"),
        ("size", f"{record.size:,} bytes"),
    ]


def report_missing(args: argparse.Namespace, out: IO[str], key: Key, state: str, detail: str) -> int:
    """A key without a decodable record: say so, exit 1."""
    if args.json:
        out.write(json_text({"key": to_json(key), "state": state, "live": False, "error": detail}) + "\n")
    log.error("no live entry for %r: %s (%s)", key, state, detail)
    return EXIT_FINDING


def selected_rows(db: Any, args: argparse.Namespace, *, live_only: bool) -> Iterator[Row]:
    """The rows ``--prefix``/``--all``/``--limit`` select, streamed."""
    prefix = key_prefix(args.prefix, args.bytes)
    limit = args.limit
    shown = 0
    for row in entry_rows(db, prefix, args.now):
        if live_only and row.state != LIVE:
            continue
        if limit is not None and shown >= limit:
            log.warning("stopped at --limit %d; more entries follow", limit)
            return
        shown += 1
        yield row


def cmd_scan(args: argparse.Namespace, out: IO[str]) -> int:
    """A row per entry: state, version, TTL left, size, key."""
    now = args.now
    with open_store(args.path) as db:
        rows = selected_rows(db, args, live_only=not args.all)
        if args.json:
            for row in rows:
                out.write(json_text(row_document(row, now)) + "\n")
            return EXIT_OK
        table = Table(out, ("STATE", "VERSION", "TTL LEFT", "SIZE", "KEY"), (False, True, True, True, False))
        for row in rows:
            table.add(scan_cells(row, now))
        table.close()
    if not table.rows:
        out.write("(no entries)\n")
    return EXIT_OK


def scan_cells(row: Row, now: float) -> tuple[str, ...]:
    record = row.record
    key = fmt_key(row.key, row.raw_key)
    if record is None:
        return (CORRUPT, "-", "-", "-", f"{key}  ({row.error})")
    return (row.state, str(record.version), fmt_ttl_left(record.expires_at, now), fmt_size(record.size), key)


def cmd_dump(args: argparse.Namespace, out: IO[str]) -> int:
    """Every live entry as a JSON line: key, value, version, expires_at."""
    with open_store(args.path) as db:
        for row in selected_rows(db, args, live_only=True):
            record = row.record
            assert record is not None
            line = {
                "key": to_json(row.key),
                "value": to_json(record.value),
                "version": record.version,
                "expires_at": record.expires_at,
            }
            out.write(json_text(line) + "\n")
    return EXIT_OK


# -- verify --------------------------------------------------------------------------------

Checker = Callable[[bytes, bytes], None]


def check_entry(raw_key: bytes, data: bytes) -> None:
    decode_key(raw_key[1:])
    unpack_record(data)


def check_msgpack(raw_key: bytes, data: bytes) -> None:
    msgpack.unpackb(data, raw=False, strict_map_key=False)


def check_schema(raw_key: bytes, data: bytes) -> None:
    if type(msgpack.unpackb(data)) is not int:
        raise CorruptRecord("the schema record is not an int")


def check_counter(raw_key: bytes, data: bytes) -> None:
    decode_key(raw_key[len(NS_COUNTER) :])
    decode_count(raw_key, data)


def check_bloom(raw_key: bytes, data: bytes) -> None:
    decode_bloom(msgpack.unpackb(data, raw=False))


def check_checkpoint(raw_key: bytes, data: bytes) -> None:
    if not isinstance(msgpack.unpackb(data, raw=False), dict):
        raise CorruptRecord("the checkpoint record is not a map")


def check_write_order(raw_key: bytes, data: bytes) -> None:
    """sweep.py's ``order_key(seq, entry key) -> size``: 8-byte sequence, an entry key, an 8-byte size."""
    seq = int.from_bytes(raw_key[1:9], "big")
    entry_key = raw_key[9:]
    if order_key(seq, entry_key) != raw_key or entry_key[:1] != NS_ENTRY:
        raise CorruptRecord("write-order key does not name an entry")
    decode_key(entry_key[1:])
    if len(data) != 8:
        raise CorruptRecord("write-order size is not 8 bytes")


META_CHECKERS: dict[bytes, Checker] = {
    META_SCHEMA: check_schema,
    META_FILTER: check_bloom,
    CHECKPOINT_RECORD[len(NS_META) :]: check_checkpoint,
}


def check_meta(raw_key: bytes, data: bytes) -> None:
    META_CHECKERS.get(raw_key[len(NS_META) :], check_msgpack)(raw_key, data)


def checkers() -> dict[bytes, Checker]:
    """The decoder of each namespace this version knows how to check."""
    return {
        NS_ENTRY: check_entry,
        NS_META: check_meta,
        NS_COUNTER: check_counter,
        NS_INDEX_META: check_index_meta,
        NS_INDEX_MEMBER: check_index_member,
        NS_INDEX_ORDER: check_index_order,
        NS_WRITE_ORDER: check_write_order,
    }


class Problem(NamedTuple):
    raw_key: bytes | None
    reason: str


class Tally:
    """Records, corrupt records and unchecked records per namespace."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def add(self, namespace: str, *, corrupt: bool = False, checked: bool = True) -> None:
        counts = self.counts.setdefault(namespace, [0, 0, 0])
        counts[0] += 1
        counts[1] += corrupt
        counts[2] += not checked

    @property
    def corrupt(self) -> int:
        return sum(counts[1] for counts in self.counts.values())


def namespace_name(raw_key: bytes) -> str:
    return NAMESPACES.get(raw_key[:1], f"unknown {raw_key[:1]!r}")


def verify_records(db: Any, tally: Tally, progress: Progress) -> Iterator[Problem]:
    """Decode every record; yield each one that fails, and file-level corruption."""
    decoders = checkers()
    last: bytes | None = None
    try:
        for count, (raw_key, data) in enumerate(db.iterator(verify_checksums=True, fill_cache=False)):
            progress.update(count)
            last = raw_key
            problem = check_record(decoders, raw_key, data, tally)
            if problem is not None:
                yield problem
    except plyvel.CorruptionError as exc:
        where = "at the start" if last is None else f"after key {last!r}"
        tally.add("(files)", corrupt=True)
        yield Problem(None, f"LevelDB corruption {where}: {exc}")


def check_record(decoders: dict[bytes, Checker], raw_key: bytes, data: bytes, tally: Tally) -> Problem | None:
    namespace = namespace_name(raw_key)
    if raw_key[:1] not in NAMESPACES:
        tally.add(namespace, corrupt=True)
        return Problem(raw_key, "unknown namespace")
    decoder = decoders.get(raw_key[:1])
    if decoder is None:
        tally.add(namespace, checked=False)
        return None
    try:
        decoder(raw_key, data)
    except Exception as exc:  # every decoder's failure is a finding, whatever its type
        tally.add(namespace, corrupt=True)
        return Problem(raw_key, str(exc) or type(exc).__name__)
    tally.add(namespace)
    return None


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    """Decode every record in every namespace; exit 1 if any is corrupt."""
    tally = Tally()
    progress = Progress("verifying")
    problems: list[dict[str, Any]] = []
    with open_store(args.path) as db:
        for problem in verify_records(db, tally, progress):
            if args.json:
                problems.append(problem_document(problem))
            else:
                progress.done()
                out.write(f"corrupt  {problem.raw_key!r}  {problem.reason}\n")
    progress.done()
    if args.json:
        document = {"records": sum(c[0] for c in tally.counts.values()), "corrupt": problems}
        document["namespaces"] = {
            name: {"records": c[0], "corrupt": c[1], "unchecked": c[2]} for name, c in tally.counts.items()
        }
        out.write(json_text(document) + "\n")
    else:
        write_tally(out, tally)
    return EXIT_FINDING if tally.corrupt else EXIT_OK


def problem_document(problem: Problem) -> dict[str, Any]:
    raw_key = None if problem.raw_key is None else to_json(problem.raw_key)
    return {
        "raw_key": raw_key,
        "namespace": None if problem.raw_key is None else namespace_name(problem.raw_key),
        "reason": problem.reason,
    }


def write_tally(out: IO[str], tally: Tally) -> None:
    if tally.corrupt:
        out.write("\n")
    table = Table(out, ("NAMESPACE", "RECORDS", "CORRUPT", "UNCHECKED"), (False, True, True, True))
    for name, (records, corrupt, unchecked) in sorted(tally.counts.items()):
        table.add((name, f"{records:,}", f"{corrupt:,}", f"{unchecked:,}"))
    table.close()
    total = sum(c[0] for c in tally.counts.values())
    verdict = f"{tally.corrupt:,} corrupt" if tally.corrupt else "all sound"
    out.write(f"{total:,} records checked: {verdict}\n")


# -- counters ------------------------------------------------------------------------------


def decode_count(raw_key: bytes, data: bytes) -> int:
    """A counter record's count, decoded by the counters module (``CorruptRecord`` when damaged)."""
    return Counters._decode(raw_key, data)


def counter_rows(db: Any) -> Iterator[tuple[Key | None, bytes, int | None, str | None]]:
    """``(name, raw key, count, error)`` per counter record, streamed in key order."""
    for raw_key, data in db.iterator(prefix=NS_COUNTER, fill_cache=False):
        try:
            name: Key | None = decode_key(raw_key[len(NS_COUNTER) :])
        except (CorruptRecord, ValueError) as exc:
            yield None, raw_key, None, f"undecodable name: {exc}"
            continue
        try:
            yield name, raw_key, decode_count(raw_key, data), None
        except CorruptRecord as exc:
            yield name, raw_key, None, str(exc)


def cmd_counters(args: argparse.Namespace, out: IO[str]) -> int:
    """Every counter and its count."""
    with open_store(args.path) as db:
        if args.json:
            write_json_array(out, "counters", (counter_document(*row) for row in counter_rows(db)))
            return EXIT_OK
        table = Table(out, ("COUNT", "NAME"), (True, False))
        for name, raw_key, count, error in counter_rows(db):
            shown = fmt_key(name, raw_key)
            table.add(("corrupt", f"{shown}  ({error})") if count is None else (f"{count:,}", shown))
        table.close()
    if not table.rows:
        out.write("(no counters)\n")
    return EXIT_OK


def counter_document(name: Key | None, raw_key: bytes, count: int | None, error: str | None) -> dict[str, Any]:
    document = {"name": None if name is None else to_json(name), "count": count}
    if error is not None:
        document.update(raw_key=to_json(raw_key), error=error)
    return document


def write_json_array(out: IO[str], field: str, items: Iterator[Any]) -> None:
    """``{"field": [item, ...]}`` written item by item, so a long list costs no memory."""
    out.write(f"{{{json.dumps(field)}:[")
    for i, item in enumerate(items):
        out.write(("," if i else "") + json_text(item))
    out.write("]}\n")


# -- sorted indexes --------------------------------------------------------------------------
# ranking.py documents the layout but exports no reader that works without a DiskTier
# (SortedIndex writes at open), so the key layout is parsed here; the meta record and
# scores are decoded by ranking's own functions.
#   NS_INDEX_META + N -> meta;  NS_INDEX_MEMBER + N + G + M -> S;  NS_INDEX_ORDER + N + G + S + M -> b""
# where N = 2-byte length + tagged name, G = 8-byte generation, S = 8-byte score, M = tagged member.

GEN_BYTES = 8
SCORE_BYTES = 8


class IndexInfo(NamedTuple):
    name: Key
    size: int
    stamp: Any
    built: bool
    generation: int


def name_part(name: Key) -> bytes:
    """``N``: the index name as ranking.py prefixes its records with it."""
    tag = encode_key(name)
    return len(tag).to_bytes(2, "big") + tag


def split_name(raw_key: bytes) -> tuple[Key, bytes]:
    """The index name at the start of ``raw_key`` (after the namespace) and what follows it."""
    size = int.from_bytes(raw_key[1:3], "big")
    end = 3 + size
    if len(raw_key) < end or size == 0:
        raise CorruptRecord("index record key is too short for its name")
    return decode_key(raw_key[3:end]), raw_key[end:]


def index_info(raw_key: bytes, data: bytes) -> IndexInfo:
    name, rest = split_name(raw_key)
    if rest:
        raise CorruptRecord("index meta key has trailing bytes")
    meta = _Meta.unpack(data, raw_key)
    return IndexInfo(name, meta.count, meta.stamp if meta.built else None, meta.built, meta.gen)


def check_index_meta(raw_key: bytes, data: bytes) -> None:
    index_info(raw_key, data)


def check_index_member(raw_key: bytes, data: bytes) -> None:
    _, rest = split_name(raw_key)
    decode_key(rest[GEN_BYTES:])
    check_score(data)


def check_index_order(raw_key: bytes, data: bytes) -> None:
    _, rest = split_name(raw_key)
    check_score(rest[GEN_BYTES : GEN_BYTES + SCORE_BYTES])
    decode_key(rest[GEN_BYTES + SCORE_BYTES :])
    if data:
        raise CorruptRecord("index order record has a value")


def check_score(raw: bytes) -> None:
    if len(raw) != SCORE_BYTES or math.isnan(decode_score(raw)):
        raise CorruptRecord(f"malformed score {raw!r}")


def find_index(db: Any, name: Key) -> IndexInfo | None:
    raw_key = NS_INDEX_META + name_part(name)
    data = db.get(raw_key)
    return None if data is None else index_info(raw_key, data)


def index_page(db: Any, info: IndexInfo, offset: int, limit: int | None) -> Iterator[tuple[Key, float]]:
    """Members of the live generation in ``(score, member)`` order, from ``offset``, streamed."""
    prefix = NS_INDEX_ORDER + name_part(info.name) + info.generation.to_bytes(GEN_BYTES, "big")
    keys = db.iterator(prefix=prefix, include_value=False, fill_cache=False)
    for position, raw_key in enumerate(keys):
        if position < offset:
            continue
        if limit is not None and position >= offset + limit:
            return
        yield SortedIndex._item(raw_key, len(prefix))


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    """One page of a sorted index, in ``(score, member)`` order."""
    name = parse_key(args.name, args.bytes)
    with open_store(args.path) as db:
        try:
            info = find_index(db, name)
        except CorruptRecord as exc:
            raise CliError(f"index {name!r}: {exc}", EXIT_FINDING) from None
        if info is None:
            raise CliError(f"no index named {name!r}", EXIT_FINDING)
        items = index_page(db, info, args.offset, args.limit)
        if args.json:
            write_index_json(out, info, args.offset, items)
        else:
            write_index_text(out, info, args.offset, items)
    return EXIT_OK


def index_summary(info: IndexInfo) -> dict[str, Any]:
    return {"name": to_json(info.name), "size": info.size, "stamp": to_json(info.stamp), "built": info.built}


def write_index_json(out: IO[str], info: IndexInfo, offset: int, items: Iterator[tuple[Key, float]]) -> None:
    head = index_summary(info) | {"offset": offset}
    out.write(json_text(head)[:-1] + ',"items":[')
    for i, (member, score) in enumerate(items):
        item = {"rank": offset + i, "member": to_json(member), "score": to_json(score)}
        out.write(("," if i else "") + json_text(item))
    out.write("]}\n")


def write_index_text(out: IO[str], info: IndexInfo, offset: int, items: Iterator[tuple[Key, float]]) -> None:
    out.write(f"index {info.name!r}: {info.size:,} members, {fmt_stamp(info)}\n")
    table = Table(out, ("RANK", "SCORE", "MEMBER"), (True, True, False))
    for i, (member, score) in enumerate(items):
        table.add((str(offset + i), repr(score), repr(member)))
    table.close()
    if not table.rows:
        out.write("(no members in this range)\n")


def fmt_stamp(info: IndexInfo) -> str:
    return f"stamp {info.stamp!r}" if info.built else "never rebuilt"


# -- inspect -------------------------------------------------------------------------------


class Census:
    """What one pass over every record counts."""

    def __init__(self) -> None:
        self.states = dict.fromkeys(STATES, 0)
        self.entry_bytes = 0
        self.namespaces: dict[str, list[int]] = {}
        self.indexes: list[IndexInfo] = []
        self.corrupt_indexes = 0

    def add(self, raw_key: bytes, data: bytes, now: float) -> None:
        counts = self.namespaces.setdefault(namespace_name(raw_key), [0, 0])
        counts[0] += 1
        counts[1] += len(raw_key) + len(data)
        namespace = raw_key[:1]
        if namespace == NS_ENTRY:
            self.states[classify(raw_key, data, now).state] += 1
            self.entry_bytes += len(raw_key) + len(data)
        elif namespace == NS_INDEX_META:
            self.add_index(raw_key, data)

    def add_index(self, raw_key: bytes, data: bytes) -> None:
        try:
            self.indexes.append(index_info(raw_key, data))
        except (CorruptRecord, ValueError):
            self.corrupt_indexes += 1

    def count(self, namespace: bytes) -> int:
        return self.namespaces.get(NAMESPACES[namespace], [0])[0]


def take_census(db: Any, now: float) -> Census:
    """Count every record in one streamed pass (a progress line on a terminal)."""
    census = Census()
    progress = Progress("inspecting")
    try:
        for count, (raw_key, data) in enumerate(db.iterator(fill_cache=False)):
            progress.update(count)
            census.add(raw_key, data, now)
    finally:
        progress.done()
    return census


def disk_usage(path: str) -> dict[str, int]:
    """Bytes and count of the files in the directory."""
    total = files = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
                files += 1
    return {"bytes": total, "files": files}


def bloom_document(db: Any) -> dict[str, Any] | None:
    """The saved existence filter (guard.py's meta record), decoded by ``BloomFilter.from_bytes``."""
    saved = read_meta(db, META_FILTER)
    if saved is None:
        return None
    try:
        bloom = decode_bloom(saved)
    except ValueError as exc:
        return {"error": str(exc)}
    return {
        "keys": len(bloom),
        "capacity": bloom.capacity,
        "error_rate": bloom.error_rate,
        "estimated_error_rate": bloom.estimated_error_rate(),
        "nbits": bloom.nbits,
        "nhashes": bloom.nhashes,
        "complete": read_meta(db, META_CLEAN) is True and db.get(NS_META + META_OPEN) is None,
    }


def decode_bloom(saved: Any) -> BloomFilter:
    if not isinstance(saved, bytes):
        raise ValueError(f"the filter record holds {type(saved).__name__}, not bytes")
    return BloomFilter.from_bytes(saved)


def checkpoint_document(db: Any) -> dict[str, Any] | None:
    """The checkpoint record of a checkpoint directory (persist.py), or the generation a working
    directory saved at its last clean close."""
    raw = db.get(CHECKPOINT_RECORD)
    if raw is not None:
        info = {str(k): to_json(v) for k, v in _unpack_info(raw).items()}
        return {"kind": "checkpoint", **info}
    generation = read_meta(db, META_CHECKPOINT_GENERATION)
    if generation is None:
        return None
    return {"kind": "taken at last close", "generation": to_json(generation)}


def inspect_document(db: Any, path: str, census: Census) -> dict[str, Any]:
    """The inspect summary, JSON-ready."""
    seq = read_meta(db, META_SEQ)
    is_checkpoint = db.get(CHECKPOINT_RECORD) is not None
    return {
        "path": os.path.abspath(path),
        "kind": "checkpoint" if is_checkpoint else "working directory",
        "schema": read_schema(db, path),
        "clean_shutdown": None if is_checkpoint else db.get(NS_META + META_OPEN) is None,
        "last_seq": seq if type(seq) is int else None,
        "entries": dict(census.states, bytes=census.entry_bytes),
        "counters": census.count(NS_COUNTER),
        "indexes": [index_summary(info) for info in census.indexes],
        "corrupt_indexes": census.corrupt_indexes,
        "bloom": bloom_document(db),
        "checkpoint": checkpoint_document(db),
        "records": {name: {"count": c[0], "bytes": c[1]} for name, c in sorted(census.namespaces.items())},
        "disk": disk_usage(path),
    }


def cmd_inspect(args: argparse.Namespace, out: IO[str]) -> int:
    """A summary of the store."""
    with open_store(args.path) as db:
        census = take_census(db, args.now)
        document = inspect_document(db, args.path, census)
    if args.json:
        out.write(json_text(document) + "\n")
    else:
        write_fields(out, inspect_fields(document, census.indexes))
    return EXIT_OK


def inspect_fields(document: dict[str, Any], indexes: list[IndexInfo]) -> list[tuple[str, str]]:
    entries = document["entries"]
    states = ", ".join(f"{entries[state]:,} {state}" for state in STATES if entries[state] or state == LIVE)
    records = "  ".join(f"{name} {c['count']:,}" for name, c in document["records"].items())
    clean = document["clean_shutdown"]
    return [
        ("path", f"{document['path']} ({document['kind']})"),
        ("schema", str(document["schema"])),
        ("last close", "n/a" if clean is None else "clean" if clean else "not clean (crashed, or restored)"),
        ("entries", states),
        ("entry bytes", f"{fmt_size(entries['bytes'])} (keys and envelopes)"),
        ("counters", f"{document['counters']:,}"),
        ("indexes", index_lines(indexes, document["corrupt_indexes"])),
        ("bloom filter", bloom_line(document["bloom"])),
        ("checkpoint", checkpoint_line(document["checkpoint"])),
        ("records", records or "none"),
        ("on disk", f"{fmt_size(document['disk']['bytes'])} in {document['disk']['files']} files"),
    ]


def index_lines(indexes: list[IndexInfo], corrupt: int, shown: int = 20) -> str:
    """The number of indexes, then one indented line per index (the first ``shown`` of them)."""
    lines = [f"{len(indexes):,}" + (f" ({corrupt} with a corrupt meta record)" if corrupt else "")]
    lines += [f"  {info.name!r}: {info.size:,} members, {fmt_stamp(info)}" for info in indexes[:shown]]
    if len(indexes) > shown:
        lines.append(f"  ... and {len(indexes) - shown:,} more")
    return "\n".join(lines)


def bloom_line(bloom: dict[str, Any] | None) -> str:
    if bloom is None:
        return "none"
    if "error" in bloom:
        return f"damaged: {bloom['error']}"
    return (
        f"{bloom['keys']:,} keys of {bloom['capacity']:,}, {fmt_size(bloom['nbits'] // 8)} "
        f"({bloom['nbits']:,} bits, {bloom['nhashes']} hashes), "
        f"estimated error rate {bloom['estimated_error_rate']:.4g} (target {bloom['error_rate']:g})"
        + ("" if bloom["complete"] else "; incomplete: rebuilt at next guarded open")
    )


def checkpoint_line(info: dict[str, Any] | None) -> str:
    if info is None:
        return "none"
    if info["kind"] != "checkpoint":
        return f"one was taken at the last clean close (generation {info['generation']})"
    when = fmt_time(info["time"]) if isinstance(info.get("time"), (int, float)) else "unknown time"
    state = "complete" if info.get("complete") else "INCOMPLETE (interrupted)"
    kind = "full" if info.get("full") else "incremental"
    return f"number {info.get('number', '?')}, {state}, {kind}, at {when}, {info.get('records', '?')} records copied"


# -- the parser ----------------------------------------------------------------------------


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def common_parser() -> argparse.ArgumentParser:
    """PATH and the options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("path", metavar="PATH", help="store directory: a working directory or a checkpoint")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument(
        "--now", type=finite, metavar="SECONDS", default=argparse.SUPPRESS, help="judge expiry at this Unix time"
    )
    return common


def add_selection(parser: argparse.ArgumentParser, *, all_flag: bool) -> None:
    parser.add_argument("--prefix", metavar="P", help="only keys starting with P")
    parser.add_argument("--bytes", action="store_true", help="P is the hex of a bytes-key prefix")
    parser.add_argument("--limit", type=non_negative, metavar="N", help="at most N entries")
    if all_flag:
        parser.add_argument("--all", action="store_true", help="also expired, negative, tombstone and corrupt ones")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``tierstore`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tierstore",
        description="Inspect a tierstore directory without changing it.",
        epilog=JSON_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tierstore {__version__}")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_parser()

    def command(name: str, handler: Callable[[argparse.Namespace, IO[str]], int], text: str) -> Any:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=text,
            description=text,
            epilog=JSON_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    command("inspect", cmd_inspect, "summary: entries by state, counters, indexes, filter, checkpoint, disk use")
    get = command("get", cmd_get, "one entry: value, version, expiry, flags; exit 1 when it has no live entry")
    get.add_argument("key", metavar="KEY", help="the key (a str; hex with --bytes)")
    get.add_argument("--bytes", action="store_true", help="KEY is the hex of a bytes key")
    add_selection(command("scan", cmd_scan, "a row per entry: state, version, TTL left, size, key"), all_flag=True)
    add_selection(command("dump", cmd_dump, "every live entry as JSON lines (--json changes nothing)"), all_flag=False)
    command("verify", cmd_verify, "decode every record of every namespace; exit 1 on corruption")
    command("counters", cmd_counters, "every counter and its count")
    index = command("index", cmd_index, "a page of a sorted index: rank, score, member")
    index.add_argument("name", metavar="NAME", help="the index name (a str; hex with --bytes)")
    index.add_argument("--bytes", action="store_true", help="NAME is the hex of a bytes name")
    index.add_argument("--offset", type=non_negative, default=0, metavar="N", help="skip the first N members")
    index.add_argument("--limit", type=non_negative, default=20, metavar="N", help="show N members (default 20)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    logging.basicConfig(format="tierstore: %(message)s", level=logging.WARNING)
    # msgpack decodes values nested about a thousand deep; showing them recurses twice per level.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.now = getattr(args, "now", None)
    if args.now is None:
        args.now = time.time()
    try:
        code: int = args.handler(args, sys.stdout)
        sys.stdout.flush()
        return code
    except CliError as exc:
        log.error("%s", exc)
        return exc.code
    except plyvel.CorruptionError as exc:
        log.error("%s: the store is corrupt (%s); run 'tierstore verify'", args.path, exc)
        return EXIT_FINDING
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
