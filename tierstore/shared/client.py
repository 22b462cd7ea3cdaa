"""The connection to the shared tier: a redis-py client with timeouts, the namespace's names, the epoch id.

- ``shared`` is a URL (``redis://``, ``rediss://``, ``unix://``; redis-py's
  ``from_url``) or a ``redis.Redis``, whose connection settings are reused for
  connections of our own: replies as bytes, a socket timeout of
  ``CALL_TIMEOUT`` seconds (unless the client sets one), no retries inside
  redis-py (a retried script could run twice; the caller decides), RESP2
  (every Redis speaks it; the listener reads its replies as plain arrays).
- Every call goes through ``call``, which maps any ``RedisError`` (refused
  connection, timeout, a server refusing a write) to ``SharedUnavailable`` and
  counts it in ``shared_errors``.
- Contact: ``last_contact`` is the ``time.monotonic()`` of the last reply from
  Redis (any successful call; the listener's subscription, messages and PONGs
  through ``contact``). ``down`` says Redis is known unreachable: set by a call
  that lost its connection or timed out and by the listener on a gap of its
  connection (``on_lost``, the outage policy: ``outage.Outage``), cleared only
  by the listener once it is subscribed again and has resynced. While
  ``down``, ``call`` raises at once (counted) instead of waiting for a
  connect timeout each time; the listener's own calls pass ``while_down=True``.
- Names in Redis all carry the namespace in a hash tag, ``tierstore:{ns}:``, so
  a Redis Cluster keeps a namespace on one slot (its scripts touch several keys):
  ``...:e:<tagged key>`` (a hash per entry: ``d`` envelope, ``v`` version as a
  decimal string, ``s`` write seq, ``e`` epoch id), ``...:l:<tagged key>`` (the
  key's load lease: a random token with ``PX lock_timeout``), ``...:leases`` and
  ``...:keys`` (sorted sets, score 0, of the tagged keys holding a lease and an
  entry hash: prefix listings by ``ZRANGEBYLEX``; members may outlive an expired
  hash and are pruned when found so), ``...:seq`` (the write
  sequence, ``INCR``), ``...:epoch`` (a random id of the data set, created when
  missing: a Redis that lost its data has another one) and the channel ``...:inv``.
- ``origin`` is a random id of this open store: its own messages are not
  invalidations for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from ..errors import SharedUnavailable
from ..stats import Stats

__all__ = ["CALL_TIMEOUT", "Names", "SharedClient", "packed", "wrong_type"]

log = logging.getLogger("tierstore")

CALL_TIMEOUT = 2.0  # seconds: every Redis call (connect, command, script) ends within it

_T = TypeVar("_T")


class Names:
    """The names of one namespace in Redis (bytes, as redis-py sends them)."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"tierstore:{{{namespace}}}:".encode()
        self.seq = self.prefix + b"seq"
        self.epoch = self.prefix + b"epoch"
        self.channel = self.prefix + b"inv"
        self.leases = self.prefix + b"leases"  # sorted set (score 0) of the tagged keys with a lease
        self.keys = self.prefix + b"keys"  # sorted set (score 0) of the tagged keys with an entry hash
        self._entry = self.prefix + b"e:"
        self._lease = self.prefix + b"l:"

    def entry(self, tagged_key: bytes) -> bytes:
        """The hash holding the entry of a key (``codec.encode_key``'s tagged bytes)."""
        return self._entry + tagged_key

    def lease(self, tagged_key: bytes) -> bytes:
        """The string holding the load lease of a key (a random token, ``PX lock_timeout``)."""
        return self._lease + tagged_key

    def entry_keys(self, tagged_key: bytes) -> list[bytes]:
        """``KEYS`` of a one-key write script: entry, seq, epoch, lease, leases set, keys set."""
        return [self.entry(tagged_key), self.seq, self.epoch, self.lease(tagged_key), self.leases, self.keys]


_POOL_STATE = ("maint_notifications_", "orig_")


