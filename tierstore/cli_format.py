"""The human-readable output of the ``tierstore`` command: aligned tables, field lists, times and sizes.

What each command prints without ``--json``, and the progress line of a long
pass. The ``--json`` output is ``cli_json``'s; both only format what
``cli_commands`` read.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from .codec import EXPIRES_AT, FLAGS, NEGATIVE, SIZE, TOMBSTONE, TTL, VALUE, VERSION, WRITTEN_AT, Key, Record
from .reader import CORRUPT, LIVE, STATES, CounterRow, IndexInfo, Row
from .verify import Problem, Tally

__all__ = [
    "Table",
    "Progress",
    "flag_names",
    "write_fields",
]


def flag_names(flags: int) -> list[str]:
    """A record's flag bits by name (unknown bits in hex)."""
    names = [name for bit, name in ((NEGATIVE, "negative"), (TOMBSTONE, "tombstone")) if flags & bit]
    unknown = flags & ~(NEGATIVE | TOMBSTONE)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


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
    value = "ABSENT (negative entry)" if record[FLAGS] & NEGATIVE else repr(record[VALUE])
    if record[FLAGS] & TOMBSTONE:
        value = "(tombstone)"
    return [
        ("key", repr(key)),
        ("state", state),
        ("value", value),
        ("version", str(record[VERSION])),
        ("expires", fmt_expiry(record[EXPIRES_AT], now)),
        ("ttl", "none" if record[TTL] is None else f"{record[TTL]:g}s"),
        ("written", fmt_time(record[WRITTEN_AT])),
        ("flags", ", ".join(flag_names(record[FLAGS])) or "-"),
        ("size", f"{record[SIZE]:,} bytes"),
    ]


def scan_cells(row: Row, now: float) -> tuple[str, ...]:
    record = row.record
    key = fmt_key(row.key, row.raw_key)
    if record is None:
        return (CORRUPT, "-", "-", "-", f"{key}  ({row.error})")
    return (row.state, str(record[VERSION]), fmt_ttl_left(record[EXPIRES_AT], now), fmt_size(record[SIZE]), key)


def write_scan_table(out: IO[str], rows: Iterable[Row], now: float) -> None:
    """``scan``: a row per entry (state, version, TTL left, size, key), or a line saying there is none."""
    table = Table(out, ("STATE", "VERSION", "TTL LEFT", "SIZE", "KEY"), (False, True, True, True, False))
    for row in rows:
        table.add(scan_cells(row, now))
    table.close()
    if not table.rows:
        out.write("(no entries)\n")


def problem_line(problem: Problem) -> str:
    """``verify``: one corrupt record, as it is found."""
    return f"corrupt  {problem.raw_key!r}  {problem.reason}\n"


def write_tally(out: IO[str], tally: Tally) -> None:
    if tally.corrupt:
        out.write("\n")
    table = Table(out, ("NAMESPACE", "RECORDS", "CORRUPT", "UNCHECKED"), (False, True, True, True))
    for name, (records, corrupt, unchecked) in sorted(tally.counts.items()):
        table.add((name, f"{records:,}", f"{corrupt:,}", f"{unchecked:,}"))
    table.close()
    verdict = f"{tally.corrupt:,} corrupt" if tally.corrupt else "all sound"
    out.write(f"{tally.records:,} records checked: {verdict}\n")


def write_counter_table(out: IO[str], rows: Iterable[CounterRow]) -> None:
    """``counters``: a row per counter (count, name), or a line saying there is none."""
    table = Table(out, ("COUNT", "NAME"), (True, False))
    for name, raw_key, count, error in rows:
        shown = fmt_key(name, raw_key)
        table.add(("corrupt", f"{shown}  ({error})") if count is None else (f"{count:,}", shown))
    table.close()
    if not table.rows:
        out.write("(no counters)\n")


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
