"""The handle of a ``cached`` function: bare decoration, ``.key``, ``.invalidate``, ``.cache_clear``."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import WAIT, start
from tierstore import StoreClosed, TierStore

OPTS: dict[str, Any] = {"sweep_interval": None, "checkpoint_interval": None}
calls: list[Any] = []


def double(x: int) -> int:
    calls.append(x)
    return 2 * x


@pytest.fixture
def store(store_path: str) -> Any:
    calls.clear()
    with TierStore(store_path, **OPTS) as opened:
        yield opened


def test_bare_decoration_memoizes_and_exposes_the_key(store: TierStore) -> None:
    cached = store.cached(double)
    assert cached(2) == 4 and cached(2) == 4 and calls == [2]
    key = cached.key(2)
    assert isinstance(key, bytes) and key.startswith(f"{__name__}:double:".encode())
    assert store.get(key) == 4
    assert cached.key(2) != cached.key(x=2) != cached.key(3)
    assert cached.__name__ == "double" and cached.__wrapped__ is double  # type: ignore[attr-defined]


def test_invalidate_drops_one_call_and_a_load_in_flight(store: TierStore) -> None:
    @store.cached(name="slow")
    def slow(x: int) -> str:
        calls.append(x)
        if x == 1:
            started.set()
            assert release.wait(WAIT)
        return f"v{x}-{len(calls)}"

    started, release = threading.Event(), threading.Event()
    assert slow(2) == "v2-1"
    thread, out = start(lambda: slow(1))
    assert started.wait(WAIT)
    slow.invalidate(1)  # the load in flight never lands
    slow.invalidate(2)
    release.set()
    thread.join(WAIT)
    assert out == ["v1-2"]
    assert store.get(slow.key(1)) is None and store.get(slow.key(2)) is None
    assert slow(2) == "v2-3"


def test_cache_clear_deletes_every_entry_of_the_function_only(store: TierStore) -> None:
    @store.cached(name="f")
    def f(x: Any) -> Any:
        return x

    @store.cached(name="f:g")
    def g(x: Any) -> Any:
        return x

    @store.cached(name="fa")
    def fa(x: Any) -> Any:
        return x

    long_argument = "y" * 5000  # hashed key
    for fn in (f, g, fa):
        fn(1)
        fn("two")
        fn(long_argument)
    store.set(b"f:plain", "not a call key")
    assert f.cache_clear() == 3
    assert all(store.get(f.key(x)) is None for x in (1, "two", long_argument))
    assert all(store.get(other.key(x)) == x for other in (g, fa) for x in (1, "two", long_argument))
    assert store.get(b"f:plain") == "not a call key"
    assert f.cache_clear() == 0
    assert f(1) == 1 and store.get(f.key(1)) == 1


def test_cache_clear_with_a_key_function_deletes_what_its_keys_share_as_a_prefix(store: TierStore) -> None:
    @store.cached(key=lambda user: f"user:{user}")
    def user(user: int) -> str:
        return f"u{user}"

    store.set("users", "not one of its keys")
    assert user.cache_clear() == 0  # no call yet: no prefix known
    assert user(1) == "u1" and user.key(1) == "user:1" and store.get("user:1") == "u1"
    assert user(2) == "u2" and user(12) == "u12"
    assert user.cache_clear() == 3  # the keys built so far share "user:"
    assert [store.get(f"user:{n}") for n in (1, 2, 12)] == [None, None, None]
    assert store.get("users") == "not one of its keys"
    user.invalidate(1)
    assert store.get("user:1") is None


def test_cache_clear_with_key_functions_whose_keys_share_nothing_is_a_value_error(store: TierStore) -> None:
    @store.cached(key=lambda n: f"a{n}" if n else f"b{n}")
    def either(n: int) -> int:
        return n

    @store.cached(key=lambda n: b"k" if n else "k")
    def mixed(n: int) -> int:
        return n

    assert either(1) == 1 and either(0) == 0 and mixed(1) == 1 and mixed(0) == 0
    for fn in (either, mixed):
        with pytest.raises(ValueError, match="share no prefix"):
            fn.cache_clear()
    assert store.get("a1") == 1 and store.get("b0") == 0 and store.get(b"k") == 1 and store.get("k") == 0


def test_closures_still_need_a_name(store: TierStore) -> None:
    def outer() -> Any:
        def inner(x: int) -> int:
            return x

        return inner

    with pytest.raises(TypeError, match="name="):
        store.cached(outer())
    with pytest.raises(TypeError, match="name="):
        store.cached(lambda x: x)
    named = store.cached(name="inner")(outer())
    assert named(3) == 3 and named.cache_clear() == 1


async def fetch_user(x: int) -> int:
    return x


class AsyncSource:
    async def __call__(self, x: int) -> int:
        return x


@pytest.mark.parametrize("options", [{}, {"name": "users"}, {"key": lambda x: f"user:{x}"}])
@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (fetch_user, "coroutine function.*AsyncTierStore.cached"),
        (AsyncSource(), "coroutine function"),
        (classmethod(double), "classmethod object: put @classmethod above"),
        (staticmethod(double), "staticmethod object"),
        (42, "decorates a function, not int"),
    ],
    ids=["async-def", "async-callable", "classmethod", "staticmethod", "int"],
)
def test_what_cached_cannot_memoize_is_refused_at_decoration(
    store: TierStore, options: dict[str, Any], fn: Any, words: str
) -> None:
    """Also with name= or key=: a coroutine function would fail at every call (its coroutine cannot be
    stored, and is never awaited), a classmethod object is not callable until bound."""
    decorate = store.cached(**options)
    with pytest.raises(TypeError, match=words):
        decorate(fn)


def test_handle_calls_on_a_closed_store_raise(store_path: str) -> None:
    store = TierStore(store_path, **OPTS)
    cached = store.cached(double)
    store.close()
    assert isinstance(cached.key(1), bytes)  # building a key touches no store
    for call in (lambda: cached(1), lambda: cached.invalidate(1), cached.cache_clear):
        with pytest.raises(StoreClosed):
            call()


def test_a_cached_method_still_binds(store: TierStore) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @store.cached(key=lambda self, x: f"{self.name}:{x}")
        def get(self, x: int) -> str:
            return f"{self.name}-{x}"

    assert Repo("a").get(1) == "a-1" and store.get("a:1") == "a-1"


def test_the_common_prefix_of_keys_seen_from_many_threads_is_exact() -> None:
    from tierstore.memoize import CommonPrefix

    common = CommonPrefix()
    keys = [f"p:{t}:{i}" for t in range(8) for i in range(200)] + ["p:"]
    start = threading.Barrier(8)

    def see(part: int) -> None:
        start.wait()
        for key in keys[part::8]:
            common.see(key)

    threads = [threading.Thread(target=see, args=(part,)) for part in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert common.prefix == "p:"
    common.see(42)  # not a key: ignored
    assert common.prefix == "p:"
    common.see(b"p:")
    assert common.prefix == ""