def _connect(shared: object) -> redis.Redis:
    """Our client for ``shared``: its settings, but replies as bytes, RESP2 and no retries whatever it or
    its URL's query (``?decode_responses=...``, ``?protocol=3``) says; the default timeouts unless set."""
    options: dict[str, Any] = {"decode_responses": False, "retry": Retry(NoBackoff(), 0), "protocol": 2}
    if isinstance(shared, str):  # a URL's query overrides from_url's arguments: ours are applied below
        shared = redis.Redis.from_url(shared, socket_timeout=CALL_TIMEOUT, socket_connect_timeout=CALL_TIMEOUT)
        pool = shared.connection_pool
        if pool.connection_class is redis.UnixDomainSocketConnection and not pool.connection_kwargs.get("path"):
            raise ValueError("shared: a unix:// URL names the socket's path, as unix:///run/redis.sock")
    if not isinstance(shared, redis.Redis):
        kind = f"{type(shared).__module__}.{type(shared).__qualname__}"
        hint = " (an asyncio store opens its own redis.asyncio connections from either)" * ("asyncio" in kind)
        raise TypeError(f"shared must be a URL or a blocking redis.Redis, not {kind}{hint}")
    pool = shared.connection_pool
    if isinstance(pool, SentinelConnectionPool):  # its connections ask the sentinels through their own pool
        raise ValueError("shared: a Sentinel-managed redis.Redis is not supported; pass the master's URL")
    # Not the pool's own state (redis-py 6+ keeps its RESP3 maintenance handler there): our pool makes its own.
    kwargs = {name: value for name, value in pool.connection_kwargs.items() if not name.startswith(_POOL_STATE)}
    kwargs.update(options)
    if kwargs.get("socket_timeout") is None:
        kwargs["socket_timeout"] = CALL_TIMEOUT
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = kwargs["socket_timeout"]
    _check_settings(pool.connection_class, kwargs)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _check_settings(connection_class: Any, kwargs: dict[str, Any]) -> None:
    """``ValueError`` for settings no connection can be made with (an unknown URL query argument such as
    ``?timeout=``, ``ssl_cert_reqs`` on a plain connection, or a bad value of it): redis-py only finds out
    at the first connect, which would read as an outage for ever. Making a connection object connects nothing."""
    try:
        connection_class(**kwargs)
    except (TypeError, ValueError, redis.RedisError) as exc:
        raise ValueError(f"shared: redis-py cannot connect with these settings: {exc}") from None


_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis-py's own packing wraps hiredis's in per-argument checks that cost as much again
    from hiredis import pack_command as _hiredis_pack

    _pack = _hiredis_pack
except ImportError:  # without hiredis (redis[hiredis] brings it): redis-py's packing
    _pack = None


def packed(conn: Any, args: tuple[Any, ...]) -> Any:
    """``args`` as RESP bytes for ``conn`` (a blocking or an asyncio connection): hiredis's packing when installed."""
    return conn.pack_command(*args) if _pack is None else [_pack(args)]


_LOST = (redis.ConnectionError, redis.TimeoutError)  # Redis unreachable (as opposed to refusing a call)


def wrong_type(exc: BaseException) -> bool:
    """Whether a ``SharedUnavailable`` is Redis's ``WRONGTYPE``: a name holding another kind of value
    (damage in Redis, not an outage; the entry reads treat it as a corrupt record)."""
    cause = exc.__cause__
    return isinstance(cause, redis.ResponseError) and "WRONGTYPE" in str(cause)


def _ignore(reason: str) -> None:
    """``on_lost`` until the outage policy is installed."""


