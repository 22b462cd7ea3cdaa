"""Hostile input through the shared calls: the right exception, and nothing changed in Redis (a raw client checks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.sentinel

from tests.shared.parts_support import PREFIX, dump
from tests.shared.redis_server import RedisServer
from tierstore import TierStore
from tierstore.codec import encode_key

Stores = Callable[..., TierStore]


def _entry(key: str) -> bytes:
    return PREFIX + b"e:" + encode_key(key)


@pytest.mark.parametrize(
    "prefix", ["*", "?", "[a]", "%", "%a", "\x00", "a\x00", b"\xff", b"\xff\xff", b"\x00", "]", "^$.+-"]
)
def test_prefix_deletes_with_special_characters_delete_exactly_the_keys_under_them(
    stores: Stores, raw: redis.Redis, prefix: str | bytes
) -> None:
    store = stores()
    other = stores()
    same = type(prefix)
    under = [prefix + same("x") if isinstance(prefix, str) else prefix + b"x", prefix]
    others: list[Any] = ["a", "b", b"a", "x", "ab", b"\xfe", "\x01"]
    others = [key for key in others if not (type(key) is type(prefix) and key.startswith(prefix))]  # type: ignore[arg-type]
    for key in [*under, *others]:
        store.set(key, 1)
        assert other.get(key) == 1
    store.delete_prefix(prefix)
    for key in under:
        assert store.get(key) is None
    for key in others:
        assert store.get(key) == 1
    deadline = time.monotonic() + 10
    while any(other.get(key) is not None for key in under):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sorted(map(repr, other.keys())) == sorted(map(repr, others))


@pytest.mark.parametrize("ttl", [float("nan"), -1, float("inf"), float("-inf"), "1", True])
def test_bad_ttls_raise_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, ttl: Any) -> None:
    store = stores()
    store.set("k", 1)
    before = dump(raw)
    for call in (
        lambda: store.set("k", 2, ttl=ttl),
        lambda: store.add("n", 2, ttl=ttl),
        lambda: store.touch("k", ttl),
        lambda: store.set_many({"k": 3, "m": 3}, ttl=ttl),
        lambda: store.get_or_load("n", lambda: 4, ttl=ttl),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()
    assert dump(raw) == before
    assert store.get("k") == 1


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",), ["a"], object()])
def test_bad_keys_raise_type_error_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, key: Any) -> None:
    store = stores()
    store.set("k", 1)
    before = dump(raw)
    for call in (
        lambda: store.set(key, 2),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.add(key, 2),
        lambda: store.touch(key, 5),
        lambda: store.pop(key),
        lambda: store.replace_value(key, 2),
        lambda: store.set_many({key: 1, "k": 3}),
        lambda: store.delete_many([key, "k"]),
        lambda: store.get_or_load(key, lambda: 1),
        lambda: store.incr(key),
        *([] if key is None else [lambda: store.delete_prefix(key), lambda: list(store.keys(key))]),  # None: all
    ):
        with pytest.raises(TypeError):
            call()
    assert dump(raw) == before


@pytest.mark.parametrize("version", [-1, 2**63, True, 1.0, "1"])
def test_bad_versions_raise_and_change_nothing_in_redis(stores: Stores, raw: redis.Redis, version: Any) -> None:
    store = stores()
    store.set("k", 1, version=5)
    before = dump(raw)
    for call in (
        lambda: store.set("k", 2, version=version),
        lambda: store.delete("k", version=version),
        lambda: store.add("n", 2, version=version),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()
    assert dump(raw) == before


def test_the_edge_versions_round_trip_exactly(stores: Stores) -> None:
    store = stores()
    other = stores()
    assert store.set("k", 0, version=0) is False or store.get("k") == 0
    assert store.set("k", 1, version=2**63 - 2)
    assert store.set("k", 2, version=2**63 - 1)
    assert not store.set("k", 3, version=2**63 - 2)
    entry = other.get_entry("k")
    assert entry is not None and entry.version == 2**63 - 1 and entry.value == 2


@pytest.mark.parametrize("keys", [["k", "k"], ["k", "k", "j"], ["k", "j", "k", "j"]])
def test_delete_many_with_repeated_keys_answers_as_locally(stores: Stores, tmp_path: Any, keys: list[str]) -> None:
    shared = stores()
    local = TierStore(path=str(tmp_path / "local"))
    try:
        for store in (shared, local):
            store.set("k", 1)
            store.set("j", 2, version=3)
        assert shared.delete_many(keys) == local.delete_many(keys)
        for key in ("k", "j"):
            assert shared.get(key) == local.get(key)
            assert (shared.get(key) is None) is (key in keys)
        assert stores().get("k") is None
    finally:
        local.close()


@pytest.mark.parametrize("key", ["x" * 5000, b"x" * 5000, "\ud800", "a\udfffb"])
def test_keys_too_long_or_not_encodable_raise_value_error_and_change_nothing(
    stores: Stores, raw: redis.Redis, key: Any
) -> None:
    store = stores(guard=True)
    store.set("k", 1)
    store.index("i").add("m", 1.0)
    before = dump(raw)
    for call in (
        lambda: store.set(key, 2),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.add(key, 2),
        lambda: store.touch(key, 5),
        lambda: store.pop(key),
        lambda: store.replace_value(key, 2),
        lambda: store.set_many({"k": 3, key: 1}),
        lambda: store.delete_many(["k", key]),
        lambda: store.delete_prefix(key),
        lambda: store.get_or_load(key, lambda: 1),
        lambda: store.incr(key),
        lambda: list(store.keys(key)),
        lambda: store.guard_keys(["n", key]),
        lambda: store.index("i").add(key, 2.0),
        lambda: store.index(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert dump(raw) == before
    assert store.get("k") == 1


@pytest.mark.parametrize("option", ["shared_grace", "shared_ping_interval", "lock_timeout"])
@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), "1", True])
def test_bad_shared_settings_are_refused_at_open(redis_server: RedisServer, option: str, bad: Any) -> None:
    if option == "shared_grace" and bad == float("inf"):
        pytest.skip("an endless grace is a choice: copies served until Redis is back")
    with pytest.raises((TypeError, ValueError)):
        TierStore(shared=redis_server.url, **{option: bad}).close()


@pytest.mark.parametrize("query", ["decode_responses=True", "decode_responses=False", "protocol=3"])
def test_a_url_query_cannot_turn_on_decoding_or_resp3(redis_server: RedisServer, query: str) -> None:
    """redis-py lets a URL's query override from_url's arguments (and reads ``decode_responses=False`` as a
    true string): the store still gets bytes in RESP2, so it opens and works instead of seeing Redis down."""
    store = TierStore(shared=f"{redis_server.url}?{query}", shared_failure="raise", shared_ping_interval=0.2)
    other = TierStore(shared=redis_server.url, shared_ping_interval=0.2)
    try:
        assert store.set("k", "v", version=3)
        assert other.get_entry("k") == store.get_entry("k") and other.get("k") == "v"
        assert store.incr("c") == 1
    finally:
        store.close()
        other.close()


@pytest.mark.parametrize(
    "shared, error, message",
    [
        ("unix://", ValueError, "socket's path"),
        (redis.asyncio.Redis(), TypeError, "redis.asyncio"),
    ],
)
def test_shared_arguments_that_cannot_work_are_refused_clearly(shared: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TierStore(shared=shared, shared_failure="local").close()


@pytest.mark.parametrize("failure", ["local", "raise"])
@pytest.mark.parametrize("query", ["timeout=5", "ssl_cert_reqs=none", "no_such_setting=1"])
def test_a_url_query_no_connection_accepts_is_refused_at_open_not_an_outage(
    redis_server: RedisServer, query: str, failure: str
) -> None:
    """redis-py passes an unknown query argument on to its connections, which refuse it at the first
    connect: with 'local' the store opened and read Redis as down for ever, with 'raise' as unreachable."""
    with pytest.raises(ValueError, match="cannot connect with these settings"):
        TierStore(shared=f"{redis_server.url}?{query}", shared_failure=failure).close()


def test_a_rediss_url_with_a_bad_certificate_setting_is_refused_at_open() -> None:
    with pytest.raises(ValueError, match=r"cannot connect with these settings.*bogus"):
        TierStore(shared="rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus", shared_failure="local").close()


def test_a_sentinel_managed_client_is_refused_clearly() -> None:
    """Its connections find the master through their own pool, which the store's connections cannot share."""
    shared = redis.sentinel.Sentinel([("127.0.0.1", 1)], socket_timeout=0.2).master_for("mymaster")
    with pytest.raises(ValueError, match="Sentinel"):
        TierStore(shared=shared).close()
