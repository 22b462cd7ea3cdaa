"""The shared writes as steps, driven by hand: the seams an asyncio driver runs.

Each ``*_steps`` generator is driven here as a driver would: every ``Call`` it
yields is answered by running it through the store's ``scripts`` on the test's
real Redis (or has an error thrown in at its ``yield``). The tests pin that each
call yields exactly one ``Call`` per round trip it needs, that argument checks
raise before any ``Call``, that the existence filter's admission is a step of
its own once the writes are given ``SharedGuard.add_steps``, and that an error
thrown at a ``yield`` leaves the local tiers as the blocking call leaves them
when its round trip fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tierstore import ABSENT, SharedUnavailable, TierStore, codec
from tierstore.batch import Outcome
from tierstore.codec import Key
from tierstore.keyspace import NS_ENTRY
from tierstore.shared import SharedTier
from tierstore.shared.conditional_scripts import REWRITE
from tierstore.shared.counting import INCREMENT
from tierstore.shared.steps import Call, Steps


def shared_of(store: TierStore) -> SharedTier:
    shared = store._shared
    assert shared is not None
    return shared


def disk(key: str) -> bytes:
    return NS_ENTRY + codec.encode_key(key)


def held(store: TierStore, key: str) -> tuple[bool, bool]:
    """Whether tier 1 and tier 2 hold a copy of ``key``."""
    return store._memory.get(key) is not None, store._get_record(disk(key)) is not None


class Driver:
    """Drives steps by hand through a store's ``scripts``, noting every ``Call``; may throw an error in at one."""

    def __init__(self, store: TierStore) -> None:
        self.scripts = shared_of(store).scripts
        self.calls: list[Call] = []

    def run(self, steps: Steps[Any], *, fail_at: int = 0, error: BaseException | None = None) -> Any:
        """The result of ``steps``; ``error`` is thrown in at the ``fail_at``-th call (1-based) instead of an answer."""
        self.calls = []
        answer: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if thrown is None else steps.throw(thrown)
            except StopIteration as stop:
                return stop.value
            assert isinstance(step, Call), step
            self.calls.append(step)
            answer, thrown = None, None
            if len(self.calls) == fail_at:
                thrown = error
            elif step.script is None:
                answer = self.scripts.client.execute(step.what, *step.args)
            else:
                answer = self.scripts.run(step.what, step.script, list(step.keys), list(step.args))

    @property
    def whats(self) -> list[str]:
        return [call.what for call in self.calls]


def test_write_and_delete_are_one_call_each(stores: Callable[..., TierStore]) -> None:
    store = stores()
    writes, drive = shared_of(store).writes, Driver(store)
    assert drive.run(writes.write_steps("k", {"a": 1})) is True and drive.whats == ["set"]
    assert held(store, "k") == (True, True) and stores().get("k") == {"a": 1}
    assert drive.run(writes.write_steps("v", 1, version=5)) is True
    assert drive.run(writes.write_steps("v", 2, None, 4)) is False and drive.whats == ["set"]  # refused
    assert store.get("v") == 1 and store.stats()["sets_rejected"] == 1
    assert drive.run(writes.delete_steps("k")) is True and drive.whats == ["delete"]
    assert drive.run(writes.delete_steps("k")) is False and drive.whats == ["delete"]
    assert store.get("k", "gone") == "gone"


def test_argument_checks_raise_before_any_call(stores: Callable[..., TierStore]) -> None:
    store = stores(max_value_bytes=1000)
    shared, drive = shared_of(store), Driver(store)
    for steps, error in (
        (shared.writes.write_steps("k", 1, version=-1), ValueError),
        (shared.writes.write_steps("k", "x" * 2000), ValueError),
        (shared.writes.delete_steps(["not", "a", "key"]), TypeError),  # type: ignore[arg-type]
        (shared.bulk.set_many_steps([("a", disk("a"), 1), ("b", disk("b"), object())], ...), TypeError),
        (shared.counters.incr_steps("c", 1.5), TypeError),  # type: ignore[arg-type]
    ):
        with pytest.raises(error):
            drive.run(steps)
        assert drive.calls == []
    assert store.get("a", "none") == "none"


