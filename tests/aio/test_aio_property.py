"""A Hypothesis test: loads, cancellations, invalidations, failures and negative results, interleaved, against a model.

Every step runs on one loop and is followed by ``settle()``, so the interleaving
is the one Hypothesis chose, not one the scheduler happened to pick. The model
says, after each step, which callers are still waiting, what each finished one
got, which loads were cancelled, how many times the loader ran and what the
store holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.aio.support import run, settle
from tierstore import TierStore
from tierstore.aio import AsyncTierStore

KEYS = ("a", "b")
NEGATIVE = object()  # the model's negative entry
DEFAULT = "default"


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


@dataclass
class RealLoad:
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: tuple[str, Any] = ("ok", None)
    cancelled: bool = False


def value_of(load: int) -> Any:
    return None if load % 3 == 2 else {"load": load}


OPS = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(KEYS)),
    st.tuples(st.just("cancel"), st.integers(0, 7)),
    st.tuples(st.just("invalidate"), st.sampled_from(KEYS)),
    st.tuples(st.just("finish"), st.integers(0, 7)),
    st.tuples(st.just("fail"), st.integers(0, 7)),
)


@given(st.lists(OPS, max_size=30))
def test_interleaved_loads_cancellations_and_invalidations_follow_the_model(ops: list[tuple[str, Any]]) -> None:
    run(check, ops)


async def check(ops: list[tuple[str, Any]]) -> None:
    s = AsyncTierStore(TierStore(None, checkpoint_interval=None))
    model = Model()
    real: list[RealLoad] = []
    tasks: list[asyncio.Task[Any]] = []

    def new_loader() -> Any:
        async def loader() -> Any:
            load = RealLoad()
            real.append(load)
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

    try:
        for op, arg in ops:
            if op == "call":
                step_call(model, arg)
                tasks.append(asyncio.ensure_future(s.get_or_load(arg, new_loader(), default=DEFAULT)))
            elif op == "cancel":
                waiting = [i for i, (state, _) in enumerate(model.callers) if state == "waiting"]
                if not waiting:
                    continue
                caller = waiting[arg % len(waiting)]
                step_cancel(model, caller)
                tasks[caller].cancel()
            elif op == "invalidate":
                step_invalidate(model, arg)
                await s.invalidate(arg)
            else:
                running = [i for i, load in enumerate(model.loads) if load.state == "running"]
                if not running:
                    continue
                index = running[arg % len(running)]
                outcome = step_end(model, index, op)
                real[index].outcome = outcome
                real[index].gate.set()
            await settle()
            await compare(s, model, real, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await s.close()
        assert s.store is not None
        s.store.close()


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


async def compare(s: AsyncTierStore, model: Model, real: list[RealLoad], tasks: list[asyncio.Task[Any]]) -> None:
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
        stored = model.stored.get(key)
        assert await s.get(key) == (None if stored is NEGATIVE else stored), key
