"""The key space of a store directory: namespaces, meta records, the schema record, key ranges.

Every LevelDB key starts with a namespace byte; each module that owns a
namespace (or a meta record) says what its records hold. This module is only
the map and the small decoders every reader of a directory shares (tier 2, the
checkpoint, the CLI's reader), so none of them needs the LevelDB machinery of
``disk`` to name a key.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .codec import BYTES_TAG, MAX_KEY_BYTES, SAFE_STR_LEN, STR_TAG, encode_key
from .errors import CorruptRecord, CorruptStore, SchemaTooNew

__all__ = [
    "entry_key",
    "fast_entry_key",
    "STR_ENTRY",
    "BYTES_ENTRY",
    "NS_ENTRY",
    "NS_COUNTER",
    "NS_INDEX_MEMBER",
    "NS_INDEX_ORDER",
    "NS_INDEX_META",
    "NS_META",
    "NS_WRITE_ORDER",
    "NS_EXPIRY",
    "NAMESPACES",
    "SCHEMA_VERSION",
    "META_SCHEMA",
    "META_OPEN",
    "META_SEQ",
    "META_VERSIONED",
    "META_EXPIRY_INDEX",
    "Op",
    "meta_key",
    "decode_meta",
    "decode_schema",
    "check_schema",
    "prefix_end",
]

NS_ENTRY = b"e"
NS_COUNTER = b"c"
NS_INDEX_MEMBER = b"i"
NS_INDEX_ORDER = b"o"
NS_INDEX_META = b"x"
NS_META = b"m"
NS_WRITE_ORDER = b"w"
NS_EXPIRY = b"d"  # sorts before NS_ENTRY: a key-order copy writes an entry's index record first


def entry_key(key: object) -> bytes:
    """The LevelDB key of the entry ``key`` (``TypeError``/``ValueError`` for a bad key)."""
    return NS_ENTRY + encode_key(key)


# The prefixes of an entry's LevelDB key by key type, for the inlined ``entry_key`` of the hot paths.
BYTES_ENTRY = NS_ENTRY + BYTES_TAG
STR_ENTRY = NS_ENTRY + STR_TAG


def fast_entry_key(key: object) -> bytes:
    """``entry_key`` with the common cases inline (a test ties the two together)."""
    if type(key) is bytes:
        if len(key) <= MAX_KEY_BYTES:
            return BYTES_ENTRY + key
    elif type(key) is str and len(key) <= SAFE_STR_LEN:
        try:
            return STR_ENTRY + key.encode()
        except UnicodeEncodeError:
            pass
    return entry_key(key)


#: Each namespace byte and the name tools show it under.
NAMESPACES: dict[bytes, str] = {
    NS_ENTRY: "entry",
    NS_COUNTER: "counter",
    NS_INDEX_MEMBER: "index_member",
    NS_INDEX_ORDER: "index_order",
    NS_INDEX_META: "index_meta",
    NS_META: "meta",
    NS_WRITE_ORDER: "write_order",
    NS_EXPIRY: "expiry",
}

# Names of meta records (``NS_META + name``); each module that owns one says what it holds.
META_SCHEMA = b"schema"  # the schema version, a msgpack int
META_OPEN = b"open"  # present while a session is open: missing after a clean close
META_SEQ = b"seq"  # session.py: the write sequence's high-water mark, saved at close
META_VERSIONED = b"versioned"  # session.py, writer.py: true once the store has held a versioned entry
META_EXPIRY_INDEX = b"expiry_index"  # expiry.py: true once every entry with an expiry has its index record

SCHEMA_VERSION = 1

Op = tuple[bytes, "bytes | None"]  # a put (value bytes) or a delete (None) of one key


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def meta_key(name: bytes) -> bytes:
    """The LevelDB key of the meta record ``name``."""
    return NS_META + name


def decode_meta(data: bytes) -> Any:
    """A meta record's value (msgpack; maps may have non-str keys); ``CorruptRecord`` when it does not decode."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord(f"not msgpack: {str(exc) or type(exc).__name__}") from None


def check_schema(raw: bytes, where: str) -> int:
    """The schema version a directory's schema record holds, checked: ``CorruptStore`` when the
    record is damaged, ``SchemaTooNew`` when a newer tierstore wrote it. ``where`` names the directory."""
    try:
        schema = decode_schema(raw)
    except CorruptRecord:
        raise CorruptStore(f"{where}: the schema record is corrupt") from None
    if schema > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{where} was written by a newer tierstore (schema {schema}; this version knows {SCHEMA_VERSION})"
        )
    return schema


def decode_schema(data: bytes) -> int:
    """The schema version a schema record holds; ``CorruptRecord`` when it is not a msgpack int >= 1."""
    try:
        schema = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord(str(exc) or type(exc).__name__) from None
    if type(schema) is not int:
        raise CorruptRecord("the schema record is not an int")
    if schema < 1:  # no tierstore wrote one: the first schema is 1
        raise CorruptRecord(f"the schema record holds {schema}, not a schema version")
    return schema
