"""The listener: one thread per store subscribed to its namespace's channel, dropping what others wrote.

Each message is ``seq:version:origin:tagged key`` (see ``scripts``), or, for
a write that landed an envelope of at most ``PUSH_BYTES``,
``seq:version+length+epoch length:origin:tagged key`` followed by that
envelope and the epoch id of its data set, or, for
``delete_prefix``/``clear``, ``seq:P:origin:tagged prefix`` (``bulk_scripts``;
an empty prefix: every key). The listener:

- unless the message is this store's own (``origin``) or the local copy is
  trusted and stamped at that ``seq`` or later in the same epoch: replaces a
  trusted copy of the key held in tier 1 or 2 with the record the message
  carried, stamped at its ``seq`` and epoch id (``mirror.Mirror.replace``: the
  next read here needs no round trip; a key held in neither tier stays so, an
  untrusted copy or a record of another data set than the one last read is
  dropped), or, when it carried
  none (or one that does not decode), drops the key's copies from tiers 1
  and 2 (``mirror.Mirror.drop``); and detaches
  this process's load of the key in flight (``Flights.invalidate``: its fill
  is refused in Redis anyway; callers from now on start a fresh load instead of
  joining it, as after a write in this process); counted in
  ``invalidations_received``;
- for a prefix message (not its own), drops every copy under the prefix from
  both tiers (``Mirror.drop_prefix``) and detaches this process's loads in
  flight under it (``Flights.invalidate_prefix``), counted once;
- notes every reply (the subscription, messages, PONGs) as a contact with
  Redis (``SharedClient.contact``: the grace of ``shared_failure="local"``
  runs from the last one);
- watches for any gap in what it heard. A ``seq`` that is not the last one
  plus one (a lost message, or a Redis that lost its data and counts again)
  or a malformed message is a gap while Redis answers: it resyncs at once
  (``Outage.resync``: tier 1 cleared, every tier-2 copy distrusted until
  revalidated; counted in ``resyncs``). A disconnect, an error, a PING left
  unanswered for ``shared_ping_interval`` seconds (a paused or partitioned
  server) or a call elsewhere that found Redis unreachable (``client.down``)
  is an outage: ``Outage.lost`` applies ``shared_failure`` (see ``outage``);
  then it reconnects with backoff (50 ms doubling to 2 s, each attempt
  bounded by ``CALL_TIMEOUT``) and, once subscribed, reads the epoch id,
  loads the write scripts (``prepare``: at open too, so both happen at the
  first contact) and resyncs before calls go through again
  (``Outage.regained``). The first message after a subscription sets the
  baseline ``seq`` (writes before the subscription are covered by that resync),
  and resyncs if the epoch id changed since it was read (a ``FLUSHALL``: its
  ``seq`` counts from 1 again). A record is copied only from a message whose
  ``seq`` follows the last one heard: the first after a subscription, a
  malformed message or a gap may predate the data set whose epoch id was
  read since, so its key is dropped instead.
- Each wake-up handles every reply already waiting (up to ``_DRAIN``), read
  straight off the subscription's connection (RESP2 arrays), then sleeps
  ``coalesce`` seconds (2 ms): under a stream of writes the messages of those
  2 ms wait in the socket and are read in one go, one wake-up (a context switch
  and a GIL hand-over, tens of microseconds each) for many messages instead of
  one each. An isolated message is handled at once; one that follows another
  within 2 ms waits up to that long. A wake-up that read ``_DRAIN`` replies
  and found more waiting reads on without the sleep (a backlog only grows
  while it sleeps). Idle, it wakes every ``_POLL`` seconds to
  check its clock and ``client.down``.
- Errors are counted in ``shared_errors`` and logged; the thread never dies of one.
- ``wake``, when set, is called with each message's tagged key (its own too):
  waiters for a load lease in another process ask Redis again at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from ..codec import Key, decode_key
from ..errors import CorruptRecord, SharedUnavailable
from ..flight import Flights
from ..keyspace import NS_ENTRY
from ..stats import Stats
from .client import CALL_TIMEOUT, SharedClient
from .mirror import Mirror, Stamp
from .outage import Outage
from .reading import shared_record

__all__ = ["Listener"]

log = logging.getLogger("tierstore")

_POLL = 0.05  # seconds: the longest the thread waits for a message before checking its clock
_DRAIN = 1000  # replies read per wake-up at most, so a steady stream still lets the clock be checked
COALESCE = 0.002  # seconds asleep after each wake-up's replies (see the module's docstring)
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0


class _Gap(Exception):
    """The listener may have missed messages."""


class Listener:
    """The invalidation listener of one store (a daemon thread)."""

    def __init__(
        self,
        client: SharedClient,
        mirror: Mirror,
        outage: Outage,
        flights: Flights,
        ping_interval: float,
        stats: Stats,
        prepare: Callable[[], None],
    ) -> None:
        self._client = client
        self._mirror = mirror
        self._outage = outage
        self._flights = flights
        self._prepare = prepare
        self._interval = ping_interval
        self._count_received = stats.counts["invalidations_received"]
        self._stop = threading.Event()
        self.coalesce = COALESCE  # read at each wake-up (tests change it)
        self.wakeups = 0  # wake-ups that found replies waiting
        self.wake: Callable[[bytes], None] | None = None  # set before start
        self.subscribed = threading.Event()  # set once, by the first subscription
        self._attempted = threading.Event()  # set once the first attempt succeeded or failed
        self.failure = "no attempt finished"  # why the last attempt or subscription ended
        self.refusal: str | None = None  # why Redis refused the last attempt (a wrong password, database or ACL)
        self._thread = threading.Thread(target=self._run, name="tierstore-shared-listener", daemon=True)

    def start(self, timeout: float) -> bool:
        """Start the thread and wait up to ``timeout`` for its first attempt; whether it is subscribed.

        If not, it keeps trying in the background (with backoff) until ``stop``.
        """
        self._thread.start()
        self._attempted.wait(timeout)
        return self.subscribed.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(CALL_TIMEOUT * 2 + 1)

    def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stop.is_set():
            try:
                self._session()
            except _Gap as gap:
                reason = str(gap)
            except (redis.RedisError, SharedUnavailable, OSError) as exc:
                if not isinstance(exc, SharedUnavailable):
                    self._client.failed()
                reason = f"{type(exc).__name__}: {exc}"
                self.refusal = reason if _refused(exc) else None
            except Exception as exc:  # never die: a listener that stopped would serve stale copies
                self._client.failed()
                log.exception("tierstore: the shared-tier listener failed")
                reason = repr(exc)
            else:
                reason = "stopped"
            self.failure = reason
            if not self._stop.is_set():
                self._outage.lost(reason)  # no-op when already down: the copies follow shared_failure
            self._attempted.set()
            if self._stop.is_set():
                return
            if self._connected:  # a fresh outage: try again soon
                self._connected = False
                backoff = _BACKOFF_MIN
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    _connected = False

    def _session(self) -> None:
        """One subscription, until a gap; returns only when stopped."""
        client = self._client
        pubsub = client.redis.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(client.names.channel)
            deadline = time.monotonic() + CALL_TIMEOUT
            while True:
                message = pubsub.get_message(timeout=_POLL)
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() > deadline or self._stop.is_set():
                    raise redis.TimeoutError("no subscription confirmation")
            client.contact()
            self._mirror.epoch = client.epoch(while_down=True)
            self._prepare()
            self._outage.regained()  # resync, then calls go through to Redis
            self._connected = True
            self.subscribed.set()
            self._attempted.set()
            self._listen(pubsub)
        finally:
            try:
                pubsub.close()
            except Exception:  # the connection is discarded either way
                log.debug("closing the listener's connection failed", exc_info=True)

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        """Read the subscription until stopped or a gap: every reply waiting is handled per wake-up.

        Replies are read off the subscription's connection directly (RESP2 arrays: the
        client asks for protocol 2), not through ``PubSub.get_message``, whose per-message
        bookkeeping cost more than the drop itself.
        """
        interval = self._interval
        last: int | None = None
        pinged_at: float | None = None
        next_ping = time.monotonic() + interval
        client = self._client
        conn = pubsub.connection
        assert conn is not None  # subscribed
        stop = self._stop
        while not stop.is_set():
            if conn.can_read(timeout=_POLL):
                self.wakeups += 1
                client.contact()
                caught_up = False
                for _ in range(_DRAIN):
                    reply = conn.read_response()
                    kind = reply[0] if type(reply) is list and reply else reply
                    if kind == b"message":
                        last = self._on_message(reply[2], last)
                    elif kind == b"pong" or kind == b"PONG":
                        pinged_at = None
                    if not conn.can_read(timeout=0):
                        caught_up = True
                        break
                client.contact()  # and after the last reply read: the grace runs from it
                if caught_up and self.coalesce:  # behind a backlog, reading on comes first
                    stop.wait(self.coalesce)  # what arrives meanwhile is read at the next wake-up, in one go
            if client.down:
                raise _Gap("a call found Redis unreachable")
            now = time.monotonic()
            if pinged_at is not None:
                if now - pinged_at > interval:
                    raise _Gap(f"PING unanswered for {interval}s")
            elif now >= next_ping:
                pubsub.ping("tierstore")
                pinged_at, next_ping = now, now + interval

    def _on_message(self, data: bytes, last: int | None) -> int | None:
        try:
            seq_text, version, origin, tagged = data.split(b":", 3)
            seq = int(seq_text)
            version, _, sizes = version.partition(b"+")  # a write's envelope and epoch id follow its key
            tagged, pushed, pushed_epoch = _split_pushed(tagged, sizes) if sizes else (tagged, b"", b"")
            whole = version == b"P"  # a prefix message: every key under the tagged prefix (b"": all)
            own = origin == self._client.origin  # its own: only the seq and ``wake`` matter
            key = None if own or (whole and not tagged) else decode_key(tagged)
        except (ValueError, CorruptRecord):
            log.warning("tierstore: a malformed invalidation %r on the shared channel", data[:80])
            self._outage.resync("malformed message")
            self._mirror.epoch = self._client.epoch()
            return None
        # After no seq or a gap the message's data set may be gone (the epoch id read since is newer):
        # no record it carried is copied.
        if last is None:
            pushed = b""
            self._check_epoch()
        elif seq != last + 1:
            pushed = b""
            self._outage.resync(f"seq {seq} after {last}")
            self._mirror.epoch = self._client.epoch()  # a reset: Redis may hold a new data set
        if not own:
            mirror = self._mirror
            if whole:
                mirror.drop_prefix(key)
                self._flights.invalidate_prefix(key)
            else:
                assert key is not None
                self._apply(key, NS_ENTRY + tagged, (seq, pushed_epoch), version, pushed)
                if self._flights.in_flight:
                    self._flights.invalidate(key)  # callers from now on start a fresh load, as after a write here
            self._count_received()
        if self.wake is not None:
            self.wake(tagged)
        return seq

    def _apply(self, key: Key, disk_key: bytes, stamp: Stamp, version: bytes, pushed: bytes) -> None:
        """Another store's write at ``stamp`` (its seq and, for a pushed record, its data set's epoch id):
        a copy held here is replaced by the record its message carried (``pushed``), or dropped (no
        record carried, or one that does not decode)."""
        mirror = self._mirror
        stripe = hash(key) % mirror.stripe_count
        if pushed:
            try:
                record = shared_record(pushed, version, mirror.max_bytes)
            except CorruptRecord:
                log.warning("tierstore: a malformed envelope in an invalidation of %r; the key is dropped", key)
            else:
                mirror.replace(key, disk_key, stripe, record, stamp)  # of another data set: dropped there
                return
        mirror.drop(key, disk_key, stripe, keep=(stamp[0], mirror.epoch))

    def _check_epoch(self) -> None:
        """The first message after a subscription has no ``seq`` to follow: it may come from a data set
        emptied since the epoch id was read (``FLUSHALL``, its ``seq`` counting from 1 again), whose
        messages would keep the copies stamped before it. A changed epoch id resyncs. The listener's
        own read (one ``GET`` a subscription), not one of the store's calls (``shared_calls``)."""
        client = self._client
        if client.redis.get(client.names.epoch) != self._mirror.epoch:
            self._outage.resync("the data set's epoch id changed")
            self._mirror.epoch = client.epoch()