def test_conditional_calls_yield_a_call_per_round_trip(stores: Callable[..., TierStore]) -> None:
    store = stores()
    conditional, drive = shared_of(store).conditional, Driver(store)
    assert drive.run(conditional.add_steps("a", 1)) is True and drive.whats == ["add"]
    assert drive.run(conditional.add_steps("a", 2)) is False and drive.whats == ["add"]
    # A value that cannot be stored: one HMGET says whether a live entry refuses the add anyway.
    assert drive.run(conditional.add_steps("a", object())) is False
    assert [(call.what, call.script, call.args[0]) for call in drive.calls] == [("add", None, b"HMGET")]
    with pytest.raises(TypeError):
        drive.run(conditional.add_steps("fresh", object()))
    assert len(drive.calls) == 1
    assert drive.run(conditional.touch_steps("a", disk("a"), 100)) is True
    assert [(call.what, call.script) for call in drive.calls] == [("touch", None), ("touch", REWRITE)]
    assert drive.run(conditional.touch_steps("missing", disk("missing"), 100)) is False and len(drive.calls) == 1
    assert drive.run(conditional.replace_value_steps("a", disk("a"), [5])) is True
    assert drive.whats == ["replace_value", "replace_value"] and stores().get("a") == [5]
    assert drive.run(conditional.pop_steps("a", disk("a"))) == (True, [5]) and drive.whats == ["pop"]
    assert drive.run(conditional.pop_steps("a", disk("a"))) == (False, None) and drive.whats == ["pop"]


def test_bulk_calls_are_one_call_each(stores: Callable[..., TierStore]) -> None:
    store = stores()
    bulk, drive = shared_of(store).bulk, Driver(store)
    items: list[tuple[Key, bytes, Any]] = [("a", disk("a"), 1), ("b", disk("b"), "two"), ("n", disk("n"), ABSENT)]
    assert drive.run(bulk.set_many_steps(items, ...)) == 3 and drive.whats == ["set_many"]
    assert [store.get(key, "none") for key in "abn"] == [1, "two", "none"] and held(store, "a") == (True, True)
    assert drive.run(bulk.delete_many_steps([("a", disk("a")), ("z", disk("z"))])) == Outcome(1, 1)
    assert drive.whats == ["delete_many"] and store.get("a", "none") == "none" and store.get("b") == "two"


def test_counter_calls_are_one_call_each(stores: Callable[..., TierStore]) -> None:
    store = stores()
    counters, drive = shared_of(store).counters, Driver(store)
    assert drive.run(counters.get_steps("c")) == 0
    assert [(call.what, call.script, call.args[0]) for call in drive.calls] == [("counter", None, b"GET")]
    assert drive.run(counters.incr_steps("c", 5)) == 5
    assert [(call.what, call.script) for call in drive.calls] == [("incr", INCREMENT)]
    assert drive.run(counters.decr_steps("c", 7)) == -2 and len(drive.calls) == 1
    assert drive.run(counters.get_steps("c")) == -2 and len(drive.calls) == 1
    with pytest.raises(OverflowError):  # no count absorbs it: one GET for the message, no script
        drive.run(counters.incr_steps("c", 2**64))
    assert drive.whats == ["counter"] and store.counter("c") == -2


def test_guard_adds_are_one_call_per_chunk(stores: Callable[..., TierStore]) -> None:
    store = stores(guard=True, bloom_capacity=10_000)
    guard, drive = shared_of(store).guard, Driver(store)
    assert guard is not None
    assert drive.run(guard.add_steps("g")) is None and drive.whats == ["guard add"]
    assert drive.run(guard.add_many_steps(f"k{i}" for i in range(2_001))) is None
    assert drive.whats == ["guard add", "guard add"]  # 2,000 keys a call
    assert guard.might_contain("g") and guard.might_contain("k2000")
    with pytest.raises(TypeError):
        drive.run(guard.add_many_steps(["ok", 3]))  # type: ignore[list-item]
    assert drive.calls == [] and not guard.might_contain("ok")


def test_writes_admit_through_the_guards_steps_in_a_step_of_their_own(stores: Callable[..., TierStore]) -> None:
    store = stores(guard=True, bloom_capacity=1000)
    shared, drive = shared_of(store), Driver(store)
    guard = shared.guard
    assert guard is not None
    assert drive.run(shared.writes.write_steps("w", 1)) is True and drive.whats == ["guard add", "set"]
    assert drive.run(shared.writes.write_steps("neg", ABSENT)) is True and drive.whats == ["set"]
    assert drive.run(shared.conditional.add_steps("a", 1)) is True and drive.whats == ["guard add", "add"]
    assert drive.run(shared.bulk.set_many_steps([("m", disk("m"), 1)], ...)) == 1
    assert drive.whats == ["guard add", "set_many"]
    assert all(guard.might_contain(key) for key in ("w", "a", "m")) and not guard.might_contain("neg")
    with pytest.raises(SharedUnavailable):  # the admission failed: the write is not sent
        drive.run(shared.writes.write_steps("x", 1), fail_at=1, error=SharedUnavailable("guard add: lost"))
    assert drive.whats == ["guard add"] and store.get("x", "none") == "none"


