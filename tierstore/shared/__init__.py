"""The shared tier: Redis as tier 3 and the authority, each process's tiers 1 and 2 as copies of it.

``SharedTier`` wires the pieces for one store: the client (``client``), the
write scripts (``scripts``, ``conditional_scripts``, ``bulk_scripts``), the
local copies (``mirror``), reads and writes through Redis (``reading``,
``writing``, ``conditional``, ``bulk_writes``), listings (``listing``), the
invalidation listener (``listener``), what an outage does (``outage``), the
load leases (``leasing``) and the parts that live only in Redis: counters
(``counting``), sorted indexes (``ranking``) and the existence filter
(``guarding``). The store composes it at open, binding these in place of its
local parts and giving its loading the leases; without ``shared=`` none of this
is imported.

Opening talks to Redis only through the listener's first attempt (subscribe,
epoch id, scripts): if it fails, ``shared_failure="raise"`` raises
``SharedUnavailable`` and ``"local"`` opens with Redis down (its grace counted
from the open) while the listener keeps trying; a Redis that answers but refuses
(a wrong password or database, an ACL) raises in both. ``guard=True`` also reads the
shared filter's parameters (or builds the filter) at open; opened without Redis,
the first check or add once Redis answers does it (``SharedGuard``).
"""

from __future__ import annotations

try:
    import redis  # noqa: F401  # the shared tier is redis-py's client
except ImportError as exc:
    raise ImportError(f"shared= needs redis-py: pip install 'tierstore[redis]' ({exc})") from exc

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

from ..codec import Key, Record
from ..disk import DiskTier
from ..errors import CorruptRecord, SharedUnavailable
from ..flight import Flights
from ..memory import MemoryTier
from ..options import Options
from ..stats import Stats
from ..stripes import Stripes
from ..writer import Writer
from ..writes import EntryWrites
from .bulk_writes import SharedBulk
from .client import CALL_TIMEOUT, SharedClient
from .conditional import SharedConditional
from .counting import SharedCounters
from .guarding import SharedGuard
from .leasing import SharedLeases
from .listener import Listener
from .listing import SharedListing
from .mirror import Mirror
from .mutexes import SharedLeaseLocks
from .outage import Outage
from .ranking import SharedIndex
from .reading import SharedReads
from .scripts import Scripts
from .writing import SharedWrites

__all__ = ["SharedTier", "SHARED_STATS"]

SHARED_STATS = ("hits_shared", "invalidations_received", "shared_errors", "resyncs", "shared_calls")

# seconds the open waits for the listener's first attempt (subscribe, epoch id, scripts: each call
# bounded by CALL_TIMEOUT; an unreachable server fails the first of them)
_FIRST_ATTEMPT = CALL_TIMEOUT * 2 + 1


_PING_FLOOR = 0.25  # seconds: shorter, a loaded machine's late PONG would look like an outage


def ping_interval(options: Options) -> float:
    """The listener's PING interval: ``shared_ping_interval``, but with ``"local"`` at most half of
    ``shared_grace`` (not under ``_PING_FLOOR``), so a silent outage is noticed within about the grace
    and copies are not served much past ``shared_grace`` after the last contact."""
    interval = options.shared_ping_interval
    if options.shared_failure == "local":
        interval = min(interval, max(_PING_FLOOR, options.shared_grace / 2))
    return interval


