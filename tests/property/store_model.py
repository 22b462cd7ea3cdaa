"""The plain-dict model of a store that the state machines check against.

``StoreModel`` answers each call (what it returns) and applies it, by the rules
of the store's contract: the version rule (a versioned write lands only above
the stored version, an unversioned one keeps it, a delete leaves a tombstone at
``max(version, stored)`` or removes a key at version 0), TTLs with a stale
window read on a fake clock, negative entries, and the calls on many keys.
``Timing`` holds the TTLs the machine opens its stores with: the one-process
machine uses small ones, the shared one the same scaled up (see its docstring).
``KEYS`` (drawn from ``KEY_POOL``, 6 str and bytes keys), ``VALUES`` and ``PREFIXES`` are
what both machines draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tierstore import ABSENT, Entry

KEY_POOL: tuple[Any, ...] = ("a", "b", b"a", "ccc", b"\x00", "\u00e9")
KEYS = st.sampled_from(KEY_POOL)
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
PREFIXES = st.sampled_from(["", "a", "c", "\u00e9", b"", b"a", b"\x00", "b"])


@dataclass(frozen=True)
class Timing:
    """The store's TTL settings and the TTLs and clock steps the rules draw from (seconds)."""

    stale_ttl: float = 5.0
    negative_ttl: float = 10.0
    default_ttl: float = 20.0
    tombstone_ttl: float = 1000.0
    ttls: tuple[float, ...] = (1.0, 5.0, 30.0)
    steps: tuple[float, ...] = (0.5, 1.0, 4.0, 6.0, 15.0, 40.0)

    def scaled(self, factor: float) -> Timing:
        """Every duration times ``factor``: the same relations between them."""
        return Timing(
            self.stale_ttl * factor,
            self.negative_ttl * factor,
            self.default_ttl * factor,
            self.tombstone_ttl * factor,
            tuple(ttl * factor for ttl in self.ttls),
            tuple(step * factor for step in self.steps),
        )

    def options(self) -> dict[str, Any]:
        """The store options these settings stand for."""
        return {
            "default_ttl": self.default_ttl,
            "negative_ttl": self.negative_ttl,
            "stale_ttl": self.stale_ttl,
            "tombstone_ttl": self.tombstone_ttl,
        }


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
    """The fake wall clock the stores read (``clock=``) and the model moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class StoreModel:
    """What the store holds and answers. Each call method returns the store's expected answer and applies it."""

    def __init__(self, clock: Clock, timing: Timing) -> None:
        self.clock = clock
        self.timing = timing
        self.records: dict[Any, ModelRecord] = {}

    def version(self, key: Any) -> int:
        record = self.records.get(key)
        return record.version if record is not None else 0

    def live(self, key: Any) -> bool:
        record = self.records.get(key)
        if record is None or record.tombstone or record.negative:
            return False
        return record.expires_at is None or record.expires_at > self.clock.now

    def negative(self, key: Any) -> bool:
        """Whether ``key`` holds a negative entry that has not expired (a read answers "absent" without loading)."""
        record = self.records.get(key)
        if record is None or not record.negative:
            return False
        return record.expires_at is None or record.expires_at > self.clock.now

    def live_keys(self) -> set[Any]:
        return {key for key in self.records if self.live(key)}

    def _expiry(self, ttl: Any, negative: bool) -> float | None:
        if ttl is ...:
            ttl = self.timing.negative_ttl if negative else self.timing.default_ttl
        return None if ttl is None else self.clock.now + ttl

    def _store(self, key: Any, value: Any, ttl: Any, version: int | None) -> None:
        kept = self.version(key) if version is None else version
        negative = value is ABSENT
        value = None if negative else normalize(value)
        self.records[key] = ModelRecord(value, kept, self._expiry(ttl, negative), negative=negative)

    def set(self, key: Any, value: Any, ttl: Any = ..., version: int | None = None) -> bool:
        applied = version is None or version > self.version(key)
        if applied:
            self._store(key, value, ttl, version)
        return applied

    def delete(self, key: Any, version: int | None = None) -> bool:
        was_live = self.live(key)
        kept = max(version or 0, self.version(key))
        if kept:
            self.records[key] = ModelRecord(None, kept, self.clock.now + self.timing.tombstone_ttl, tombstone=True)
        else:
            self.records.pop(key, None)
        return was_live

    def deleted(self, key: Any) -> None:
        """The model of a delete without a version by the calls on many keys (a tombstone stays as it is)."""
        record = self.records.get(key)
        if record is None or record.tombstone:
            return
        if record.version:
            tombstone_at = self.clock.now + self.timing.tombstone_ttl
            self.records[key] = ModelRecord(None, record.version, tombstone_at, tombstone=True)
        else:
            del self.records[key]

    def add(self, key: Any, value: Any, ttl: Any = ..., version: int | None = None) -> bool:
        applied = not self.live(key) and (version is None or version > self.version(key))
        if applied:
            self._store(key, value, ttl, version)
        return applied

    def pop(self, key: Any, default: Any) -> Any:
        value = self.records[key].value if self.live(key) else default
        self.deleted(key)
        return value

    def touch(self, key: Any, ttl: Any = ...) -> bool:
        live = self.live(key)
        if live:
            self.records[key].expires_at = self._expiry(ttl, False)
        return live

    def set_many(self, mapping: dict[Any, Any], ttl: Any = ...) -> int:
        for key, value in mapping.items():
            self._store(key, value, ttl, None)
        return len(mapping)

    def delete_many(self, keys: Iterable[Any]) -> int:
        keys = list(keys)
        count = len({key for key in keys if self.live(key)})
        for key in keys:
            self.deleted(key)
        return count

    def delete_prefix(self, prefix: Any) -> int:
        under = [key for key in self.records if type(key) is type(prefix) and key.startswith(prefix)]
        count = sum(self.live(key) for key in under)
        for key in under:
            self.deleted(key)
        return count

    def clear(self) -> int:
        count = sum(self.live(key) for key in self.records)
        for key in list(self.records):
            self.deleted(key)
        return count

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        return {key: self.records[key].value for key in keys if self.live(key)}

    def fill(self, key: Any, value: Any, ttl: Any = ...) -> bool:
        """``get_or_load`` with a loader returning ``value``: whether the loader runs (and its fill lands).

        A live or negative entry answers without loading; anything else (nothing, a
        tombstone, an expired or stale entry) loads and stores unversioned: ``None``
        or ``ABSENT`` from the loader as a negative entry, for ``negative_ttl`` whatever ``ttl`` says.
        """
        if self.live(key) or self.negative(key):
            return False
        negative = value is None or value is ABSENT
        self._store(key, ABSENT if negative else value, ... if negative else ttl, None)
        return True

    def expected_entry(self, key: Any) -> Entry | None:
        record = self.records.get(key)
        if record is None or record.tombstone:
            return None
        now = self.clock.now
        if record.expires_at is not None and record.expires_at <= now:
            if record.negative or now >= record.expires_at + self.timing.stale_ttl:
                return None
            return Entry(record.value, record.version, record.expires_at, False, True)
        value = ABSENT if record.negative else record.value
        return Entry(value, record.version, record.expires_at, record.negative, False)

    def check_key(self, store: Any, key: Any) -> None:
        """``store`` answers ``key`` as the model: ``get`` (value and type), ``in``, ``get_entry``."""
        marker = object()
        expected_live = self.live(key)
        got = store.get(key, marker)
        if expected_live:
            assert got == self.records[key].value, (key, got)
            assert type(got) is type(self.records[key].value), (key, got)
        else:
            assert got is marker, (key, got)
        assert (key in store) is expected_live, key
        entry = store.get_entry(key)
        assert entry == self.expected_entry(key), (key, entry)

    def live_items(self, prefix: Any = None) -> list[tuple[Any, Any]]:
        """The live ``(key, value)`` pairs under ``prefix`` in the store's key order: bytes keys, then str keys,
        each by their bytes (UTF-8 for str)."""
        under = [
            key for key in self.live_keys() if prefix is None or (type(key) is type(prefix) and key.startswith(prefix))
        ]
        under.sort(key=lambda key: (isinstance(key, str), key.encode() if isinstance(key, str) else key))
        return [(key, self.records[key].value) for key in under]

    def check_listing(self, store: Any) -> None:
        """``store.keys()`` and ``len(store)`` give the model's live keys."""
        expected = self.live_keys()
        assert set(store.keys()) == expected
        assert len(store) == len(expected)
