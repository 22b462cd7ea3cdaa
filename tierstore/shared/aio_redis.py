"""The shared tier's round trips on an event loop: the steps of ``steps`` driven over redis.asyncio.

``AsyncRedis.run`` drives the same generators the blocking store runs with
``steps.run``, awaiting each round trip on a redis.asyncio connection instead of
blocking a thread, so the asyncio facade (``aio``) never blocks its loop on
Redis and shares every rule of the blocking one.

- Connections are this store's client's (same server, credentials, TLS and
  timeouts: a round trip ends within ``socket_timeout``, one timer in the
  caller's task (``deadline.bounded``), a connect within
  ``socket_connect_timeout``), one pool per event loop (an asyncio connection
  belongs to the loop it was opened on). A round trip takes an idle connection
  (or opens one), so concurrent coroutines never share one; at most
  ``MAX_CONNECTIONS`` per loop are in use, further round trips queue (FIFO)
  and fail fast if Redis is found down meanwhile. One left
  idle through an outage (``SharedClient.generation`` moved on) is reconnected
  before use: the server it spoke to may have restarted.
- Errors map as the blocking client maps them (``SharedClient.check_up`` and
  ``failure``): ``SharedUnavailable``, counted, a lost connection marking Redis
  down. A call cancelled mid-reply leaves its connection disconnected by
  redis.asyncio, so no half-read reply reaches the next caller; a cancellation
  redis-py's send swallows (its ``wait_for`` on Python 3.11 returns when the
  write ended meanwhile) is raised once the command is sent, never lost.
- A ``Pause`` (a lease waiter) sleeps on an ``asyncio.Event`` that the listener
  thread sets through ``call_soon_threadsafe``.
- ``NOSCRIPT``: the script is loaded again and run once more, as ``Scripts.run`` does.

Thread-safety: one ``AsyncRedis`` serves any number of loops; each loop's idle
list is used only from that loop, and ``close`` closes the calling loop's.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio.connection as aconnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from ..deadline import bounded
from .client import CALL_TIMEOUT, SharedClient, packed
from .scripts import Scripts
from .steps import Call, Listen, Pipeline, Step, Steps, advance

__all__ = ["AsyncRedis", "MAX_CONNECTIONS"]

MAX_CONNECTIONS = 64  # per event loop: round trips beyond it queue for a connection

_T = TypeVar("_T")

_CLASSES: tuple[tuple[type[Any], type[aconnection.AbstractConnection]], ...] = (
    (redis.SSLConnection, aconnection.SSLConnection),
    (redis.UnixDomainSocketConnection, aconnection.UnixDomainSocketConnection),
    (redis.Connection, aconnection.Connection),
)


class AsyncRedis:
    """Round trips of one store's shared tier on any event loop (see the module doc)."""

    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._client: SharedClient = scripts.client
        self._connection_class, self._kwargs = _async_settings(self._client.redis.connection_pool)
        self._timeout = _round_trip_timeout(self._kwargs)
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # over ``_pools``' keys: loops in several threads

    async def run(self, steps: Steps[_T]) -> _T:
        """Drive ``steps`` to their result, each round trip awaited (errors thrown in at its ``yield``)."""
        answer: Any = None
        error: BaseException | None = None
        while True:
            done, step = advance(steps, answer, error)
            if done:
                return step  # type: ignore[no-any-return]
            answer = error = None
            try:
                answer = await self._answer(step)
            except BaseException as exc:  # a cancellation too: the operation's handlers undo what they must
                error = exc

    async def _answer(self, step: Step) -> Any:
        if isinstance(step, Call):
            if step.script is None:
                return await self.execute(step.what, *step.args)
            return await self._script(step.what, step.script, tuple(step.keys), tuple(step.args))
        if isinstance(step, Pipeline):
            return await self.execute_many(step.what, step.commands)
        if isinstance(step, Listen):
            return LoopWaiter(asyncio.get_running_loop())
        waiter = step.waiter
        assert isinstance(waiter, LoopWaiter)
        await waiter.wait(step.seconds)
        return None

    async def execute(self, what: str, *args: Any) -> Any:
        """One command (``args``: its name and arguments), its raw RESP2 reply; errors as the blocking client's."""
        client = self._client
        client.check_up(what)
        try:
            (reply,) = await self._send([args], keep_errors=False)
        except NoScriptError:
            raise  # the script runner loads it again
        except redis.RedisError as exc:
            raise client.failure(what, exc) from exc
        client.contact()
        return reply

    async def execute_many(self, what: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` in one round trip, as ``SharedClient.execute_many`` runs them (error replies in place)."""
        client = self._client
        client.check_up(what)
        try:
            replies = await self._send([tuple(args) for args in commands], keep_errors=True)
        except redis.RedisError as exc:
            raise client.failure(what, exc) from exc
        client.contact()
        return client.refusals_in_place(what, replies)

    async def _script(self, what: str, source: str, keys: tuple[bytes, ...], args: tuple[Any, ...]) -> Any:
        command = (b"EVALSHA", self._scripts.digest(source), len(keys), *keys, *args)
        try:
            return await self.execute(what, *command)
        except NoScriptError:
            self._scripts.reloads += 1  # Redis forgot it (restarted, SCRIPT FLUSH): EVALSHA did not run it
        await self.execute("SCRIPT LOAD", b"SCRIPT", b"LOAD", source)
        return await self.execute(what, *command)

    async def _send(self, commands: list[tuple[Any, ...]], *, keep_errors: bool) -> list[Any]:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(loop, _LoopPool())
        async with pool.slots:  # at most MAX_CONNECTIONS round trips of this loop at once; the rest queue
            if self._client.down:  # found down while this call queued: fail fast, as calls made now do
                raise redis.ConnectionError("Redis was found unreachable while this call waited for a connection")
            return await self._on_connection(pool, commands, keep_errors)

    async def _on_connection(self, pool: _LoopPool, commands: list[tuple[Any, ...]], keep_errors: bool) -> list[Any]:
        generation = self._client.generation
        idle = pool.idle
        conn, born = idle.pop() if idle else (self._connection_class(**self._kwargs), generation)
        if born != generation:  # idle through an outage: its server may be gone (restarted); a new socket
            await conn.disconnect(nowait=True)
        task = asyncio.current_task()
        asked = _cancelling(task)
        try:
            async with bounded(self._timeout):
                return await _round_trip(conn, commands, task, asked, keep_errors)
        except TimeoutError:  # redis.asyncio disconnected it when the timeout cancelled its read
            raise redis.TimeoutError(f"no reply from Redis within {self._timeout} s") from None
        finally:  # after any error redis.asyncio has disconnected it: the next use reconnects
            if pool.open:
                idle.append((conn, generation))
            else:  # the loop's connections were closed meanwhile
                await conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Disconnect the calling loop's connections (each loop closes its own: they belong to it)."""
        with self._lock:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            pool.open = False
            for conn, _ in pool.idle:
                await conn.disconnect(nowait=True)


class _LoopPool:
    """One loop's connections: the idle ones (each with the client's generation when last used) and the
    slots bounding how many are in use at once (a thousand coroutines need not hold a thousand sockets)."""

    def __init__(self) -> None:
        self.idle: list[tuple[Any, int]] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.open = True


async def _round_trip(
    conn: Any, commands: list[tuple[Any, ...]], task: asyncio.Task[Any] | None, asked: int, keep_errors: bool
) -> list[Any]:
    """Send ``commands`` and read their replies; ``keep_errors``: an error reply in its place, else raised."""
    await conn.send_packed_command([part for args in commands for part in packed(conn, args)], check_health=False)
    if _cancelling(task) > asked:
        # Cancelled while redis-py sent it, and a wait_for (Python 3.11) returned instead of raising:
        # deliver the cancellation here, its reply unread (the connection is dropped).
        await conn.disconnect(nowait=True)
        raise asyncio.CancelledError
    if not keep_errors:
        return [await conn.read_response()]
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except redis.ResponseError as exc:  # the reply was read whole: the connection stays in step
            replies.append(exc)
    return replies


def _cancelling(task: asyncio.Task[Any] | None) -> int:
    """How many cancellations ``task`` has pending (``Task.cancelling``, 3.11+; 0 on 3.10)."""
    count = getattr(task, "cancelling", None)
    return 0 if count is None else int(count())


class LoopWaiter:
    """A lease waiter on one loop; ``set`` from any thread (the listener's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:
            pass  # its loop is closed: nobody waits on it any more

    async def wait(self, seconds: float) -> None:
        """Until set or ``seconds`` pass; cleared for the next wait."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except asyncio.TimeoutError:  # noqa: UP041  # not the builtin TimeoutError on 3.10
            pass
        self._event.clear()


def _async_settings(pool: Any) -> tuple[type[aconnection.AbstractConnection], dict[str, Any]]:
    """The redis.asyncio connection class and keyword arguments matching a blocking pool's connections."""
    found = [asynchronous for blocking, asynchronous in _CLASSES if issubclass(pool.connection_class, blocking)]
    if not found:
        raise TypeError(f"AsyncTierStore cannot use {pool.connection_class.__name__} connections of redis-py")
    asynchronous = found[0]
    accepted = set(inspect.signature(aconnection.AbstractConnection.__init__).parameters)
    accepted |= set(inspect.signature(asynchronous.__init__).parameters)
    accepted.discard("himport_registry")  # state of the blocking connections: the asyncio ones keep their own
    kwargs = {name: value for name, value in pool.connection_kwargs.items() if name in accepted}
    kwargs["retry"] = Retry(NoBackoff(), 0)  # never retried inside redis-py: a script could run twice
    return asynchronous, kwargs


def _round_trip_timeout(kwargs: dict[str, Any]) -> float:
    """The bound of one round trip (the client's socket timeout), taken off the connection's own reads and
    writes: redis.asyncio times each of them with a timer and a task of its own, three times the round trip."""
    timeout = kwargs.pop("socket_timeout", None)
    kwargs["socket_timeout"] = None
    return float(timeout) if timeout else CALL_TIMEOUT
