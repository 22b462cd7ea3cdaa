"""Index repair: make an index's member, order and meta records agree again.

After a restore: a checkpoint killed half way may hold an index's records
from different moments. ``repair_indexes`` runs once, on a plain plyvel
handle, before a restored directory is opened as a store, so it shares the
record format (``index_codec``) but none of ``SortedIndex``'s locking or
generations; it is separate so that ``restore`` does not depend on the live
index.

When an index is opened: ``load_meta`` reads its meta record and, when that
is damaged or contradicts the records, rebuilds it from them
(``recover_meta``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .disk import DiskTier
from .errors import CorruptRecord
from .index_codec import GEN_BYTES, IndexKeys, IndexMeta, decode_index_meta
from .index_scan import any_key
from .keyspace import NS_INDEX_MEMBER, NS_INDEX_META, NS_INDEX_ORDER, prefix_end

__all__ = ["repair_indexes", "load_meta", "recover_meta"]

log = logging.getLogger("tierstore")

_READ_CHUNK = 1024  # records per write batch


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
            if place is None or len(data) != GEN_BYTES:
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
            score = raw_key[end : end + GEN_BYTES]
            if snapshot.get(NS_INDEX_MEMBER + raw_key[1:end] + raw_key[end + GEN_BYTES :]) != score:
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
    end = 3 + size + GEN_BYTES
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


def load_meta(disk: DiskTier, keys: IndexKeys) -> IndexMeta:
    """An index's meta record; a damaged one, or one its records contradict, is rebuilt from the records."""
    raw = disk.get(keys.meta)
    try:
        meta = IndexMeta() if raw is None else decode_index_meta(raw, keys.meta)
        if meta.count and not any_key(disk, keys.order_prefix(meta.gen)):
            raise CorruptRecord(f"index meta record {keys.meta!r} counts members its generation lacks")
        return meta
    except CorruptRecord as exc:
        meta = recover_meta(disk, keys.member_base, keys.order_base)
        log.warning("%s: %s; rebuilt from the index's records (%d members kept)", disk.path, exc, meta.count)
        disk.write([(keys.meta, meta.pack())])
        return meta


def recover_meta(disk: DiskTier, member_base: bytes, order_base: bytes) -> IndexMeta:
    """A meta record for an index whose own is damaged or contradicts its records.

    The newest generation holding members is taken as the live one, its members
    counted; every other generation found becomes garbage (purged at open). The
    stamp is forgotten (``built`` is False), so a ``keep_fresh`` refresher
    rebuilds the index from its source at its next round.
    """
    members = _generations(disk, member_base)
    found = set(members) | set(_generations(disk, order_base))
    live = max(members) if members else max(found, default=-1) + 1
    return IndexMeta(
        gen=live,
        next_gen=max(found | {live}) + 1,
        count=members.get(live, 0),
        garbage=tuple(sorted(found - {live})),
    )


def _generations(disk: DiskTier, base: bytes) -> dict[int, int]:
    """How many records each generation under ``base`` holds."""
    counts: dict[int, int] = {}
    snapshot = disk.snapshot()
    try:
        for keys in disk.chunks(snapshot, base, prefix_end(base), include_value=False):
            for key in keys:
                gen = int.from_bytes(key[len(base) : len(base) + GEN_BYTES], "big")
                counts[gen] = counts.get(gen, 0) + 1
    finally:
        disk.release(snapshot)
    return counts