@pytest.mark.parametrize("error", [SharedUnavailable("set: lost"), asyncio.CancelledError()])
def test_an_error_thrown_at_a_writes_call_drops_the_key_locally(
    stores: Callable[..., TierStore], error: BaseException
) -> None:
    """The script may have run before its reply was lost (or its wait cancelled): the local copy goes."""
    store = stores()
    writes, drive = shared_of(store).writes, Driver(store)
    store.set("k", "old")
    assert held(store, "k") == (True, True)
    with pytest.raises(type(error)):
        drive.run(writes.write_steps("k", "new"), fail_at=1, error=error)
    assert held(store, "k") == (False, False)
    assert store.get("k") == "old"  # read again from Redis, where the script never ran


@pytest.mark.parametrize("call", ["set", "delete", "pop", "touch", "set_many", "delete_many"])
def test_an_error_thrown_at_the_script_leaves_the_tiers_as_a_failed_blocking_call(
    stores: Callable[..., TierStore], monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """Key ``s`` by the steps, an error thrown at the script's ``yield``; key ``b`` by the blocking call, its
    script failing: both copies go (with ``other``, written by the same bulk script), nothing else does."""
    store = stores()
    shared = shared_of(store)
    writes, conditional, bulk = shared.writes, shared.conditional, shared.bulk
    steps_of: dict[str, Callable[[str], Steps[Any]]] = {
        "set": lambda key: writes.write_steps(key, "new"),
        "delete": lambda key: writes.delete_steps(key),
        "pop": lambda key: conditional.pop_steps(key, disk(key)),
        "touch": lambda key: conditional.touch_steps(key, disk(key), 100),
        "set_many": lambda key: bulk.set_many_steps([(key, disk(key), 1), ("other", disk("other"), 2)], ...),
        "delete_many": lambda key: bulk.delete_many_steps([(key, disk(key)), ("other", disk("other"))]),
    }
    blocking_of: dict[str, Callable[[str], Any]] = {
        "set": lambda key: writes.write(key, "new"),
        "delete": lambda key: writes.delete(key),
        "pop": lambda key: conditional.pop(key, disk(key)),
        "touch": lambda key: conditional.touch(key, disk(key), 100),
        "set_many": lambda key: bulk.set_many([(key, disk(key), 1), ("other", disk("other"), 2)], ...),
        "delete_many": lambda key: bulk.delete_many([(key, disk(key)), ("other", disk("other"))]),
    }
    store.set_many({"s": "old", "b": "old", "other": "old"})
    at = 2 if call == "touch" else 1  # touch reads first
    with pytest.raises(SharedUnavailable):
        Driver(store).run(steps_of[call]("s"), fail_at=at, error=SharedUnavailable(f"{call}: lost"))
    by_steps = [held(store, key) for key in ("s", "other")]
    store.set("other", "old")

    def failing(what: str, source: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        raise SharedUnavailable(f"{what}: lost")

    monkeypatch.setattr(shared.scripts, "run", failing)
    with pytest.raises(SharedUnavailable):
        blocking_of[call]("b")
    assert by_steps == [held(store, key) for key in ("b", "other")]
    assert by_steps[0] == (False, False)
    monkeypatch.undo()
    assert [store.get(key) for key in ("s", "b")] == ["old", "old"]  # neither script ran


def test_an_error_thrown_at_a_read_changes_nothing_locally(stores: Callable[..., TierStore]) -> None:
    """``touch``'s read failed: nothing was written anywhere, so the local copy stays."""
    store = stores()
    conditional, drive = shared_of(store).conditional, Driver(store)
    store.set("k", "kept", ttl=50)
    with pytest.raises(SharedUnavailable):
        drive.run(conditional.touch_steps("k", disk("k"), 100), fail_at=1, error=SharedUnavailable("touch: lost"))
    assert drive.whats == ["touch"] and held(store, "k") == (True, True)
    with pytest.raises(SharedUnavailable):
        drive.run(conditional.replace_value_steps("k", disk("k"), 1), fail_at=1, error=SharedUnavailable("lost"))
    assert held(store, "k") == (True, True) and store.get("k") == "kept"
