"""Redis round trips as steps: each shared operation written once, run by a blocking or an asyncio driver.

An operation that needs Redis is a generator (``Steps[T]``) that yields what it
needs and is sent the answer back:

- ``Call``: one round trip, a script (by its source: ``EVALSHA``, loaded again on
  ``NOSCRIPT``) or a plain command. It is sent the raw reply, or has the call's
  error (``SharedUnavailable``, a cancellation, ...) thrown in at the ``yield``,
  so its ``try``/``except`` reads as if the call were made in place;
- ``Pipeline``: plain commands sent in one round trip; sent their replies in
  order, a command Redis refused as a ``SharedUnavailable`` in its place (a
  lost connection throws one in at the ``yield``, as for a ``Call``);
- ``Listen``: a new waiter, for a lease waiter to register before it asks again;
- ``Pause``: sleep until the waiter is set or ``seconds`` pass.

``run`` drives one in the calling thread with the store's blocking client;
``aio_redis.AsyncRedis.run`` drives the same generator on an event loop over
redis.asyncio. The version rules, the outage policy and the local copies stay
in one place for both.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .scripts import Scripts

__all__ = ["Call", "Listen", "Pause", "Pipeline", "Steps", "Waiter", "advance", "carry_on", "run"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: ``script``'s source run with ``keys`` and ``args``, or (``script=None``) the command ``args``."""

    what: str  # the public call, for errors
    script: str | None
    keys: Sequence[bytes]
    args: Sequence[Any]


class Waiter(Protocol):
    """What a lease waiter sleeps on; ``set`` may be called from any thread (the listener's)."""

    def set(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One round trip of plain ``commands`` (each its name and arguments), for ``what``."""

    what: str
    commands: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Listen:
    """Ask the driver for a new ``Waiter`` (sent back)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep until ``waiter`` is set or ``seconds`` pass, then clear it."""

    waiter: Waiter
    seconds: float


Step = Call | Pipeline | Listen | Pause
Steps = Generator[Step, Any, _T]


def advance(steps: Steps[_T], answer: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send ``answer`` into ``steps`` (or throw ``error`` in at their ``yield``): ``(True, result)`` once
    they finished, else ``(False, the next step)``. Each driver below loops over this."""
    try:
        return False, steps.send(answer) if error is None else steps.throw(error)
    except StopIteration as stop:
        return True, stop.value


def carry_on(steps: Steps[_T], answer: Any = None, error: BaseException | None = None) -> Steps[_T]:
    """``steps`` (waiting at a ``yield``) sent ``answer`` or thrown ``error``, then their further steps yielded
    to whoever drives this: an operation that answered another's step itself (a pipeline of several
    operations' first calls) hands the rest back to its driver with ``yield from``."""
    while True:
        done, step = advance(steps, answer, error)
        if done:
            return step  # type: ignore[no-any-return]
        answer = error = None
        try:
            answer = yield step
        except BaseException as exc:  # thrown in at the yield: the operation's own handlers decide
            error = exc


def run(steps: Steps[_T], scripts: Scripts) -> _T:
    """Drive ``steps`` to their result in this thread, each ``Call`` through ``scripts``'s blocking client."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        done, step = advance(steps, answer, error)
        if done:
            return step  # type: ignore[no-any-return]
        answer = error = None
        try:
            answer = _blocking(step, scripts)
        except BaseException as exc:  # thrown in at the yield: the operation's own handlers decide
            error = exc


def _blocking(step: Step, scripts: Scripts) -> Any:
    if isinstance(step, Call):
        if step.script is None:
            return scripts.client.execute(step.what, *step.args)
        return scripts.run(step.what, step.script, list(step.keys), list(step.args))
    if isinstance(step, Pipeline):
        return scripts.client.execute_many(step.what, step.commands)
    if isinstance(step, Listen):
        return threading.Event()
    waiter = step.waiter
    assert isinstance(waiter, threading.Event)
    waiter.wait(step.seconds)
    waiter.clear()
    return None
