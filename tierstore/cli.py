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
index_codec, guard/bloom, checkpoint, sweep); a record in a namespace ``disk.py`` does
not declare is reported as corrupt, and LevelDB checksum errors end the pass
with a finding. Human tables stream: column widths come from the first rows.

The command never writes: ``tierstore.reader`` opens the LevelDB directory
itself with ``create=False`` and does all the reading (``verify`` and
``summary`` make the two passes over every record); this module parses the
command line and chooses the exit code; ``cli_format`` formats what it reads.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import plyvel

from . import reader, summary, verify
from .cli_format import (
    Progress,
    Table,
    counter_document,
    fmt_key,
    get_fields,
    index_summary,
    inspect_fields,
    json_text,
    problem_document,
    record_document,
    row_document,
    scan_cells,
    to_json,
    verify_document,
    write_fields,
    write_index_json,
    write_index_text,
    write_json_array,
    write_tally,
)
from .codec import Key, encode_key
from .disk import NS_COUNTER
from .errors import CorruptRecord, CorruptStore
from .reader import CORRUPT, LIVE, Row, Unreadable, open_store
from .summary import Census
from .verify import Tally

__all__ = ["main", "build_parser", "to_json"]

log = logging.getLogger("tierstore.cli")

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
RECURSION_LIMIT = 10_000

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


# -- command-line keys and documents ---------------------------------------------------


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
        out.write(json_text({"key": to_json(key), "state": state, "live": False, "error": detail}) + "\n")
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
        table = Table(out, ("STATE", "VERSION", "TTL LEFT", "SIZE", "KEY"), (False, True, True, True, False))
        for row in rows:
            table.add(scan_cells(row, now))
        table.close()
    if not table.rows:
        out.write("(no entries)\n")
    return EXIT_OK


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
                out.write(f"corrupt  {problem.raw_key!r}  {problem.reason}\n")
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
        table = Table(out, ("COUNT", "NAME"), (True, False))
        for name, raw_key, count, error in reader.counter_rows(db):
            shown = fmt_key(name, raw_key)
            table.add(("corrupt", f"{shown}  ({error})") if count is None else (f"{count:,}", shown))
        table.close()
    if not table.rows:
        out.write("(no counters)\n")
    return EXIT_OK


# -- sorted indexes --------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace, out: IO[str]) -> int:
    """One page of a sorted index, in ``(score, member)`` order."""
    name = parse_key(args.name, args.bytes)
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
    if bloom is None:
        return None
    return {
        "keys": len(bloom),
        "capacity": bloom.capacity,
        "error_rate": bloom.error_rate,
        "estimated_error_rate": bloom.estimated_error_rate(),
        "nbits": bloom.nbits,
        "nhashes": bloom.nhashes,
        "complete": summary.bloom_complete(db),
    }


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
    except Unreadable as exc:
        log.error("%s", exc)
        return EXIT_FINDING if exc.corrupt else EXIT_USAGE
    except plyvel.Error as exc:  # damage met mid-pass: a bad block, a truncated or missing table
        log.error("%s; run 'tierstore verify'", reader.damage_message(args.path, exc))
        return EXIT_FINDING
    except (CorruptRecord, CorruptStore) as exc:
        log.error("%s: the store is corrupt (%s); run 'tierstore verify'", args.path, exc)
        return EXIT_FINDING
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
