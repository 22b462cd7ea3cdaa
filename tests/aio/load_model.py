"""The model of interleaved coroutine loads, and the driver that applies its steps to a real store (no tests here).

``Model`` says, after each step, which callers are still waiting, what each
finished one got, which loads were cancelled, how many times the loader ran and
what the store holds. ``Driver`` makes each step on an ``AsyncTierStore`` with
loaders the test holds (each load ends only when a ``finish`` or ``fail`` step
opens its gate), and compares the store with the model. The steps:

- ``call(key)``: ``get_or_load(key)``; a stored value answers at once, else the
  caller joins the key's current load or starts a new one;
- ``cancel(n)``: the n-th caller still waiting is cancelled; the last caller of
  a load leaving cancels the load and frees its key at once;
- ``invalidate(key)``: the stored value goes, and the load in flight is
  detached: its callers get its value, which is never stored, and new callers
  start a fresh load;
- ``finish(n)``/``fail(n)``: the n-th running load returns its value (every
  third one ``None``: a negative entry) or raises.

The local test (``test_aio_property``) and the shared one
(``tests/shared/test_shared_aio_model``) drive the same steps; how each waits
for a step's effects (``settle``, or a wait for Redis round trips) is theirs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tierstore.aio import AsyncTierStore

KEYS = ("a", "b")
NEGATIVE = object()  # the model's negative entry
DEFAULT = "default"

OPS = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(KEYS)),
    st.tuples(st.just("cancel"), st.integers(0, 7)),
    st.tuples(st.just("invalidate"), st.sampled_from(KEYS)),
    st.tuples(st.just("finish"), st.integers(0, 7)),
    st.tuples(st.just("fail"), st.integers(0, 7)),
)


@dataclass
class Load:
    key: str
    waiters: set[int] = field(default_factory=set)
    detached: bool = False  # a write came after it began: its result is never stored
    state: str = "running"  # running, done, failed, cancelled


@dataclass
class Model:
    stored: dict[str, Any] = field(default_factory=dict)
    loads: list[Load] = field(default_factory=list)
    current: dict[str, int] = field(default_factory=dict)  # key -> the load new callers join
    callers: list[tuple[str, Any]] = field(default_factory=list)  # (state, result): waiting, done, failed, cancelled

    def expected(self, key: str) -> Any:
        """What a read of ``key`` answers: the stored value, ``None`` for a negative entry or nothing."""
        stored = self.stored.get(key)
        return None if stored is NEGATIVE else stored


@dataclass
class RealLoad:
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: tuple[str, Any] = ("ok", None)
    cancelled: bool = False


def value_of(load: int) -> Any:
    return None if load % 3 == 2 else {"load": load}


def step_call(model: Model, key: str) -> None:
    caller = len(model.callers)
    if key in model.stored:
        value = model.stored[key]
        model.callers.append(("done", DEFAULT if value is NEGATIVE else value))
        return
    load = model.current.get(key)
    if load is None:
        load = model.current[key] = len(model.loads)
        model.loads.append(Load(key))
    model.loads[load].waiters.add(caller)
    model.callers.append(("waiting", load))


def step_cancel(model: Model, caller: int) -> None:
    _, index = model.callers[caller]
    model.callers[caller] = ("cancelled", None)
    load = model.loads[index]
    load.waiters.discard(caller)
    if not load.waiters:  # the last caller left: the load is cancelled and its key freed at once
        load.state = "cancelled"
        if model.current.get(load.key) == index:
            del model.current[load.key]


def step_invalidate(model: Model, key: str) -> None:
    model.stored.pop(key, None)
    index = model.current.pop(key, None)
    if index is not None:
        model.loads[index].detached = True


def step_end(model: Model, index: int, op: str) -> tuple[str, Any]:
    load = model.loads[index]
    if model.current.get(load.key) == index:
        del model.current[load.key]
    if op == "fail":
        load.state = "failed"
        for caller in load.waiters:
            model.callers[caller] = ("failed", f"load {index} failed")
        return ("fail", f"load {index} failed")
    load.state = "done"
    value = value_of(index)
    for caller in load.waiters:
        model.callers[caller] = ("done", DEFAULT if value is None else value)
    if not load.detached:
        model.stored[load.key] = NEGATIVE if value is None else value
    return ("ok", value)


class Driver:
    """Applies the model's steps to ``s`` and compares the two; ``stop`` cancels what is left."""

    def __init__(self, s: AsyncTierStore) -> None:
        self.s = s
        self.model = Model()
        self.real: list[RealLoad] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def _loader(self) -> Any:
        async def loader() -> Any:
            load = RealLoad()
            self.real.append(load)
            try:
                await load.gate.wait()
            except asyncio.CancelledError:
                load.cancelled = True
                raise
            kind, value = load.outcome
            if kind == "fail":
                raise LookupError(value)
            return value

        return loader

    async def apply(self, op: str, arg: Any) -> bool:
        """Make one step on the model and the store; ``False`` when it has nothing to act on (skipped)."""
        model = self.model
        if op == "call":
            step_call(model, arg)
            self.tasks.append(asyncio.ensure_future(self.s.get_or_load(arg, self._loader(), default=DEFAULT)))
        elif op == "cancel":
            waiting = [i for i, (state, _) in enumerate(model.callers) if state == "waiting"]
            if not waiting:
                return False
            caller = waiting[arg % len(waiting)]
            step_cancel(model, caller)
            self.tasks[caller].cancel()
        elif op == "invalidate":
            step_invalidate(model, arg)
            await self.s.invalidate(arg)
        else:
            running = [i for i, load in enumerate(model.loads) if load.state == "running"]
            if not running:
                return False
            index = running[arg % len(running)]
            outcome = step_end(model, index, op)
            self.real[index].outcome = outcome
            self.real[index].gate.set()
        return True

    async def compare(self) -> None:
        """Loader calls, cancellations, each caller's outcome and what ``get`` answers, as the model says."""
        model, real, tasks = self.model, self.real, self.tasks
        assert len(real) == len(model.loads), "loader calls"
        for index, load in enumerate(model.loads):
            assert real[index].cancelled == (load.state == "cancelled"), index
        for caller, (state, expected) in enumerate(model.callers):
            task = tasks[caller]
            if state == "waiting":
                assert not task.done(), caller
            elif state == "cancelled":
                assert task.cancelled(), caller
            elif state == "failed":
                error = task.exception()
                assert isinstance(error, LookupError) and str(error) == expected
            else:
                assert task.result() == expected, caller
        for key in KEYS:
            assert await self.s.get(key) == model.expected(key), key

    async def stop(self) -> None:
        """Cancel every caller still waiting and wait for them."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
