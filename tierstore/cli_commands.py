"""The commands of ``tierstore``: what each one reads from a directory, writes, and exits with.

One ``cmd_*`` function per command, each taking the parsed arguments and the
output stream and returning the exit code (or raising ``CliError``). It is
separate from ``cli``, which owns the command line itself (the parser, the
help text, ``main`` and the errors it turns into exit codes), so that each
module is one concept: what a command does, and how it is invoked. How the
output looks is ``cli_format``'s (tables, fields) and ``cli_json``'s
(``--json`` documents).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from typing import IO, Any

from . import reader, summary, verify
from .cli_format import (
    Progress,
    get_fields,
    inspect_fields,
    problem_line,
    write_counter_table,
    write_fields,
    write_index_text,
    write_scan_table,
    write_tally,
)
from .cli_json import (
    bloom_summary,
    counter_document,
    dump_document,
    index_summary,
    json_text,
    missing_document,
    problem_document,
    record_document,
    row_document,
    to_json,
    verify_document,
    write_index_json,
    write_json_array,
)
from .codec import Key, encode_key
from .errors import CorruptRecord
from .keyspace import NS_COUNTER
from .reader import CORRUPT, LIVE, Row, open_store
from .summary import Census
from .verify import Tally

__all__ = [
    "EXIT_OK",
    "EXIT_FINDING",
    "EXIT_USAGE",
    "CliError",
    "cmd_get",
    "cmd_scan",
    "cmd_dump",
    "cmd_verify",
    "cmd_counters",
    "cmd_index",
    "cmd_inspect",
]

log = logging.getLogger("tierstore.cli")

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Stop with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- command-line keys -----------------------------------------------------------------


def key_prefix(prefix: str | None, hex_bytes: bool) -> bytes:
    """The tagged prefix of ``--prefix`` (hex of a bytes prefix with ``--bytes``)."""
    if prefix is None:
        return b""
    try:
        return encode_key(parse_key(prefix, hex_bytes))
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None


def parse_key(text: str, hex_bytes: bool, what: str = "key") -> Key:
    """A command-line key (or index name, ``what``): str, or bytes from hex with ``--bytes``."""
    if not hex_bytes:
        return text
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CliError(f"--bytes takes the {what} in hex, got {text!r}") from None


# -- commands ------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace, out: IO[str]) -> int:
    """Show one entry; exit 1 when the key has no live entry."""
    key = parse_key(args.key, args.bytes)
    try:
        encode_key(key)  # a key the store would refuse is a usage error, found before opening
    except ValueError as exc:
        raise CliError(str(exc)) from None
    now = args.now
    with open_store(args.path) as db:
        row = reader.read_entry(db, key, now)
    if row is None:
        return report_missing(args, out, key, "absent", "no record")
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


def report_missing(args: argparse.Namespace, out: IO[str], key: Key, state: str, detail: str) -> int:
    """A key without a decodable record: say so, exit 1."""
    if args.json:
        out.write(json_text(missing_document(key, state, detail)) + "\n")
    log.error("no live entry for %r: %s (%s)", key, state, detail)
    return EXIT_FINDING


def selected_rows(db: Any, args: argparse.Namespace, *, live_only: bool) -> Iterator[Row]:
    """The rows ``--prefix``/``--all``/``--limit`` select, streamed."""
    prefix = key_prefix(args.prefix, args.bytes)
    limit = args.limit
    shown = 0
    for row in reader.entry_rows(db, prefix, args.now):
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
        write_scan_table(out, rows, now)
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, out: IO[str]) -> int:
    """Every live entry as a JSON line: key, value, version, expires_at."""
    with open_store(args.path) as db:
        for row in selected_rows(db, args, live_only=True):
            out.write(json_text(dump_document(row)) + "\n")
    return EXIT_OK


# -- verify --------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    """Decode every record in every namespace; exit 1 if any is corrupt."""
    tally = Tally()
    progress = Progress("verifying")
    problems: list[dict[str, Any]] = []
    with open_store(args.path, damaged_ok=True) as db:  # damage is a finding of the pass below
        for problem in verify.verify_records(db, tally, progress.update):
            if args.json:
                problems.append(problem_document(problem))
            else:
                progress.done()
                out.write(problem_line(problem))
    progress.done()
    if args.json:
        out.write(json_text(verify_document(tally, problems)) + "\n")
    else:
        write_tally(out, tally)
    return EXIT_FINDING if tally.corrupt else EXIT_OK


# -- counters ------------------------------------------------------------------------------


def cmd_counters(args: argparse.Namespace, out: IO[str]) -> int:
    """Every counter and its count."""
    with open_store(args.path) as db:
        if args.json:
            write_json_array(out, "counters", (counter_document(row) for row in reader.counter_rows(db)))
            return EXIT_OK
        write_counter_table(out, reader.counter_rows(db))
    return EXIT_OK


# -- sorted indexes --------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    """One page of a sorted index, in ``(score, member)`` order."""
    name = parse_key(args.name, args.bytes, "index name")
    with open_store(args.path) as db:
        try:
            info = reader.find_index(db, name)
        except CorruptRecord as exc:
            raise CliError(f"index {name!r}: {exc}", EXIT_FINDING) from None
        if info is None:
            raise CliError(f"no index named {name!r}", EXIT_FINDING)
        items = reader.index_page(db, info, args.offset, args.limit)
        if args.json:
            write_index_json(out, info, args.offset, items)
        else:
            write_index_text(out, info, args.offset, items)
    return EXIT_OK


# -- inspect -------------------------------------------------------------------------------


def take_census(db: Any, now: float) -> Census:
    """Count every record in one streamed pass (a progress line on a terminal)."""
    progress = Progress("inspecting")
    try:
        return summary.take_census(db, now, progress.update)
    finally:
        progress.done()


def bloom_document(db: Any) -> dict[str, Any] | None:
    """The saved existence filter (guard.py's meta record), decoded by ``BloomFilter.from_bytes``."""
    try:
        bloom = summary.read_bloom(db)
    except ValueError as exc:
        return {"error": str(exc)}
    return None if bloom is None else bloom_summary(bloom, summary.bloom_complete(db))


def checkpoint_document(db: Any) -> dict[str, Any] | None:
    """The checkpoint record of a checkpoint directory (checkpoint.py), or the generation a working
    directory saved at its last clean close."""
    info = summary.read_checkpoint(db)
    if info is not None:
        return {"kind": "checkpoint", **{str(k): to_json(v) for k, v in info.items()}}
    generation = summary.checkpoint_generation(db)
    if generation is None:
        return None
    return {"kind": "taken at last close", "generation": to_json(generation)}


def inspect_document(db: Any, path: str, census: Census) -> dict[str, Any]:
    """The inspect summary, JSON-ready."""
    is_checkpoint = summary.is_checkpoint(db)
    return {
        "path": os.path.abspath(path),
        "kind": "checkpoint" if is_checkpoint else "working directory",
        "schema": reader.read_schema(db, path),
        "clean_shutdown": None if is_checkpoint else summary.clean_shutdown(db),
        "last_seq": summary.last_seq(db),
        "entries": dict(census.states, bytes=census.entry_bytes),
        "counters": census.count(NS_COUNTER),
        "indexes": [index_summary(info) for info in census.indexes],
        "corrupt_indexes": census.corrupt_indexes,
        "bloom": bloom_document(db),
        "checkpoint": checkpoint_document(db),
        "expiry_index_complete": None if is_checkpoint else summary.expiry_index_complete(db),
        "records": {name: {"count": c[0], "bytes": c[1]} for name, c in sorted(census.namespaces.items())},
        "disk": summary.disk_usage(path),
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
