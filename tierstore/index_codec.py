"""The on-disk layout of a sorted index: record keys, scores and the meta record.

Layout (``N`` is the index name as ``encode_key`` tags it, prefixed by its
length in two bytes, so no index's key prefix covers another's; ``G`` is an
8-byte big-endian generation; ``M`` a member as ``encode_key`` tags it; ``S``
a score in the 8-byte order-preserving encoding below)::

    NS_INDEX_MEMBER + N + G + M      -> S     member -> score
    NS_INDEX_ORDER  + N + G + S + M  -> b""   (score, member) order
    NS_INDEX_META   + N              -> msgpack map (generation, count, stamps)

Order is ``(score, member)`` with members compared by their encoded bytes:
bytes members sort before str members, each in byte (UTF-8: code point)
order. Scores are kept as float64: ints are converted (ints past 2**53 lose
precision), ``-0.0`` is stored as ``0.0``, infinities are allowed and NaN is a
``ValueError``.

This module is separate from ``ranking`` (the live ``SortedIndex``) because
three readers share the format without sharing the index: ``SortedIndex``
itself (its record keys come from ``IndexKeys``, its cursors from
``encode_cursor``), the restore-time repair (``index_repair``), and tools that read a
store directory without opening a store (``reader``, the inspect CLI), which
use ``index_meta_key`` and ``decode_index_meta`` for the meta record,
``read_index`` for the members of a generation, and ``parse_index_key`` and
``check_index_record`` to decode any index record. It holds no state and does
no I/O beyond reading the plain handle ``read_index`` is given.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from .codec import Key, decode_key, encode_key
from .errors import CorruptRecord, shown
from .keyspace import NS_INDEX_MEMBER, NS_INDEX_META, NS_INDEX_ORDER

__all__ = [
    "Pairs",
    "GEN_BYTES",
    "IndexMeta",
    "IndexKey",
    "IndexKeys",
    "encode_score",
    "decode_score",
    "decode_stored_score",
    "check_stamp",
    "iter_pairs",
    "encode_cursor",
    "decode_cursor",
    "name_part",
    "generation_part",
    "index_meta_key",
    "order_prefix",
    "parse_index_key",
    "decode_index_meta",
    "check_index_record",
    "order_item",
    "read_index",
]

_SIGN = 1 << 63
_ALL_BITS = (1 << 64) - 1
_STAMP_TYPES = (type(None), bool, int, float, str, bytes)
GEN_BYTES = 8  # a generation, and a score, are 8 bytes
_MAX_INT = 2**63 - 1  # generations, counts and stamps stay far below it

Pairs = Iterable[tuple[Key, float]] | Mapping[Key, float]

# -- score encoding -------------------------------------------------------------


def encode_score(score: object) -> bytes:
    """Encode a number as 8 bytes whose byte order is the numeric order of float64.

    Positive floats get the sign bit set; negative ones are inverted entirely,
    so larger magnitudes sort first among negatives.
    """
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise TypeError(f"score must be an int or float, not {type(score).__name__}")
    try:
        value = float(score)
    except OverflowError:
        raise OverflowError(f"score {shown(score)} does not fit in a float64") from None
    if math.isnan(value):
        raise ValueError("score must not be NaN")
    if value == 0.0:
        value = 0.0  # -0.0 and 0.0 are one score
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    bits = bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN
    encoded: bytes = bits.to_bytes(8, "big")
    return encoded


def decode_score(raw: bytes) -> float:
    """Invert ``encode_score``."""
    bits = int.from_bytes(raw, "big")
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL_BITS
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def decode_stored_score(raw: bytes) -> float:
    """A score as an index record stores it; ``CorruptRecord`` unless it is 8 bytes and not NaN."""
    if len(raw) != GEN_BYTES or math.isnan(score := decode_score(raw)):
        raise CorruptRecord(f"malformed score {raw!r}")
    return score


def check_stamp(stamp: object) -> Any:
    """Stamps are msgpack scalars so they compare equal after a round trip."""
    if not isinstance(stamp, _STAMP_TYPES):
        raise TypeError(f"an index stamp must be None, bool, int, float, str or bytes, not {type(stamp).__name__}")
    if isinstance(stamp, int) and not -(2**63) <= stamp < 2**64:
        raise OverflowError(f"an index stamp int must fit in 64 bits, got {shown(stamp)}")
    if isinstance(stamp, float) and math.isnan(stamp):
        raise ValueError("an index stamp must not be NaN (it would never compare equal)")
    return stamp


def iter_pairs(pairs: object) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(encoded member, encoded score)`` from pairs or a mapping, validating each."""
    if isinstance(pairs, Mapping):
        pairs = pairs.items()
    if not isinstance(pairs, Iterable) or isinstance(pairs, (str, bytes)):
        raise TypeError(f"pairs must be an iterable of (member, score), not {type(pairs).__name__}")
    for pair in pairs:
        try:
            member, score = pair
        except (TypeError, ValueError):
            raise TypeError(f"each pair must be (member, score), got {pair!r}") from None
        yield encode_key(member), encode_score(score)


