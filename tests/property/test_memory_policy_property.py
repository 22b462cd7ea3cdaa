"""The lfu and fifo tiers against cachetools' LFUCache and FIFOCache, the reference of each policy.

Items-bounded runs must hold exactly the keys the reference holds, with the same
values, and count every eviction the reference makes; byte-bounded runs must keep
their byte total equal to the sum of what they hold and never exceed the bound.
"""

from __future__ import annotations

from typing import Any

from cachetools import Cache, FIFOCache, LFUCache
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tierstore.codec import SIZE, VALUE, Record, make_record
from tierstore.memory_policy import PolicyTier
from tierstore.stripes import Stripes

KEYS = st.sampled_from([f"k{i}" for i in range(10)] + [b"k1"])
SIZES = st.integers(min_value=1, max_value=40)

_S = Stripes()
_peek = Cache.__getitem__


def record(value: int, size: int) -> Record:
    return make_record(value, 0, None, 0, 0.0, None, value, size)


class PolicyMachine(RuleBasedStateMachine):
    @initialize(
        policy=st.sampled_from(["lfu", "fifo"]),
        max_items=st.integers(min_value=1, max_value=5),
        max_bytes=st.one_of(st.none(), st.integers(10, 100)),
    )
    def start(self, policy: str, max_items: int, max_bytes: int | None) -> None:
        self.tier = PolicyTier(policy, max_items, max_bytes, _S)  # type: ignore[arg-type]
        self.max_bytes = max_bytes
        reference = LFUCache if policy == "lfu" else FIFOCache
        self.reference: Any = reference(max_items) if max_bytes is None else None
        self.evictions = 0
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _reference_put(self, key: Any, value: int) -> None:
        if self.reference is None:
            return
        before = len(self.reference) + (0 if key in self.reference else 1)
        self.reference[key] = value
        self.evictions += before - len(self.reference)

    @rule(key=KEYS, size=SIZES)
    def put(self, key: Any, size: int) -> None:
        value = self._next()
        self.tier.begin_write(_S.of(key))
        self.tier.put(key, record(value, size), _S.of(key))
        self._reference_put(key, value)

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        got = self.tier.get(key)
        if self.reference is not None:
            assert (got[VALUE] if got is not None else None) == self.reference.get(key)

    @rule(key=KEYS)
    def discard(self, key: Any) -> None:
        self.tier.discard(key, _S.of(key))
        if self.reference is not None:
            self.reference.pop(key, None)

    @rule(key=KEYS, size=SIZES)
    def promote(self, key: Any, size: int) -> None:
        value = self._next()
        held = self.tier.get(key) is not None
        if held and self.reference is not None:
            self.reference.get(key)  # the tier's own get above counted a use: so does the reference
        landed = self.tier.promote(key, record(value, size), _S.of(key), self.tier.epoch(_S.of(key)))
        assert landed == (not held)
        if landed:
            self._reference_put(key, value)

    @invariant()
    def same_keys_values_and_totals(self) -> None:
        held = {key: _peek(self.tier._cache, key) for key in list(self.tier._cache)}  # peeks count no use
        if self.reference is not None:
            expected = {repr(key): _peek(self.reference, key) for key in list(self.reference)}
            assert {repr(key): r[VALUE] for key, r in held.items()} == expected
            assert self.tier.evictions == self.evictions
        if self.max_bytes is not None:
            assert self.tier.bytes == sum(r[SIZE] for r in held.values()) <= self.max_bytes


TestPolicyMachine = PolicyMachine.TestCase
