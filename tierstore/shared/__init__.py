"""The shared tier: Redis as tier 3 and the authority, each process's tiers 1 and 2 as copies of it.

``SharedTier`` wires the pieces for one store: the client (``client``), the
write scripts (``scripts``, ``conditional_scripts``, ``bulk_scripts``), the
local copies (``mirror``), reads and writes through Redis (``reading``,
``writing``, ``conditional``, ``bulk_writes``), listings (``listing``) and the
invalidation listener (``listener``). The store composes it at open, binding
these in place of its local hooks and ``unsupported.refusal`` in place of the
calls not yet shared; without ``shared=`` none of this is imported.
"""

from __future__ import annotations

try:
    import redis  # noqa: F401  # the shared tier is redis-py's client
except ImportError as exc:
    raise ImportError(f"shared= needs redis-py: pip install 'tierstore[redis]' ({exc})") from exc

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

from ..codec import Record
from ..disk import DiskTier
from ..errors import CorruptRecord
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
from .listener import Listener
from .listing import SharedListing
from .mirror import Mirror
from .reading import SharedReads
from .scripts import Scripts
from .unsupported import UNSUPPORTED, refusal
from .writing import SharedWrites

__all__ = ["SharedTier", "SHARED_STATS", "UNSUPPORTED", "refusal"]

SHARED_STATS = ("hits_shared", "invalidations_received", "shared_errors", "resyncs")


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
        try:
            self.scripts = Scripts(self.client)
            mirror = Mirror(disk=disk, writes=writes, memory=memory, stripes=stripes, seq=seq, writer=writer)
            self.mirror = mirror
            mirror.epoch = self.client.epoch()
            self.reads = SharedReads(
                client=self.client, mirror=mirror, memory=memory, get_record=get_record, stats=stats,
                max_bytes=options.max_value_bytes, on_corrupt=on_corrupt,
            )  # fmt: skip
            self.writes = SharedWrites(
                client=self.client, scripts=self.scripts, mirror=mirror, writer=writer, options=options, stats=stats
            )
            parts: dict[str, Any] = {
                "client": self.client, "scripts": self.scripts, "mirror": mirror, "writer": writer,
                "options": options, "stats": stats, "flights": flights,
            }  # fmt: skip
            self.conditional = SharedConditional(on_corrupt=on_corrupt, **parts)
            self.bulk = SharedBulk(**parts)
            self.listing = SharedListing(
                client=self.client, scripts=self.scripts, clock=options.clock,
                max_bytes=options.max_value_bytes, on_corrupt=on_corrupt,
            )  # fmt: skip
            self.listener = Listener(self.client, mirror, flights, options.shared_ping_interval, stats)
            self.listener.start(timeout=CALL_TIMEOUT * 2)
        except BaseException:
            self.close()
            raise

    def bind(self, attributes: dict[str, Any]) -> None:
        """Bind the shared reads, writes and refusals over the store's own, in its instance ``__dict__``.

        Instance attributes shadow the class's methods: ``get`` and ``_fetch`` stay as they
        are and ``get`` finds this ``_fetch``; ``set``/``delete`` call ``_write``/``_delete``;
        ``add``/``delete_prefix``/``clear``/the listings/``sweep`` call ``_add``/``_delete_under``/
        ``_live_records``/``_sweep_shared``; ``touch``/``pop``/``replace_value``/``set_many``/
        ``delete_many`` call ``_batch``'s (the store's own calls keep their argument checks and
        counts); each call not yet shared raises ``NotImplementedError`` (``unsupported``).
        """
        attributes["_fetch"] = self.reads.fetch
        attributes["_write"] = self.writes.write
        attributes["_delete"] = self.writes.delete
        attributes["_add"] = self.conditional.add
        attributes["_batch"] = SimpleNamespace(
            touch=self.conditional.touch, pop=self.conditional.pop, replace_value=self.conditional.replace_value,
            set_many=self.bulk.set_many, delete_many=self.bulk.delete_many,
        )  # fmt: skip
        attributes["_delete_under"] = self.bulk.delete_under
        attributes["_live_records"] = self.listing.live_records
        attributes["_sweep_shared"] = self.listing.sweep
        for name, call in UNSUPPORTED.items():
            attributes[name] = refusal(call)

    def close(self) -> None:
        """Stop the listener and close the connections."""
        if self.listener is not None:
            self.listener.stop()
        self.client.close()
