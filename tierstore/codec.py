"""Keys, the msgpack envelope every cache record is stored in, what msgpack stores as given, and what a record is.

An envelope is a msgpack array::

    [format, version, expires_at, flags, value, written_at, ttl, seq, load_time]

``expires_at`` and ``written_at`` are wall-clock seconds (so expiry survives a
restart), ``ttl`` is the TTL that was drawn (``None`` for no expiry), ``seq`` the
store-wide write sequence (eviction order, promotion checks) and ``load_time``
how long the loader took (XFetch). Records are decoded with ``msgpack.unpackb``,
whose limits follow the record's own length, so a hostile record costs an error,
not memory. No pickle, ever. A value msgpack cannot store, or could not give
back as given, raises an error naming its type or problem (``pack_naming``).

A decoded record (``Record``) is a plain tuple of the envelope's fields in their
own order, the format slot replaced by the encoded size, read at the constant
indices ``SIZE`` ... ``LOAD_TIME`` (``make_record`` builds one by field name order).

What a stored record is at a moment (live, negative, stale, expired, tombstone)
is decided here only, by ``record_state``; every read, load, sweep and the CLI
ask it (``TierStore.get`` inlines its ``LIVE`` test, tied to it by a test).
"""

from __future__ import annotations

import reprlib
from enum import IntEnum
from typing import Any, Final, TypeAlias

import msgpack

from .errors import CorruptRecord, shown

__all__ = [
    "Record", "make_record", "is_negative", "is_tombstone", "SIZE", "VERSION", "EXPIRES_AT", "FLAGS", "VALUE",
    "WRITTEN_AT", "TTL", "SEQ", "LOAD_TIME", "Key", "FORMAT", "NEGATIVE", "TOMBSTONE", "MAX_KEY_BYTES", "MAX_VERSION",
    "MAX_DEPTH", "PLAIN_TYPES", "NotPlain", "pack_naming", "unreadable", "encode_key", "decode_key", "check_version",
    "encode_record", "new_packer", "unpack_record", "plain_value", "STR_TAG",
    "BYTES_TAG", "SAFE_STR_LEN", "RecordState", "record_state", "purge_time",
]

Key = str | bytes

FORMAT = 1
NEGATIVE = 1
TOMBSTONE = 2
MAX_KEY_BYTES = 4096
MAX_VERSION = 2**63 - 1
_KNOWN_FLAGS = NEGATIVE | TOMBSTONE  # a record with other bits set was written by something else
ENVELOPE_ROOM = 64  # bytes an envelope's own fields may take beside its value (57 at their widest)
LATER_FIELDS_ROOM = 64  # bytes a shared copy's stamp may add to the writer's envelope (shared.mirror)
RECORD_ROOM = ENVELOPE_ROOM + LATER_FIELDS_ROOM  # bytes a record may read past max_value_bytes

STR_TAG = b"s"
BYTES_TAG = b"b"
# A str of at most this many code points cannot exceed MAX_KEY_BYTES in UTF-8.
SAFE_STR_LEN = MAX_KEY_BYTES // 4
_unpackb = msgpack.unpackb  # raw=False is msgpack's default: str stays str, bin stays bytes


# A record is a decoded envelope, as tier 1 holds it and tier 2 stores it: an exact
# tuple in the envelope's own field order, with the format slot holding the encoded
# size. An exact tuple is ~6x cheaper to build than a slots object and as fast to
# read at a constant index (a tuple subclass such as a NamedTuple is slower to read).
Record: TypeAlias = tuple[int, int, float | None, int, Any, float, float | None, int, float]

SIZE: Final = 0
VERSION: Final = 1
EXPIRES_AT: Final = 2
FLAGS: Final = 3
VALUE: Final = 4
WRITTEN_AT: Final = 5
TTL: Final = 6
SEQ: Final = 7
LOAD_TIME: Final = 8


def make_record(
    value: Any,
    version: int,
    expires_at: float | None,
    flags: int,
    written_at: float,
    ttl: float | None,
    seq: int,
    size: int,
    load_time: float = 0.0,
) -> Record:
    """Build a record from its fields (the argument order of the former ``Record`` class)."""
    return (size, version, expires_at, flags, value, written_at, ttl, seq, load_time)


