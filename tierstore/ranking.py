"""SortedIndex: ordered pagination on LevelDB's sorted keys, and its stamp-driven refresher.

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

Every mutation of an index holds that index's lock and writes its member,
order and meta records in one LevelDB batch, so they never disagree. Reads
take a snapshot together with the generation and count under the lock and
then read only from that snapshot. ``replace`` builds a new generation beside
the live one (in as many batches as it needs) and swaps it in with one meta
write, so a reader sees the old index or the new one, never a mix; the old
generation is purged afterwards (after a crash: when the index is next
opened with ``store.index(name)``).

Use one ``SortedIndex`` per name per store (``store.index(name)``): the
object caches the meta record that its lock protects.

Tools that read a store directory without opening a store (the inspect CLI)
use the module functions instead: ``index_meta_key`` and ``decode_index_meta``
for the meta record, ``read_index`` for the members of a generation,
``parse_index_key`` and ``check_index_record`` to decode any index record.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from .codec import Key, decode_key, encode_key
from .disk import NS_INDEX_MEMBER, NS_INDEX_META, NS_INDEX_ORDER, DiskTier, Op, prefix_end
from .errors import CorruptRecord, StoreClosed
from .leveldb import on_fork

__all__ = [
    "SortedIndex",
    "IndexRefresher",
    "IndexMeta",
    "IndexKey",
    "encode_score",
    "decode_score",
    "decode_stored_score",
    "index_meta_key",
    "order_prefix",
    "parse_index_key",
    "decode_index_meta",
    "check_index_record",
    "read_index",
    "repair_indexes",
    "DEFAULT_REFRESH_INTERVAL",
]

log = logging.getLogger("tierstore")

DEFAULT_REFRESH_INTERVAL = 5.0
_SIGN = 1 << 63
_ALL_BITS = (1 << 64) - 1
_READ_CHUNK = 1024
_BUILD_CHUNK = 10_000
_STAMP_TYPES = (type(None), bool, int, float, str, bytes)
_GEN_BYTES = 8  # a generation, and a score, are 8 bytes

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
        raise OverflowError(f"score {score} does not fit in a float64") from None
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
    if len(raw) != _GEN_BYTES or math.isnan(score := decode_score(raw)):
        raise CorruptRecord(f"malformed score {raw!r}")
    return score


def _check_stamp(stamp: object) -> Any:
    """Stamps are msgpack scalars so they compare equal after a round trip."""
    if not isinstance(stamp, _STAMP_TYPES):
        raise TypeError(f"an index stamp must be None, bool, int, float, str or bytes, not {type(stamp).__name__}")
    if isinstance(stamp, int) and not -(2**63) <= stamp < 2**64:
        raise OverflowError(f"an index stamp int must fit in 64 bits, got {stamp}")
    if isinstance(stamp, float) and math.isnan(stamp):
        raise ValueError("an index stamp must not be NaN (it would never compare equal)")
    return stamp


def _check_count(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _iter_pairs(pairs: object) -> Iterator[tuple[bytes, bytes]]:
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


def _gen(gen: int) -> bytes:
    return gen.to_bytes(_GEN_BYTES, "big")


def _name_part(name: Key) -> bytes:
    """``N``: the index name, tagged and prefixed by its length."""
    tag = encode_key(name)
    return len(tag).to_bytes(2, "big") + tag


def index_meta_key(name: Key) -> bytes:
    """The key of the meta record of the index ``name``."""
    return NS_INDEX_META + _name_part(name)


def order_prefix(name: Key, generation: int) -> bytes:
    """The prefix of the order records of one generation of the index ``name``."""
    return NS_INDEX_ORDER + _name_part(name) + _gen(generation)


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
    generation = int.from_bytes(rest[:_GEN_BYTES], "big")
    if namespace == NS_INDEX_MEMBER:
        return IndexKey(namespace, name, generation, decode_key(rest[_GEN_BYTES:]))
    score = decode_stored_score(rest[_GEN_BYTES : 2 * _GEN_BYTES])
    return IndexKey(namespace, name, generation, decode_key(rest[2 * _GEN_BYTES :]), score)


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


def _order_item(raw_key: bytes, start: int) -> tuple[Key, float]:
    """``(member, score)`` of an order record key whose ``S + M`` part begins at ``start``."""
    return decode_key(raw_key[start + _GEN_BYTES :]), decode_score(raw_key[start : start + _GEN_BYTES])


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
        yield _order_item(raw_key, len(prefix))


def repair_indexes(db: Any) -> int:
    """Make every index's records agree again; returns how many records it wrote or deleted.

    For a restore: a checkpoint killed half way may hold an index's member,
    order and meta records from different moments. Member records of the live
    generation are the truth: order records without their member are deleted,
    missing ones written, and the count set to the members found. Records of
    other generations (and undecodable ones) are dropped. ``db`` is a plain
    plyvel handle that nothing else uses meanwhile.
    """
    metas: dict[bytes, IndexMeta] = {}
    for raw_key, data in db.iterator(prefix=NS_INDEX_META):
        try:
            metas[raw_key[1:]] = decode_index_meta(data, raw_key)
        except CorruptRecord:
            continue  # rewritten below from the records found
    counts: dict[bytes, int] = {}
    top: dict[bytes, int] = {}
    batch = _RepairBatch(db)
    snapshot = db.snapshot()
    try:
        for raw_key, data in snapshot.iterator(prefix=NS_INDEX_MEMBER):
            place = _place(raw_key, metas, top)
            if place is None or len(data) != _GEN_BYTES:
                batch.delete(raw_key)
                continue
            part, end = place
            counts[part] = counts.get(part, 0) + 1
            order_key = NS_INDEX_ORDER + raw_key[1:end] + data + raw_key[end:]
            if snapshot.get(order_key) is None:
                batch.put(order_key, b"")
        for raw_key in snapshot.iterator(prefix=NS_INDEX_ORDER, include_value=False):
            place = _place(raw_key, metas, top)
            if place is None:
                batch.delete(raw_key)
                continue
            _, end = place
            score = raw_key[end : end + _GEN_BYTES]
            if snapshot.get(NS_INDEX_MEMBER + raw_key[1:end] + raw_key[end + _GEN_BYTES :]) != score:
                batch.delete(raw_key)
    finally:
        snapshot.close()
    for part in {*metas, *top}:
        meta = metas.get(part, IndexMeta())
        fixed = dataclasses.replace(
            meta,
            count=counts.get(part, 0),
            next_gen=max(meta.next_gen, top.get(part, 0) + 1),
            building=(),
            garbage=(),
        )
        if fixed != meta or part not in metas:
            batch.put(NS_INDEX_META + part, fixed.pack())
    return batch.finish()


def _place(raw_key: bytes, metas: dict[bytes, IndexMeta], top: dict[bytes, int]) -> tuple[bytes, int] | None:
    """``(N part, end of G)`` of a member or order record of a live generation; ``None`` for others."""
    size = int.from_bytes(raw_key[1:3], "big")
    end = 3 + size + _GEN_BYTES
    if size == 0 or len(raw_key) <= end:
        return None
    part = raw_key[1 : 3 + size]
    gen = int.from_bytes(raw_key[3 + size : end], "big")
    top[part] = max(top.get(part, 0), gen)
    return (part, end) if gen == metas.get(part, IndexMeta()).gen else None


class _RepairBatch:
    """Puts and deletes written in batches of a bounded size, counted."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._batch = db.write_batch()
        self._pending = 0
        self.total = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._batch.put(key, value)
        self._grow()

    def delete(self, key: bytes) -> None:
        self._batch.delete(key)
        self._grow()

    def _grow(self) -> None:
        self._pending += 1
        self.total += 1
        if self._pending >= _READ_CHUNK:
            self._batch.write()
            self._batch = self._db.write_batch()
            self._pending = 0

    def finish(self) -> int:
        self._batch.write()
        return self.total


