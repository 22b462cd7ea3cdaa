"""A Hypothesis state machine: two stores on one real Redis against a model of the version rule.

Writes go to either store; after each one the other store's listener is waited
for (its ``invalidations_received`` reaches the count of accepted writes of the
first). Then both stores must answer every key exactly as the model does: the
version rule (exact over the whole range: the versions drawn sit at 2**53 and
2**63-1), unversioned writes keeping the version, tombstones at ``max(version,
stored)``, a delete at version 0 removing the key, ``delete`` saying whether a
live entry existed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.conftest import ROUNDS_FACTOR
from tests.shared.redis_server import RedisServer
from tierstore import ABSENT, TierStore

KEYS = ("a", "b", "c")
VERSIONS = st.one_of(st.none(), st.none(), st.sampled_from([1, 2, 9, 10, 2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1]))
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.just(ABSENT))
LIVE, NEGATIVE, TOMBSTONE = "live", "negative", "tombstone"
WAIT = 5.0


class TwoStores(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        namespace = uuid.uuid4().hex  # each example its own data set in the one server
        self.stores = [TierStore(shared=self.url, namespace=namespace, shared_ping_interval=0.5) for _ in range(2)]
        self.model: dict[str, tuple[Any, int, str]] = {}
        self.published = [0, 0]  # accepted writes of each store: what the other one must have heard

    def teardown(self) -> None:
        for store in self.stores:
            store.close()

    def _heard(self, writer: int) -> None:
        self.published[writer] += 1
        other = self.stores[1 - writer]
        deadline = time.monotonic() + WAIT
        while other.stats()["invalidations_received"] < self.published[writer]:
            assert time.monotonic() < deadline, "the invalidation never arrived"
            time.sleep(0.0005)

    @rule(writer=st.integers(0, 1), key=st.sampled_from(KEYS), value=VALUES, version=VERSIONS)
    def set(self, writer: int, key: str, value: Any, version: int | None) -> None:
        _, current, _ = self.model.get(key, (None, 0, ""))
        expected = version is None or version > current
        assert self.stores[writer].set(key, value, version=version) is expected
        if expected:
            kind = NEGATIVE if value is ABSENT else LIVE
            self.model[key] = (value, current if version is None else version, kind)
            self._heard(writer)

    @rule(writer=st.integers(0, 1), key=st.sampled_from(KEYS), version=VERSIONS)
    def delete(self, writer: int, key: str, version: int | None) -> None:
        _, current, kind = self.model.get(key, (None, 0, ""))
        assert self.stores[writer].delete(key, version=version) is (kind == LIVE)
        keep = max(version or 0, current)
        if keep:
            self.model[key] = (None, keep, TOMBSTONE)
        else:
            self.model.pop(key, None)
        self._heard(writer)

    @invariant()
    def both_stores_answer_as_the_model(self) -> None:
        for store in self.stores:
            for key in KEYS:
                value, version, kind = self.model.get(key, (None, 0, ""))
                entry = store.get_entry(key)
                if kind == LIVE:
                    assert entry is not None and (entry.value, entry.version, entry.negative) == (value, version, False)
                    assert store.get(key) == value
                elif kind == NEGATIVE:
                    assert entry is not None and (entry.value, entry.version, entry.negative) == (ABSENT, version, True)
                    assert store.get(key, "default") == "default"
                else:
                    assert entry is None, (key, entry)
                    assert store.get(key, "default") == "default"


def test_two_stores_on_one_redis_follow_the_model(redis_server: RedisServer) -> None:
    TwoStores.url = redis_server.url
    run_state_machine_as_test(
        TwoStores, settings=settings(max_examples=25 * ROUNDS_FACTOR, stateful_step_count=25, deadline=None)
    )