def is_negative(record: Record) -> bool:
    """Whether ``record`` is a negative entry (``ABSENT``), whatever its expiry."""
    return bool(record[FLAGS] & NEGATIVE)


def is_tombstone(record: Record) -> bool:
    """Whether ``record`` is a tombstone (a deleted key keeping its version)."""
    return bool(record[FLAGS] & TOMBSTONE)


class RecordState(IntEnum):
    """What a stored record is at a given moment (see ``record_state``)."""

    LIVE = 0  # a value to serve
    NEGATIVE = 1  # a negative entry: the source has nothing, and a lookup says so
    STALE = 2  # an expired value inside its ``stale_ttl`` window: served only where staleness is asked for
    EXPIRED = 3  # nothing to serve: a value past its stale window, or an expired negative entry
    TOMBSTONE = 4  # a deleted key keeping its version: nothing to serve, whatever its expiry


_LIVE, _NEGATIVE, _STALE, _EXPIRED, _TOMBSTONE = RecordState


def record_state(record: Record, now: float, stale_ttl: float = 0.0) -> RecordState:
    """The state of ``record`` at ``now``: the one rule every read, load and sweep decides by.

    A tombstone is a tombstone whatever its expiry. A record expires when
    ``expires_at <= now``; an expired value is ``STALE`` until ``expires_at +
    stale_ttl`` and ``EXPIRED`` from then on, while an expired negative entry is
    ``EXPIRED`` at once (negative entries are never stale). ``unpack_record``
    refuses unknown flag bits, so any flag but ``TOMBSTONE`` means negative here.
    ``TierStore.get`` inlines the ``LIVE`` test of a tier-1 hit (a test ties it to this).
    """
    flags = record[FLAGS]
    if flags & TOMBSTONE:
        return _TOMBSTONE
    expires_at = record[EXPIRES_AT]
    if expires_at is not None and expires_at <= now:
        if flags or now >= expires_at + stale_ttl:
            return _EXPIRED
        return _STALE
    return _NEGATIVE if flags else _LIVE


def purge_time(record: Record, stale_ttl: float = 0.0) -> float | None:
    """When a sweep may remove ``record`` (``None``: never by expiry).

    That is when ``record_state`` turns ``EXPIRED`` (the end of a value's stale
    window, a negative entry's expiry), or a tombstone's expiry.
    """
    expires_at = record[EXPIRES_AT]
    if expires_at is None:
        return None
    if record[FLAGS]:
        return expires_at
    return expires_at + stale_ttl


# -- values: what msgpack stores and gives back as given, and the errors naming one it cannot

# Lists/dicts a value may nest: msgpack's unpacker holds 1024 levels and the envelope takes one.
MAX_DEPTH = 1023
PLAIN_TYPES = frozenset({str, bytes, int, float, bool, type(None)})


def pack_naming(packer: msgpack.Packer, obj: Any, value: Any) -> bytes:
    """Pack ``obj`` (which holds ``value``) with ``packer``, turning msgpack's errors into ones that name the value."""
    try:
        data: bytes = packer.pack(obj)
    except TypeError as exc:
        raise TypeError(f"cannot store a value of type {_offending_type(value)}: {exc}") from None
    except OverflowError as exc:
        raise OverflowError(f"cannot store this value: {exc}") from None
    except ValueError as exc:  # UnicodeEncodeError (a lone surrogate) among them
        raise unreadable(value) or ValueError(f"cannot store this value: {exc}") from None
    except BufferError as exc:  # a memoryview that is not C-contiguous (a strided slice)
        raise ValueError(f"cannot store this value: {exc}") from None
    return data


def _offending_type(value: Any) -> str:
    """Name the first type inside ``value`` that msgpack cannot encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) in PLAIN_TYPES or isinstance(item, (str, bytes, int, float)):
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif not isinstance(item, (bytearray, memoryview, msgpack.ExtType, msgpack.Timestamp)):
            return type(item).__name__
    return type(value).__name__


def unreadable(value: Any) -> Exception | None:
    """Why msgpack could not read ``value`` back: an array or map as a dict key, or nesting too deep.

    Walks iteratively (a value too deep for msgpack is too deep for recursion) and
    stops at the first problem, so a cyclic value ends as too deep.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if _is_container(key):
                    return TypeError(
                        f"cannot store a dict key of type {type(key).__name__}: msgpack reads it back as a "
                        "list or dict, which cannot be a dict key"
                    )
            children: Any = item.values()
        elif _is_container(item):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return ValueError(f"cannot store a value that nests lists/dicts more than {MAX_DEPTH} deep")
        stack.extend((child, depth + 1) for child in children)
    return None


