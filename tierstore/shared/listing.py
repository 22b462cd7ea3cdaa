"""Listings in shared mode: ``keys()``, ``items()``, ``len(store)`` and iteration read Redis's keys set.

The store binds ``live_records`` as its ``_live_records`` (what its listings
and ``len`` iterate) and ``sweep`` as its ``_sweep_shared`` (what ``sweep()``
adds to its counts). Redis is the authority, so a listing reads it, not the
local copies:

- The keys set (``Names.keys``: the tagged keys holding an entry hash, score 0)
  is read with ``ZRANGEBYLEX`` in pages of ``PAGE`` (under the prefix's tagged
  bytes; bytes keys before str keys, in byte order, as locally), and each page's
  hashes with one pipeline of ``HMGET``. The live entries (by this process's
  clock, as locally) are yielded; negative, expired and tombstoned ones are not.
- Each member read first drops a local copy of its key older than what Redis
  holds (``Mirror.drop`` keeping only a copy at the entry's write stamp or later): the listener may not have
  heard of that write yet, and a ``get`` after the listing must not serve an
  older value than the listing did.
- A member whose hash is gone (Redis expired it) is pruned from the set by the
  ``PRUNE`` script, which checks again atomically (a key written again
  meanwhile stays).
- ``len(store)`` is O(entries): every entry hash is read (as locally every
  record is). A listing is not a snapshot: entries written while it pages may
  or may not appear. Nothing read is copied into the local tiers.
- ``sweep`` prunes at most ``SWEEP_PAGES`` pages of the set per call, from where
  the last sweep stopped (the whole set over successive sweeps), so a sweep's
  cost is bounded. A Redis error there is counted and logged, not raised: the
  local sweep it follows has done its work (with ``shared_failure="raise"`` it
  raises, as every call does while Redis fails).

Thread-safety: no lock; the sweep's cursor is one attribute, replaced whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from ..codec import Key, Record, RecordState, decode_key, encode_key, record_state
from ..errors import CorruptRecord, SharedUnavailable
from ..keyspace import NS_ENTRY
from .bulk_scripts import PRUNE
from .client import SharedClient
from .mirror import Mirror, Stamp
from .reading import shared_record, shared_stamp
from .scripts import Scripts

__all__ = ["SharedListing", "PAGE", "SWEEP_PAGES"]

log = logging.getLogger("tierstore")

PAGE = 500  # members of the keys set read per round trip
SWEEP_PAGES = 20  # pages of the keys set one sweep prunes
_LIVE = RecordState.LIVE
_DAMAGED: list[bytes | None] = [b"", b"", None, None]  # an envelope no record unpacks from


class SharedListing:
    """The live entries Redis holds, by prefix (see the module doc)."""

    def __init__(
        self,
        *,
        client: SharedClient,
        scripts: Scripts,
        clock: Callable[[], float],
        max_bytes: int,
        on_corrupt: Callable[[bytes, CorruptRecord], None],
        mirror: Mirror,
        raising: bool = False,
    ) -> None:
        self._client = client
        self._raising = raising  # shared_failure="raise": a sweep's failed pruning raises too
        self._mirror = mirror
        self._scripts = scripts
        self._clock = clock
        self._max_bytes = max_bytes
        self._on_corrupt = on_corrupt
        self._cursor = b"-"  # where the next sweep's pruning starts

    def live_records(self, prefix: Key | None) -> Iterator[tuple[Key, Record]]:
        """``(key, record)`` of every live entry under ``prefix`` (``None``: all), in key order."""
        if prefix is None:
            low, high = b"-", b"+"
        else:
            tagged = encode_key(prefix)
            low, high = b"[" + tagged, _after(tagged)
        while True:
            members, found = self._page(low, high)
            gone = [member for member, (data, *_) in zip(members, found, strict=True) if data is None]
            if gone:
                self._prune(gone)
            now = self._clock()
            for member, (data, version, seq, epoch) in zip(members, found, strict=True):
                self._forget_older(member, seq, epoch)
                if data is None:
                    continue
                try:  # an entry ``get`` calls damaged (its version or write stamp too) is not listed
                    record = shared_record(data, version, self._max_bytes)
                    shared_stamp(seq, epoch)
                    if record_state(record, now) is not _LIVE:
                        continue
                    key = decode_key(member)
                except CorruptRecord as exc:  # a damaged entry or key: skipped and counted, as locally
                    self._on_corrupt(NS_ENTRY + member, exc)
                    continue
                yield key, record
            if len(members) < PAGE:
                return
            low = b"(" + members[-1]

    def _page(self, low: bytes, high: bytes) -> tuple[list[bytes], list[list[bytes | None]]]:
        """One page of members from ``low`` and the envelope, version, seq and epoch id of each one's hash."""
        client = self._client
        names = client.names
        members: list[bytes] = client.call("listing", _lex_range, client.redis, names.keys, low, high)
        if not members:
            return [], []

        def read() -> list[list[bytes | None]]:
            pipe = client.redis.pipeline(transaction=False)
            for member in members:
                pipe.hmget(names.entry(member), [b"d", b"v", b"s", b"e"])
            # a name that is not a hash (WRONGTYPE) reads as a damaged entry: skipped and counted
            return [found if isinstance(found, list) else _DAMAGED for found in pipe.execute(raise_on_error=False)]

        return members, client.call("listing", read)

    def _forget_older(self, member: bytes, seq: bytes | None, epoch: bytes | None) -> None:
        """Drop a local copy of ``member``'s key older than the entry Redis holds (written at ``seq`` in
        ``epoch``; an entry gone, or its stamp unreadable: any copy held may be older)."""
        try:
            key = decode_key(member)
        except CorruptRecord:
            return  # no local copy has that key
        try:
            stamp: Stamp | None = shared_stamp(seq, epoch)
        except CorruptRecord:
            stamp = None
        mirror = self._mirror
        mirror.drop(key, NS_ENTRY + member, hash(key) % mirror.stripe_count, keep=stamp)

    def _prune(self, members: list[bytes]) -> int:
        """Take members whose hash is gone out of the keys set; how many left it."""
        names = self._client.names
        keys = [names.keys, *(names.entry(member) for member in members)]
        return int(self._scripts.run("prune", PRUNE, keys, list(members)))

    def sweep(self) -> dict[str, int]:
        """Prune up to ``SWEEP_PAGES`` pages of the keys set; ``{"shared_pruned": how many left it}``."""
        client = self._client
        names = client.names
        pruned = 0
        try:
            for _ in range(SWEEP_PAGES):
                low = self._cursor
                members = client.call("sweep", _lex_range, client.redis, names.keys, low, b"+")
                self._cursor = b"-" if len(members) < PAGE else b"(" + members[-1]
                if members:
                    exists = client.call("sweep", self._exists, members)
                    gone = [member for member, there in zip(members, exists, strict=True) if not there]
                    if gone:
                        pruned += self._prune(gone)
                if self._cursor == b"-":
                    break
        except SharedUnavailable as exc:
            if self._raising:
                raise
            log.warning("tierstore: pruning the shared keys set failed: %s", exc)
        return {"shared_pruned": pruned}

    def _exists(self, members: list[bytes]) -> list[int]:
        names = self._client.names
        pipe = self._client.redis.pipeline(transaction=False)
        for member in members:
            pipe.exists(names.entry(member))
        return pipe.execute()


def _lex_range(redis: Any, name: bytes, low: bytes, high: bytes) -> list[bytes]:
    """Up to ``PAGE`` members of the sorted set ``name`` from ``low`` to ``high`` (``ZRANGEBYLEX`` bounds)."""
    members: list[bytes] = redis.zrangebylex(name, low, high, 0, PAGE)
    return members


def _after(tagged: bytes) -> bytes:
    """The exclusive ``ZRANGEBYLEX`` bound above every member starting with ``tagged`` (never all 0xff)."""
    end = tagged.rstrip(b"\xff")
    return b"(" + end[:-1] + bytes([end[-1] + 1])
