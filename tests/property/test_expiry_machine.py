"""A Hypothesis state machine: random writes, rewrites, deletes and sweeps with a fake clock.

Every sweep is checked against the rule the full-scan sweep applied to every
entry (what was due goes, versioned entries become tombstones, the rest is
untouched, byte for byte), and after every step every entry with an expiry has
its index record. Reopens, with and without the index (a store from before it),
are steps too.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.conftest import ROUNDS_FACTOR, FakeClock
from tests.expiry_checks import assert_indexed, checked_sweep
from tests.expiry_checks import drop_index as drop_index_records
from tierstore import ABSENT, TierStore

KEYS = st.sampled_from(["a", "b", "c", b"a", "\u00e9"])
TTLS = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 5.0, 30.0]))
VERSIONS = st.one_of(st.none(), st.integers(min_value=0, max_value=5))
STALE_TTL = 4.0
TOMBSTONE_TTL = 20.0


class ExpiryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tierstore-expiry-")
        self.clock = FakeClock()
        self.store = self._open()

    def _open(self) -> TierStore:
        return TierStore(
            self.dir,
            memory_items=2,
            negative_ttl=3.0,
            stale_ttl=STALE_TTL,
            tombstone_ttl=TOMBSTONE_TTL,
            clock=self.clock,
            sweep_interval=None,
            checkpoint_interval=None,
        )

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=KEYS, ttl=TTLS, version=VERSIONS, value=st.integers(0, 3))
    def set(self, key: Any, ttl: float | None, version: int | None, value: int) -> None:
        self.store.set(key, value, ttl=ttl, version=version)

    @rule(key=KEYS, ttl=TTLS)
    def set_absent(self, key: Any, ttl: float | None) -> None:
        self.store.set(key, ABSENT, ttl=ttl if ttl is not None else ...)

    @rule(key=KEYS, version=VERSIONS)
    def delete(self, key: Any, version: int | None) -> None:
        self.store.delete(key, version=version)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 4.0, 7.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        checked_sweep(self.store, self.clock.now, STALE_TTL, TOMBSTONE_TTL)
        assert self.store.sweep()["scanned"] == 0  # a second sweep at the same time reads nothing

    @rule(drop_index=st.booleans())
    def reopen(self, drop_index: bool) -> None:
        self.store.close()
        if drop_index:  # as a store written before the index existed
            drop_index_records(self.dir)
        self.store = self._open()

    @invariant()
    def every_entry_with_an_expiry_is_indexed(self) -> None:
        assert_indexed(self.store)


TestExpiryMachine = ExpiryMachine.TestCase
TestExpiryMachine.settings = settings(max_examples=100 * ROUNDS_FACTOR, stateful_step_count=40)
