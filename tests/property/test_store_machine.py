"""A Hypothesis state machine that drives the store against a plain dict model.

It covers unversioned and versioned sets, deletes, ABSENT, expiry with a stale
window, reopening the directory and tier-1 pressure (tier 1 holds 2 entries of
a 6-key pool), the calls on many keys (``set_many``, ``delete_many``,
``delete_prefix``, ``clear``, ``get_many``, ``len``, ``items`` under a prefix)
and the read-then-write ones (``add``, ``touch``, ``pop``), and checks every
read against the model (``store_model``; the shared tier's machine checks two
stores against the same one).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.property.store_model import KEYS, PREFIXES, VALUES, Clock, StoreModel, Timing
from tierstore import ABSENT, TierStore

TIMING = Timing()
VERSIONS = st.integers(min_value=0, max_value=6)
TTLS = st.one_of(st.just(...), st.none(), st.sampled_from(TIMING.ttls))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tierstore-machine-")
        self.clock = Clock()
        self.model = StoreModel(self.clock, TIMING)
        self.store = self._open()

    def _open(self) -> TierStore:
        return TierStore(
            self.dir,
            memory_items=2,
            clock=self.clock,
            sweep_interval=None,
            checkpoint_interval=None,
            **TIMING.options(),
        )

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set_unversioned(self, key: Any, value: Any, ttl: Any) -> None:
        assert self.store.set(key, value, ttl=ttl) is self.model.set(key, value, ttl) is True

    @rule(key=KEYS, value=VALUES, version=VERSIONS)
    def set_versioned(self, key: Any, value: Any, version: int) -> None:
        assert self.store.set(key, value, version=version) is self.model.set(key, value, version=version)

    @rule(key=KEYS, version=st.one_of(st.none(), VERSIONS))
    def set_absent(self, key: Any, version: int | None) -> None:
        assert self.store.set(key, ABSENT, version=version) is self.model.set(key, ABSENT, version=version)

    @rule(key=KEYS, version=st.one_of(st.none(), VERSIONS))
    def delete(self, key: Any, version: int | None) -> None:
        assert self.store.delete(key, version=version) is self.model.delete(key, version)

    @rule(key=KEYS, value=st.one_of(VALUES, st.just(ABSENT)), ttl=TTLS, version=st.one_of(st.none(), VERSIONS))
    def add(self, key: Any, value: Any, ttl: Any, version: int | None) -> None:
        expected = self.model.add(key, value, ttl, version)
        assert self.store.add(key, value, ttl=ttl, version=version) is expected

    @rule(key=KEYS)
    def pop(self, key: Any) -> None:
        marker = object()
        expected = self.model.pop(key, marker)
        assert self.store.pop(key, marker) == expected

    @rule(key=KEYS, ttl=TTLS)
    def touch(self, key: Any, ttl: Any) -> None:
        assert self.store.touch(key, ttl=ttl) is self.model.touch(key, ttl)

    @rule(mapping=st.dictionaries(KEYS, st.one_of(VALUES, st.just(ABSENT)), max_size=4), ttl=TTLS)
    def set_many(self, mapping: dict[Any, Any], ttl: Any) -> None:
        assert self.store.set_many(mapping, ttl=ttl) == self.model.set_many(mapping, ttl)

    @rule(keys=st.lists(KEYS, max_size=4))
    def delete_many(self, keys: list[Any]) -> None:
        assert self.store.delete_many(keys) == self.model.delete_many(keys)

    @rule(prefix=PREFIXES)
    def delete_prefix(self, prefix: Any) -> None:
        assert self.store.delete_prefix(prefix) == self.model.delete_prefix(prefix)

    @rule()
    def clear(self) -> None:
        assert self.store.clear() == self.model.clear()

    @rule(keys=st.lists(KEYS, max_size=6))
    def get_many(self, keys: list[Any]) -> None:
        assert self.store.get_many(keys) == self.model.get_many(keys)

    @rule(prefix=st.one_of(st.none(), PREFIXES))
    def items(self, prefix: Any) -> None:
        assert list(self.store.items(prefix)) == self.model.live_items(prefix)

    @rule(seconds=st.sampled_from(TIMING.steps))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @precondition(lambda self: len(self.model.records) > 0)
    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.records, key=repr)))
        self.model.check_key(self.store, key)

    @invariant()
    def live_keys_agree(self) -> None:
        self.model.check_listing(self.store)


TestStoreMachine = StoreMachine.TestCase
