"""A Hypothesis state machine: two stores on one real Redis against the one-process machine's model.

The rules are the one-process machine's (``tests/property/test_store_machine.py``:
sets unversioned, versioned and of ``ABSENT`` with TTLs, ``delete``, ``add``,
``pop``, ``touch``, ``set_many``, ``delete_many``, ``delete_prefix``, ``clear``,
``get_many``, ``items`` under a prefix, the clock moving, reopening) with its
model (``tests/property/store_model.py``), plus ``get_or_load`` (the loader
returns a drawn value; it runs, and its fill lands, only when the key holds no
live or negative entry), ``invalidate``, counters (``incr``/``decr``/``counter``
against an int dict, overflows refused) and versions up to 2**63-1 (the scripts
compare them exactly).

- Every call goes to either store at random. After a call, the other store's
  listener is waited for exactly: the call published as many messages as it
  moved the namespace's ``seq`` in Redis (one per message, read before and after
  it with a plain client), so the other store has heard everything once its
  ``invalidations_received`` reaches the sum of those counts (and neither store
  counts more than that).
- ``set_read_at_once`` reads the key through the other store before that wait:
  the listener races the read, which must answer the entry from before the set
  or the new one.
- Then neither store may have seen a Redis call fail or its listener resync
  (no gap in a healthy run), and both must answer every key as the model: ``get`` (value and
  type), ``in``, ``get_entry``, and ``keys()``/``len``.
- ``reopen`` closes one store, writes through the other while it is closed, and
  opens it again on the same persisted ``path``: its tier-2 copies of those keys
  are stale, and must never be served.
- Clocks: both stores read one fake clock (``clock=``), which the model reads
  and ``advance_clock`` moves: the scripts decide liveness with the writer's
  clock passed in, so expiry, the stale window and ``touch`` follow it. Redis's
  own ``PEXPIRE`` runs in real time (a live entry is kept its TTL plus
  ``stale_ttl``, a negative one its TTL, a tombstone ``tombstone_ttl``), so the
  one-process machine's durations are scaled by 100 (``Timing.scaled``): the
  shortest, a 100 s TTL plus a 500 s stale window, outlives any example by far,
  Redis never expires a key during one, and what has expired is decided by the
  fake clock alone, as in the model.
- Each example has its own namespace in the one server, and its own
  directories. A failure prints them (``note``) with the steps and
  Hypothesis's reproduction blob (the profiles set ``print_blob``).
- Each store holds 2 entries in tier 1 (as the one-process machine), and PINGs
  every 5 s, so a loaded machine's slow listener never passes for an outage.
  Budget: 50 examples of up to 40 steps (about 30 s on a loaded 2-core
  machine), times ``ROUNDS_FACTOR`` (the "thorough" profile).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, TypeVar

import pytest
import redis
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.conftest import ROUNDS_FACTOR, wait_until
from tests.property.store_model import KEY_POOL, KEYS, PREFIXES, VALUES, Clock, StoreModel, Timing, normalize
from tests.shared.redis_server import RedisServer
from tierstore import ABSENT, TierStore
from tierstore.shared.client import Names

TIMING = Timing().scaled(100)
STORES = st.integers(0, 1)
VERSIONS = st.one_of(st.integers(0, 6), st.sampled_from([2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1]))
OPTIONAL_VERSIONS = st.one_of(st.none(), VERSIONS)
TTLS = st.one_of(st.just(...), st.none(), st.sampled_from(TIMING.ttls))
DELTAS = st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([2**62, 2**63 - 1, -(2**63), 2**64, -(2**64) - 5]))

_T = TypeVar("_T")


class TwoStores(RuleBasedStateMachine):
    server: ClassVar[RedisServer]
    raw: ClassVar[redis.Redis]

    def __init__(self) -> None:
        super().__init__()
        self.namespace = uuid.uuid4().hex  # each example its own data set in the one server
        self.dirs = [tempfile.mkdtemp(prefix=f"tierstore-two-{i}-") for i in range(2)]
        note(f"namespace {self.namespace!r}, stores at {self.dirs}")
        self.seq_key = Names(self.namespace).seq
        self.clock = Clock()
        self.model = StoreModel(self.clock, TIMING)
        self.counts: dict[Any, int] = {}
        self.heard = [0, 0]  # messages each store must have received from the other
        self.stores: list[TierStore | None] = [None, None]
        for which in range(2):
            self.stores[which] = self._open(which)

    def _open(self, which: int) -> TierStore:
        return TierStore(
            self.dirs[which],
            shared=self.server.url,
            namespace=self.namespace,
            shared_ping_interval=5.0,
            memory_items=2,
            clock=self.clock,
            sweep_interval=None,
            checkpoint_interval=None,
            **TIMING.options(),
        )

    def teardown(self) -> None:
        for store in self.stores:
            if store is not None:
                store.close()
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def _store(self, which: int) -> TierStore:
        store = self.stores[which]
        assert store is not None
        return store

    def _seq(self) -> int:
        return int(self.raw.get(self.seq_key) or 0)

    def _received(self, which: int) -> int:
        return int(self._store(which).stats()["invalidations_received"])

    def _call(self, writer: int, call: Callable[[TierStore], _T]) -> _T:
        """``call`` on store ``writer``; returns once the other store heard every message it published."""
        before = self._seq()
        result = call(self._store(writer))
        published = self._seq() - before
        other = 1 - writer
        if self.stores[other] is not None:
            self.heard[other] += published
            wait_until(lambda: self._received(other) >= self.heard[other])
            assert self._received(other) == self.heard[other]
        assert self._received(writer) == self.heard[writer]  # its own messages are not invalidations
        return result

    # -- the one-process machine's rules, each call on either store ----------------------

    @rule(writer=STORES, key=KEYS, value=VALUES, ttl=TTLS)
    def set_unversioned(self, writer: int, key: Any, value: Any, ttl: Any) -> None:
        assert self._call(writer, lambda s: s.set(key, value, ttl=ttl)) is self.model.set(key, value, ttl) is True

    @rule(writer=STORES, key=KEYS, value=VALUES, version=OPTIONAL_VERSIONS)
    def set_read_at_once(self, writer: int, key: Any, value: Any, version: int | None) -> None:
        """A set, and a read of the key by the other store at once, its listener racing the message:
        it answers the entry from before the set or the new one, never another."""
        before = self.model.expected_entry(key)
        applied = self.model.set(key, value, version=version)
        after = self.model.expected_entry(key)
        other = self._store(1 - writer)
        seen: list[Any] = []

        def set_then_read(store: TierStore) -> bool:
            written = store.set(key, value, version=version)
            seen.append(other.get_entry(key))
            return written

        assert self._call(writer, set_then_read) is applied
        assert seen[0] in (before, after), seen[0]

    @rule(writer=STORES, key=KEYS, value=VALUES, version=VERSIONS)
    def set_versioned(self, writer: int, key: Any, value: Any, version: int) -> None:
        expected = self.model.set(key, value, version=version)
        assert self._call(writer, lambda s: s.set(key, value, version=version)) is expected

    @rule(writer=STORES, key=KEYS, version=OPTIONAL_VERSIONS)
    def set_absent(self, writer: int, key: Any, version: int | None) -> None:
        expected = self.model.set(key, ABSENT, version=version)
        assert self._call(writer, lambda s: s.set(key, ABSENT, version=version)) is expected

    @rule(writer=STORES, key=KEYS, version=OPTIONAL_VERSIONS)
    def delete(self, writer: int, key: Any, version: int | None) -> None:
        expected = self.model.delete(key, version)
        assert self._call(writer, lambda s: s.delete(key, version=version)) is expected

    @rule(writer=STORES, key=KEYS, value=st.one_of(VALUES, st.just(ABSENT)), ttl=TTLS, version=OPTIONAL_VERSIONS)
    def add(self, writer: int, key: Any, value: Any, ttl: Any, version: int | None) -> None:
        expected = self.model.add(key, value, ttl, version)
        assert self._call(writer, lambda s: s.add(key, value, ttl=ttl, version=version)) is expected

    @rule(writer=STORES, key=KEYS)
    def pop(self, writer: int, key: Any) -> None:
        marker = object()
        expected = self.model.pop(key, marker)
        assert self._call(writer, lambda s: s.pop(key, marker)) == expected

    @rule(writer=STORES, key=KEYS, ttl=TTLS)
    def touch(self, writer: int, key: Any, ttl: Any) -> None:
        expected = self.model.touch(key, ttl)
        assert self._call(writer, lambda s: s.touch(key, ttl=ttl)) is expected

    @rule(writer=STORES, mapping=st.dictionaries(KEYS, st.one_of(VALUES, st.just(ABSENT)), max_size=4), ttl=TTLS)
    def set_many(self, writer: int, mapping: dict[Any, Any], ttl: Any) -> None:
        expected = self.model.set_many(mapping, ttl)
        assert self._call(writer, lambda s: s.set_many(mapping, ttl=ttl)) == expected

    @rule(writer=STORES, keys=st.lists(KEYS, max_size=4))
    def delete_many(self, writer: int, keys: list[Any]) -> None:
        expected = self.model.delete_many(keys)
        assert self._call(writer, lambda s: s.delete_many(keys)) == expected

    @rule(writer=STORES, prefix=PREFIXES)
    def delete_prefix(self, writer: int, prefix: Any) -> None:
        expected = self.model.delete_prefix(prefix)
        assert self._call(writer, lambda s: s.delete_prefix(prefix)) == expected

    @rule(writer=STORES)
    def clear(self, writer: int) -> None:
        expected = self.model.clear()
        assert self._call(writer, lambda s: s.clear()) == expected

    @rule(reader=STORES, keys=st.lists(KEYS, max_size=6))
    def get_many(self, reader: int, keys: list[Any]) -> None:
        assert self._store(reader).get_many(keys) == self.model.get_many(keys)

    @rule(reader=STORES, prefix=st.one_of(st.none(), PREFIXES))
    def items(self, reader: int, prefix: Any) -> None:
        assert list(self._store(reader).items(prefix)) == self.model.live_items(prefix)

    @rule(seconds=st.sampled_from(TIMING.steps))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(which=STORES, writes=st.dictionaries(KEYS, VALUES, max_size=3))
    def reopen(self, which: int, writes: dict[Any, Any]) -> None:
        """Close one store, write through the other meanwhile, open it again on the same path."""
        self._store(which).close()
        self.stores[which] = None
        for key, value in writes.items():
            written = self._call(1 - which, partial(TierStore.set, key=key, value=value))
            assert written is self.model.set(key, value) is True
        self.stores[which] = self._open(which)
        self.heard[which] = 0

    # -- the shared tier's own rules ----------------------------------------------------------

    @rule(reader=STORES, key=KEYS, value=st.one_of(VALUES, st.just(ABSENT)), ttl=TTLS)
    def get_or_load(self, reader: int, key: Any, value: Any, ttl: Any) -> None:
        marker = object()
        held = self.model.records[key].value if self.model.live(key) else marker
        loads = self.model.fill(key, value, ttl)
        expected = (marker if value is None or value is ABSENT else normalize(value)) if loads else held
        calls: list[None] = []

        def loader() -> Any:
            calls.append(None)
            return value

        got = self._call(reader, lambda s: s.get_or_load(key, loader, ttl=ttl, default=marker))
        assert len(calls) == loads
        if expected is marker:
            assert got is marker
        else:  # the loader's value as the tiers give it back (a tuple as a list), as a hit would
            assert got == expected and type(got) is type(expected), got

    @rule(writer=STORES, key=KEYS)
    def invalidate(self, writer: int, key: Any) -> None:
        self.model.delete(key)
        assert self._call(writer, lambda s: s.invalidate(key)) is None

    @rule(writer=STORES, key=KEYS, delta=DELTAS, down=st.booleans())
    def incr(self, writer: int, key: Any, delta: int, down: bool) -> None:
        count = self.counts.get(key, 0) + (-delta if down else delta)
        store = self._store(writer)
        if -(2**63) <= count < 2**63:
            assert (store.decr(key, delta) if down else store.incr(key, delta)) == count
            self.counts[key] = count
        else:  # past the signed 64-bit range: refused, nothing changed
            with pytest.raises(OverflowError):
                store.decr(key, delta) if down else store.incr(key, delta)
        assert self._store(1 - writer).counter(key) == self.counts.get(key, 0)

    @rule(reader=STORES, key=KEYS)
    def counter(self, reader: int, key: Any) -> None:
        assert self._store(reader).counter(key) == self.counts.get(key, 0)

    @invariant()
    def both_stores_answer_as_the_model(self) -> None:
        for which in range(2):
            store = self._store(which)
            stats = store.stats()
            # First what would explain a mismatch: a failed call (a starved machine can pass CALL_TIMEOUT: the
            # log says which) leaves the store reading around Redis; a resync means the listener saw a gap.
            assert stats["shared_errors"] == 0, f"store {which}: a Redis call failed (see the log)"
            assert stats["resyncs"] == 0, f"store {which}: its listener resynced (a gap in what it heard)"
            for key in KEY_POOL:
                self.model.check_key(store, key)
            self.model.check_listing(store)


def test_two_stores_on_one_redis_follow_the_model(redis_server: RedisServer) -> None:
    TwoStores.server = redis_server
    TwoStores.raw = redis.Redis(unix_socket_path=redis_server.socket)
    try:
        run_state_machine_as_test(
            TwoStores, settings=settings(max_examples=50 * ROUNDS_FACTOR, stateful_step_count=40, deadline=None)
        )
    finally:
        TwoStores.raw.close()
