"""The ``--json`` output of the ``tierstore`` command: the encoding of keys and values, and its documents.

The encoding (plain JSON where exact, else one ``$`` marker key) is described
in ``cli.py``'s docstring; ``to_json`` implements it. The documents are what
each command prints with ``--json``. Separate from ``cli_format`` (the
human-readable output) so each module is one kind of output.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import IO, Any

import msgpack

from . import reader
from .bloom import BloomFilter
from .cli_format import flag_names
from .codec import EXPIRES_AT, FLAGS, LOAD_TIME, SEQ, SIZE, TTL, VALUE, VERSION, WRITTEN_AT, Key, Record
from .reader import CORRUPT, LIVE, IndexInfo, Row
from .verify import Problem, Tally

__all__ = [
    "to_json",
    "json_text",
    "row_document",
    "record_document",
    "missing_document",
    "dump_document",
    "verify_document",
    "problem_document",
    "counter_document",
    "write_json_array",
    "index_summary",
    "bloom_summary",
    "write_index_json",
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
        "version": record[VERSION],
        "expires_at": record[EXPIRES_AT],
        "ttl_left": None if record[EXPIRES_AT] is None else round(record[EXPIRES_AT] - now, 3),
        "size": record[SIZE],
        "flags": flag_names(record[FLAGS]),
        "written_at": record[WRITTEN_AT],
    }


def record_document(key: Key, record: Record, state: str, now: float) -> dict[str, Any]:
    """Everything ``get`` shows about one record, JSON-ready."""
    return {
        "key": to_json(key),
        "state": state,
        "live": state == LIVE,
        "value": to_json(record[VALUE]),
        "version": record[VERSION],
        "expires_at": record[EXPIRES_AT],
        "remaining": None if record[EXPIRES_AT] is None else round(record[EXPIRES_AT] - now, 3),
        "flags": flag_names(record[FLAGS]),
        "written_at": record[WRITTEN_AT],
        "ttl": record[TTL],
        "seq": record[SEQ],
        "load_time": record[LOAD_TIME],
        "size": record[SIZE],
    }


def missing_document(key: Key, state: str, detail: str) -> dict[str, Any]:
    """What ``get`` prints for a key without a decodable record."""
    return {"key": to_json(key), "state": state, "live": False, "error": detail}


def dump_document(row: Row) -> dict[str, Any]:
    """A ``dump`` line: a live entry's key, value, version and expiry."""
    record = row.record
    assert record is not None
    return {
        "key": to_json(row.key),
        "value": to_json(record[VALUE]),
        "version": record[VERSION],
        "expires_at": record[EXPIRES_AT],
    }


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


def bloom_summary(bloom: BloomFilter, complete: bool) -> dict[str, Any]:
    """The saved existence filter as ``inspect`` shows it (``complete``: it holds every key)."""
    return {
        "keys": len(bloom),
        "capacity": bloom.capacity,
        "error_rate": bloom.error_rate,
        "estimated_error_rate": bloom.estimated_error_rate(),
        "nbits": bloom.nbits,
        "nhashes": bloom.nhashes,
        "complete": complete,
    }


def write_index_json(out: IO[str], info: IndexInfo, offset: int, items: Iterator[tuple[Key, float]]) -> None:
    head = index_summary(info) | {"offset": offset}
    out.write(json_text(head)[:-1] + ',"items":[')
    for i, (member, score) in enumerate(items):
        item = {"rank": offset + i, "member": to_json(member), "score": to_json(score)}
        out.write(("," if i else "") + json_text(item))
    out.write("]}\n")
