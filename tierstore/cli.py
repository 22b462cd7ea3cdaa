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
index_codec, guard/bloom, checkpoint, capacity); a record in a namespace ``keyspace.py`` does
not declare is reported as corrupt, and LevelDB checksum errors end the pass
with a finding. Human tables stream: column widths come from the first rows.

The command never writes: ``tierstore.reader`` opens the LevelDB directory
itself with ``create=False`` and does all the reading (``verify`` and
``summary`` make the two passes over every record); ``cli_commands`` runs each
command; this module parses the command line and turns errors into exit codes;
``cli_format`` (human-readable) and ``cli_json`` (``--json``) format what the
commands read.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from . import reader
from ._plyvel import plyvel
from .cli_commands import (
    EXIT_FINDING,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    cmd_counters,
    cmd_dump,
    cmd_get,
    cmd_index,
    cmd_inspect,
    cmd_scan,
    cmd_verify,
)
from .cli_json import json_text, to_json
from .errors import CorruptRecord, CorruptStore
from .reader import Unreadable

__all__ = ["main", "build_parser", "to_json"]

log = logging.getLogger("tierstore.cli")

RECURSION_LIMIT = 10_000

JSON_HELP = """\
JSON (--json, dump): keys and values are plain JSON where JSON is exact; otherwise an
object with one "$" marker key: {"$bytes": "<base64>"} for bytes, {"$float": "nan"|"inf"|"-inf"},
{"$map": [[key, value], ...]} for a map with a non-str key or a key starting with "$",
{"$ext": [code, "<base64>"]} for a msgpack extension value.

exit codes: 0 fine, 1 a finding (no live entry, corruption), 2 usage error, missing
directory, not a tierstore, or a store in use by a running process."""


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


def _failed(args: argparse.Namespace, message: str, code: int) -> int:
    """Say why the command failed on stderr and, with ``--json``, as a JSON document on stdout too
    (``{"error": ..., "exit_code": ...}``: a script reading stdout learns why it got no answer)."""
    log.error("%s", message)
    if args.json:
        print(json_text({"error": message, "exit_code": code}), flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    logging.basicConfig(format="tierstore: %(message)s", level=logging.WARNING)
    # msgpack decodes values nested about a thousand deep; showing them recurses twice per level.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    if isinstance(sys.stdout, io.TextIOWrapper):  # a key the terminal's encoding lacks is shown escaped
        sys.stdout.reconfigure(errors="backslashreplace")
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
        return _failed(args, str(exc), exc.code)
    except Unreadable as exc:
        return _failed(args, str(exc), EXIT_FINDING if exc.corrupt else EXIT_USAGE)
    except plyvel.Error as exc:  # damage met mid-pass: a bad block, a truncated or missing table
        return _failed(args, f"{reader.damage_message(args.path, exc)}; run 'tierstore verify'", EXIT_FINDING)
    except (CorruptRecord, CorruptStore) as exc:
        return _failed(args, f"{args.path}: the store is corrupt ({exc}); run 'tierstore verify'", EXIT_FINDING)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # the output could not be written (a full disk, a closed descriptor)
        log.error("%s: I/O error: %s", args.path, exc)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_FINDING