class SharedTier:
    """The shared tier of one open store: connected, subscribed, and closed with it."""

    def __init__(
        self,
        *,
        options: Options,
        stats: Stats,
        disk: DiskTier,
        writes: EntryWrites,
        memory: MemoryTier,
        stripes: Stripes,
        seq: Iterator[int],
        writer: Writer,
        flights: Flights,
        get_record: Callable[[bytes], Record | None],
        on_corrupt: Callable[[bytes, CorruptRecord], None],
    ) -> None:
        stats.declare(SHARED_STATS)
        self.client = SharedClient(options.shared, options.namespace, stats)
        self.listener: Listener | None = None
        self.closed = False
        self._disk = disk
        self.scripts = Scripts(self.client)
        mirror = Mirror(
            disk=disk, writes=writes, memory=memory, stripes=stripes, seq=seq, writer=writer,
            max_bytes=options.max_value_bytes,
        )  # fmt: skip
        self.mirror = mirror
        self.outage = Outage(
            self.client, mirror, failure=options.shared_failure, grace=options.shared_grace, stats=stats
        )
        self.reads = SharedReads(
            client=self.client, scripts=self.scripts, mirror=mirror, memory=memory, get_record=get_record, stats=stats,
            max_bytes=options.max_value_bytes, on_corrupt=on_corrupt, outage=self.outage,
        )  # fmt: skip
        self.counters = SharedCounters(self.client, self.scripts)
        self.leases = SharedLeases(
            client=self.client, scripts=self.scripts, mirror=mirror, writer=writer, options=options, stats=stats,
            on_corrupt=on_corrupt, outage=self.outage, held=self.reads.held,
        )  # fmt: skip
        self.leases.closed_error = disk.closed_error
        self.lease_locks = SharedLeaseLocks(self.client, self.scripts, options.lock_timeout, self._gate)  # dogpile's
        self.listing = SharedListing(
            client=self.client, scripts=self.scripts, clock=options.clock,
            max_bytes=options.max_value_bytes, on_corrupt=on_corrupt, mirror=mirror, raising=self.outage.raising,
        )  # fmt: skip
        self.guard: SharedGuard | None = None
        try:
            listener = Listener(
                self.client, mirror, self.outage, flights, ping_interval(options), stats,
                prepare=self.scripts.load,
            )  # fmt: skip
            listener.wake = self.leases.wake
            self.listener = listener
            if not listener.start(timeout=_FIRST_ATTEMPT):
                where, failure = self.client.where, listener.failure
                if listener.refusal is not None:  # answered, but no: a setting to fix, not an outage
                    raise SharedUnavailable(f"Redis at {where} refused the store at open: {listener.refusal}")
                if self.outage.raising:
                    raise SharedUnavailable(f"Redis at {where} unreachable at open (shared_failure='raise'): {failure}")
                self.outage.lost(f"at open: {failure}")  # "local": opened with Redis down
            if options.guard:
                self.guard = SharedGuard(
                    self.client, self.scripts, options.bloom_capacity, options.bloom_error_rate,
                    raising=self.outage.raising,
                )  # fmt: skip
                self.leases.admit_key = self.guard.add_steps
            parts: dict[str, Any] = {
                "client": self.client, "scripts": self.scripts, "mirror": mirror, "writer": writer,
                "options": options, "stats": stats, "flights": flights,
                "admit_key": None if self.guard is None else self.guard.add_steps,
                "admit_keys": None if self.guard is None else self.guard.add_many_steps,
            }  # fmt: skip
            self.writes = SharedWrites(**parts)
            self.conditional = SharedConditional(on_corrupt=on_corrupt, **parts)
            self.bulk = SharedBulk(**parts)
        except BaseException:
            self.close()
            raise

    def may_store(self) -> bool:
        """Whether a value may be stored now: ``False`` while Redis is known unreachable.

        For calls made shared later, such as ``get_or_load``: when it is ``False`` (or
        a Redis call raised ``SharedUnavailable``), ``shared_failure="local"`` calls the
        loader and returns its value without storing it; ``"raise"`` raises
        (``self.outage.raising``). Reads of local copies follow ``SharedReads.fetch``.
        """
        return self.outage.may_store()

    def bind(self, attributes: dict[str, Any]) -> None:
        """Bind the shared reads, writes and parts over the store's own, in its instance ``__dict__``.

        Instance attributes shadow the class's methods: ``get`` and ``_fetch`` stay as they
        are and ``get`` finds this ``_fetch`` (``get_many`` this ``_fetch_many``);
        ``set``/``delete`` call ``_write``/``_delete``;
        ``add``/``delete_prefix``/``clear``/the listings/``sweep`` call ``_add``/``_delete_under``/
        ``_live_records``/``_sweep_shared``; ``touch``/``pop``/``replace_value``/``update_value``/``set_many``/
        ``delete_many`` call ``_batch``'s (the store's own calls keep their argument checks and
        counts). Counters, indexes (``index`` builds them with ``_make_index``) and the guard
        (``get_or_load``'s check, ``guard_keys``, ``rebuild_guard``, ``stats()``) are Redis's.
        """
        attributes["_fetch"] = self.reads.fetch
        attributes["_fetch_many"] = self.reads.fetch_many
        attributes["_write"] = self.writes.write
        attributes["_delete"] = self.writes.delete
        attributes["_counters"] = self.counters
        attributes["_make_index"] = self.index
        if self.guard is not None:
            attributes["_guard"] = self.guard
        attributes["_add"] = self.conditional.add
        attributes["_batch"] = SimpleNamespace(
            touch=self.conditional.touch, pop=self.conditional.pop, replace_value=self.conditional.replace_value,
            update_value=self.conditional.update_value,
            set_many=self.bulk.set_many, delete_many=self.bulk.delete_many,
        )  # fmt: skip
        attributes["_delete_under"] = self.bulk.delete_under
        attributes["_live_records"] = self.listing.live_records
        attributes["_sweep_shared"] = self.listing.sweep

    def index(self, name: Key) -> SharedIndex:
        """A new handle on the sorted index ``name`` in Redis (the store keeps one per name)."""
        return SharedIndex(self.client, self.scripts, name, self._gate)

    def _gate(self) -> None:
        """Raise the store's closed (or forked) error once it is closed: handles outlive it."""
        if self.closed or self._disk.closed:
            raise self._disk.closed_error()

    def close(self) -> None:
        """Free this store's job claims, stop the listener and the grace timer, and close the connections."""
        self.closed = True
        leases = getattr(self, "leases", None)
        if leases is not None:
            leases.close()
        if self.listener is not None:
            self.listener.stop()
        self.outage.close()
        self.client.close()
