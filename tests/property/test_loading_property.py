"""Interleavings of loads, invalidations and sets: nothing loaded before a write is visible after it.

Each load runs in its own thread and is held at a gate after it has read the
source, so Hypothesis chooses exactly when each load reads and when it fills
relative to the writes. After every step, in both tiers and after a reopen,
a key holds nothing or the source's current value.
"""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tierstore import TierStore, codec
from tierstore.codec import FLAGS, VALUE
from tierstore.keyspace import NS_ENTRY

KEYS = ("a", "b", "c")
WAIT = 5.0


class HeldLoad:
    """One get_or_load in a thread whose loader, if it runs, waits at a gate after reading the source."""

    def __init__(self, store: TierStore, source: dict[str, list[Any]], key: str) -> None:
        self.read = threading.Event()
        self.gate = threading.Event()
        self.source = source
        self.key = key
        self.thread = threading.Thread(target=lambda: store.get_or_load(key, self.load, on_busy="default"))
        self.thread.start()
        deadline = time.monotonic() + WAIT
        # it either hits, gets the busy default, or leads and reads: wait for whichever happens
        while not self.read.is_set() and self.thread.is_alive():
            assert time.monotonic() < deadline, "load neither read nor returned"
            self.read.wait(0.001)

    def load(self) -> list[Any]:
        value = list(self.source[self.key])
        self.read.set()
        assert self.gate.wait(WAIT)
        return value

    @property
    def held(self) -> bool:
        return self.read.is_set() and not self.gate.is_set()

    def finish(self) -> None:
        self.gate.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("load"), st.sampled_from(KEYS)),
        st.tuples(st.just("finish"), st.integers(0, 7)),
        st.tuples(st.just("invalidate"), st.sampled_from(KEYS)),
        st.tuples(st.just("set"), st.sampled_from(KEYS)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    ),
    max_size=25,
)


def check(store: TierStore, source: dict[str, list[Any]]) -> None:
    """Every key reads as nothing or as the source's current value, in tier 1 and in tier 2."""
    for key in KEYS:
        assert store.get(key) in (None, source[key]), key
        data = store._disk.get(NS_ENTRY + codec.encode_key(key))
        if data is not None:
            record = codec.unpack_record(data)
            assert record[FLAGS] or record[VALUE] == source[key], key


@given(operations)
def test_no_value_loaded_before_a_write_is_visible_after_it(ops: list[tuple[str, Any]]) -> None:
    source = {key: [key, 0] for key in KEYS}
    held: list[HeldLoad] = []
    with tempfile.TemporaryDirectory() as path:
        store = TierStore(path, sweep_interval=None, checkpoint_interval=None, lock_timeout=60.0)
        try:
            for op, arg in ops:
                if op == "load":
                    load = HeldLoad(store, source, arg)
                    if load.held:
                        held.append(load)
                elif op == "finish" and held:
                    held.pop(arg % len(held)).finish()
                elif op in ("invalidate", "set", "delete"):
                    source[arg] = [arg, source[arg][1] + 1]  # the source changes, then the cache is told
                    if op == "invalidate":
                        store.invalidate(arg)
                    elif op == "set":
                        store.set(arg, source[arg])
                    else:
                        store.delete(arg)
                check(store, source)
            for load in held:
                load.finish()
            check(store, source)
        finally:
            for load in held:
                load.gate.set()
            store.close()
        with TierStore(path, sweep_interval=None, checkpoint_interval=None) as reopened:
            check(reopened, source)
