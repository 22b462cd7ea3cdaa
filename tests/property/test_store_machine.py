"""A Hypothesis state machine that drives the store against a plain dict model.

It covers unversioned and versioned sets, deletes, ABSENT, expiry with a stale
window, reopening the directory and tier-1 pressure (tier 1 holds 2 entries of
a 6-key pool), the calls on many keys (``set_many``, ``delete_many``,
``delete_prefix``, ``clear``, ``get_many``, ``len``) and the read-then-write
ones (``add``, ``touch``, ``pop``), and checks every read against the model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tierstore import ABSENT, Entry, TierStore

KEYS = st.sampled_from(["a", "b", b"a", "ccc", b"\x00", "\u00e9"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=4),
    st.tuples(st.text(max_size=3), st.integers(min_value=0, max_value=9)),
    st.dictionaries(st.text(max_size=3), st.integers(min_value=0, max_value=9), max_size=3),
)
VERSIONS = st.integers(min_value=0, max_value=6)
PREFIXES = st.sampled_from(["", "a", "c", "\u00e9", b"", b"a", b"\x00", "b"])
TTLS = st.one_of(st.just(...), st.none(), st.sampled_from([1.0, 5.0, 30.0]))
STALE_TTL = 5.0
NEGATIVE_TTL = 10.0
DEFAULT_TTL = 20.0
TOMBSTONE_TTL = 1000.0


@dataclass
class ModelRecord:
    value: Any
    version: int
    expires_at: float | None
    negative: bool = False
    tombstone: bool = False


def normalize(value: Any) -> Any:
    """What msgpack gives back: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tierstore-machine-")
        self.clock = Clock()
        self.model: dict[Any, ModelRecord] = {}
        self.store = self._open()

    def _open(self) -> TierStore:
        return TierStore(
            self.dir,
            memory_items=2,
            default_ttl=DEFAULT_TTL,
            negative_ttl=NEGATIVE_TTL,
            stale_ttl=STALE_TTL,
            tombstone_ttl=TOMBSTONE_TTL,
            clock=self.clock,
            sweep_interval=None,
            checkpoint_interval=None,
        )

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _version(self, key: Any) -> int:
        record = self.model.get(key)
        return record.version if record is not None else 0

    def _live(self, key: Any) -> bool:
        record = self.model.get(key)
        if record is None or record.tombstone or record.negative:
            return False
        return record.expires_at is None or record.expires_at > self.clock.now

    def _expiry(self, ttl: Any, negative: bool) -> float | None:
        if ttl is ...:
            ttl = NEGATIVE_TTL if negative else DEFAULT_TTL
        return None if ttl is None else self.clock.now + ttl

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set_unversioned(self, key: Any, value: Any, ttl: Any) -> None:
        assert self.store.set(key, value, ttl=ttl) is True
        self.model[key] = ModelRecord(normalize(value), self._version(key), self._expiry(ttl, False))

    @rule(key=KEYS, value=VALUES, version=VERSIONS)
    def set_versioned(self, key: Any, value: Any, version: int) -> None:
        applied = version > self._version(key)
        assert self.store.set(key, value, version=version) is applied
        if applied:
            self.model[key] = ModelRecord(normalize(value), version, self._expiry(..., False))

    @rule(key=KEYS, version=st.one_of(st.none(), VERSIONS))
    def set_absent(self, key: Any, version: int | None) -> None:
        applied = version is None or version > self._version(key)
        assert self.store.set(key, ABSENT, version=version) is applied
        if applied:
            kept = self._version(key) if version is None else version
            self.model[key] = ModelRecord(None, kept, self._expiry(..., True), negative=True)

    @rule(key=KEYS, version=st.one_of(st.none(), VERSIONS))
    def delete(self, key: Any, version: int | None) -> None:
        was_live = self._live(key)
        assert self.store.delete(key, version=version) is was_live
        kept = max(version or 0, self._version(key))
        if kept:
            self.model[key] = ModelRecord(None, kept, self.clock.now + TOMBSTONE_TTL, tombstone=True)
        else:
            self.model.pop(key, None)

    def _deleted(self, key: Any) -> None:
        """The model of a delete without a version (a tombstone stays as it is)."""
        record = self.model.get(key)
        if record is None or record.tombstone:
            return
        if record.version:
            self.model[key] = ModelRecord(None, record.version, self.clock.now + TOMBSTONE_TTL, tombstone=True)
        else:
            del self.model[key]

    @rule(key=KEYS, value=st.one_of(VALUES, st.just(ABSENT)), ttl=TTLS, version=st.one_of(st.none(), VERSIONS))
    def add(self, key: Any, value: Any, ttl: Any, version: int | None) -> None:
        applied = not self._live(key) and (version is None or version > self._version(key))
        assert self.store.add(key, value, ttl=ttl, version=version) is applied
        if applied:
            kept = self._version(key) if version is None else version
            negative = value is ABSENT
            expires_at = self._expiry(ttl, negative)
            self.model[key] = ModelRecord(None if negative else normalize(value), kept, expires_at, negative=negative)

    @rule(key=KEYS)
    def pop(self, key: Any) -> None:
        marker = object()
        expected = self.model[key].value if self._live(key) else marker
        assert self.store.pop(key, marker) == expected
        self._deleted(key)

    @rule(key=KEYS, ttl=TTLS)
    def touch(self, key: Any, ttl: Any) -> None:
        live = self._live(key)
        assert self.store.touch(key, ttl=ttl) is live
        if live:
            self.model[key].expires_at = self._expiry(ttl, False)

    @rule(mapping=st.dictionaries(KEYS, st.one_of(VALUES, st.just(ABSENT)), max_size=4), ttl=TTLS)
    def set_many(self, mapping: dict[Any, Any], ttl: Any) -> None:
        assert self.store.set_many(mapping, ttl=ttl) == len(mapping)
        for key, value in mapping.items():
            negative = value is ABSENT
            self.model[key] = ModelRecord(
                None if negative else normalize(value), self._version(key), self._expiry(ttl, negative), negative
            )

    @rule(keys=st.lists(KEYS, max_size=4))
    def delete_many(self, keys: list[Any]) -> None:
        assert self.store.delete_many(keys) == len({key for key in keys if self._live(key)})
        for key in keys:
            self._deleted(key)

    @rule(prefix=PREFIXES)
    def delete_prefix(self, prefix: Any) -> None:
        under = [key for key in self.model if type(key) is type(prefix) and key.startswith(prefix)]
        assert self.store.delete_prefix(prefix) == sum(self._live(key) for key in under)
        for key in under:
            self._deleted(key)

    @rule()
    def clear(self) -> None:
        assert self.store.clear() == sum(self._live(key) for key in self.model)
        for key in list(self.model):
            self._deleted(key)

    @rule(keys=st.lists(KEYS, max_size=6))
    def get_many(self, keys: list[Any]) -> None:
        assert self.store.get_many(keys) == {key: self.model[key].value for key in keys if self._live(key)}

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.0, 6.0, 15.0, 40.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model, key=repr)))
        self._check_key(key)

    def _expected_entry(self, key: Any) -> Entry | None:
        record = self.model.get(key)
        if record is None or record.tombstone:
            return None
        now = self.clock.now
        if record.expires_at is not None and record.expires_at <= now:
            if record.negative or now >= record.expires_at + STALE_TTL:
                return None
            return Entry(record.value, record.version, record.expires_at, False, True)
        value = ABSENT if record.negative else record.value
        return Entry(value, record.version, record.expires_at, record.negative, False)

    def _check_key(self, key: Any) -> None:
        marker = object()
        expected_live = self._live(key)
        got = self.store.get(key, marker)
        if expected_live:
            assert got == self.model[key].value
            assert type(got) is type(self.model[key].value)
        else:
            assert got is marker
        assert (key in self.store) is expected_live
        assert self.store.get_entry(key) == self._expected_entry(key)

    @invariant()
    def live_keys_agree(self) -> None:
        expected = {k for k in self.model if self._live(k)}
        assert set(self.store.keys()) == expected
        assert len(self.store) == len(expected)


TestStoreMachine = StoreMachine.TestCase
