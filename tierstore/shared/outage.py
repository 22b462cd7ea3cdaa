"""What a store does while Redis is unreachable: ``shared_failure`` and ``shared_grace``.

Redis is *down* from the first sign that it is unreachable (a call that lost
its connection or timed out, a gap of the listener's connection, a first
connection at open that failed) until the listener is subscribed again. While
down, every Redis call fails at once (``SharedClient.call``: no connect
timeout per call), no copy lands locally (``Mirror.listening`` is off), and:

- ``"local"``: tiers 1 and 2 keep serving the copies they hold until
  ``shared_grace`` seconds after the last contact (``client.last_contact``);
  a timer then distrusts them all (``Mirror.resync``: tier 1 cleared, the
  trust floor raised), so the store's hot ``get`` finds nothing in tier 1 and
  every read is a miss until Redis is back. A read that needs Redis is a miss.
- ``"raise"``: the copies are distrusted at once and every call raises
  ``SharedUnavailable``.

The rule for gaps: a gap while Redis answers (a lost or malformed message)
resyncs at once (``resync``); a gap because Redis is unreachable keeps the
copies as above (``lost``); getting Redis back always resyncs before the
first call goes through (``regained``), since what changed meanwhile is
unknown. No copy from before an outage is served again unrevalidated, and
none lands while deaf, so a process never serves an older value of a key
than one it served.

Hooks for calls made shared later: ``SharedClient.call`` raises
``SharedUnavailable`` while down; ``raising`` says which policy runs; and
``may_store()`` is false while down: ``get_or_load`` with ``"local"`` then
calls the loader and returns its value without storing it (with ``"raise"``
it raises ``SharedUnavailable``).

Thread-safety: transitions hold one lock; the grace's end is a daemon
``threading.Timer`` per outage (nothing runs on the non-shared path).
"""

from __future__ import annotations

import logging
import threading
import time

from ..stats import Stats
from .client import SharedClient
from .mirror import Mirror

__all__ = ["Outage"]

log = logging.getLogger("tierstore")


class Outage:
    """The outage policy of one store, called by its client and its listener."""

    def __init__(self, client: SharedClient, mirror: Mirror, *, failure: str, grace: float, stats: Stats) -> None:
        self._client = client
        self._mirror = mirror
        self.raising = failure == "raise"
        self.grace = grace
        self._count_resync = stats.counts["resyncs"]
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._outage = 0  # moves at each transition: a timer of an earlier outage does nothing
        self._subscribed_once = False
        self._closed = False
        client.on_lost = self.lost

    def may_store(self) -> bool:
        """Whether a value may be stored now (through Redis): ``False`` while Redis is known unreachable."""
        return not self._client.down

    def within_grace(self) -> bool:
        """Whether local copies may be served: Redis up, or ``"local"`` within the grace after the last contact."""
        client = self._client
        if not client.down:
            return True
        return not self.raising and time.monotonic() - client.last_contact < self.grace

    def lost(self, reason: str) -> None:
        """Redis is unreachable: calls fail fast; the copies are kept for the grace or distrusted at once."""
        with self._lock:
            client = self._client
            if client.down or self._closed:
                return
            self._outage += 1
            log.warning("tierstore: Redis at %s is unreachable (%s)", client.where, reason)
            remaining = client.last_contact + self.grace - time.monotonic()
            if self.raising or remaining <= 0:
                self._resync_locked(listening=False)
            else:
                self._mirror.listening = False  # deaf: no new copy lands; those held stay servable
                timer = threading.Timer(remaining, self._grace_over, args=(self._outage,))
                timer.name = "tierstore-shared-grace"
                timer.daemon = True
                self._timer = timer
                timer.start()
            client.down = True  # last: whoever sees it sees the copies already handled

    def _grace_over(self, outage: int) -> None:
        with self._lock:
            if outage != self._outage or not self._client.down or self._closed:
                return
            self._timer = None
            self._resync_locked(listening=False)
            log.warning("tierstore: shared_grace of %ss is over; local copies dropped until Redis is back", self.grace)

    def regained(self) -> None:
        """The listener is subscribed (again): resync, then let calls through to Redis."""
        with self._lock:
            self._cancel_locked()
            self._outage += 1
            if self._subscribed_once:
                self._resync_locked(listening=True)
                log.warning("tierstore: Redis at %s answers again; resynced", self._client.where)
            else:
                self._mirror.resync(listening=True)  # what a persisted directory holds is checked again
                self._subscribed_once = True
            self._client.contact()
            self._client.back()

    def resync(self, reason: str) -> None:
        """A gap while Redis answers (a lost or malformed message): distrust every copy at once."""
        with self._lock:
            self._resync_locked(listening=not self._client.down)
        log.warning("tierstore: the shared-tier listener may have missed invalidations (%s); resynced", reason)

    def _resync_locked(self, *, listening: bool) -> None:
        self._mirror.resync(listening=listening)
        self._count_resync()

    def _cancel_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Stop the grace timer; nothing changes after this."""
        with self._lock:
            self._closed = True
            self._cancel_locked()