# -- meta record ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IndexMeta:
    """The per-index record: live generation, its count, and the stamps.

    ``gen`` is the live generation and ``count`` its member count; ``stamp`` is
    the source stamp of the last ``replace`` (meaningful only when ``built``).

    ``building`` lists generations a ``replace`` is writing and ``garbage`` old
    ones still to purge; both are purged at open, since no build survives a restart.
    """

    gen: int = 0
    next_gen: int = 1
    count: int = 0
    built: bool = False
    stamp: Any = None
    dirty: int = 0
    building: tuple[int, ...] = ()
    garbage: tuple[int, ...] = ()

    def pack(self) -> bytes:
        fields = dataclasses.asdict(self)
        fields["building"] = list(self.building)
        fields["garbage"] = list(self.garbage)
        data: bytes = msgpack.packb(fields)
        return data

    @classmethod
    def unpack(cls, data: bytes, where: bytes) -> IndexMeta:
        try:
            fields = msgpack.unpackb(data, raw=False)
            meta = cls(**fields)
            meta = dataclasses.replace(meta, building=tuple(meta.building), garbage=tuple(meta.garbage))
        except Exception:  # msgpack and the constructor raise several unrelated types
            raise CorruptRecord(f"index meta record {where!r} is corrupt") from None
        ints = (meta.gen, meta.next_gen, meta.count, meta.dirty, *meta.building, *meta.garbage)
        if any(type(value) is not int for value in ints) or type(meta.built) is not bool:
            raise CorruptRecord(f"index meta record {where!r} has wrong types")
        if not all(0 <= value <= _MAX_INT for value in ints):
            raise CorruptRecord(f"index meta record {where!r} holds a number out of range")
        pending = (*meta.building, *meta.garbage)
        if meta.next_gen <= meta.gen or meta.gen in pending or any(gen >= meta.next_gen for gen in pending):
            raise CorruptRecord(f"index meta record {where!r} contradicts itself (generations)")
        return meta


def decode_index_meta(data: bytes, where: bytes = b"") -> IndexMeta:
    """An index meta record (``where``, its key, names it in the ``CorruptRecord`` a damaged one raises)."""
    return IndexMeta.unpack(data, where)


# -- record keys --------------------------------------------------------------------


class IndexKey(NamedTuple):
    """What an index record's key says: the index, and for member and order records the rest.

    ``generation`` and ``member`` are ``None`` for a meta record; ``score`` is set
    for order records only (a member record holds its score in the value).
    """

    namespace: bytes
    name: Key
    generation: int | None = None
    member: Key | None = None
    score: float | None = None


def generation_part(gen: int) -> bytes:
    return gen.to_bytes(GEN_BYTES, "big")


def name_part(name: Key) -> bytes:
    """``N``: the index name, tagged and prefixed by its length."""
    tag = encode_key(name)
    return len(tag).to_bytes(2, "big") + tag


def index_meta_key(name: Key) -> bytes:
    """The key of the meta record of the index ``name``."""
    return NS_INDEX_META + name_part(name)


def order_prefix(name: Key, generation: int) -> bytes:
    """The prefix of the order records of one generation of the index ``name``."""
    return NS_INDEX_ORDER + name_part(name) + generation_part(generation)


class IndexKeys:
    """The record keys of one index, built as the layout above says (``SortedIndex`` keeps one).

    ``tag`` arguments are members as ``encode_key`` tags them, ``score`` ones
    scores as ``encode_score`` encodes them.
    """

    __slots__ = ("meta", "member_base", "order_base")

    def __init__(self, name: Key) -> None:
        part = name_part(name)
        self.meta = NS_INDEX_META + part
        self.member_base = NS_INDEX_MEMBER + part
        self.order_base = NS_INDEX_ORDER + part

    def member(self, gen: int, tag: bytes) -> bytes:
        """``NS_INDEX_MEMBER + N + G + M``: the key of a member record."""
        return self.member_base + generation_part(gen) + tag

    def order(self, gen: int, score: bytes, tag: bytes) -> bytes:
        """``NS_INDEX_ORDER + N + G + S + M``: the key of an order record."""
        return self.order_base + generation_part(gen) + score + tag

    def member_prefix(self, gen: int) -> bytes:
        """The prefix of the member records of generation ``gen``."""
        return self.member_base + generation_part(gen)

    def order_prefix(self, gen: int) -> bytes:
        """The prefix of the order records of generation ``gen``."""
        return self.order_base + generation_part(gen)


