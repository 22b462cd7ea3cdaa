"""The shared tier: Redis as tier 3 and the authority, each process's tiers 1 and 2 as copies of it.

``SharedTier`` wires the pieces for one store: the client (``client``), the
write scripts (``scripts``), the local copies (``mirror``), reads and writes
through Redis (``reading``, ``writing``), the invalidation listener
(``listener``) and what an outage does (``outage``). The store composes it at
open, binding ``fetch``, ``write`` and ``delete`` in place of its local ones
and ``unsupported.refusal`` in place of the calls not yet shared; without
``shared=`` none of this is imported.

Opening talks to Redis only through the listener's first attempt (subscribe,
epoch id, scripts): if it fails, ``shared_failure="raise"`` raises
``SharedUnavailable`` and ``"local"`` opens with Redis down (its grace counted
from the open) while the listener keeps trying.
"""

from __future__ import annotations

try:
    import redis  # noqa: F401  # the shared tier is redis-py's client
except ImportError as exc:
    raise ImportError(f"shared= needs redis-py: pip install 'tierstore[redis]' ({exc})") from exc

from collections.abc import Callable, Iterator
from typing import Any

from ..codec import Record
from ..disk import DiskTier
from ..errors import CorruptRecord, SharedUnavailable
from ..memory import MemoryTier
from ..options import Options
from ..stats import Stats
from ..stripes import Stripes
from ..writer import Writer
from ..writes import EntryWrites
from .client import CALL_TIMEOUT, SharedClient
from .listener import Listener
from .mirror import Mirror
from .outage import Outage
from .reading import SharedReads
from .scripts import Scripts
from .unsupported import UNSUPPORTED, refusal
from .writing import SharedWrites

__all__ = ["SharedTier", "SHARED_STATS", "UNSUPPORTED", "refusal"]

SHARED_STATS = ("hits_shared", "invalidations_received", "shared_errors", "resyncs")

# seconds the open waits for the listener's first attempt (subscribe, epoch id, scripts: each call
# bounded by CALL_TIMEOUT; an unreachable server fails the first of them)
_FIRST_ATTEMPT = CALL_TIMEOUT * 2 + 1


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
        get_record: Callable[[bytes], Record | None],
        on_corrupt: Callable[[bytes, CorruptRecord], None],
    ) -> None:
        stats.declare(SHARED_STATS)
        self.client = SharedClient(options.shared, options.namespace, stats)
        self.listener: Listener | None = None
        self.scripts = Scripts(self.client)
        mirror = Mirror(disk=disk, writes=writes, memory=memory, stripes=stripes, seq=seq, writer=writer)
        self.mirror = mirror
        self.outage = Outage(
            self.client, mirror, failure=options.shared_failure, grace=options.shared_grace, stats=stats
        )
        self.reads = SharedReads(
            client=self.client, mirror=mirror, memory=memory, get_record=get_record, stats=stats,
            max_bytes=options.max_value_bytes, on_corrupt=on_corrupt, outage=self.outage,
        )  # fmt: skip
        self.writes = SharedWrites(
            client=self.client, scripts=self.scripts, mirror=mirror, writer=writer, options=options, stats=stats
        )
        try:
            listener = Listener(
                self.client, mirror, self.outage, options.shared_ping_interval, stats, prepare=self.scripts.load
            )
            self.listener = listener
            if not listener.start(timeout=_FIRST_ATTEMPT):
                where, failure = self.client.where, listener.failure
                if self.outage.raising:
                    raise SharedUnavailable(f"Redis at {where} unreachable at open (shared_failure='raise'): {failure}")
                self.outage.lost(f"at open: {failure}")  # "local": opened with Redis down
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
        """Bind the shared reads, writes and refusals over the store's own, in its instance ``__dict__``.

        Instance attributes shadow the class's methods: ``get`` and ``_fetch`` stay as they
        are and ``get`` finds this ``_fetch``; ``set``/``delete`` call ``_write``/``_delete``;
        each call not yet shared raises ``NotImplementedError`` (``unsupported``).
        """
        attributes["_fetch"] = self.reads.fetch
        attributes["_write"] = self.writes.write
        attributes["_delete"] = self.writes.delete
        for name, call in UNSUPPORTED.items():
            attributes[name] = refusal(call)

    def close(self) -> None:
        """Stop the listener and the grace timer, and close the connections."""
        if self.listener is not None:
            self.listener.stop()
        self.outage.close()
        self.client.close()