# Replies that refuse for a while, not for good: memory at ``maxmemory``, a replica (a failover under
# way), a failed RDB save, a busy script, a server loading or a cluster settling. An outage to wait out.
_PASSING = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
_PASSING_CODES = ("MISCONF", "BUSY", "TRYAGAIN", "MASTERDOWN", "LOADING", "CLUSTERDOWN")


def _refused(exc: BaseException) -> bool:
    """Whether a failed attempt was Redis answering no (credentials, ``SELECT``, ACL, a script refused)
    rather than not answering, or refusing for a while (``_PASSING``): a setting to fix, not an outage."""
    cause = exc.__cause__ if isinstance(exc, SharedUnavailable) else exc
    if isinstance(cause, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)):
        return True
    if not isinstance(cause, redis.RedisError) or isinstance(cause, (redis.ConnectionError, redis.TimeoutError)):
        return False
    reply = str(cause).rsplit("of pipeline caused error: ", 1)[-1]  # redis-py's note on a pipeline's error
    return not isinstance(cause, _PASSING) and not reply.startswith(_PASSING_CODES)


def _split_pushed(tagged: bytes, sizes: bytes) -> tuple[bytes, bytes, bytes]:
    """The tagged key, the envelope and the epoch id of a pushed message's tail (``sizes``: the
    envelope's length and the epoch id's, ``length+length``); ``ValueError`` if they do not fit."""
    size_text, _, epoch_text = sizes.partition(b"+")
    if not (size_text.isdigit() and epoch_text.isdigit()):
        raise ValueError("pushed lengths")
    size, epoch_size = int(size_text), int(epoch_text)
    key_size = len(tagged) - size - epoch_size
    if size == 0 or epoch_size == 0 or key_size <= 0:
        raise ValueError("pushed lengths")
    return tagged[:key_size], tagged[key_size : key_size + size], tagged[key_size + size :]