def _split_name(raw_key: bytes) -> tuple[Key, bytes]:
    """The index name after the namespace byte, and what follows it."""
    size = int.from_bytes(raw_key[1:3], "big")
    end = 3 + size
    if len(raw_key) < end or size == 0:
        raise CorruptRecord("index record key is too short for its name")
    return decode_key(raw_key[3:end]), raw_key[end:]


def parse_index_key(raw_key: bytes) -> IndexKey:
    """Decode the key of an index meta, member or order record.

    Raises ``CorruptRecord`` (or ``decode_key``'s ``ValueError``) for a key that
    does not follow the layout in the module docstring, and for a NaN score.
    """
    namespace = raw_key[:1]
    if namespace not in (NS_INDEX_META, NS_INDEX_MEMBER, NS_INDEX_ORDER):
        raise CorruptRecord(f"{raw_key!r} is not an index record")
    name, rest = _split_name(raw_key)
    if namespace == NS_INDEX_META:
        if rest:
            raise CorruptRecord("index meta key has trailing bytes")
        return IndexKey(namespace, name)
    generation = int.from_bytes(rest[:GEN_BYTES], "big")
    if namespace == NS_INDEX_MEMBER:
        return IndexKey(namespace, name, generation, decode_key(rest[GEN_BYTES:]))
    score = decode_stored_score(rest[GEN_BYTES : 2 * GEN_BYTES])
    return IndexKey(namespace, name, generation, decode_key(rest[2 * GEN_BYTES :]), score)


def check_index_record(raw_key: bytes, data: bytes) -> IndexKey:
    """Decode an index record, key and value; raises as ``parse_index_key`` does when damaged."""
    key = parse_index_key(raw_key)
    if key.namespace == NS_INDEX_META:
        decode_index_meta(data, raw_key)
    elif key.namespace == NS_INDEX_MEMBER:
        decode_stored_score(data)
    elif data:
        raise CorruptRecord("index order record has a value")
    return key


def order_item(raw_key: bytes, start: int) -> tuple[Key, float]:
    """``(member, score)`` of an order record key whose ``S + M`` part begins at ``start``."""
    return decode_key(raw_key[start + GEN_BYTES :]), decode_score(raw_key[start : start + GEN_BYTES])


def read_index(
    db: Any, name: Key, generation: int, offset: int = 0, limit: int | None = None
) -> Iterator[tuple[Key, float]]:
    """``(member, score)`` of one generation in ``(score, member)`` order, from ``offset``, streamed.

    ``db`` is a plain plyvel handle or snapshot, only read (no ``DiskTier``); find
    the live generation with ``decode_index_meta``. Skipped records are not decoded.
    """
    prefix = order_prefix(name, generation)
    keys = db.iterator(prefix=prefix, include_value=False, fill_cache=False)
    for raw_key in itertools.islice(keys, offset, None if limit is None else offset + limit):
        yield order_item(raw_key, len(prefix))


def encode_cursor(raw_key: bytes, start: int) -> str:
    """The ``page_after`` cursor naming an order record's position: its ``S + M`` part (from ``start``), in hex."""
    return raw_key[start:].hex()


def decode_cursor(cursor: object) -> bytes:
    """The ``S + M`` position an ``encode_cursor`` cursor names; ``TypeError``/``ValueError`` for a bad one."""
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be a str from page_after or None, not {type(cursor).__name__}")
    try:
        raw = bytes.fromhex(cursor)
    except ValueError:
        raise ValueError(f"malformed cursor {_sketch(cursor)}") from None
    if len(raw) < 9 or raw[8:9] not in (b"s", b"b"):
        raise ValueError(f"malformed cursor {_sketch(cursor)}")
    return raw


def _sketch(cursor: str) -> str:
    """A cursor as an error names it: whole up to 80 characters (a client's cursor may be any length)."""
    return repr(cursor) if len(cursor) <= 80 else f"{cursor[:60]!r}... ({len(cursor)} characters)"
