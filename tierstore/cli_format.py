"""How the ``tierstore`` command shows what it reads: JSON documents, aligned tables, field lists.

The JSON encoding of keys and values (plain JSON where exact, else one ``$``
marker key) is described in ``cli.py``'s docstring; this module implements it
and the human formatting, so ``cli.py`` keeps only parsing, reading and exit codes.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

import msgpack

from . import reader
from .codec import NEGATIVE, TOMBSTONE, Key, Record
from .reader import CORRUPT, LIVE, STATES, IndexInfo, Row
from .verify import Problem, Tally

__all__ = [
    "to_json",
    "json_text",
    "Table",
    "Progress",
]


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


def scan_cells(row: Row, now: float) -> tuple[str, ...]:
    record = row.record
    key = fmt_key(row.key, row.raw_key)
    if record is None:
        return (CORRUPT, "-", "-", "-", f"{key}  ({row.error})")
    return (row.state, str(record.version), fmt_ttl_left(record.expires_at, now), fmt_size(record.size), key)


def verify_document(tally: Tally, problems: list[dict[str, Any]]) -> dict[str, Any]:
    namespaces = {name: {"records": c[0], "corrupt": c[1], "unchecked": c[2]} for name, c in tally.counts.items()}
    return {"records": tally.records, "corrupt": problems, "namespaces": namespaces}


def problem_document(problem: Problem) -> dict[str, Any]:
    raw_key = None if problem.raw_key is None else to_json(problem.raw_key)
    return {
        "raw_key": raw_key,
        "namespace": None if problem.raw_key is None else reader.namespace_name(problem.raw_key),
        "reason": problem.reason,
    }


def write_tally(out: IO[str], tally: Tally) -> None:
    if tally.corrupt:
        out.write("\n")
    table = Table(out, ("NAMESPACE", "RECORDS", "CORRUPT", "UNCHECKED"), (False, True, True, True))
    for name, (records, corrupt, unchecked) in sorted(tally.counts.items()):
        table.add((name, f"{records:,}", f"{corrupt:,}", f"{unchecked:,}"))
    table.close()
    verdict = f"{tally.corrupt:,} corrupt" if tally.corrupt else "all sound"
    out.write(f"{tally.records:,} records checked: {verdict}\n")


def counter_document(row: reader.CounterRow) -> dict[str, Any]:
    document = {"name": None if row.name is None else to_json(row.name), "count": row.value}
    if row.error is not None:
        document.update(raw_key=to_json(row.raw_key), error=row.error)
    return document


def write_json_array(out: IO[str], field: str, items: Iterator[Any]) -> None:
    """``{"field": [item, ...]}`` written item by item, so a long list costs no memory."""
    out.write(f"{{{json.dumps(field)}:[")
    for i, item in enumerate(items):
        out.write(("," if i else "") + json_text(item))
    out.write("]}\n")


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
        ("expiry index", expiry_index_line(document["expiry_index_complete"])),
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


def expiry_index_line(complete: bool | None) -> str:
    if complete is None:
        return "not kept in a checkpoint (a restore builds it)"
    return "complete" if complete else "not built: the next open builds it (one scan of the entries)"


def checkpoint_line(info: dict[str, Any] | None) -> str:
    if info is None:
        return "none"
    if info["kind"] != "checkpoint":
        return f"one was taken at the last clean close (generation {info['generation']})"
    when = fmt_time(info["time"]) if isinstance(info.get("time"), (int, float)) else "unknown time"
    state = "complete" if info.get("complete") else "INCOMPLETE (interrupted)"
    kind = "full" if info.get("full") else "incremental"
    return f"number {info.get('number', '?')}, {state}, {kind}, at {when}, {info.get('records', '?')} records copied"