def _is_container(item: Any) -> bool:
    """Whether msgpack encodes ``item`` as an array or a map (an ``ExtType`` is a tuple but not an array)."""
    return isinstance(item, (list, tuple, dict)) and not isinstance(item, msgpack.ExtType)


class NotPlain(Exception):
    """Raised by the strict packer at the first object msgpack would not give back as it is."""


def _not_plain(obj: Any) -> Any:
    raise NotPlain


def new_packer() -> msgpack.Packer:
    """A packer for ``codec.encode_record``: one per writer thread or lock (packers are not thread-safe).

    It packs exact plain types only; a tuple, a subclass of dict/list/str/int or
    anything msgpack does not know stops it, and ``codec.encode_record`` takes the slow
    path for that value.
    """
    return msgpack.Packer(strict_types=True, default=_not_plain)


def encode_key(key: object) -> bytes:
    """Encode a str/bytes key as tagged bytes; ``"a"`` and ``b"a"`` stay distinct."""
    if isinstance(key, str):
        if len(key) <= SAFE_STR_LEN:
            try:
                return STR_TAG + key.encode()
            except UnicodeEncodeError as exc:
                raise ValueError(f"key is not valid Unicode: {exc}") from None
        try:
            raw = key.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(f"key is not valid Unicode: {exc}") from None
        if len(raw) > MAX_KEY_BYTES:
            raise ValueError(f"key is {len(raw)} bytes encoded; the limit is {MAX_KEY_BYTES}")
        return STR_TAG + raw
    if isinstance(key, bytes):
        if len(key) > MAX_KEY_BYTES:
            raise ValueError(f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}")
        return BYTES_TAG + key
    raise TypeError(f"keys must be str or bytes, not {type(key).__name__}")


def decode_key(tagged: bytes) -> Key:
    """Invert ``encode_key``; ``CorruptRecord`` for a key no ``encode_key`` could have made."""
    tag, raw = tagged[:1], tagged[1:]
    if tag == STR_TAG:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise CorruptRecord(f"str key {bytes(raw)[:64]!r} is not UTF-8 ({exc.reason})") from None
    if tag == BYTES_TAG:
        return bytes(raw)
    raise CorruptRecord(f"unknown key tag {tag!r}")