# -- the index --------------------------------------------------------------------


class SortedIndex:
    """Members with scores, ordered by ``(score, member)``, durable in LevelDB.

    ``page`` is O(offset + limit); ``page_after`` is O(log n + limit) and is the
    way to walk a large index. ``rank`` counts the members before one, so it is
    O(rank). ``len()`` is O(1).
    """

    def __init__(self, disk: DiskTier, name: Key) -> None:
        part = _name_part(name)
        self._name = name
        self._disk = disk
        self._meta_key = NS_INDEX_META + part
        self._member_base = NS_INDEX_MEMBER + part
        self._order_base = NS_INDEX_ORDER + part
        self._lock = threading.Lock()
        raw = disk.get(self._meta_key)
        self._meta = IndexMeta() if raw is None else decode_index_meta(raw, self._meta_key)
        if self._meta.building or self._meta.garbage:
            self._purge_leftovers()
        on_fork(self)

    def _forked_(self) -> None:
        """In a forked child: a lock a parent thread held at the fork must not hang a call that will
        raise ``StoreForked`` at the disk gate."""
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------------

    @property
    def name(self) -> Key:
        return self._name

    @property
    def stamp(self) -> Any:
        """The source stamp the last ``replace`` reflects; ``None`` if never built."""
        return self._meta.stamp if self._meta.built else None

    @property
    def built(self) -> bool:
        """Whether ``replace`` ever ran on this index (``stamp`` may itself be ``None``)."""
        return self._meta.built

    @property
    def dirty_stamp(self) -> int:
        """The stamp ``mark_dirty`` renews: an int that grows by one per call, 0 at first."""
        return self._meta.dirty

    def __len__(self) -> int:
        if self._disk.closed:
            raise self._disk.closed_error()
        return self._meta.count

    def __contains__(self, member: object) -> bool:
        if not isinstance(member, (str, bytes)):
            return False
        return self.score(member) is not None

    def __repr__(self) -> str:
        return f"SortedIndex({self._name!r}, members={self._meta.count})"

    # -- writing ------------------------------------------------------------------

    def add(self, member: Key, score: float) -> None:
        """Set ``member``'s score, moving it if it was already in the index."""
        self._apply({encode_key(member): encode_score(score)})

    def add_many(self, pairs: Pairs) -> None:
        """Add or re-score many members in one batch; a later pair for a member wins.

        Every pair is validated first, so bad input changes nothing.
        """
        self._apply(dict(_iter_pairs(pairs)))

    def remove(self, member: Key) -> bool:
        """Remove ``member``; ``True`` if it was in the index."""
        tag = encode_key(member)
        with self._lock:
            gen = _gen(self._meta.gen)
            member_key = self._member_base + gen + tag
            old = self._disk.get(member_key)
            if old is None:
                return False
            meta = dataclasses.replace(self._meta, count=self._meta.count - 1)
            self._commit(meta, [(member_key, None), (self._order_base + gen + old + tag, None)])
            return True

    def mark_dirty(self) -> None:
        """Renew the dirty stamp: the source changed, so a refresher rebuilds the index."""
        with self._lock:
            self._commit(dataclasses.replace(self._meta, dirty=self._meta.dirty + 1))

    def replace(self, pairs: Pairs, stamp: Any = ...) -> None:
        """Rebuild the index from ``pairs`` atomically; readers see the old index or the new.

        ``stamp`` is the source stamp this rebuild reflects; left out, it is the
        dirty stamp as of the call. Writes made to the index while ``replace``
        runs are dropped with the old generation; the last ``replace`` to finish
        wins. Bad input raises and leaves the old index in place.
        """
        if stamp is not ...:
            _check_stamp(stamp)
        with self._lock:
            source = self._meta.dirty if stamp is ... else stamp
            gen = self._meta.next_gen
            self._commit(
                dataclasses.replace(self._meta, next_gen=gen + 1, building=(*self._meta.building, gen)),
            )
        try:
            count = self._build(gen, pairs)
        except BaseException:
            self._abandon(gen)
            raise
        with self._lock:
            old = self._meta
            building = tuple(g for g in old.building if g != gen)
            meta = dataclasses.replace(
                old, gen=gen, count=count, built=True, stamp=source, building=building, garbage=(*old.garbage, old.gen)
            )
            self._commit(meta)
        self._purge_garbage()

    def _apply(self, staged: dict[bytes, bytes]) -> None:
        """Write ``member tag -> score`` changes to the live generation in one batch."""
        with self._lock:
            gen = _gen(self._meta.gen)
            ops: list[Op] = []
            added = sum(self._stage(ops, gen, tag, score) for tag, score in staged.items())
            if not ops:
                return
            meta = dataclasses.replace(self._meta, count=self._meta.count + added) if added else None
            self._commit(meta, ops)

    def _stage(self, ops: list[Op], gen: bytes, tag: bytes, score: bytes) -> int:
        """Append the ops that give ``tag`` this score; return 1 if it is a new member."""
        member_key = self._member_base + gen + tag
        old = self._disk.get(member_key)
        if old == score:
            return 0
        if old is not None:
            ops.append((self._order_base + gen + old + tag, None))
        ops.append((member_key, score))
        ops.append((self._order_base + gen + score + tag, b""))
        return 0 if old is not None else 1

    def _commit(self, meta: IndexMeta | None, ops: list[Op] | None = None) -> None:
        """Write ``ops`` and the meta record in one batch, then adopt the meta (lock held)."""
        batch = list(ops or ())
        if meta is not None:
            batch.append((self._meta_key, meta.pack()))
        self._disk.write(batch)
        if meta is not None:
            self._meta = meta

    def _build(self, gen: int, pairs: Pairs) -> int:
        """Write ``pairs`` into generation ``gen`` in chunks; return the member count."""
        g = _gen(gen)
        count = 0
        flushed = False
        source = _iter_pairs(pairs)
        while chunk := dict(itertools.islice(source, _BUILD_CHUNK)):
            ops: list[Op] = []
            for tag, score in chunk.items():
                if flushed:  # a member may repeat one from an earlier chunk
                    count += self._stage(ops, g, tag, score)
                else:
                    ops.append((self._member_base + g + tag, score))
                    ops.append((self._order_base + g + score + tag, b""))
                    count += 1
            self._disk.write(ops)
            flushed = True
        return count

    def _abandon(self, gen: int) -> None:
        """Turn a failed build into garbage and purge it; errors here must not hide the first."""
        try:
            with self._lock:
                building = tuple(g for g in self._meta.building if g != gen)
                meta = dataclasses.replace(self._meta, building=building, garbage=(*self._meta.garbage, gen))
                self._commit(meta)
            self._purge_garbage()
        except Exception:
            log.debug("could not purge the abandoned build of index %r", self._name, exc_info=True)

    def _purge_garbage(self) -> None:
        with self._lock:
            gens = set(self._meta.garbage)
        for gen in gens:
            self._purge(gen)
        with self._lock:
            garbage = tuple(g for g in self._meta.garbage if g not in gens)
            self._commit(dataclasses.replace(self._meta, garbage=garbage))

    def _purge_leftovers(self) -> None:
        """At open: drop generations of builds that a crash interrupted, and old ones."""
        for gen in {*self._meta.building, *self._meta.garbage}:
            self._purge(gen)
        with self._lock:
            self._commit(dataclasses.replace(self._meta, building=(), garbage=()))

    def _purge(self, gen: int) -> None:
        """Delete every record of one generation, in batches."""
        for base in (self._member_base, self._order_base):
            prefix = base + _gen(gen)
            snapshot = self._disk.snapshot()
            try:
                chunks = self._disk.chunks(
                    snapshot, prefix, prefix_end(prefix), include_value=False, size=_READ_CHUNK * 4
                )
                for keys in chunks:
                    self._disk.write([(key, None) for key in keys])
            finally:
                self._disk.release(snapshot)

    # -- reading ------------------------------------------------------------------

    def score(self, member: Key) -> float | None:
        """``member``'s score, or ``None`` when it is not in the index."""
        tag = encode_key(member)
        with self._lock:
            raw = self._disk.get(self._member_base + _gen(self._meta.gen) + tag)
        return None if raw is None else decode_score(raw)

    def rank(self, member: Key, reverse: bool = False) -> int | None:
        """0-based position of ``member`` in ``(score, member)`` order; O(rank) as it counts."""
        tag = encode_key(member)
        snapshot, gen, count = self._view()
        try:
            prefix = self._order_base + _gen(gen)
            self._disk.enter()
            try:
                raw = snapshot.get(self._member_base + _gen(gen) + tag)
            finally:
                self._disk.exit()
            if raw is None:
                return None
            chunks = self._disk.chunks(snapshot, prefix, prefix + raw + tag, include_value=False, size=_READ_CHUNK)
            before = sum(len(keys) for keys in chunks)
        finally:
            self._disk.release(snapshot)
        return count - 1 - before if reverse else before

    def page(self, offset: int = 0, limit: int = 20, reverse: bool = False) -> list[tuple[Key, float]]:
        """Members ``offset`` to ``offset + limit`` in order (``reverse``: exactly the reverse); O(offset + limit)."""
        _check_count(offset, "offset", minimum=0)
        _check_count(limit, "limit", minimum=0)
        if limit == 0:
            return []
        snapshot, gen, _ = self._view()
        try:
            prefix = self._order_base + _gen(gen)
            keys = _take(self._disk, snapshot, prefix, prefix_end(prefix), reverse=reverse, skip=offset, limit=limit)
        finally:
            self._disk.release(snapshot)
        return [_order_item(key, len(prefix)) for key in keys]

    def page_after(
        self, cursor: str | None, limit: int = 20, reverse: bool = False
    ) -> tuple[list[tuple[Key, float]], str | None]:
        """Keyset pagination: up to ``limit`` members after ``cursor`` and the cursor of the next page.

        Start with ``cursor=None``; ``next_cursor`` is ``None`` after the last page.
        A cursor is an opaque ASCII str (URL-safe) naming a position in the order
        (the last ``(score, member)`` returned), so it stays valid across writes
        and rebuilds: members present throughout a walk are returned exactly once,
        members added behind the cursor at most once, and a member re-scored during
        the walk may be seen twice or not at all. Use the same ``reverse`` on
        every page of a walk. O(log n + limit).
        """
        _check_count(limit, "limit", minimum=1)
        position = None if cursor is None else _decode_cursor(cursor)
        snapshot, gen, _ = self._view()
        try:
            prefix = self._order_base + _gen(gen)
            lower: bytes = prefix
            upper = prefix_end(prefix)
            after = False
            if position is not None:
                if reverse:
                    upper = prefix + position
                else:
                    lower, after = prefix + position, True
            keys = _take(
                self._disk, snapshot, lower, upper, reverse=reverse, skip=0, limit=limit + 1, exclude_lower=after
            )
        finally:
            self._disk.release(snapshot)
        items = [_order_item(key, len(prefix)) for key in keys[:limit]]
        next_cursor = keys[limit - 1][len(prefix) :].hex() if len(keys) > limit else None
        return items, next_cursor

    def range_by_score(self, lo: float, hi: float, limit: int | None = None) -> list[tuple[Key, float]]:
        """Members with ``lo <= score <= hi`` in order, at most ``limit`` of them."""
        low, high = encode_score(lo), encode_score(hi)
        if limit is not None:
            _check_count(limit, "limit", minimum=0)
        if low > high or limit == 0:
            return []
        snapshot, gen, _ = self._view()
        try:
            prefix = self._order_base + _gen(gen)
            upper = prefix_end(prefix + high)
            keys = _take(self._disk, snapshot, prefix + low, upper, reverse=False, skip=0, limit=limit)
        finally:
            self._disk.release(snapshot)
        return [_order_item(key, len(prefix)) for key in keys]

    def _view(self) -> tuple[Any, int, int]:
        """A snapshot with the generation and count it holds (taken together under the lock)."""
        with self._lock:
            return self._disk.snapshot(), self._meta.gen, self._meta.count


