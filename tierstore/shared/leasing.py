"""Load leases across processes: one load of a key at a time in every store of the namespace.

``SharedLeases`` is the ``load_lease.LoadLease`` the store gives its loading in
shared mode (the scripts are in ``lease_scripts``). The leader of a flight in
this process:

1. takes the key's lease (``TAKE``: ``SET NX PX lock_timeout`` with a random
   token, and the entry read in the same step). A live or negative entry there
   means another process filled the key: it is copied locally and answered,
   and a lease just taken is freed.
2. If another process holds the lease, it waits (``wait``): woken by any
   message on the key (the listener calls ``wake``), or every ``POLL`` seconds
   at the latest, it asks again, until the entry is filled (answered), the
   lease is free (taken: it loads in turn, after a loader that raised elsewhere
   or a holder that died and whose lease ran out) or ``give_up`` passes
   (``LoadTimeout``). Without ``wait`` it returns ``None`` at once.
3. Fills with ``FILL``: only while its token is current (every write deletes the
   lease) and by the version rule of a local fill, then copies what Redis
   accepted into tiers 2 and 1 (``Mirror.commit``), as ``writing`` does. A
   refused fill drops the local copy, as a refused ``set`` does.
4. A loader that raised frees the lease at once (``RELEASE``, compare-and-delete).
5. While Redis is unreachable (``outage``), ``shared_failure="local"`` loads
   without a lease and stores nothing (``UNSTORED``: the value is returned to
   the callers of that load only); ``"raise"`` raises ``SharedUnavailable``.

A take cancelled with its script sent (an asyncio caller) frees the lease its
token may have got, at once. Renewals (``try_take``) never wait: a busy lease means another process renews.
``job`` claims a periodic job (``refresh_every``, ``keep_fresh``) for one
process: a claim under ``prefix + "job:" + kind + ":" + tagged key`` held for
twice the interval and renewed by its holder each round; another process takes
it over once the holder stops renewing (it died, its job was cancelled, or a
round outlasted two intervals) or at once when the holder's store closes
(``close`` frees the claims it holds). A store closing wakes its lease waiters, which raise
its closed error (``StoreClosed``) instead of polling Redis on. Thread-safety: every call may run
in any thread; the waiters' table is under a lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import codec
from ..codec import FLAGS, NEGATIVE, TOMBSTONE, Key, Record, RecordState, encode_key, record_state
from ..entries import ABSENT
from ..errors import CorruptRecord, LoadTimeout, SharedUnavailable, StoreClosed
from ..keyspace import NS_ENTRY
from ..load_lease import Held
from ..options import Options
from ..stats import Stats
from ..values import check_value_size
from ..writer import Writer
from .client import SharedClient
from .lease_scripts import FILL, JOB, RELEASE, TAKE, UNCLAIM
from .mirror import Mirror
from .outage import Outage
from .reading import shared_record, shared_stamp, shared_version
from .scripts import Scripts
from .steps import Call, Listen, Pause, Steps, Waiter, run
from .writing import _millis

__all__ = ["POLL", "SharedLeases", "UNSTORED"]

log = logging.getLogger("tierstore")

POLL = 0.025  # seconds: the longest a waiter goes without asking Redis again (a lease freed without a message)

_ANSWERS = (RecordState.LIVE, RecordState.NEGATIVE)

UNSTORED = Held(b"", b"")  # no lease: Redis is unreachable, so the load's value is returned, not stored


class SharedLeases:
    """The load leases of one store in Redis; ``wake`` is the listener's hook."""

    def __init__(
        self,
        *,
        client: SharedClient,
        scripts: Scripts,
        mirror: Mirror,
        writer: Writer,
        options: Options,
        stats: Stats,
        on_corrupt: Callable[[bytes, CorruptRecord], None],
        outage: Outage,
        held: Callable[[Key], tuple[Record | None, str]],
    ) -> None:
        scripts.add(TAKE, FILL, RELEASE, JOB, UNCLAIM)
        self.held = held  # the local copy a leader looks at again (``SharedReads.held``)
        self._outage = outage
        self.admit_key: Callable[[Key], Steps[None]] | None = None  # the shared filter's add (guard=True), set at open
        self._client = client
        self._names = client.names
        self._scripts = scripts
        self._mirror = mirror
        self._writer = writer
        self._options = options
        self._clock = options.clock
        self._on_corrupt = on_corrupt
        self._count_sets = stats.counts["sets"]
        self._lease_ms = str(_millis(options.lock_timeout))
        self._waiting: dict[bytes, list[Waiter]] = {}
        self._lock = threading.Lock()
        self._claims: dict[bytes, bytes] = {}  # job claim -> its token, for each job this store runs
        self._closed = False
        self.closed_error: Callable[[], Exception] = lambda: StoreClosed("the store is closed")  # the store's, at open

    # -- taking ---------------------------------------------------------------------------

    def acquire(self, key: Key, wait: bool, give_up: float | None) -> Held | Record | None:
        """The lease for a foreground load, or the live or negative record another filled (see the module doc).

        While Redis is unreachable, ``shared_failure="local"`` answers ``UNSTORED``: the
        caller loads and its ``fill`` stores nothing (``"raise"``: ``SharedUnavailable``).
        """
        return run(self.acquire_steps(key, wait, give_up), self._scripts)

    def acquire_steps(self, key: Key, wait: bool, give_up: float | None) -> Steps[Held | Record | None]:
        """``acquire`` as steps (``steps``): its waits are ``Pause`` steps woken by ``wake``."""
        tagged = encode_key(key)
        waiter: Waiter | None = None
        try:
            while True:
                if self._closed:  # a waiter of a store closing: its answer is the store's closed error
                    raise self.closed_error()
                try:
                    if not self._outage.may_store():
                        raise SharedUnavailable(f"Redis at {self._client.where} is unreachable")
                    held, record = yield from self._take_steps(key, tagged, answer=True)
                except SharedUnavailable:
                    if self._outage.raising:
                        raise
                    return UNSTORED
                if record is not None:
                    if held is not None:
                        yield from self.release_steps(key, held)
                    return record
                if held is not None or not wait:
                    return held
                if waiter is None:  # listen before asking again: no fill between the two goes unheard
                    waiter = yield Listen()
                    self._listen(tagged, waiter)
                    continue
                left = POLL if give_up is None else min(POLL, give_up - time.monotonic())
                if left <= 0:
                    raise LoadTimeout(f"the load of {key!r} in another process did not end within wait_timeout")
                yield Pause(waiter, left)
        finally:
            if waiter is not None:
                self._unlisten(tagged, waiter)

    def try_take(self, key: Key) -> Held | None:
        """The lease for a background renewal; ``None`` while another process holds it."""
        return run(self.try_take_steps(key), self._scripts)

    def try_take_steps(self, key: Key) -> Steps[Held | None]:
        """``try_take`` as steps."""
        held, _ = yield from self._take_steps(key, encode_key(key), answer=False)
        return held

    def _take_steps(self, key: Key, tagged: bytes, *, answer: bool) -> Steps[tuple[Held | None, Record | None]]:
        """Run ``TAKE``: the lease if it was free, and (with ``answer``) the entry when it is live or negative."""
        names, mirror = self._names, self._mirror
        token = os.urandom(16).hex().encode()
        stripe = hash(key) % mirror.stripe_count
        seen = mirror.seen(key, stripe)
        keys = [names.entry(tagged), names.lease(tagged), names.leases]
        try:
            taken, data, version, seq, epoch = yield Call("get_or_load", TAKE, keys, [token, self._lease_ms, tagged])
        except SharedUnavailable:
            raise
        except BaseException:  # cancelled with TAKE sent: Redis may have given this token the lease
            yield from self.release_steps(key, Held(token, b""))
            raise
        record = None
        if all(isinstance(field, bytes) for field in (data, version, seq, epoch)):
            try:
                record = shared_record(data, version, self._options.max_value_bytes)
                stamp = shared_stamp(seq, epoch)
            except CorruptRecord as exc:
                self._on_corrupt(NS_ENTRY + tagged, exc)  # overwritten by the fill
                record = None
        tombstone = seq if record is not None and record[FLAGS] & TOMBSTONE else b""
        held = Held(token, tombstone) if taken == 1 else None
        if answer and record is not None and record_state(record, self._clock()) in _ANSWERS:
            return held, mirror.commit(key, NS_ENTRY + tagged, stripe, seen, record, stamp, read=True)
        return held, None

    # -- filling and releasing --------------------------------------------------------------

    def fill(self, key: Key, held: Held, value: Any, version: int | None, ttl: Any, load_time: float) -> bool:
        """``FILL`` a loaded value (``ABSENT``: a negative entry), then copy it locally; ``False`` when refused."""
        return run(self.fill_steps(key, held, value, version, ttl, load_time), self._scripts)

    def fill_steps(
        self, key: Key, held: Held, value: Any, version: int | None, ttl: Any, load_time: float
    ) -> Steps[bool]:
        """``fill`` as steps.

        ``UNSTORED`` (a load during an outage) stores nothing; nor does a fill that meets an outage
        (its reply lost): ``"local"`` answers ``False`` (the loaded value is returned, not stored),
        ``"raise"`` raises ``SharedUnavailable``.
        """
        if held is UNSTORED:
            return False
        tagged = codec.encode_key(key)
        negative = value is ABSENT
        writer = self._writer
        ttl = writer.drawn_ttl(... if negative else ttl, negative)
        now = writer.write_time()
        expires_at = None if ttl is None else now + ttl
        flags = NEGATIVE if negative else 0
        data, plain = codec.encode_record(
            codec.new_packer(), None if negative else value, 0, expires_at, flags, now, ttl, 0, load_time
        )
        check_value_size(data, self._options.max_value_bytes, "the value loaded for", key)
        keep = "" if ttl is None else str(_millis(ttl + (0.0 if negative else self._options.stale_ttl)))
        if self.admit_key is not None and not negative:
            yield from self.admit_key(key)  # before Redis, as ``set`` admits: a written key is always in the filter
        names, mirror = self._names, self._mirror
        args: list[bytes | str] = [
            data, "" if version is None else str(version), keep, names.channel, self._client.origin, tagged,
            os.urandom(8).hex(), held.token, held.seen,
        ]  # fmt: skip
        stripe = hash(key) % mirror.stripe_count
        disk_key = NS_ENTRY + tagged
        seen = mirror.seen(key, stripe)  # before Redis: a resync or a change of the key after it refuses the copy
        try:
            reply = yield Call("get_or_load", FILL, names.entry_keys(tagged), args)
            if reply[0] == 1:
                stored, stamp = shared_version(reply[1]), shared_stamp(reply[2], reply[3])
        except CorruptRecord as exc:  # filled over a damaged hash (its ``v`` kept): no copy of that
            mirror.drop(key, disk_key, stripe)
            raise CorruptRecord(f"get_or_load: Redis stored it, but the entry of {key!r} is damaged: {exc}") from None
        except SharedUnavailable:
            down = self._client.down
            if not down:  # an error reply: Redis may have applied part of it (down: the reconnect's resync covers it)
                mirror.drop(key, disk_key, stripe)
            if self._outage.raising or not down:  # a refusal by a reachable Redis raises
                raise
            return False  # "local": the value loaded is answered, not stored, as during an outage
        except BaseException:
            mirror.drop(key, disk_key, stripe)
            raise
        if reply[0] != 1:
            # Redis holds a write since the lease was taken, or a version at least the load's, maybe one
            # the listener has not heard of yet: the copy held here may be older, so the next read asks Redis.
            mirror.drop(key, disk_key, stripe)
            return False
        record = (len(data), stored, expires_at, flags, plain, now, ttl, 0, load_time)
        mirror.commit(key, disk_key, stripe, seen, record, stamp, read=False)
        self._count_sets()
        return True

    def release(self, key: Key, held: Held) -> None:
        """Free the lease if ``held`` is still current; a failure is logged (the lease ends at its ``PX``)."""
        run(self.release_steps(key, held), self._scripts)

    def release_steps(self, key: Key, held: Held) -> Steps[None]:
        """``release`` as steps."""
        if held is UNSTORED:
            return
        tagged = encode_key(key)
        keys = [self._names.lease(tagged), self._names.leases]
        try:
            yield Call("get_or_load", RELEASE, keys, [held.token, tagged])
        except SharedUnavailable as exc:
            log.warning("tierstore: could not free the load lease of %r (it ends by itself): %s", key, exc)

    # -- periodic jobs ----------------------------------------------------------------------

    def job(self, kind: bytes, key: Key, period: float) -> Callable[[], bool]:
        """A claim of the job ``kind`` on ``key`` run every ``period`` seconds, for one process at a time."""
        name = self._names.prefix + b"job:" + kind + b":" + encode_key(key)
        token = os.urandom(16).hex().encode()
        claim_ms = str(_millis(2 * period))

        def claim() -> bool:
            try:
                held = bool(self._scripts.run("job", JOB, [name], [token, claim_ms]) == 1)
            except SharedUnavailable:
                return False  # counted in shared_errors; the next round asks again
            if held:
                self._claims[name] = token
            return held

        return claim

    def close(self) -> None:
        """Wake every lease waiter (each raises the store's closed error) and free the job claims this
        store holds, so another process takes its jobs over at once."""
        self._closed = True
        with self._lock:
            for events in self._waiting.values():
                for event in events:
                    event.set()
        for name, token in list(self._claims.items()):
            try:
                self._scripts.run("job", UNCLAIM, [name], [token])
            except SharedUnavailable:
                return  # they lapse by themselves

    # -- waking waiters ---------------------------------------------------------------------

    def wake(self, tagged: bytes) -> None:
        """A message on ``tagged`` arrived: its waiters ask Redis again now (the listener's hook)."""
        if self._waiting:  # read without the lock: nearly free while nobody waits
            with self._lock:
                for event in self._waiting.get(tagged, ()):
                    event.set()

    def _listen(self, tagged: bytes, waiter: Waiter) -> None:
        with self._lock:
            self._waiting.setdefault(tagged, []).append(waiter)

    def _unlisten(self, tagged: bytes, waiter: Waiter) -> None:
        with self._lock:
            events = self._waiting[tagged]
            events.remove(waiter)
            if not events:
                del self._waiting[tagged]

