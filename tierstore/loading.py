"""Loading: ``get_or_load``, renewals ahead of expiry, periodic refresh, delayed deletes.

The single-flight loading of ``get_or_load`` (README, "Decisions"), over a store it knows only through
``StoreCore`` (a few bound primitives) and the parts it shares with the store
(``Flights``, ``Scheduler``, the ``Guard``, the options and the stats dict). It never
imports the store; ``aio_loading`` builds the coroutine path on its public steps.

- On a hit the value is returned without calling the loader; a negative entry
  returns ``default``. On a miss a key the guard rules out returns ``default``.
- While another caller loads the key, ``on_busy`` decides: ``"wait"`` for its
  result (``LoadTimeout`` past ``wait_timeout``), ``"stale"`` returns the stale
  value at once when one is within ``stale_ttl`` (else waits), ``"default"``
  returns ``default`` at once.
- The loader's exception reaches its caller and every waiter; nothing is stored.
- ``None`` or ``ABSENT`` from the loader stores a negative entry (``negative_ttl``)
  and returns ``default``; ``Versioned(value, version)`` stamps the version
  (the fill's version rule is ``loaded_value.fill``'s).
- A fill is dropped (counted in ``fills_rejected``), though still returned to
  the callers of that load, when the key was set, deleted or invalidated after
  the load began, or when the load outlived its ``lock_timeout`` lease.
- A live hit may start one background renewal, single-flight with foreground
  loads and at most one per key per ``min_refresh_interval``: when the entry is
  in the last ``refresh_ahead`` fraction of its TTL, or by XFetch with
  ``early_beta > 0``: when ``now - load_time * early_beta * ln(U) >= expires_at``
  for ``U`` uniform in ``(0, 1]`` and ``load_time`` the duration of the load that
  wrote the entry (entries written by ``set`` have none, so never renew early).
  Negative entries are not renewed ahead.
- A caller with ``on_busy="stale"`` that finds a stale value and no load running
  loads in the foreground, as any miss does (``min_refresh_interval`` limits
  background renewals only): after a failed load the next call loads again.
- Stats: ``loads``/``load_errors`` count foreground loader calls and their
  failures, ``refreshes``/``refresh_errors`` background ones (refresh-ahead,
  XFetch, ``refresh_every``); ``load_waits`` counts callers that waited.
- The value returned is the one the tiers would return (a tuple reads as a list); one
  they could not give back raises to the load's callers, naming the key, unstored.
- A loader that asks for its own key in its own thread gets ``RuntimeError`` at
  once (see ``flight``); loading other keys from a loader works.
- Across processes (``lease``, a ``load_lease.LoadLease``; ``None`` locally): the
  leader of a flight takes the key's lease before it loads, waits for it or takes
  ``on_busy``'s answer while another process holds it, and fills through it; a
  renewal or a ``refresh_every`` round skips when the lease is busy, and each
  ``refresh_every`` round runs in the one process holding the job's claim.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from . import codec
from .clock import check_seconds, check_ttl
from .codec import EXPIRES_AT, FLAGS, LOAD_TIME, SEQ, TTL, VALUE, Key, Record, RecordState, encode_key, record_state
from .entries import ABSENT, Versioned
from .errors import StoreClosed
from .flight import DEFAULT, NOTHING, STALE, WAIT, Flight, Flights, check_policy
from .guard import Guard
from .load_core import Renew, StoreCore
from .load_lease import BUSY, Held, LoadLease
from .loaded_value import fill, plain_value
from .options import Options
from .scheduler import Handle, Scheduler
from .stats import Stats

__all__ = ["Loading"]

log = logging.getLogger("tierstore")

_LIVE, _NEGATIVE, _STALE = RecordState.LIVE, RecordState.NEGATIVE, RecordState.STALE


class Loading:
    """The loading algorithm of one store: foreground loads, background renewals (``memoize`` builds on it)."""

    def __init__(
        self,
        core: StoreCore,
        options: Options,
        stats: Stats,
        flights: Flights,
        scheduler: Scheduler,
        guard: Guard | None,
    ) -> None:
        self._core = core
        self._options = options
        self._clock = options.clock
        self._stats = stats
        self._flights = flights
        self._scheduler = scheduler
        self._guard = guard
        self.lease: LoadLease | None = None  # the shared tier's, when other processes load the same keys

    # -- foreground ---------------------------------------------------------------------

    def get_or_load(
        self,
        key: Key,
        loader: Callable[[], Any],
        ttl: Any = ...,
        on_busy: str = WAIT,
        wait_timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """The value of ``key``; on a miss ``loader()`` runs once across callers and fills both tiers.

        The caller checks first that the store is open (``TierStore.get_or_load`` does,
        inline: one frame less on a hit).
        """
        self.check_load_args(loader, ttl, on_busy, wait_timeout)
        lease = self.lease
        if lease is not None and self.joins_running_load(key, on_busy):
            record, hit_stat = lease.held(key)
        else:
            record, hit_stat = self._core.lookup(key)
        answer, stale = self.stored_answer(key, record, hit_stat, loader, ttl, default, self._renew)
        if answer is not NOTHING:
            return answer
        answer = self.screen_miss(key, default)
        if answer is not NOTHING:
            return answer
        if self.lease is not None:
            value = self._run_leased(key, loader, ttl, on_busy, wait_timeout, stale, default)
            return default if value is ABSENT else value
        value = self._flights.run(
            key,
            lambda flight: self._load(key, loader, ttl, flight),
            on_busy=on_busy,
            busy=lambda: self.busy_answer(on_busy, stale, default),
            wait_timeout=wait_timeout,
        )
        return default if value is ABSENT else value

    def joins_running_load(self, key: Key, on_busy: str) -> bool:
        """Whether a caller will wait for a load of ``key`` already running in this process.

        With a lease, such a caller looks up only this process's copy (``LoadLease.held``): the running
        load's lease take answers what Redis holds, so callers joining one cold load ask Redis nothing more.
        """
        return on_busy == WAIT and self._flights.running(key)

    def _run_leased(
        self, key: Key, loader: Callable[[], Any], ttl: Any, on_busy: str, wait_timeout: float | None,
        stale: Any, default: Any,
    ) -> Any:  # fmt: skip
        """A miss with a lease across processes: a leader finding it busy waits unless ``on_busy`` answers."""
        give_up = None if wait_timeout is None else time.monotonic() + wait_timeout
        wait = on_busy == WAIT or (on_busy == STALE and stale is NOTHING)
        busy: Callable[[], Any] = lambda: self.busy_answer(on_busy, stale, default)  # noqa: E731
        while True:  # BUSY: the leader took its own answer; a follower follows its own policy (wait: lead)
            left = None if give_up is None else max(0.0, give_up - time.monotonic())
            value = self._flights.run(
                key, lambda flight: self._load(key, loader, ttl, flight, wait, give_up), on_busy=on_busy,
                busy=busy, wait_timeout=left,
            )  # fmt: skip
            if value is not BUSY:
                return value
            answer = NOTHING if wait else busy()
            if answer is not NOTHING:
                return answer

    def _check_open(self) -> None:
        if self._core.is_closed():
            raise StoreClosed(f"store {self._core.path} is closed")

    def check_load_args(self, loader: object, ttl: Any, on_busy: object, wait_timeout: object) -> None:
        if not callable(loader):
            raise TypeError(f"loader must be callable, not {type(loader).__name__}")
        if ttl is not ...:
            check_ttl(ttl)
        check_policy(on_busy)
        if wait_timeout is not None:  # None is valid: skip the call on the hit path
            check_seconds(wait_timeout, "wait_timeout", optional=True)

    def stored_answer(
        self, key: Key, record: Record | None, hit_stat: str, loader: Callable[[], Any], ttl: Any, default: Any,
        renew: Renew,
    ) -> tuple[Any, Any]:  # fmt: skip
        """``(answer, NOTHING)`` on a counted live or negative hit (``renew`` when one is due), else
        ``(NOTHING, stale)``: a miss, with the value of an expired entry within ``stale_ttl`` or ``NOTHING``."""
        if record is None:
            return NOTHING, NOTHING
        now = self._clock()
        state = record_state(record, now, self._options.stale_ttl)
        if state is _LIVE:
            self._stats.counts[hit_stat]()
            expires_at = record[EXPIRES_AT]
            if expires_at is not None and self.renewal_due(record, expires_at, now):
                renew(key, loader, ttl, record[SEQ])
            return record[VALUE], NOTHING
        if state is _NEGATIVE:
            self._stats.counts["negative_hits"]()
            return default, NOTHING
        return NOTHING, record[VALUE] if state is _STALE else NOTHING

    def screen_miss(self, key: Key, default: Any, known: bool | None = None) -> Any:
        """Count a miss; ``default`` when the guard rules the key out (no load), else ``NOTHING``.

        ``known``: the guard's answer for ``key`` when the caller asked it already (the asyncio path)."""
        self._stats.counts["misses"]()
        guard = self._guard
        if guard is not None and not (guard.might_contain(key) if known is None else known):
            self._stats.counts["guard_rejections"]()
            return default
        return NOTHING

    def busy_answer(self, on_busy: str, stale: Any, default: Any) -> Any:
        """What a caller gets at once while another loads the key; ``NOTHING`` means wait."""
        if on_busy == DEFAULT:
            self._stats.counts["busy_defaults"]()
            return default
        if stale is not NOTHING:
            self._stats.counts["stale_served"]()
            return stale
        return NOTHING

    def _load(
        self, key: Key, loader: Callable[[], Any], ttl: Any, flight: Flight, wait: bool = True,
        give_up: float | None = None,
    ) -> Any:  # fmt: skip
        """A foreground load as leader: check again, call the loader, fill. ``ABSENT`` for nothing.

        With a lease: ``BUSY`` when another process holds it and ``wait`` is false.
        """
        found = self.filled_since(key)
        if found is not NOTHING:
            return found
        held = None
        if self.lease is not None:
            taken = self.lease.acquire(key, wait, give_up)
            if not isinstance(taken, Held):  # busy, or filled by another process: a live or negative record
                return BUSY if taken is None else (ABSENT if taken[FLAGS] else taken[VALUE])
            held = taken
        self._stats.counts["loads"]()
        try:
            return self._call_and_fill(key, loader, ttl, flight, held)
        except BaseException:
            self._stats.counts["load_errors"]()
            raise

    def filled_since(self, key: Key) -> Any:
        """What another flight stored between a caller's miss and its lead: the value, ``ABSENT``, or ``NOTHING``.

        With a lease, only this process's copy is read: taking the lease answers Redis's.
        """
        return self.filled_by(self._core.read(key) if self.lease is None else self.lease.held(key)[0])

    def filled_by(self, record: Record | None) -> Any:
        """``filled_since`` of the record read: its value if live, ``ABSENT`` if negative, else ``NOTHING``."""
        state = None if record is None else record_state(record, self._clock())
        if record is not None and (state is _LIVE or state is _NEGATIVE):
            return record[VALUE] if state is _LIVE else ABSENT
        return NOTHING

    def _call_and_fill(self, key: Key, loader: Callable[[], Any], ttl: Any, flight: Flight, held: Held | None) -> Any:
        """Call the loader, store its result when the flight (or ``held``) may still fill; the plain value."""
        started = time.monotonic()
        try:
            return self.fill_loaded(key, loader(), ttl, flight, time.monotonic() - started, held)
        except BaseException:
            lease = self.lease
            if held is not None and lease is not None:
                lease.release(key, held)  # free at once: another process loads in turn
            raise

    def fill_loaded(
        self, key: Key, result: Any, ttl: Any, flight: Flight, load_time: float, held: Held | None = None
    ) -> Any:
        """Store what a loader returned when the flight (or ``held``) may still fill; the plain value."""
        value, version = self.loaded(key, result)
        lease = self.lease
        if held is None or lease is None:
            admits = self._flights.admits
            filled = admits(flight) and fill(
                self._core.write, self._core.read, self._core.current, key, value, version, ttl, load_time,
                lambda: admits(flight),
            )  # fmt: skip
        else:
            filled = lease.fill(key, held, value, version, ttl, load_time)
        if not filled:
            self._stats.counts["fills_rejected"]()
        return value

    def loaded(self, key: Key, result: Any) -> tuple[Any, int | None]:
        """The value to store of what a loader returned (``ABSENT`` for ``None``) and its version, checked."""
        version = None
        if isinstance(result, Versioned):
            result, version = result.value, codec.check_version(result.version)
        return (ABSENT if result is None or result is ABSENT else plain_value(key, result)), version

    # -- background ---------------------------------------------------------------------

    def renewal_due(self, record: Record, expires_at: float, now: float) -> bool:
        """Refresh-ahead or XFetch says a live entry should be renewed now."""
        options = self._options
        ttl, load_time = record[TTL], record[LOAD_TIME]
        if options.refresh_ahead and ttl is not None and expires_at - now <= options.refresh_ahead * ttl:
            return True
        if options.early_beta and load_time > 0:
            return now - load_time * options.early_beta * math.log(1.0 - random.random()) >= expires_at
        return False

    def _renew(self, key: Key, loader: Callable[[], Any], ttl: Any, seen_seq: int) -> None:
        """Start one background renewal of ``key`` unless one runs or ran too recently.

        ``seen_seq`` is the write of the record the hit found: once the key was written
        since (an earlier renewal finished meanwhile), there is nothing left to renew.
        """
        flight = self.renewal_flight(key, seen_seq)
        if flight is None:
            return
        try:
            self._scheduler.submit(lambda: self._refresh(flight, key, loader, ttl))
        except StoreClosed as exc:
            self._flights.finish(flight, error=exc)

    def renewal_flight(self, key: Key, seen_seq: int) -> Flight | None:
        """The flight of a background renewal of ``key`` to lead, unless one runs, ran too recently or is moot."""
        flights = self._flights
        if flights.running(key) or not flights.claim_renewal(key, self._options.min_refresh_interval):
            return None
        current = self._core.current(key)
        if current is None or current[SEQ] != seen_seq:
            return None
        flight, leader = flights.begin(key)
        return flight if leader else None

    def _refresh(self, flight: Flight, key: Key, loader: Callable[[], Any], ttl: Any) -> None:
        """A background load as the flight's leader; failures are logged and counted, the old value stays."""
        try:
            value = self._flights.lead(flight, lambda f: self._renewal_load(key, loader, ttl, f))
        except Exception:
            self._stats.counts["refresh_errors"]()
            log.warning("%s: background refresh of %r failed; the old value stays", self._core.path, key, exc_info=True)
            return
        if value is not BUSY:
            self._stats.counts["refreshes"]()

    def _renewal_load(self, key: Key, loader: Callable[[], Any], ttl: Any, flight: Flight) -> Any:
        """A background load; with a lease, ``BUSY`` (skipped) while another process holds it."""
        held = None
        if self.lease is not None:
            held = self.lease.try_take(key)
            if held is None:
                return BUSY
        return self._call_and_fill(key, loader, ttl, flight, held)

    def refresh_every(self, key: Key, loader: Callable[[], Any], interval: float, ttl: Any = ...) -> Handle:
        """Recompute ``key`` every ``interval`` seconds in the background, the first round at once."""
        encode_key(key)
        self._check_open()
        self.check_load_args(loader, ttl, WAIT, None)
        period = check_seconds(interval, "interval", allow_zero=False)
        assert period is not None
        claim = None if self.lease is None else self.lease.job(b"r", key, period)

        def round_() -> None:
            if claim is not None and not claim():
                return  # another process runs this round
            flight, leader = self._flights.begin(key)
            if leader:
                self._refresh(flight, key, loader, ttl)

        return self._scheduler.every(period, round_, first_delay=0.0)

    def invalidate(self, key: Key, again_after: float | None = None) -> None:
        """Delete ``key`` now and, with ``again_after``, again that many seconds later in the background."""
        delay = check_seconds(again_after, "again_after", optional=True)
        self._core.delete(key)
        self.delete_later(key, delay)

    def delete_later(self, key: Key, delay: float | None) -> None:
        """Delete ``key`` again ``delay`` seconds from now in the background (``None``: never)."""
        if delay is not None:
            self._scheduler.after(delay, lambda: self._delete_again(key))

    def _delete_again(self, key: Key) -> None:
        if not self._core.is_closed():
            self._core.delete(key)
