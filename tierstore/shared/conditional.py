"""``add``, ``touch``, ``pop`` and ``replace_value`` in shared mode: decided in Redis, then copied locally.

The store's own calls check their arguments and count as locally; the store
binds ``add`` here as its ``_add`` and these ``touch``, ``pop`` and
``replace_value`` through its ``_batch`` (see ``shared``). Each decides in Redis
by one script (``conditional_scripts``), takes one seq per message, and copies
what Redis holds now into tiers 2 and 1 as ``writing`` does (``Mirror.commit``
with the key's ``seen`` read before the Redis call, or a drop).

- ``add``: the ``ADD`` script: ``set``'s version rule and no live entry stored.
- ``pop``: the ``POP`` script returns the old envelope it deleted, atomically.
- ``touch`` and ``replace_value`` read the entry (one ``HMGET``), decide whether
  it is live by the writer's clock, pack the new envelope (a new expiry, or a
  new value in the stored expiry) and land it only if the entry's write stamp
  is unchanged (``REWRITE``); else they read again, at most ``ATTEMPTS`` times
  (each retry means another write landed: the entry kept changing under heavy
  contention raises ``SharedUnavailable``, nothing changed). ``touch`` keeps the
  key's load lease, as the local ``touch`` keeps a load in flight (the value
  stays); ``replace_value`` releases it (a new value).

A script that failed raises ``SharedUnavailable`` and forgets the key locally
(Redis may have applied it). Each is written as steps (``add_steps``, ...) the
blocking call runs in its thread, as ``writing``'s. Thread-safety: as ``writing``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import codec
from ..clock import check_ttl
from ..codec import LOAD_TIME, TOMBSTONE, TTL, VALUE, Key, Record, RecordState, record_state
from ..errors import CorruptRecord, SharedUnavailable
from ..flight import Flights
from ..keyspace import NS_ENTRY
from ..values import check_value_size
from .conditional_scripts import ADD, POP, REWRITE
from .reading import shared_record
from .steps import Call, Steps, run
from .writing import SharedWrites, _millis

__all__ = ["SharedConditional", "ATTEMPTS"]

ATTEMPTS = 64  # reads of an entry by one touch/replace_value before it gives up
_LIVE = RecordState.LIVE
_FIELDS = (b"d", b"v", b"s", b"e")


class SharedConditional(SharedWrites):
    """The read-then-write calls on one key through Redis (see the module doc)."""

    def __init__(self, *, flights: Flights, on_corrupt: Any, **parts: Any) -> None:
        super().__init__(flights=flights, **parts)
        self._on_corrupt = on_corrupt

    def add(self, key: Key, value: Any, ttl: Any = ..., version: int | None = None) -> bool:
        """``add``: ``set`` if Redis holds no live entry of ``key`` (and the version rule admits it)."""
        return run(self.add_steps(key, value, ttl, version), self._scripts)

    def add_steps(self, key: Key, value: Any, ttl: Any = ..., version: int | None = None) -> Steps[bool]:
        """``add`` as steps."""
        if version is not None:
            codec.check_version(version)
        if ttl is not ... and ttl is not None:
            check_ttl(ttl)
        try:
            added = yield from self._store_steps(ADD, key, value, ttl, version)
        except (TypeError, ValueError, OverflowError):
            # A value that cannot be stored: locally a live entry refuses the add before the value
            # is packed, so the answer is False then; the error otherwise.
            tagged = codec.encode_key(key)
            found = yield from self._read_steps(tagged, "add", self._writer.write_time())
            if found is None:
                raise
            self._count_rejected()
            # a refused add, as in ``_store_steps``: the copy held here may predate that live entry
            self._mirror.drop(key, NS_ENTRY + tagged, hash(key) % self._mirror.stripe_count)
            return False
        if added and self._flights.in_flight:
            self._flights.invalidate(key)  # a write: bump the fill generation
        return added

    def pop(self, key: Key, disk_key: bytes) -> tuple[bool, Any]:
        """Delete ``key`` as ``delete`` does; ``(True, value)`` when it had a live entry, else ``(False, None)``."""
        return run(self.pop_steps(key, disk_key), self._scripts)

    def pop_steps(self, key: Key, disk_key: bytes) -> Steps[tuple[bool, Any]]:
        """``pop`` as steps."""
        tagged = disk_key[len(NS_ENTRY) :]
        now = self._writer.write_time()
        ttl = self._options.tombstone_ttl
        data, _ = codec.encode_record(codec.new_packer(), None, 0, now + ttl, TOMBSTONE, now, ttl, 0)
        if self._flights.in_flight:
            self._flights.invalidate(key)
        # An envelope too long for this open is left in Redis: its value could not be given back.
        longest = str(self._options.max_value_bytes + codec.RECORD_ROOM)
        args = [*self._args(data, None, _millis(ttl), tagged), repr(now), longest]
        reply, where = yield from self._run_steps(key, tagged, "pop", POP, args)
        old, kept, _, _, state, action = reply
        tombstone = (len(data), int(kept), now + ttl, TOMBSTONE, None, now, ttl, 0, 0.0) if action == b"w" else None
        self._copy(key, where, tombstone, reply)
        if state != b"live":
            return False, None
        try:
            return True, shared_record(old, kept, self._options.max_value_bytes)[VALUE]
        except CorruptRecord as exc:
            self._on_corrupt(disk_key, exc)
            return False, None

    def touch(self, key: Key, disk_key: bytes, ttl: Any) -> bool:
        """Give the live entry of ``key`` a new expiry (in Redis: its envelope and ``PEXPIRE``); ``False`` if none."""
        return run(self.touch_steps(key, disk_key, ttl), self._scripts)

    def touch_steps(self, key: Key, disk_key: bytes, ttl: Any) -> Steps[bool]:
        """``touch`` as steps."""

        def touched(record: Any, now: float) -> tuple[Any, float | None, float | None, float, str]:
            drawn = self._writer.drawn_ttl(ttl)
            keep = "" if drawn is None else str(_millis(drawn + self._options.stale_ttl))
            return record[VALUE], None if drawn is None else now + drawn, drawn, record[LOAD_TIME], keep

        return (yield from self._rewrite_steps(key, disk_key, "touch", touched, release=False))

    def replace_value(self, key: Key, disk_key: bytes, value: Any) -> bool:
        """Store ``value`` in the live entry of ``key``, its expiry, TTL and version kept; ``False`` if none."""
        return run(self.replace_value_steps(key, disk_key, value), self._scripts)

    def replace_value_steps(self, key: Key, disk_key: bytes, value: Any) -> Steps[bool]:
        """``replace_value`` as steps."""
        return self.update_value_steps(key, disk_key, lambda _: value)

    def update_value(self, key: Key, disk_key: bytes, update: Callable[[Any], Any]) -> bool:
        """Store ``update(value)`` in the live entry of ``key`` as ``replace_value`` does; ``False`` if none.

        ``update`` gets the value Redis holds and runs again on each retry (another write landed
        between the read and the compare-and-set): an increment through it is never lost."""
        return run(self.update_value_steps(key, disk_key, update), self._scripts)

    def update_value_steps(self, key: Key, disk_key: bytes, update: Callable[[Any], Any]) -> Steps[bool]:
        """``update_value`` as steps."""

        def replaced(record: Any, now: float) -> tuple[Any, float | None, float | None, float, str]:
            return update(record[VALUE]), record[codec.EXPIRES_AT], record[TTL], 0.0, "-"

        if (yield from self._rewrite_steps(key, disk_key, "replace_value", replaced, release=True)):
            if self._flights.in_flight:
                self._flights.invalidate(key)  # a new value: a load in flight must not land over it
            self._count_sets()
            return True
        return False

    def _read_steps(self, tagged: bytes, what: str, now: float) -> Steps[tuple[Record, list[Any]] | None]:
        """The entry of a key in Redis if it is live at ``now``, with its hash's fields (envelope,
        version, seq, epoch); else ``None``. One ``HMGET`` (its raw reply: bytes or ``None`` each)."""
        fields = yield Call(what, None, (), (b"HMGET", self._client.names.entry(tagged), *_FIELDS))
        data, version, seq, epoch = fields
        if not (isinstance(data, bytes) and isinstance(version, bytes) and seq and isinstance(epoch, bytes)):
            return None
        try:
            record = shared_record(data, version, self._options.max_value_bytes)
        except CorruptRecord as exc:
            self._on_corrupt(NS_ENTRY + tagged, exc)
            return None
        if record_state(record, now) is not _LIVE:
            return None
        return record, fields

    def _rewrite_steps(self, key: Key, disk_key: bytes, what: str, change: Any, *, release: bool) -> Steps[bool]:
        """Read the entry, and while it is live land ``change(record, now)`` (value, expiry, TTL, load
        time, milliseconds to keep) over it unless its write stamp moved meanwhile."""
        client, mirror = self._client, self._mirror
        tagged = disk_key[len(NS_ENTRY) :]
        names = client.names
        stripe = hash(key) % mirror.stripe_count
        for _ in range(ATTEMPTS):
            now = self._writer.write_time()
            seen = mirror.seen(key, stripe)
            found = yield from self._read_steps(tagged, what, now)
            if found is None:  # Redis holds no live entry: no copy, held or read before, answers after this
                mirror.absent(key, disk_key, stripe, seen, held=True)
                return False
            record, (_, _, seq, epoch) = found
            value, expires_at, ttl, load_time, keep = change(record, now)
            new, plain = codec.encode_record(codec.new_packer(), value, 0, expires_at, 0, now, ttl, 0, load_time)
            check_value_size(new, self._options.max_value_bytes)
            args: list[bytes | str] = [new, seq, keep, names.channel, client.origin, tagged]
            args += [os.urandom(8).hex(), epoch, "1" if release else "0"]
            reply, where = yield from self._run_steps(key, tagged, what, REWRITE, args)
            if reply[0] == 1:
                local = (len(new), record[codec.VERSION], expires_at, 0, plain, now, ttl, 0, load_time)
                self._copy(key, where, local, reply)
                return True
        raise SharedUnavailable(f"{what}: the entry of {key!r} kept changing in Redis; gave up after {ATTEMPTS} reads")
