"""Reads in shared mode: tier 2 when its copy is trusted, else Redis, whose answer is kept as a stamped copy.

``SharedReads.fetch`` takes the place of the store's tier-2 fetch (the store
binds it at open; its hot ``get`` is unchanged): tier 1 is asked first by
the caller, as always. A tier-2 copy written above the trust floor is served
(and promoted into tier 1 as the store promotes); anything else is read from
Redis (one ``HMGET`` of the entry's hash: envelope, version, seq and epoch id,
atomically), counted in ``hits_shared`` when Redis holds a record, and kept in
both tiers with its write stamp (``mirror.Mirror.commit``). A key Redis does not
hold drops any untrusted copy and moves the key's change mark (``Mirror.absent``:
no copy read before the miss lands after it); a damaged entry there (a field
that is not what the scripts write, a name that is not a hash) is a miss
counted in ``corrupt_records``, never a copy. The caller counts the read as a
tier-2 read (``hits_disk``, ``negative_hits`` or ``misses`` by the record's
state), so ``hits_shared`` says how many of those Redis answered.

While Redis is known unreachable (``outage``): with ``shared_failure="local"``
a trusted tier-2 copy is served within the grace and anything that needs Redis
is a miss (``None``; the failed call counts in ``shared_errors``); past the
grace every read is a miss; with ``"raise"`` every read raises
``SharedUnavailable``. Tier 1 follows by being cleared (``Outage``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..codec import MAX_VERSION, SEQ, VERSION, Key, Record, encode_key, unpack_record
from ..errors import CorruptRecord, SharedUnavailable
from ..keyspace import NS_ENTRY
from ..memory import MemoryTier
from ..stats import Stats
from .client import SharedClient, wrong_type
from .mirror import Mirror, Seen, Stamp, mark_slot
from .outage import Outage
from .scripts import Scripts
from .steps import Call, Pipeline, Steps, carry_on, run

__all__ = ["Ask", "SharedReads", "shared_record", "shared_version", "shared_stamp"]

_FIELDS = (b"d", b"v", b"s", b"e")
_PIPELINED = 256  # reads of ``fetch_many`` per round trip: a bounded reply buffer, few round trips


def shared_record(data: bytes, version: object, max_bytes: int) -> Record:
    """The record of an entry hash's envelope and version; ``CorruptRecord`` when either is malformed."""
    record = unpack_record(data, max_bytes)
    return (*record[:VERSION], shared_version(version), *record[VERSION + 1 :])  # type: ignore[return-value]


def shared_version(version: object) -> int:
    """An entry hash's ``v`` (or a script's reply of it); ``CorruptRecord`` unless a decimal version as the
    scripts write it: no sign, no leading zero (the scripts compare versions as strings, longer first, so
    ``"007"`` would rank above ``"10"``)."""
    if (
        not isinstance(version, bytes) or not version.isdigit() or len(version) > 19
        or (version[:1] == b"0" and version != b"0") or int(version) > MAX_VERSION
    ):  # fmt: skip
        shown = version[:32] if isinstance(version, bytes) else version
        raise CorruptRecord(f"shared entry version {shown!r} is not a version")
    return int(version)


def shared_stamp(seq: object, epoch: object) -> Stamp:
    """The write stamp of an entry hash's ``s`` and ``e`` (or a script's reply of them); ``CorruptRecord``
    unless ``s`` is a decimal seq and ``e`` an id: a damaged Redis never reaches the local copies."""
    if not (isinstance(seq, bytes) and seq.isdigit() and len(seq) <= 19 and isinstance(epoch, bytes)):
        shown = seq[:32] if isinstance(seq, bytes) else seq
        raise CorruptRecord(f"shared entry write stamp {shown!r} is not a seq")
    return int(seq), epoch


class Ask(NamedTuple):
    """A read tier 2 could not answer alone: what ``SharedReads.remote_steps`` needs to ask Redis."""

    key: Key
    tagged: bytes
    disk_key: bytes
    stripe: int
    seen: Seen  # the stripe's write epoch, the trust floor and the key's change mark before the read
    record: Record | None  # the untrusted tier-2 copy, dropped when Redis does not confirm it


