"""``set_many``, ``delete_many``, ``delete_prefix`` and ``clear`` in shared mode: one script each, then copied.

The store's own calls check their arguments and count as locally; the store
binds ``set_many``/``delete_many`` here through its ``_batch`` and
``delete_under`` as its ``_delete_under`` (see ``shared``).

- ``set_many``/``delete_many``: every envelope is packed (and checked) first, so
  a value that cannot be stored raises with nothing changed; then ONE script
  (``bulk_scripts``) writes every key in Redis with one seq and one message per
  key (the listeners' seq check stays contiguous) and releases every key's
  lease; then the keys are copied locally in one tier-2 batch under their
  stripes' locks (``Mirror.commit_many``, each key's ``seen`` read before the
  Redis call). In-process loads of the keys are detached first, as locally.
- ``delete_under`` (``delete_prefix``, ``clear``): the in-process loads under the
  prefix are detached, then ONE script deletes every entry under it in Redis,
  frees every lease under it (a fill begun before is refused in every process),
  takes ONE seq and publishes ONE prefix message; then every local copy under the
  prefix is dropped (``Mirror.drop_prefix``: the tombstones are read from Redis
  when asked for). Returns how many were live; ``deletes`` counts the entries
  changed, as locally.

A script that failed raises ``SharedUnavailable`` and forgets its keys (or the
prefix) locally: Redis may have applied it. Once Redis is known to be down,
nothing changes locally (as ``writing``'s calls): the resync when the listener
is subscribed again covers whatever Redis applied. ``set_many``/``delete_many`` are
written as steps (``set_many_steps``, ``delete_many_steps``) as ``writing``'s
calls are; ``delete_under`` stays blocking (under asyncio it runs in a thread).
Thread-safety: as ``writing``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .. import codec
from ..batch import Outcome
from ..codec import NEGATIVE, TOMBSTONE, Key
from ..entries import ABSENT
from ..errors import CorruptRecord
from ..flight import Flights
from ..keyspace import NS_ENTRY
from ..stats import Stats
from ..values import check_value_size
from .bulk_scripts import DELETE_MANY, DELETE_PREFIX, SET_MANY
from .mirror import Change, Seen
from .reading import shared_stamp, shared_version
from .steps import Call, Steps, run
from .writing import SharedWrites, _millis

__all__ = ["SharedBulk"]


class SharedBulk(SharedWrites):
    """The calls on many keys through Redis (see the module doc)."""

    def __init__(self, *, flights: Flights, stats: Stats, **parts: Any) -> None:
        super().__init__(flights=flights, stats=stats, **parts)
        self._stats = stats

    def _head(self, now: float) -> list[bytes | str]:
        """The ARGV every bulk script starts with: channel, origin, a fresh epoch id, the writer's clock."""
        client = self._client
        return [client.names.channel, client.origin, os.urandom(8).hex(), repr(now)]

    def _keys(self, tagged_keys: list[bytes]) -> list[bytes]:
        """KEYS of a bulk script: seq, epoch, leases set, keys set, then each key's entry hash and lease."""
        names = self._client.names
        keys = [names.seq, names.epoch, names.leases, names.keys]
        for tagged in tagged_keys:
            keys += [names.entry(tagged), names.lease(tagged)]
        return keys

    def _seen(self, keys: list[Key]) -> tuple[list[int], list[Seen]]:
        """Each key's stripe and ``seen``, read before the Redis call."""
        mirror = self._mirror
        stripes = [hash(key) % mirror.stripe_count for key in keys]
        return stripes, [mirror.seen(key, stripe) for key, stripe in zip(keys, stripes, strict=True)]

    def _call_steps(
        self, what: str, script: str, keys: list[bytes], args: list[bytes | str], forget: Iterator[Any], width: int
    ) -> Steps[tuple[bytes, list[Any]]]:
        """Run a bulk script (one step); on failure forget ``forget``'s ``(key, disk_key, stripe)`` locally and raise.

        Returns the epoch and the per-key list (``width`` items a key, the version then the seq last);
        a damaged version or stamp among them (a hash in Redis with a ``v`` that is no version)
        forgets the keys too and raises ``CorruptRecord``."""
        try:
            reply = yield Call(what, script, keys, args)
            epoch, done = reply[0], reply[-1]
            for j in range(0, len(done), width):
                shared_version(done[j + width - 2])
                shared_stamp(done[j + width - 1], epoch)
            return reply[0], reply[1:]
        except BaseException as exc:
            damaged = isinstance(exc, CorruptRecord)
            if damaged or not self._client.down:  # down: nothing changes here, the resync on reconnect covers it
                for key, disk_key, stripe in forget:
                    self._mirror.drop(key, disk_key, stripe)
            if damaged:
                raise CorruptRecord(f"{what}: Redis applied it, but an entry there is damaged: {exc}") from None
            raise

    def set_many(self, items: list[tuple[Key, bytes, Any]], ttl: Any) -> int:
        """Store every ``(key, disk_key, value)`` (distinct keys) unversioned, or, when one cannot be stored, none."""
        return run(self.set_many_steps(items, ttl), self._scripts)

    def set_many_steps(self, items: list[tuple[Key, bytes, Any]], ttl: Any) -> Steps[int]:
        """``set_many`` as steps."""
        now = self._writer.write_time()
        packer = codec.new_packer()
        args = self._head(now)
        planned = []
        for key, disk_key, value in items:
            negative = value is ABSENT
            drawn = self._writer.drawn_ttl(ttl, negative)
            expires_at = None if drawn is None else now + drawn
            flags = NEGATIVE if negative else 0
            data, plain = codec.encode_record(packer, None if negative else value, 0, expires_at, flags, now, drawn, 0)
            check_value_size(data, self._options.max_value_bytes, "value of", key)
            keep = "" if drawn is None else str(_millis(drawn + (0.0 if negative else self._options.stale_ttl)))
            args += [disk_key[len(NS_ENTRY) :], data, keep]
            planned.append((len(data), expires_at, flags, plain, drawn))
        # the existence filter admits before Redis, as ``set`` does
        yield from self._admit_keys_steps([key for key, _, value in items if value is not ABSENT])
        if self._flights.in_flight:
            for key, _, _ in items:
                self._flights.invalidate(key)  # bump the fill generation
        keys = [key for key, _, _ in items]
        stripes, seen = self._seen(keys)
        tagged = [disk_key[len(NS_ENTRY) :] for _, disk_key, _ in items]
        forget = ((key, disk_key, stripe) for (key, disk_key, _), stripe in zip(items, stripes, strict=True))
        epoch, (stamps,) = yield from self._call_steps("set_many", SET_MANY, self._keys(tagged), args, forget, 2)
        changes: list[Change] = []
        for j, ((key, disk_key, _), stripe) in enumerate(zip(items, stripes, strict=True)):
            size, expires_at, flags, plain, drawn = planned[j]
            version, seq = int(stamps[2 * j]), int(stamps[2 * j + 1])
            record = (size, version, expires_at, flags, plain, now, drawn, 0, 0.0)
            changes.append((key, disk_key, stripe, record, (seq, epoch)))
        self._mirror.commit_many(changes, seen)
        self._stats.add("sets", len(items))
        return len(items)

    def delete_many(self, keys: list[tuple[Key, bytes]]) -> Outcome:
        """Delete every ``(key, disk_key)`` (distinct keys) as ``delete_many`` does locally, in one script."""
        return run(self.delete_many_steps(keys), self._scripts)

    def delete_many_steps(self, keys: list[tuple[Key, bytes]]) -> Steps[Outcome]:
        """``delete_many`` as steps."""
        now = self._writer.write_time()
        ttl = self._options.tombstone_ttl
        tomb, _ = codec.encode_record(codec.new_packer(), None, 0, now + ttl, TOMBSTONE, now, ttl, 0)
        if self._flights.in_flight:
            for key, _ in keys:
                self._flights.invalidate(key)
        stripes, seen = self._seen([key for key, _ in keys])
        tagged = [disk_key[len(NS_ENTRY) :] for _, disk_key in keys]
        args = [*self._head(now), tomb, str(_millis(ttl)), *tagged]
        forget = ((key, disk_key, stripe) for (key, disk_key), stripe in zip(keys, stripes, strict=True))
        epoch, (live, done) = yield from self._call_steps(
            "delete_many", DELETE_MANY, self._keys(tagged), args, forget, 3
        )
        changes: list[Change] = []
        changed = 0
        for j, ((key, disk_key), stripe) in enumerate(zip(keys, stripes, strict=True)):
            action, version, seq = done[3 * j], int(done[3 * j + 1]), int(done[3 * j + 2])
            changed += action != b"n"
            record = (len(tomb), version, now + ttl, TOMBSTONE, None, now, ttl, 0, 0.0) if action == b"w" else None
            changes.append((key, disk_key, stripe, record, (seq, epoch)))
        self._mirror.commit_many(changes, seen)
        return Outcome(int(live), changed)

    def delete_under(self, prefix: Key | None, scan_prefix: bytes) -> int:
        """``delete_prefix(prefix)`` (``None``: ``clear``) through Redis; how many were live."""
        self._flights.invalidate_prefix(prefix)
        now = self._writer.write_time()
        ttl = self._options.tombstone_ttl
        tomb, _ = codec.encode_record(codec.new_packer(), None, 0, now + ttl, TOMBSTONE, now, ttl, 0)
        names = self._client.names
        tagged_prefix = b"" if prefix is None else scan_prefix[len(NS_ENTRY) :]
        args = [*self._head(now), tomb, str(_millis(ttl)), names.entry(b""), names.lease(b""), tagged_prefix]
        keys = [names.seq, names.epoch, names.leases, names.keys]
        try:
            live, changed, _, _ = self._scripts.run("delete_prefix", DELETE_PREFIX, keys, args)
        except BaseException:
            if not self._client.down:  # Redis may have applied it (down: the resync on reconnect covers it)
                self._mirror.drop_prefix(prefix)
            raise
        self._mirror.drop_prefix(prefix)
        self._stats.add("deletes", int(changed))
        return int(live)