def check_version(version: object) -> int:
    """Validate a caller's version: a non-negative int that fits in 63 bits."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"version must be an int, not {type(version).__name__}")
    if version < 0:
        raise ValueError(f"version must be >= 0, got {shown(version)}")
    if version > MAX_VERSION:
        raise ValueError(f"version must be < 2**63, got {shown(version)}")
    return version


_loose_packer = msgpack.Packer  # the slow path's packer class: tuples as lists, subclasses as their base
# A value nesting deeper than msgpack's reader allows takes at least this many bytes
# to encode; shorter envelopes cannot hold one, so they skip the read-back check.
_DEEP_ENOUGH_BYTES = MAX_DEPTH


def encode_record(
    packer: msgpack.Packer,
    value: Any,
    version: int,
    expires_at: float | None,
    flags: int,
    written_at: float,
    ttl: float | None,
    seq: int,
    load_time: float = 0.0,
) -> tuple[bytes, Any]:
    """The envelope of a record and the value exactly as tier 2 will give it back.

    A value made of exact plain types (dict, list, str, bytes, int, float, bool,
    None) reads back equal and of the same types, so it is returned as it is
    (tier 1 then shares it with the caller, as cachetools does). Anything else
    (tuples, subclasses) is packed as msgpack packs it and read back once, which
    is also the check that tier 2 can give it back at all. Raises
    ``TypeError``/``ValueError``/``OverflowError`` naming a value that cannot be stored.
    """
    if type(value) is bytearray or (type(value) is memoryview and value.c_contiguous):  # read back as bytes
        value = bytes(value)  # so tier 1 holds bytes too (a strided view is refused, as msgpack refuses it)
    envelope = [FORMAT, version, expires_at, flags, value, written_at, ttl, seq, load_time]
    try:
        data: bytes = packer.pack(envelope)
    except NotPlain:
        packer.reset()
        data = pack_naming(_loose_packer(), envelope, value)
        return data, plain_value(value, data)
    except Exception:
        packer.reset()
        pack_naming(_loose_packer(), envelope, value)  # raises the error that names the value
        raise
    if len(data) > _DEEP_ENOUGH_BYTES and type(value) not in PLAIN_TYPES:
        return data, plain_value(value, data)
    return data, value


def plain_value(value: Any, data: bytes) -> Any:
    """The value exactly as tier 2 would decode it from the envelope ``data`` (a tuple becomes a list).

    This is also the check that tier 2 can give the value back at all: the same
    ``unpackb`` call as ``unpack_record``, so a value is refused exactly when its
    record would read as corrupt (``TypeError``/``ValueError`` naming the problem).
    Plain values (str, bytes, int, float, bool, None) always decode and cost nothing.
    """
    if type(value) in PLAIN_TYPES:
        return value
    try:
        return _unpackb(data, strict_map_key=False)[4]
    except Exception as exc:  # msgpack raises several unrelated types
        raise unreadable(value) or ValueError(f"msgpack cannot read this value back: {exc!r}") from None


def unpack_record(
    data: bytes,
    max_bytes: int | None = None,
    _unpackb: Any = _unpackb,  # builtins bound as positional defaults: local loads, no keyword lookups
    _type: Any = type,
    _int: Any = int,
    _float: Any = float,
    _len: Any = len,
    _tuple: Any = tuple,
    _room: int = RECORD_ROOM,
) -> Record:
    """Decode and validate an envelope; ``CorruptRecord`` on anything malformed.

    ``max_bytes`` (``max_value_bytes``) refuses a record longer than it plus ``RECORD_ROOM``
    before decoding it (a record no ``set`` could have written costs an error, not memory). The
    checks are written for the tier-2 read path: exact type tests (callers pass one or two arguments).
    """
    if max_bytes is not None and _len(data) > max_bytes + _room:
        raise CorruptRecord(f"record is {len(data)} bytes, over max_value_bytes ({max_bytes}) + {_room}; not decoded")
    try:
        items = _unpackb(data, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord(f"undecodable record: {str(exc) or type(exc).__name__}") from None
    if _type(items) is list and _len(items) >= 9:
        if _len(items) > 9:
            del items[9:]  # later fields, of a newer writer, are not read
        fmt, version, expires_at, flags, _, written_at, ttl, seq, load_time = items
        if (
            fmt == FORMAT
            and _type(version) is _int
            and _type(flags) is _int
            and _type(seq) is _int
            and 0 <= version <= MAX_VERSION
            and 0 <= flags <= _KNOWN_FLAGS  # any combination of the known bits
            and (expires_at is None or _type(expires_at) is _int or _type(expires_at) is _float)
            and expires_at == expires_at  # not NaN
            and (ttl is None or _type(ttl) is _float or _type(ttl) is _int)
            and (_type(written_at) is _float or _type(written_at) is _int)
            and (_type(load_time) is _float or _type(load_time) is _int)
        ):
            items[0] = _len(data)  # the format slot holds the encoded size
            return _tuple(items)  # type: ignore[no-any-return]  # checked field by field above
    raise CorruptRecord(_malformed(items))


def _malformed(items: Any) -> str:
    """Why a decoded envelope is refused (only built once a record is known to be bad)."""
    if type(items) is not list or len(items) < 9:
        return "record is not an envelope array"
    expires_at = items[2]
    if type(expires_at) is float and expires_at != expires_at:
        return "record expiry is NaN"
    return f"record header is malformed: {_FIELDS_REPR.repr(items[:4])}"


# A hostile header field may nest as deep as msgpack reads (past Python's repr recursion)
# or be as long as the record: the message shows a bounded sketch of it.
_FIELDS_REPR = reprlib.Repr()
_FIELDS_REPR.maxlevel = 4
_FIELDS_REPR.maxstring = _FIELDS_REPR.maxother = 40
