"""SortedIndex: ordered pagination on LevelDB's sorted keys.

The records an index writes (member, order and meta) and their encoding are
described in ``index_codec``; the chunked passes over their key ranges are in
``index_scan``, repair after a restore or of a damaged meta record
(``load_meta``) in ``index_repair`` and the stamp-driven rebuild in
``index_refresher``.

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
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from typing import Any

from .codec import Key, encode_key
from .disk import DiskTier
from .errors import shown
from .index_codec import (
    IndexKeys,
    IndexMeta,
    Pairs,
    check_stamp,
    decode_cursor,
    decode_stored_score,
    encode_cursor,
    encode_score,
    iter_pairs,
    order_item,
)
from .index_refresher import DEFAULT_REFRESH_INTERVAL, IndexRefresher
from .index_repair import load_meta
from .index_scan import count_keys, purge_prefix, snapshot_get, take_keys
from .keyspace import Op, prefix_end
from .leveldb import on_fork

# The store imports these three from here; they live in index_codec and index_refresher.
__all__ = ["SortedIndex", "Pairs", "IndexRefresher", "DEFAULT_REFRESH_INTERVAL"]

log = logging.getLogger("tierstore")

_BUILD_CHUNK = 10_000


def _check_count(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {shown(value)}")
    return value


class SortedIndex:
    """Members with scores, ordered by ``(score, member)``, durable in LevelDB.

    ``page`` is O(offset + limit); ``page_after`` is O(log n + limit) and is the
    way to walk a large index. ``rank`` counts the members before one, so it is
    O(rank). ``len()`` is O(1).
    """

    def __init__(self, disk: DiskTier, name: Key) -> None:
        self._name = name
        self._disk = disk
        self._keys = IndexKeys(name)
        self._lock = threading.Lock()
        self._meta = load_meta(disk, self._keys)
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
        self._apply(dict(iter_pairs(pairs)))

    def remove(self, member: Key) -> bool:
        """Remove ``member``; ``True`` if it was in the index."""
        tag = encode_key(member)
        with self._lock:
            gen = self._meta.gen
            member_key = self._keys.member(gen, tag)
            old = self._disk.get(member_key)
            if old is None:
                return False
            meta = dataclasses.replace(self._meta, count=self._meta.count - 1)
            self._commit(meta, [(member_key, None), (self._keys.order(gen, old, tag), None)])
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
            check_stamp(stamp)
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
            gen = self._meta.gen
            ops: list[Op] = []
            added = sum(self._stage(ops, gen, tag, score) for tag, score in staged.items())
            if not ops:
                return
            meta = dataclasses.replace(self._meta, count=self._meta.count + added) if added else None
            self._commit(meta, ops)

    def _stage(self, ops: list[Op], gen: int, tag: bytes, score: bytes) -> int:
        """Append the ops that give ``tag`` this score in generation ``gen``; return 1 if it is a new member."""
        member_key = self._keys.member(gen, tag)
        old = self._disk.get(member_key)
        if old == score:
            return 0
        if old is not None:
            ops.append((self._keys.order(gen, old, tag), None))
        ops.append((member_key, score))
        ops.append((self._keys.order(gen, score, tag), b""))
        return 0 if old is not None else 1

    def _commit(self, meta: IndexMeta | None, ops: list[Op] | None = None) -> None:
        """Write ``ops`` and the meta record in one batch, then adopt the meta (lock held)."""
        batch = list(ops or ())
        if meta is not None:
            batch.append((self._keys.meta, meta.pack()))
        self._disk.write(batch)
        if meta is not None:
            self._meta = meta

    def _build(self, gen: int, pairs: Pairs) -> int:
        """Write ``pairs`` into generation ``gen`` in chunks; return the member count."""
        count = 0
        flushed = False
        source = iter_pairs(pairs)
        while chunk := dict(itertools.islice(source, _BUILD_CHUNK)):
            ops: list[Op] = []
            for tag, score in chunk.items():
                if flushed:  # a member may repeat one from an earlier chunk
                    count += self._stage(ops, gen, tag, score)
                else:
                    ops.append((self._keys.member(gen, tag), score))
                    ops.append((self._keys.order(gen, score, tag), b""))
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
        for prefix in (self._keys.member_prefix(gen), self._keys.order_prefix(gen)):
            purge_prefix(self._disk, prefix)

    # -- reading ------------------------------------------------------------------

    def score(self, member: Key) -> float | None:
        """``member``'s score, or ``None`` when it is not in the index."""
        tag = encode_key(member)
        with self._lock:
            raw = self._disk.get(self._keys.member(self._meta.gen, tag))
        return None if raw is None else decode_stored_score(raw)  # a damaged record: CorruptRecord

    def rank(self, member: Key, reverse: bool = False) -> int | None:
        """0-based position of ``member`` in ``(score, member)`` order; O(rank) as it counts."""
        tag = encode_key(member)
        snapshot, gen, count = self._view()
        try:
            prefix = self._keys.order_prefix(gen)
            raw = snapshot_get(self._disk, snapshot, self._keys.member(gen, tag))
            if raw is None:
                return None
            decode_stored_score(raw)  # a damaged member record raises CorruptRecord, not a wrong rank
            before = count_keys(self._disk, snapshot, prefix, self._keys.order(gen, raw, tag))
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
            prefix = self._keys.order_prefix(gen)
            keys = take_keys(
                self._disk, snapshot, prefix, prefix_end(prefix), reverse=bool(reverse), skip=offset, limit=limit
            )
        finally:
            self._disk.release(snapshot)
        return [order_item(key, len(prefix)) for key in keys]

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
        position = None if cursor is None else decode_cursor(cursor)
        snapshot, gen, _ = self._view()
        try:
            prefix = self._keys.order_prefix(gen)
            lower: bytes = prefix
            upper = prefix_end(prefix)
            after = False
            if position is not None:
                if reverse:
                    upper = prefix + position
                else:
                    lower, after = prefix + position, True
            keys = take_keys(
                self._disk, snapshot, lower, upper, reverse=bool(reverse), skip=0, limit=limit + 1, exclude_lower=after
            )
        finally:
            self._disk.release(snapshot)
        items = [order_item(key, len(prefix)) for key in keys[:limit]]
        next_cursor = encode_cursor(keys[limit - 1], len(prefix)) if len(keys) > limit else None
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
            prefix = self._keys.order_prefix(gen)
            upper = prefix_end(prefix + high)
            keys = take_keys(self._disk, snapshot, prefix + low, upper, reverse=False, skip=0, limit=limit)
        finally:
            self._disk.release(snapshot)
        return [order_item(key, len(prefix)) for key in keys]

    def _view(self) -> tuple[Any, int, int]:
        """A snapshot with the generation and count it holds (taken together under the lock)."""
        with self._lock:
            return self._disk.snapshot(), self._meta.gen, self._meta.count