class SharedClient:
    """One store's connections to Redis; ``call`` runs a command with the error mapping.

    Thread-safety: ``call`` runs from any thread (redis-py's pool); ``down`` and
    ``last_contact`` are single attribute writes, read without a lock.
    """

    def __init__(self, shared: object, namespace: str, stats: Stats) -> None:
        self.redis = _connect(shared)
        self.names = Names(namespace)
        self.origin = os.urandom(8).hex().encode()
        self._count_error = stats.counts["shared_errors"]
        self._count_call = stats.counts["shared_calls"]
        kwargs = self.redis.connection_pool.connection_kwargs
        self.where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")
        self.last_contact = time.monotonic()  # the open counts as a contact: a grace runs from it
        self.down = False  # Redis known unreachable: calls fail fast until the listener is back
        self.on_lost: Callable[[str], None] = _ignore  # set by the outage policy
        self._idle: list[Any] = []  # ``execute``'s connections
        self.generation = 0  # bumped by ``back``: connections idle from before may speak to a dead server

    def call(self, what: str, command: Callable[..., _T], *args: Any, while_down: bool = False) -> _T:
        """``command(*args)``, any Redis error raised as ``SharedUnavailable`` (counted).

        While ``down`` it raises at once, unless ``while_down`` (the listener reconnecting).
        A lost connection or a timeout marks Redis down (``on_lost``).
        """
        self.check_up(what, while_down=while_down)
        try:
            result = command(*args)
        except redis.RedisError as exc:
            raise self.failure(what, exc) from exc
        self.last_contact = time.monotonic()
        return result

    def check_up(self, what: str, *, while_down: bool = False) -> None:
        """Before a round trip (a command, a script or a pipeline): count it, or raise at once while ``down``."""
        if self.down and not while_down:
            self._count_error()
            raise SharedUnavailable(f"{what}: Redis at {self.where} is unreachable; the listener is reconnecting")
        self._count_call()

    def failure(self, what: str, exc: redis.RedisError) -> SharedUnavailable:
        """The ``SharedUnavailable`` a failed round trip raises (counted; a lost connection marks Redis down)."""
        self._count_error()
        if isinstance(exc, _LOST):
            self.on_lost(f"{what}: {type(exc).__name__}: {exc}")
            return SharedUnavailable(f"{what}: Redis at {self.where} is unreachable: {exc}")
        return SharedUnavailable(f"{what}: Redis at {self.where} failed: {exc}")

    def execute(self, what: str, *args: Any) -> Any:
        """One command (``args``: its name and arguments) as ``call`` runs it; the raw RESP2 reply.

        For the hot calls (a read's ``HMGET``, a write's ``EVALSHA``): it runs on a connection
        of this client's own idle list, not through ``redis.Redis``'s command layer, whose
        pool, retry and metrics wrappers cost three times the round trip itself. Replies
        are not post-processed (``HMGET``: a list of bytes or ``None``).
        """
        return self.call(what, self.send, *args)

    def send(self, *args: Any) -> Any:
        """``args`` sent and its reply read on an idle connection (a new one if none is idle); inside ``call``.

        Thread-safety: each caller pops its own connection (``list.pop``/``append`` are
        atomic); a failure other than a server's error reply disconnects it, so no half-read
        reply is left for the next caller (it reconnects on its next command).
        """
        idle = self._idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self.redis.connection_pool.make_connection()
        try:
            conn.send_packed_command(packed(conn, args))
            reply = conn.read_response()
        except redis.ResponseError:
            idle.append(conn)  # the reply was read whole: the connection is in step
            raise
        except BaseException:
            conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return reply

    def execute_many(self, what: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` pipelined in one round trip (as ``execute`` runs one); their raw replies in order.

        A command Redis refuses (an error reply) leaves a counted ``SharedUnavailable`` in its
        place, its cause the reply (``wrong_type`` reads it), and the others stand; a lost
        connection fails them all, raised as ``execute`` raises it.
        """
        return self.refusals_in_place(what, self.call(what, self.send_many, commands))

    def refusals_in_place(self, what: str, replies: list[Any]) -> list[Any]:
        """``replies`` with each error reply turned into the counted ``SharedUnavailable`` ``call`` raises."""
        for index, reply in enumerate(replies):
            if isinstance(reply, redis.ResponseError):
                error = self.failure(what, reply)
                error.__cause__ = reply
                replies[index] = error
        return replies

    def send_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` sent together on one idle connection, then their replies read in order; inside ``call``.

        An error reply is kept in its command's place (the connection stays in step); any
        other failure disconnects the connection, as in ``send``.
        """
        idle = self._idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self.redis.connection_pool.make_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([part for args in commands for part in packed(conn, tuple(args))])
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return replies

    def back(self) -> None:
        """Redis answers again after an outage (the listener's): drop the idle connections from before
        (the server may have restarted: their first use would fail and look like a new outage), then
        let calls through. The asyncio driver's connections follow ``generation``."""
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took the last one meanwhile
                break
            conn.disconnect()
        self.generation += 1
        self.down = False

    def contact(self) -> None:
        """Note a reply that did not come through ``call`` (the listener's)."""
        self.last_contact = time.monotonic()

    def failed(self) -> None:
        """Count a failed Redis call (``stats()["shared_errors"]``)."""
        self._count_error()

    def epoch(self, *, while_down: bool = False) -> bytes:
        """The epoch id of the data set in Redis, created when missing (or holding another type of value: damage).

        One transaction (``MULTI``/``EXEC``): a ``FLUSHALL`` by another client cannot fall between
        the creation and the read back, which would find no id although Redis answered."""
        fresh = os.urandom(8).hex().encode()

        def create_and_read() -> object:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.names.epoch, fresh, nx=True)
            pipe.get(self.names.epoch)
            return pipe.execute()[1]

        try:
            epoch = self.call("epoch", create_and_read, while_down=while_down)
        except SharedUnavailable as exc:
            if not wrong_type(exc):
                raise
            # the name holds another type of value (damage): as good as missing, so a new id, as the scripts do
            self.call("epoch", self.redis.delete, self.names.epoch, while_down=while_down)
            epoch = self.call("epoch", create_and_read, while_down=while_down)
        if not isinstance(epoch, bytes):
            raise SharedUnavailable(f"epoch: Redis at {self.where} lost the epoch id just written")
        return epoch

    def close(self) -> None:
        try:
            for conn in self._idle:
                conn.disconnect()
            self.redis.close()
            self.redis.connection_pool.disconnect()  # a pool built here for a given client is ours to close
        except redis.RedisError:  # closing never raises: the connections are gone either way
            log.debug("closing the Redis connections failed", exc_info=True)