class SharedReads:
    """The tier-2 fetch of a store in shared mode. Thread-safety: as the store's fetch (no lock but commits')."""

    def __init__(
        self,
        *,
        client: SharedClient,
        scripts: Scripts,
        mirror: Mirror,
        memory: MemoryTier,
        get_record: Callable[[bytes], Record | None],
        stats: Stats,
        max_bytes: int,
        on_corrupt: Callable[[bytes, CorruptRecord], None],
        outage: Outage,
    ) -> None:
        self._client = client
        self._scripts = scripts
        self._outage = outage
        self._mirror = mirror
        self._memory = memory
        self._get_record = get_record
        self._count_shared = stats.counts["hits_shared"]
        self._max_bytes = max_bytes
        self._on_corrupt = on_corrupt

    def fetch(self, key: Key) -> Record | None:
        """The record of ``key`` below tier 1: a trusted tier-2 copy, else Redis's (kept locally)."""
        found = self.local(key)
        if type(found) is not Ask:
            return found  # type: ignore[return-value]
        return run(self.remote_steps(found), self._scripts)

    def fetch_many(self, keys: Sequence[Key]) -> list[Record | None]:
        """``fetch`` of every key of ``keys``, the reads Redis must answer pipelined (``fetch_many_steps``)."""
        return run(self.fetch_many_steps(keys), self._scripts)

    def fetch_many_steps(self, keys: Sequence[Key]) -> Steps[list[Record | None]]:
        """The records of ``keys`` below tier 1, each read as ``fetch`` reads it, the reads Redis must
        answer pipelined: up to ``_PIPELINED`` per round trip, no two of one change-mark slot (one's
        copy landing moves the mark the other's commit checks), the rest in the next round trip."""
        found: list[Record | None] = [None] * len(keys)
        pending = list(enumerate(keys))
        while pending:
            asked: list[tuple[int, Ask]] = []
            slots: set[int] = set()
            later = []
            for index, key in pending:
                slot = mark_slot(key)
                if slot in slots or len(asked) == _PIPELINED:
                    later.append((index, key))
                    continue
                answer = self.local(key)  # what a commit checks is read now, before the round trip
                if isinstance(answer, Ask):
                    slots.add(slot)
                    asked.append((index, answer))
                else:
                    found[index] = answer
            if asked:
                yield from self._pipelined(asked, found)
            pending = later
        return found

    def _pipelined(self, asked: list[tuple[int, Ask]], found: list[Record | None]) -> Steps[None]:
        """``remote_steps`` of each ``Ask``, their ``HMGET``s in one ``Pipeline``; each result into ``found``."""
        reads = [(index, self.remote_steps(ask)) for index, ask in asked]
        commands = []
        for _, steps in reads:
            call = steps.send(None)  # the read's HMGET, not yet sent
            assert isinstance(call, Call) and call.script is None
            commands.append(call.args)
        try:
            replies: list[Any] = yield Pipeline("get_many", commands)
        except SharedUnavailable as exc:  # no reply at all: each read goes on as if its own call failed
            replies = [exc] * len(reads)
        for (index, steps), reply in zip(reads, replies, strict=True):
            if isinstance(reply, SharedUnavailable):
                found[index] = yield from carry_on(steps, error=reply)
            else:
                found[index] = yield from carry_on(steps, reply)

    def local(self, key: Key) -> Record | Ask | None:
        """What tier 2 answers alone: a trusted copy, ``None`` (a miss: Redis is out of reach), or an ``Ask``
        for ``remote_steps`` (the part of ``fetch`` that needs Redis)."""
        tagged = encode_key(key)
        disk_key = NS_ENTRY + tagged
        mirror = self._mirror
        stripe = hash(key) % mirror.stripe_count
        seen = mirror.seen(key, stripe)
        if self._client.down and not self._outage.within_grace():
            self._unavailable()
            return None
        try:
            record = self._get_record(disk_key)
        except CorruptRecord as exc:
            self._on_corrupt(disk_key, exc)
            record = None
        if record is not None and record[SEQ] > seen[1]:
            if not self._memory.is_first_read(key):
                self._memory.admit(key, record, stripe, seen[0])
            return record
        return Ask(key, tagged, disk_key, stripe, seen, record)

    def held(self, key: Key) -> tuple[Record | None, str]:
        """The copy of ``key`` this process holds (tier 1, else a trusted tier-2 copy), Redis not asked,
        and the stat a hit on it counts in (as ``TierStore._lookup``)."""
        record = self._memory.get(key)
        if record is not None:
            return record, "hits_memory"
        found = self.local(key)
        return (None if type(found) is Ask else found), "hits_disk"  # type: ignore[return-value]

    def remote_steps(self, ask: Ask) -> Steps[Record | None]:
        """Read the entry from Redis (one ``HMGET``) and keep it locally; ``None`` for a miss."""
        key, tagged, disk_key, stripe, seen, record = ask
        client, mirror = self._client, self._mirror
        try:
            data, version, seq, epoch = yield Call("get", None, (), (b"HMGET", client.names.entry(tagged), *_FIELDS))
        except SharedUnavailable as exc:
            if wrong_type(exc):  # not a hash: a damaged entry, a counted miss
                self._on_corrupt(disk_key, CorruptRecord(f"shared entry of {key!r} is not a hash"))
                mirror.absent(key, disk_key, stripe, seen, held=record is not None)
                return None
            if client.down and not self._outage.raising:
                return None  # "local": a read that needs an unreachable Redis is a miss
            raise
        if not (isinstance(data, bytes) and isinstance(version, bytes) and isinstance(epoch, bytes) and seq):
            # a miss: no copy read before it lands after it (an untrusted one held is dropped)
            mirror.absent(key, disk_key, stripe, seen, held=record is not None)
            return None
        try:
            remote = shared_record(data, version, self._max_bytes)
            stamp = shared_stamp(seq, epoch)
        except CorruptRecord as exc:
            self._on_corrupt(disk_key, exc)
            mirror.absent(key, disk_key, stripe, seen, held=record is not None)  # Redis holds it damaged
            return None
        self._count_shared()
        return mirror.commit(key, disk_key, stripe, seen, remote, stamp, read=True)

    def _unavailable(self) -> None:
        """A read while Redis is down past the grace (``"local"``: a miss) or at all (``"raise"``: raises)."""
        if self._outage.raising:
            self._client.failed()
            raise SharedUnavailable(f"get: Redis at {self._client.where} is unreachable (shared_failure='raise')")
