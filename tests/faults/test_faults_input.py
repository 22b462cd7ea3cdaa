"""Hostile input through every public call: the right exception, a message naming the problem, nothing changed.

One populated store (module scope) takes every bad call; each test compares a
snapshot of what a reader can see (entries with their versions and expiries,
counters, index pages, the stamp) before and after, so a call that raises after
writing part of its work is caught.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import FakeClock
from tierstore import ABSENT, TierStore, Versioned

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None, "lock_timeout": 3600.0}
KNOWN = ["a", b"b", "versioned", "deep", "neg"]
COUNTERS = ["hits", "c"]


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> list[Any]:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    return cyclic


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TierStore]:
    clock = FakeClock()
    path = Path(tmp_path_factory.mktemp("faults-input")) / "store"
    with TierStore(str(path), clock=clock, guard=True, bloom_capacity=1000, **OPTS) as opened:
        opened.set("a", {"x": [1, 2]}, ttl=60)
        opened.set(b"b", "bee")
        opened.set("versioned", 1, version=10)
        opened.set("deep", _nested(1022, []))
        opened.set("neg", ABSENT)
        opened.guard_keys(["new"])  # loads of "new" reach their loader
        opened.incr("hits", 5)
        opened.incr("c", -2)
        index = opened.index("ix")
        index.replace([("m1", 1.0), ("m2", -2.5), ("m3", math.inf)], stamp=7)
        yield opened


def snapshot(store: TierStore) -> Any:
    index = store.index("ix")
    return (
        msgpack.packb(list(store.items())),
        [_entry(store, key) for key in KNOWN],
        [store.counter(name) for name in COUNTERS],
        index.page(0, 100),
        index.page(0, 100, reverse=True),
        len(index),
        index.stamp,
        sorted(name for name in store.stats() if name.startswith("guard_")),
        store.stats()["guard_keys"],
    )


def _entry(store: TierStore, key: str | bytes) -> Any:
    entry = store.get_entry(key)
    if entry is None:
        return None
    value = "ABSENT" if entry.value is ABSENT else msgpack.packb(entry.value)  # == would recurse too deep
    return (value, entry.version, entry.expires_at, entry.negative, entry.stale)


def refused(store: TierStore, call: Callable[[], Any], error: Any, words: str) -> None:
    """``call()`` raises ``error`` with ``words`` in its message and changes nothing visible."""
    before = snapshot(store)
    with pytest.raises(error) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)  # generators check their arguments on first use
    assert re.search(words, str(caught.value), re.IGNORECASE), f"message {str(caught.value)!r} lacks {words!r}"
    assert snapshot(store) == before


# -- keys -----------------------------------------------------------------------------------------

BAD_KEYS: list[tuple[Any, Any, str]] = [
    (1, TypeError, "int"),
    (1.5, TypeError, "float"),
    (True, TypeError, "bool"),
    (None, TypeError, "NoneType"),
    (("a",), TypeError, "tuple"),
    (["a"], TypeError, "list"),
    ({"a": 1}, TypeError, "dict"),
    (bytearray(b"a"), TypeError, "bytearray"),
    (memoryview(b"a"), TypeError, "memoryview"),
    (object(), TypeError, "object"),
    ("x" * 4097, ValueError, "4096"),
    (b"x" * 4097, ValueError, "4096"),
    ("\u00e9" * 2049, ValueError, "4096"),
    ("\ud800", ValueError, "unicode"),
    ("ok\udfffok", ValueError, "unicode"),
]
KEY_IDS = ["int", "float", "bool", "none", "tuple", "list", "dict", "bytearray", "memoryview", "object",
           "long-str", "long-bytes", "long-utf8", "lone-surrogate", "inner-surrogate"]  # fmt: skip


def _set_item(store: TierStore, key: Any) -> None:
    store[key] = 1


def _del_item(store: TierStore, key: Any) -> None:
    del store[key]


KEY_CALLS: dict[str, Callable[[TierStore, Any], Any]] = {
    "get": lambda s, k: s.get(k),
    "get_entry": lambda s, k: s.get_entry(k),
    "set": lambda s, k: s.set(k, 1),
    "set-absent": lambda s, k: s.set(k, ABSENT),
    "delete": lambda s, k: s.delete(k),
    "invalidate": lambda s, k: s.invalidate(k, again_after=0.5),
    "get_or_load": lambda s, k: s.get_or_load(k, lambda: 1),
    "refresh_every": lambda s, k: s.refresh_every(k, lambda: 1, 60),
    "contains": lambda s, k: k in s,
    "getitem": lambda s, k: s[k],
    "setitem": _set_item,
    "delitem": _del_item,
    "incr": lambda s, k: s.incr(k),
    "decr": lambda s, k: s.decr(k),
    "counter": lambda s, k: s.counter(k),
    "index": lambda s, k: s.index(k),
    "keep_fresh": lambda s, k: s.keep_fresh(k, list),
    "keys-prefix": lambda s, k: s.keys(prefix=k),
    "items-prefix": lambda s, k: s.items(prefix=k),
    "guard_keys": lambda s, k: s.guard_keys(["fine", k]),
    "rebuild_guard": lambda s, k: s.rebuild_guard(["fine", k]),
    "cached-key": lambda s, k: s.cached(key=lambda: k)(lambda: 1)(),
    "index-add": lambda s, k: s.index("ix").add(k, 1.0),
    "index-add_many": lambda s, k: s.index("ix").add_many([("fine", 1.0), (k, 2.0)]),
    "index-replace": lambda s, k: s.index("ix").replace([("fine", 1.0), (k, 2.0)]),
    "index-remove": lambda s, k: s.index("ix").remove(k),
    "index-score": lambda s, k: s.index("ix").score(k),
    "index-rank": lambda s, k: s.index("ix").rank(k),
}


@pytest.mark.parametrize("call", list(KEY_CALLS), ids=list(KEY_CALLS))
@pytest.mark.parametrize(("key", "error", "words"), BAD_KEYS, ids=KEY_IDS)
def test_bad_keys_are_refused_everywhere(store: TierStore, call: str, key: Any, error: Any, words: str) -> None:
    if key is None and call.endswith("-prefix"):
        pytest.skip("prefix=None means every key")
    refused(store, lambda: KEY_CALLS[call](store, key), error, words)


# -- values ---------------------------------------------------------------------------------------

BAD_VALUES: list[tuple[Any, Any, str]] = [
    ({(1, 2): 1}, TypeError, "dict key"),
    ({"x": [{("t",): 1}]}, TypeError, "dict key"),
    (_nested(1023, []), ValueError, "deep"),
    (_nested(1023, {}), ValueError, "deep"),
    (_nested(1024, 0), ValueError, "deep"),
    (_cycle(), ValueError, "deep"),
    (object(), TypeError, "object"),
    ({1, 2}, TypeError, "set"),
    ([1, {"k": frozenset()}], TypeError, "frozenset"),
    (datetime.datetime(2024, 1, 1), TypeError, "datetime"),
    (decimal.Decimal("1.5"), TypeError, "Decimal"),
    (1j, TypeError, "complex"),
    (2**64, OverflowError, "integer|int"),
    (-(2**63) - 1, OverflowError, "integer|int"),
    ([2**100], OverflowError, "integer|int"),
    ("\ud800", ValueError, "surrogate|encode"),
    ({"\udc80": 1}, ValueError, "surrogate|encode"),
    (len, TypeError, "builtin_function_or_method"),
]
VALUE_IDS = ["tuple-key", "nested-tuple-key", "1024-deep-lists", "1024-deep-dict-leaf", "1025-deep", "cycle",
             "object", "set", "frozenset-inside", "datetime", "decimal", "complex", "2**64", "-2**63-1",
             "huge-inside", "surrogate", "surrogate-key", "function"]  # fmt: skip


def _cached_returning(store: TierStore, value: Any) -> Any:
    return store.cached(key=lambda: "new")(lambda: value)()  # a key the guard admits


VALUE_CALLS: dict[str, Callable[[TierStore, Any], Any]] = {
    "set": lambda s, v: s.set("a", v),
    "set-new-key": lambda s, v: s.set("new", v),
    "set-versioned": lambda s, v: s.set("versioned", v, version=99),
    "setitem": lambda s, v: s.__setitem__("a", v),
    "get_or_load": lambda s, v: s.get_or_load("new", lambda: v),
    "get_or_load-versioned": lambda s, v: s.get_or_load("new", lambda: Versioned(v, 5)),
    "cached": _cached_returning,
}


@pytest.mark.parametrize("call", list(VALUE_CALLS), ids=list(VALUE_CALLS))
@pytest.mark.parametrize(("value", "error", "words"), BAD_VALUES, ids=VALUE_IDS)
def test_values_tier_2_could_not_give_back_are_refused(
    store: TierStore, call: str, value: Any, error: Any, words: str
) -> None:
    refused(store, lambda: VALUE_CALLS[call](store, value), error, words)


def test_values_at_the_limits_round_trip(tmp_path: Path) -> None:
    edge = {"deep": _nested(1021, []), 1: 2**64 - 1, None: -(2**63), 1.5: b"", b"k": [(), {}]}
    with TierStore(str(tmp_path / "s"), **OPTS) as store:
        assert store.set("edge", edge)
        hot = msgpack.packb(store.get("edge"))
    with TierStore(str(tmp_path / "s"), **OPTS) as store:
        assert msgpack.packb(store.get("edge")) == hot
        assert store.stats()["corrupt_records"] == 0


# -- ttl, version, durations, policies --------------------------------------------------------------

BAD_TTLS: list[Any] = [
    (True, TypeError, "ttl"),
    ("10", TypeError, "ttl"),
    ([10], TypeError, "ttl"),
    (0, ValueError, "ttl"),
    (0.0, ValueError, "ttl"),
    (-1, ValueError, "ttl"),
    (math.nan, ValueError, "ttl"),
    (math.inf, ValueError, "ttl"),
    (-math.inf, ValueError, "ttl"),
    (10**400, ValueError, "ttl"),
]
TTL_IDS = ["bool", "str", "list", "zero", "zero-float", "negative", "nan", "inf", "-inf", "10**400"]

TTL_CALLS: dict[str, Callable[[TierStore, Any], Any]] = {
    "set": lambda s, t: s.set("a", 1, ttl=t),
    "set-absent": lambda s, t: s.set("a", ABSENT, ttl=t),
    "get_or_load": lambda s, t: s.get_or_load("new", lambda: 1, ttl=t),
    "get_or_load-hit": lambda s, t: s.get_or_load("a", lambda: 1, ttl=t),
    "refresh_every": lambda s, t: s.refresh_every("new", lambda: 1, 60, ttl=t),
    "cached": lambda s, t: s.cached(ttl=t, name="faults.ttl"),
}


@pytest.mark.parametrize("call", list(TTL_CALLS), ids=list(TTL_CALLS))
@pytest.mark.parametrize(("ttl", "error", "words"), BAD_TTLS, ids=TTL_IDS)
def test_bad_ttls_are_refused(store: TierStore, call: str, ttl: Any, error: Any, words: str) -> None:
    refused(store, lambda: TTL_CALLS[call](store, ttl), error, words)


BAD_VERSIONS: list[tuple[Any, Any, str]] = [
    (True, TypeError, "version"),
    (1.5, TypeError, "version"),
    (math.nan, TypeError, "version"),
    (math.inf, TypeError, "version"),
    ("3", TypeError, "version"),
    (-1, ValueError, "version"),
    (2**63, (ValueError, OverflowError), "version"),
    (2**64, (ValueError, OverflowError), "version"),
    (10**5000, (ValueError, OverflowError), "version.*int of 16610 bits"),  # past str()'s 4,300 digits
    (-(10**5000), ValueError, "version.*negative int of 16610 bits"),
]
VERSION_IDS = ["bool", "float", "nan", "inf", "str", "negative", "2**63", "2**64", "10**5000", "-10**5000"]

VERSION_CALLS: dict[str, Callable[[TierStore, Any], Any]] = {
    "set": lambda s, v: s.set("a", 1, version=v),
    "set-new": lambda s, v: s.set("new", 1, version=v),
    "delete": lambda s, v: s.delete("versioned", version=v),
    "loader-Versioned": lambda s, v: s.get_or_load("new", lambda: Versioned(1, v)),
}


@pytest.mark.parametrize("call", list(VERSION_CALLS), ids=list(VERSION_CALLS))
@pytest.mark.parametrize(("version", "error", "words"), BAD_VERSIONS, ids=VERSION_IDS)
def test_bad_versions_are_refused(store: TierStore, call: str, version: Any, error: Any, words: str) -> None:
    refused(store, lambda: VERSION_CALLS[call](store, version), error, words)


BAD_DURATIONS: list[Any] = [
    (True, TypeError),
    ("1", TypeError),
    (-1, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (10**400, ValueError),
    (-(10**5000), ValueError),
]
DURATION_IDS = ["bool", "str", "negative", "nan", "inf", "10**400", "-10**5000"]

DURATION_CALLS: dict[str, tuple[Callable[[TierStore, Any], Any], str]] = {
    "wait_timeout": (lambda s, d: s.get_or_load("new", lambda: 1, wait_timeout=d), "wait_timeout"),
    "again_after": (lambda s, d: s.invalidate("a", again_after=d), "again_after"),
    "refresh_every-interval": (lambda s, d: s.refresh_every("new", lambda: 1, d), "interval"),
    "keep_fresh-interval": (lambda s, d: s.keep_fresh("ix", list, interval=d), "interval"),
    "drain": (lambda s, d: s.drain(d), "timeout"),
}


@pytest.mark.parametrize("call", list(DURATION_CALLS), ids=list(DURATION_CALLS))
@pytest.mark.parametrize(("seconds", "error"), BAD_DURATIONS, ids=DURATION_IDS)
def test_bad_durations_are_refused(store: TierStore, call: str, seconds: Any, error: Any) -> None:
    run, words = DURATION_CALLS[call]
    refused(store, lambda: run(store, seconds), error, words)


@pytest.mark.parametrize("interval", [0, 0.0], ids=["zero", "zero-float"])
@pytest.mark.parametrize("call", ["refresh_every-interval", "keep_fresh-interval"])
def test_zero_intervals_are_refused(store: TierStore, call: str, interval: Any) -> None:
    run, words = DURATION_CALLS[call]
    refused(store, lambda: run(store, interval), ValueError, words)


@pytest.mark.parametrize("on_busy", ["WAIT", "", "block", None, 1, b"wait", ("wait",)])
def test_bad_on_busy_is_refused(store: TierStore, on_busy: Any) -> None:
    refused(store, lambda: store.get_or_load("new", lambda: 1, on_busy=on_busy), ValueError, "on_busy")
    refused(store, lambda: store.get_or_load("a", lambda: 1, on_busy=on_busy), ValueError, "on_busy")


@pytest.mark.parametrize("loader", [None, 1, "loader", [len]], ids=["none", "int", "str", "list"])
def test_non_callable_loaders_are_refused(store: TierStore, loader: Any) -> None:
    refused(store, lambda: store.get_or_load("new", loader), TypeError, "callable")
    refused(store, lambda: store.get_or_load("a", loader), TypeError, "callable")  # even on a hit
    refused(store, lambda: store.refresh_every("new", loader, 60), TypeError, "callable")
    refused(store, lambda: store.keep_fresh("ix", loader), TypeError, "callable")
    if loader is not None:  # stamp=None means the index's dirty stamp
        refused(store, lambda: store.keep_fresh("ix", list, stamp=loader), TypeError, "callable")


def test_loader_errors_reach_the_caller_and_change_nothing(store: TierStore) -> None:
    def boom() -> Any:
        raise KeyError("source down")

    refused(store, lambda: store.get_or_load("new", boom), KeyError, "source down")


# -- cached ---------------------------------------------------------------------------------------

CACHED_BAD: list[tuple[dict[str, Any], Any, str]] = [
    ({"key": 42}, TypeError, "key"),
    ({"key": "k"}, TypeError, "key"),
    ({"name": 7}, TypeError, "name"),
    ({"name": b"n"}, TypeError, "name"),
    ({"name": ""}, ValueError, "name"),
    ({"name": "\ud800"}, ValueError, "name"),
    ({"name": "n" * 4096}, ValueError, "name"),
    ({"name": "n", "key": str}, TypeError, "name"),
]


@pytest.mark.parametrize(("kwargs", "error", "words"), CACHED_BAD)
def test_cached_refuses_bad_settings_at_decoration(
    store: TierStore, kwargs: dict[str, Any], error: Any, words: str
) -> None:
    refused(store, lambda: store.cached(**kwargs), error, words)


@pytest.mark.parametrize("fn", [lambda: 1, 42, "f"], ids=["lambda", "int", "str"])
def test_cached_refuses_what_it_cannot_name(store: TierStore, fn: Any) -> None:
    refused(store, lambda: store.cached(fn), TypeError, "name=|function")


@pytest.mark.parametrize("arg", [object(), {1, 2}, 2**64, "\ud800"], ids=["object", "set", "2**64", "surrogate"])
def test_cached_refuses_arguments_it_cannot_key(store: TierStore, arg: Any) -> None:
    add = store.cached(name="faults.args")(lambda x: 1)
    refused(store, lambda: add(arg), TypeError, "key")


# -- counters ----------------------------------------------------------------------------------------

BAD_DELTAS: list[tuple[Any, Any, str]] = [
    (True, TypeError, "delta"),
    (1.5, TypeError, "delta"),
    (math.nan, TypeError, "delta"),
    ("1", TypeError, "delta"),
    (None, TypeError, "delta"),
    (2**64, OverflowError, "64-bit|range"),
    (-(2**64), OverflowError, "64-bit|range"),
    (2**200, OverflowError, "64-bit|range"),
    (10**5000, OverflowError, "64-bit|range"),  # its str() alone would raise ValueError
    (-(10**5000), OverflowError, "64-bit|range"),
]
DELTA_IDS = ["bool", "float", "nan", "str", "none", "2**64", "-2**64", "2**200", "10**5000", "-10**5000"]


@pytest.mark.parametrize("op", ["incr", "decr"])
@pytest.mark.parametrize(("delta", "error", "words"), BAD_DELTAS, ids=DELTA_IDS)
def test_bad_counter_deltas_are_refused(store: TierStore, op: str, delta: Any, error: Any, words: str) -> None:
    refused(store, lambda: getattr(store, op)("hits", delta), error, words)


@pytest.mark.parametrize(
    ("op", "delta"),
    [("incr", 2**63), ("incr", 2**63 - 1), ("decr", -(2**63)), ("decr", 2**63 - 1), ("incr", -(2**63))],
)
def test_counter_results_past_64_bits_are_refused(store: TierStore, op: str, delta: int) -> None:
    store.incr("c", 0)
    target = "hits" if (op == "incr") == (delta > 0) else "c"  # "hits" is 5, "c" is -2
    refused(store, lambda: getattr(store, op)(target, delta), OverflowError, "64-bit|range")


# -- sorted indexes ----------------------------------------------------------------------------------

BAD_SCORES: list[tuple[Any, Any, str]] = [
    (math.nan, ValueError, "nan"),
    (float("-nan"), ValueError, "nan"),
    ("1", TypeError, "score"),
    (None, TypeError, "score"),
    ([1.0], TypeError, "score"),
    (1j, TypeError, "score"),
    (10**400, OverflowError, "score|float|large"),
    (10**5000, OverflowError, "score.*float"),  # its str() alone would raise ValueError
]
SCORE_IDS = ["nan", "-nan", "str", "none", "list", "complex", "10**400", "10**5000"]

SCORE_CALLS: dict[str, Callable[[TierStore, Any], Any]] = {
    "add": lambda s, sc: s.index("ix").add("m1", sc),
    "add-new": lambda s, sc: s.index("ix").add("new", sc),
    "add_many": lambda s, sc: s.index("ix").add_many([("m9", 1.0), ("m1", sc)]),
    "replace": lambda s, sc: s.index("ix").replace([("m9", 1.0), ("m1", sc)]),
    "range-lo": lambda s, sc: s.index("ix").range_by_score(sc, 10.0),
    "range-hi": lambda s, sc: s.index("ix").range_by_score(0.0, sc),
}


@pytest.mark.parametrize("call", list(SCORE_CALLS), ids=list(SCORE_CALLS))
@pytest.mark.parametrize(("score", "error", "words"), BAD_SCORES, ids=SCORE_IDS)
def test_bad_index_scores_are_refused(store: TierStore, call: str, score: Any, error: Any, words: str) -> None:
    refused(store, lambda: SCORE_CALLS[call](store, score), error, words)


@pytest.mark.parametrize(
    "pairs",
    [[("m1",)], [("m1", 1.0, 2.0)], ["m1"], [None], 42, "m1", [{"m1": 1.0}]],
    ids=["short", "long", "str-pair", "none-pair", "int", "str", "dict-pair"],
)
@pytest.mark.parametrize("call", ["add_many", "replace"])
def test_malformed_index_pairs_are_refused(store: TierStore, call: str, pairs: Any) -> None:
    words = "pair|iterable|member|score"
    refused(store, lambda: getattr(store.index("ix"), call)(pairs), (TypeError, ValueError), words)


INDEX_PAGING: dict[str, tuple[Callable[[TierStore], Any], Any, str]] = {
    "page-offset-negative": (lambda s: s.index("ix").page(-1), ValueError, "offset"),
    "page-offset-float": (lambda s: s.index("ix").page(1.5), TypeError, "offset"),
    "page-offset-bool": (lambda s: s.index("ix").page(True), TypeError, "offset"),
    "page-limit-negative": (lambda s: s.index("ix").page(0, -1), ValueError, "limit"),
    "page-limit-str": (lambda s: s.index("ix").page(0, "5"), TypeError, "limit"),
    "page_after-limit": (lambda s: s.index("ix").page_after(None, 0.5), TypeError, "limit"),
    "page_after-cursor-int": (lambda s: s.index("ix").page_after(42), TypeError, "cursor"),
    "page_after-cursor-bytes": (lambda s: s.index("ix").page_after(b"\xff junk"), TypeError, "cursor"),
    "page_after-cursor-junk": (lambda s: s.index("ix").page_after("not a cursor"), ValueError, "cursor"),
    "range-limit": (lambda s: s.index("ix").range_by_score(0.0, 1.0, limit=-1), ValueError, "limit"),
    "replace-stamp": (lambda s: s.index("ix").replace([], stamp=object()), TypeError, "stamp"),
    "replace-stamp-nan": (lambda s: s.index("ix").replace([], stamp=math.nan), ValueError, "stamp"),
}


@pytest.mark.parametrize("case", list(INDEX_PAGING), ids=list(INDEX_PAGING))
def test_bad_index_arguments_are_refused(store: TierStore, case: str) -> None:
    call, error, words = INDEX_PAGING[case]
    refused(store, lambda: call(store), error, words)


# -- existence filter -----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["user:42", b"user:42", 42, None], ids=["str", "bytes", "int", "none"])
@pytest.mark.parametrize("call", ["guard_keys", "rebuild_guard"])
def test_guard_calls_refuse_what_is_not_an_iterable_of_keys(store: TierStore, call: str, keys: Any) -> None:
    refused(store, lambda: getattr(store, call)(keys), TypeError, "iterable of keys")
