"""Fills Redis refused while this store's listener had not heard the write that refused them.

Real redis-server, two stores A and B; B's listener holds A's messages back, so B's copy
of ``k`` is older than Redis when B's fill is refused (its lease taken by A's write, or
the version rule against A's newer tombstone). The refusal says the copy may be stale:
B's next read must ask Redis, never answer from the copy, as after a refused ``set``/``add``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.aio.support import run
from tests.shared.support import wait_for
from tests.shared.test_shared_mirror_adversarial import Stores, heard, messages_held_back, stamp_held
from tierstore import TierStore, Versioned
from tierstore.aio import AsyncTierStore


def b_holding_a_tombstone(stores: Stores) -> tuple[TierStore, TierStore]:
    """Stores A and B on one Redis, B holding its tombstone of ``k`` at version 2 (over A's v1), both heard."""
    a, b = stores(), stores()
    a.set("k", "v1", version=1)
    wait_for(heard(b, 1))
    b.delete("k", version=2)
    wait_for(heard(a, 1))
    assert b.get("k") is None and stamp_held(b, "k") is not None  # B's tombstone
    return a, b


def writing(action: Callable[[], object], value: Any) -> Callable[[], Any]:
    """A loader that runs ``action`` (a write elsewhere, after the lease was taken) and returns ``value``."""

    def loader() -> Any:
        action()
        return value

    return loader


def test_a_fill_refused_by_a_write_not_heard_yet_is_not_followed_by_an_absent_read(stores: Stores) -> None:
    """B holds its tombstone of ``k`` and loads it; A writes v3 during the load (its write frees B's
    lease), so B's fill is refused. B's ``get`` and ``in`` must not answer from the older tombstone."""
    a, b = b_holding_a_tombstone(stores)
    with messages_held_back(b):
        loader = writing(lambda: a.set("k", "v3", version=3), "b-loaded")
        assert b.get_or_load("k", loader) == "b-loaded"
        assert b.stats()["fills_rejected"] == 1
        assert b.get("k") == "v3" and "k" in b


def test_a_renewal_refused_by_a_write_not_heard_yet_leaves_no_older_value_served(stores: Stores) -> None:
    """B renews its live copy of v1 ahead of expiry; A writes v2 during the renewal's load, so the
    renewal's fill is refused. B's ``get`` must then answer v2, not its copy of v1."""
    now = [1_000_000.0]
    a = stores(clock=lambda: now[0])
    b = stores(clock=lambda: now[0], refresh_ahead=0.5, min_refresh_interval=0)
    a.set("k", "v1", ttl=10)
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and stamp_held(b, "k") is not None
    now[0] += 6  # in the last half of its TTL: a hit starts a renewal
    with messages_held_back(b):
        assert b.get_or_load("k", writing(lambda: a.set("k", "v2"), "renewed")) == "v1"
        assert b.drain(10)
        assert b.stats()["fills_rejected"] == 1
        assert b.get("k") == "v2"


def test_a_fill_refused_by_the_version_rule_leaves_no_stale_copy_of_a_deleted_key(stores: Stores) -> None:
    """B holds v1 (version 1), expired but within its stale window; A deletes ``k`` at version 5 and
    B has not heard it. B's load returns version 3, which Redis refuses (its tombstone is at 5):
    B's ``get_entry`` must not then offer its stale v1 of a key Redis holds deleted."""
    now = [1_000_000.0]
    a, b = stores(clock=lambda: now[0], stale_ttl=60), stores(clock=lambda: now[0], stale_ttl=60)
    a.set("k", "v1", ttl=10, version=1)
    wait_for(heard(b, 1))
    assert b.get("k") == "v1" and stamp_held(b, "k") is not None
    now[0] += 11  # expired, within stale_ttl
    entry = b.get_entry("k")
    assert entry is not None and entry.stale and entry.value == "v1"
    with messages_held_back(b):
        a.delete("k", version=5)
        assert b.get_or_load("k", lambda: Versioned("b3", 3)) == "b3"
        assert b.stats()["fills_rejected"] == 1
        assert b.get_entry("k") is None and b.get("k") is None


def test_an_add_of_an_unstorable_value_refused_by_a_write_not_heard_yet_drops_the_tombstone(stores: Stores) -> None:
    """As a refused ``add``: B's ``add`` of a value it cannot store finds A's live v3 in Redis and
    answers ``False`` (as locally, where a live entry refuses it first); B's ``get`` must then not
    answer from its older tombstone."""
    a, b = b_holding_a_tombstone(stores)
    with messages_held_back(b):
        a.set("k", "v3", version=3)
        assert not b.add("k", object())
        assert b.get("k") == "v3" and "k" in b


def test_a_fill_refused_through_the_asyncio_facade_is_not_followed_by_an_absent_read(stores: Stores) -> None:
    """The first case through ``AsyncTierStore``: its fill is the same steps, awaited on the loop."""
    a, b = b_holding_a_tombstone(stores)

    async def loader() -> str:
        a.set("k", "v3", version=3)  # another process's write during the load
        return "b-loaded"

    async def body() -> None:
        s = AsyncTierStore(b)
        try:
            assert await s.get_or_load("k", loader) == "b-loaded"
            assert (await s.stats())["fills_rejected"] == 1
            assert await s.get("k") == "v3"
        finally:
            await s.close()

    with messages_held_back(b):
        run(body)
