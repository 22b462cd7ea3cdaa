"""Writes in shared mode: ``set`` and ``delete`` decided in Redis by one script each, then copied locally.

The store binds ``SharedWrites.write`` and ``SharedWrites.delete`` at open in
place of the local writer's (``set``, ``delete``, ``invalidate`` and the
mapping protocol go through them). A write:

1. checks and packs its envelope exactly as the local writer does (a value that
   cannot be stored raises before Redis is asked), its expiry from this
   process's clock (TTL jitter included);
2. notes the key's change mark and the trust floor (``mirror.Mirror.seen``);
3. runs its script (``scripts``): the version rule decided in Redis, the value
   kept ``ttl + stale_ttl`` (a negative entry: its TTL; a tombstone:
   ``tombstone_ttl``), a sequence number taken, the invalidation published;
4. only then copies what Redis accepted into tiers 2 and 1, stamped
   (``Mirror.commit``; if a resync or another change of the key ran
   meanwhile, the key is dropped locally instead, unless a copy at least as
   new landed).

A refused versioned write changes nothing (``sets_rejected``). A reply that
carries a damaged version or stamp (a hash in Redis with a ``v`` that is no
version, which an unversioned write keeps) forgets the key locally and raises
``CorruptRecord``. A write whose
script failed raises ``SharedUnavailable``. If Redis is unreachable (known
before, or found so by this call) nothing changes locally: the local copies
stay servable within ``shared_grace`` and getting Redis back resyncs them all,
which covers a write Redis applied before its reply was lost. If Redis
answered with an error, the key is forgotten locally (its own message is no
invalidation for this process, and Redis may have run part of it).

Each call is written once as steps (``write_steps``, ``delete_steps``: see
``steps``), its Redis round trips yielded, so the asyncio facade drives the same
code; ``write`` and ``delete`` run them in the calling thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from .. import codec
from ..codec import NEGATIVE, TOMBSTONE, Key, Record, RecordState, record_state
from ..entries import ABSENT
from ..errors import CorruptRecord
from ..flight import Flights
from ..keyspace import NS_ENTRY
from ..options import Options
from ..stats import Stats
from ..values import check_value_size, stored_record
from ..writer import Writer
from .client import SharedClient
from .mirror import Mirror, Seen
from .reading import shared_stamp, shared_version
from .scripts import DELETE, SET, Scripts
from .steps import Call, Steps, run

__all__ = ["SharedWrites"]

_LIVE = RecordState.LIVE


class SharedWrites:
    """``set`` and ``delete`` through Redis. Thread-safety: Redis orders writes; local copies by stripe lock."""

    def __init__(
        self,
        *,
        client: SharedClient,
        scripts: Scripts,
        mirror: Mirror,
        writer: Writer,
        options: Options,
        stats: Stats,
        flights: Flights,
        admit_key: Callable[[Key], Steps[None]] | None = None,
        admit_keys: Callable[[list[Key]], Steps[None]] | None = None,
    ) -> None:
        self._client = client
        self._flights = flights
        self._scripts = scripts
        self._mirror = mirror
        self._writer = writer
        self._options = options
        # The existence filter's add (guard=True), before Redis so never missed: its steps
        # (``SharedGuard.add_steps``), or a blocking hook run in place (returns ``None``).
        self._admit_key = admit_key
        self._admit_keys = admit_keys  # the same for many keys in one call (set_many)
        self._count_sets = stats.counts["sets"]
        self._count_rejected = stats.counts["sets_rejected"]
        self._count_deletes = stats.counts["deletes"]

    def _args(self, data: bytes, version: int | None, keep_ms: int | None, tagged: bytes) -> list[bytes | str]:
        names = self._client.names
        fresh_epoch = os.urandom(8).hex()
        version_arg = "" if version is None else str(version)
        keep_arg = "" if keep_ms is None else str(keep_ms)
        return [data, version_arg, keep_arg, names.channel, self._client.origin, tagged, fresh_epoch]

    def _admit_key_steps(self, key: Key) -> Steps[None]:
        """Admit ``key`` to the existence filter (guard=True), before its write goes to Redis."""
        if self._admit_key is not None:
            yield from self._admit_key(key)

    def _admit_keys_steps(self, keys: list[Key]) -> Steps[None]:
        """Admit ``keys`` to the existence filter (guard=True), before their write goes to Redis."""
        if self._admit_keys is not None:
            yield from self._admit_keys(keys)

    def write(self, key: Key, value: Any, ttl: Any = ..., version: int | None = None) -> bool:
        """``set``: store ``value`` if Redis's version rule admits it, then copy it locally."""
        return run(self.write_steps(key, value, ttl, version), self._scripts)

    def write_steps(self, key: Key, value: Any, ttl: Any = ..., version: int | None = None) -> Steps[bool]:
        """``write`` as steps."""
        return (yield from self._store_steps(SET, key, value, ttl, version))

    def _store_steps(self, script: str, key: Key, value: Any, ttl: Any, version: int | None) -> Steps[bool]:
        """A write of ``value`` by ``script`` (``SET``, or one with the same ARGV and the writer's
        clock last, as ``ADD``); ``False`` when Redis refused it (counted in ``sets_rejected``)."""
        tagged = codec.encode_key(key)
        if version is not None:
            codec.check_version(version)
        negative = value is ABSENT
        ttl = self._writer.drawn_ttl(ttl, negative)
        now = self._writer.write_time()
        expires_at = None if ttl is None else now + ttl
        flags = NEGATIVE if negative else 0
        data, plain = codec.encode_record(
            codec.new_packer(), None if negative else value, 0, expires_at, flags, now, ttl, 0
        )
        check_value_size(data, self._options.max_value_bytes)
        keep_ms = None if ttl is None else _millis(ttl + (0.0 if negative else self._options.stale_ttl))
        if not negative:
            yield from self._admit_key_steps(key)
        args = [*self._args(data, version, keep_ms, tagged), repr(now)]
        reply, where = yield from self._run_steps(key, tagged, "set" if script is SET else "add", script, args)
        if reply[0] != 1:
            self._count_rejected()
            # Redis holds an entry this write could not pass (a live one, or a version at least its own),
            # maybe one the listener has not heard of yet: the copy held here may be older, so the next
            # read asks Redis rather than answer from it what the refusal contradicts.
            self._mirror.drop(key, where[0], where[1])
            return False
        self._copy(key, where, (len(data), int(reply[1]), expires_at, flags, plain, now, ttl, 0, 0.0), reply)
        self._count_sets()
        return True

    def delete(self, key: Key, version: int | None = None) -> bool:
        """``delete``: a tombstone at ``max(version, stored)`` in Redis, then locally; ``True`` if it was live."""
        return run(self.delete_steps(key, version), self._scripts)

    def delete_steps(self, key: Key, version: int | None = None) -> Steps[bool]:
        """``delete`` as steps."""
        tagged = codec.encode_key(key)
        if version is not None:
            codec.check_version(version)
        now = self._writer.write_time()
        ttl = self._options.tombstone_ttl
        data, _ = codec.encode_record(codec.new_packer(), None, 0, now + ttl, TOMBSTONE, now, ttl, 0)
        args = self._args(data, version, _millis(ttl), tagged)
        reply, where = yield from self._run_steps(key, tagged, "delete", DELETE, args)
        old, kept = reply[0], reply[1]
        was_live = old is not None and self._was_live(old, now)
        tombstone = None if kept == b"0" else (len(data), int(kept), now + ttl, TOMBSTONE, None, now, ttl, 0, 0.0)
        self._copy(key, where, tombstone, reply)
        self._count_deletes()
        return was_live

    def _was_live(self, old: bytes, now: float) -> bool:
        """Whether the envelope a delete replaced held a live entry, read as ``Writer.current`` reads it: one
        too long for this open's ``max_value_bytes`` by its header alone (live, as the local delete says)."""
        try:
            return record_state(stored_record(old, self._options.max_value_bytes), now) is _LIVE
        except CorruptRecord:
            return False

    def _run_steps(self, key: Key, tagged: bytes, what: str, script: str, args: list[bytes | str]) -> Steps[Any]:
        """Run a write script (one step); on failure forget the key locally and raise.

        Returns the script's reply and where to copy it locally (``_copy``).
        """
        mirror = self._mirror
        stripe = hash(key) % mirror.stripe_count
        disk_key = NS_ENTRY + tagged
        names = self._client.names
        seen = mirror.seen(key, stripe)  # before Redis: a resync or a change of the key after it refuses the copy
        try:
            reply = yield Call(what, script, names.entry_keys(tagged), args)
            if len(reply) >= 4:  # a write that landed: its version and stamp become the local copy's
                shared_version(reply[1])
                shared_stamp(reply[2], reply[3])
            elif len(reply) == 2 and reply[0] == 0:  # refused by the stored version: a damaged one refuses wrongly
                shared_version(reply[1])
        except CorruptRecord as exc:  # the entry's hash in Redis is damaged (a version that is not one)
            mirror.drop(key, disk_key, stripe)
            done = "applied it" if reply[0] != 0 else "refused it"
            raise CorruptRecord(f"{what}: Redis {done}, but the entry of {key!r} there is damaged: {exc}") from None
        except BaseException:
            if not self._client.down:  # down: the resync on reconnect covers it
                mirror.drop(key, disk_key, stripe)
            raise
        flights = self._flights
        if flights.in_flight:
            flights.invalidate(key)  # callers from now on start a fresh load, as after a local write
        return reply, (disk_key, stripe, seen)

    def _copy(self, key: Key, where: tuple[bytes, int, Seen], record: Record | None, reply: Any) -> None:
        disk_key, stripe, seen = where
        if record is None:
            self._mirror.drop(key, disk_key, stripe)
        else:
            self._mirror.commit(key, disk_key, stripe, seen, record, (int(reply[2]), reply[3]), read=False)


REDIS_MAX_MS = 2**62  # about 146 million years: Redis refuses a PX/PEXPIRE past its integers, or now + it


def _millis(seconds: float) -> int:
    """Milliseconds for ``PX``/``PEXPIRE``: rounded up, at least 1, at most ``REDIS_MAX_MS``.

    Durations are only checked to be finite, so a TTL of ``1e300`` (or one plus ``stale_ttl``)
    means "never" in practice; Redis would refuse its milliseconds mid-script, after the
    script's earlier writes had landed.
    """
    ms = seconds * 1000
    return REDIS_MAX_MS if ms >= REDIS_MAX_MS else max(1, math.ceil(ms))