def _decode_cursor(cursor: object) -> bytes:
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be a str from page_after or None, not {type(cursor).__name__}")
    try:
        raw = bytes.fromhex(cursor)
    except ValueError:
        raise ValueError(f"malformed cursor {cursor!r}") from None
    if len(raw) < 9 or raw[8:9] not in (b"s", b"b"):
        raise ValueError(f"malformed cursor {cursor!r}")
    return raw


def _take(
    disk: DiskTier,
    snapshot: Any,
    lower: bytes,
    upper: bytes | None,
    *,
    reverse: bool,
    skip: int,
    limit: int | None,
    exclude_lower: bool = False,
) -> list[bytes]:
    """Skip ``skip`` keys of the range, then return up to ``limit`` (None: all)."""
    first = _READ_CHUNK if limit is None else max(1, min(skip + limit, _READ_CHUNK))
    out: list[bytes] = []
    for chunk in disk.chunks(
        snapshot, lower, upper, reverse=reverse, exclude_lower=exclude_lower, include_value=False, size=first
    ):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        end = None if limit is None else skip + limit - len(out)
        out.extend(chunk[skip:end])
        skip = 0
        if limit is not None and len(out) >= limit:
            break
    return out


# -- the refresher ----------------------------------------------------------------------


class IndexRefresher:
    """One round of ``keep_fresh``: rebuild the index when the source stamp moved.

    The source stamp is ``stamp()`` when given, else the index's dirty stamp; it
    is read before ``rebuild()`` runs, so a change during a rebuild triggers the
    next round. A failing ``stamp()``, ``rebuild()`` or ``replace`` is logged and
    passed to ``on_error``; the old index stays. Rounds never overlap.
    """

    def __init__(
        self,
        index: SortedIndex,
        rebuild: Callable[[], Pairs],
        *,
        stamp: Callable[[], Any] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not callable(rebuild):
            raise TypeError("rebuild must be a callable returning (member, score) pairs")
        if stamp is not None and not callable(stamp):
            raise TypeError("stamp must be a callable returning the source stamp, or None")
        self.index = index
        self._rebuild = rebuild
        self._stamp = stamp
        self._on_error = on_error
        self._running = threading.Lock()

    def __call__(self) -> bool:
        """Run one round; ``True`` if it rebuilt the index."""
        if not self._running.acquire(blocking=False):
            return False
        try:
            return self._round()
        except StoreClosed:
            return False
        except Exception as exc:
            log.error("refreshing index %r failed; the old index stays", self.index.name, exc_info=True)
            if self._on_error is not None:
                self._on_error(exc)
            return False
        finally:
            self._running.release()

    def _round(self) -> bool:
        index = self.index
        source = index.dirty_stamp if self._stamp is None else _check_stamp(self._stamp())
        if index.built and index.stamp == source:
            return False
        index.replace(self._rebuild(), stamp=source)
        return True
