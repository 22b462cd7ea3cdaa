"""The shared tier in one process: the version rule in Redis, expiry, stats, scripts, refusals.

Outages are in ``test_shared_outages``.

Two stores in one process over one real redis-server stand for two processes
(each has its own tiers 1 and 2, its own origin and its own listener); the
multi-process tests are in ``test_shared_processes``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.shared.redis_server import RedisServer
from tests.shared.support import entry_hash, wait_for
from tierstore import ABSENT, TierStore, codec
from tierstore.shared.client import Names
from tierstore.shared.scripts import DELETE, SET


@pytest.mark.parametrize(
    ("low", "high"),
    [(9, 10), (99, 100), (2**53, 2**53 + 1), (2**53 + 1, 2**53 + 2), (2**63 - 2, 2**63 - 1), (1, 2**63 - 1)],
)
def test_versions_compare_exactly_in_redis(stores: Callable[..., TierStore], low: int, high: int) -> None:
    """Doubles would call 2**53 and 2**53 + 1 equal, and strings would put "9" above "10"."""
    first, second = stores(), stores()
    assert first.set("k", "low", version=low) is True
    assert second.set("k", "high", version=high) is True
    assert first.set("k", "again", version=high) is False
    assert first.set("k", "back", version=low) is False
    wait_for(lambda: first.get_entry("k") == (("high", high, None, False, False)))
    assert second.delete("k", version=low) is True  # a tombstone at max(low, stored) = high
    assert first.set("k", "after", version=high) is False
    assert first.set("k", "unversioned") is True  # keeps the tombstone's version
    assert second.set("k", "stale", version=high) is False
    wait_for(lambda: second.get_entry("k") == ("unversioned", high, None, False, False))


def test_versions_at_the_top_of_the_range(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    top = 2**63 - 1
    assert store.set("k", 1, version=top) is True
    assert entry_hash(raw, "k")[b"v"] == str(top).encode()
    assert store.set("k", 2, version=top) is False
    assert store.delete("k", version=top - 1) is True
    assert entry_hash(raw, "k")[b"v"] == str(top).encode()
    assert store.set("k", 3, version=top) is False
    with pytest.raises(ValueError):
        store.set("k", 4, version=top + 1)


def test_a_write_lands_in_redis_with_its_expiry_and_seq(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores(stale_ttl=30.0, negative_ttl=7.0, tombstone_ttl=100.0)
    names = Names("tierstore")
    store.set("ttl", "v", ttl=60)
    assert 89_000 < raw.pttl(names.entry(codec.encode_key("ttl"))) <= 90_000  # ttl + stale_ttl
    store.set("forever", "v", ttl=None)
    assert raw.pttl(names.entry(codec.encode_key("forever"))) == -1
    store.set("absent", ABSENT)
    assert 6_000 < raw.pttl(names.entry(codec.encode_key("absent"))) <= 7_000  # negative entries are never stale
    store.set("gone", "v", version=3)
    store.delete("gone")
    assert 99_000 < raw.pttl(names.entry(codec.encode_key("gone"))) <= 100_000  # the tombstone's
    assert entry_hash(raw, "gone")[b"v"] == b"3"
    assert int(raw.get(names.seq) or 0) == 5
    assert entry_hash(raw, "gone")[b"s"] == b"5"


def test_writes_release_the_lease_and_keep_the_keys_set(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """Any accepted write frees the key's load lease (a fill begun before it is refused); a refused one does not."""
    store = stores()
    names = Names("tierstore")
    tagged = codec.encode_key("k")

    def lease() -> None:
        raw.set(names.lease(tagged), b"token", px=60_000)
        raw.zadd(names.leases, {tagged: 0})

    lease()
    assert store.set("k", 1, version=5) is True
    assert raw.exists(names.lease(tagged)) == 0 and raw.zscore(names.leases, tagged) is None
    assert raw.zrange(names.keys, 0, -1) == [tagged]
    lease()
    assert store.set("k", 2, version=4) is False  # refused: the lease stands
    assert raw.get(names.lease(tagged)) == b"token"
    assert store.delete("k") is True  # a tombstone at version 5: still an entry hash
    assert raw.exists(names.lease(tagged)) == 0 and raw.zscore(names.leases, tagged) is None
    assert raw.zrange(names.keys, 0, -1) == [tagged]
    store.set("plain", 1)
    lease_plain = codec.encode_key("plain")
    raw.set(names.lease(lease_plain), b"token", px=60_000)
    assert store.delete("plain") is True  # version 0: removed outright, and from the keys set
    assert raw.exists(names.lease(lease_plain)) == 0
    assert raw.zrange(names.keys, 0, -1) == [tagged]


def test_a_delete_at_version_0_removes_the_key_in_redis(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store = stores()
    store.set("k", "v")
    assert store.delete("k") is True
    assert entry_hash(raw, "k") == {}
    assert store.delete("k") is False
    assert store.get("k", "none") == "none"


def test_a_local_miss_reads_redis_and_keeps_the_copy(stores: Callable[..., TierStore]) -> None:
    writer, reader = stores(), stores(memory_admission="always")
    writer.set("k", {"a": [1, 2]}, ttl=60)
    wait_for(lambda: reader.stats()["invalidations_received"] == 1)  # else its drop may refuse the first copy
    assert reader.get("k") == {"a": [1, 2]}
    assert reader.stats()["hits_shared"] == 1
    assert reader.get("k") == {"a": [1, 2]}
    assert reader.get("k") == {"a": [1, 2]}
    stats = reader.stats()
    assert stats["hits_shared"] == 1  # the copy answers now
    assert stats["hits_memory"] == 2
    entry = reader.get_entry("k")
    assert entry is not None and entry.expires_at == writer.get_entry("k").expires_at  # type: ignore[union-attr]
    assert reader.get("missing", "d") == "d"
    assert "k" in reader and "missing" not in reader


def test_a_store_ignores_its_own_messages_and_counts_others(stores: Callable[..., TierStore]) -> None:
    first, second = stores(), stores()
    first.set("k", 1)
    wait_for(lambda: second.stats()["invalidations_received"] == 1)
    time.sleep(0.1)
    assert first.stats()["invalidations_received"] == 0
    assert first.get("k") == 1
    assert first.stats()["hits_shared"] == 0  # its own write's copy answers


def test_a_local_copy_stamped_at_or_after_a_message_is_kept(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """The listener drops a copy stamped below the message's seq and keeps one stamped at it or later."""
    store = stores()
    names = Names("tierstore")
    other = stores()
    other.set("warm", 0)  # seq 1: the listener's baseline
    wait_for(lambda: store.stats()["invalidations_received"] == 1)
    epoch = raw.get(names.epoch)
    data, _ = codec.encode_record(codec.new_packer(), "v", 0, None, 0, time.time(), None, 0)
    for key, stamp in (("kept", 2), ("dropped", 1)):
        raw.hset(names.entry(codec.encode_key(key)), mapping={"d": data, "v": "0", "s": stamp, "e": epoch})
        assert store.get(key) == "v"
    assert store.stats()["hits_shared"] == 2
    for key in ("kept", "dropped"):  # seq 2 and 3, as another process's writes would publish them
        seq = raw.incr(names.seq)
        raw.publish(names.channel, f"{seq}:0:{'0' * 16}:".encode() + codec.encode_key(key))
    wait_for(lambda: store.stats()["invalidations_received"] == 3)
    assert store.get("kept") == "v"
    assert store.stats()["hits_shared"] == 2  # served by the copy stamped at seq 2
    assert store.get("dropped") == "v"
    assert store.stats()["hits_shared"] == 3  # its copy (seq 1) was dropped by the message of seq 3
    assert store.stats()["resyncs"] == 0


def test_a_seq_gap_resyncs(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    store, other = stores(), stores()
    other.set("k", "v")
    assert [store.get("k"), store.get("k")] == ["v", "v"]
    names = Names("tierstore")
    raw.incr(names.seq)  # a write whose message is lost
    other.set("j", 1)
    wait_for(lambda: store.stats()["resyncs"] == 1)
    hits = store.stats()["hits_shared"]
    assert store.get("k") == "v"
    assert store.stats()["hits_shared"] == hits + 1  # the copy was distrusted: revalidated from Redis


def test_scripts_are_reloaded_after_script_flush(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    first, second = stores(), stores()
    assert first.set("k", 1, version=1)
    raw.script_flush()
    digests = first._shared.scripts._digests  # type: ignore[union-attr]
    write_scripts = [digests[SET], digests[DELETE]]  # (the lease scripts are tested with get_or_load)
    assert raw.script_exists(*write_scripts) == [False, False]
    assert first.set("k", 2, version=2) is True  # NOSCRIPT: loaded again, run once more
    assert first.set("k", 3, version=2) is False
    assert first.delete("k") is True
    assert raw.script_exists(*write_scripts) == [True, True]
    assert first._shared.scripts.reloads == 2  # type: ignore[union-attr]
    assert first.stats()["shared_errors"] == 0
    wait_for(lambda: second.get("k", "none") == "none")
    assert second.set("k", 4, version=2) is False


# The public calls shared mode serves (through Redis, or local parts only: stats, sweeps, checkpoints).
SERVED = {
    "get", "get_entry", "get_many", "set", "delete", "invalidate", "stats", "sweep", "checkpoint", "drain",
    "close", "closed", "report_corrupt", "path", "incr", "decr", "counter", "index", "guard_keys", "rebuild_guard",
    "get_or_load", "cached", "refresh_every", "keep_fresh",
    "add", "touch", "pop", "replace_value", "update_value", "set_many", "delete_many", "delete_prefix", "clear",
    "keys", "items",
}  # fmt: skip


def test_shared_calls_counts_each_round_trip_the_calls_make(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """Checked against what Redis received from the stores' own connections (scripts and reads)."""
    first, second = stores(), stores()

    def sent() -> int:
        stats = raw.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {"calls": 0})["calls"]) for name in ("evalsha", "hmget"))

    calls = [first.stats()["shared_calls"] + second.stats()["shared_calls"]]
    redis_side = [sent()]

    def step(expected: int) -> None:
        calls.append(first.stats()["shared_calls"] + second.stats()["shared_calls"])
        redis_side.append(sent())
        assert calls[-1] - calls[-2] == expected == redis_side[-1] - redis_side[-2]

    first.set("k", 1)
    step(1)  # one script
    assert first.get("k") == 1
    step(0)  # its own write is in tier 1
    wait_for(lambda: second.stats()["invalidations_received"] == 1)  # heard before it reads
    assert second.get("k") == 1
    step(1)  # a local miss: one HMGET
    assert second.get("k") == 1 and second.get("k") == 1
    step(0)  # its stamped copy is trusted


def test_every_public_call_is_served_in_shared_mode() -> None:
    """A call added to the store later must be made shared (and listed here), never run process-locally unseen."""
    public = {name for name in dir(TierStore) if not name.startswith("_")}
    assert public - SERVED == set()


def test_settings_are_checked(redis_server: RedisServer) -> None:
    for bad, error in (
        ({"shared": "http://x"}, ValueError),
        ({"shared": 3}, TypeError),
        ({"namespace": "a{b}"}, ValueError),
        ({"namespace": ""}, ValueError),
        ({"shared_failure": "ignore"}, ValueError),
        ({"shared_grace": -1}, ValueError),
        ({"shared_ping_interval": 0}, ValueError),
    ):
        with pytest.raises(error):
            TierStore(**{"shared": redis_server.url, **bad})  # type: ignore[arg-type]


def test_a_redis_client_object_is_accepted(redis_server: RedisServer) -> None:
    client = redis.Redis(unix_socket_path=redis_server.socket, decode_responses=True)
    with TierStore(shared=client) as first, TierStore(shared=redis_server.url) as second:
        first.set("k", b"\xff bytes")
        assert second.get("k") == b"\xff bytes"


def test_namespaces_are_apart(stores: Callable[..., TierStore]) -> None:
    first, second = stores(namespace="one"), stores(namespace="two")
    first.set("k", 1, version=5)
    assert second.get("k") is None
    assert second.set("k", 2, version=1) is True


def test_a_reopened_store_revalidates_what_it_kept(
    stores: Callable[..., TierStore], redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    other = stores()
    with TierStore(path, shared=redis_server.url) as store:
        store.set("changed", "old")
        store.set("deleted", "old")
        store.set("same", "old")
    other.set("changed", "new")
    other.delete("deleted")
    with TierStore(path, shared=redis_server.url) as store:
        assert store.get("changed") == "new"
        assert store.get("deleted") is None
        assert store.get("same") == "old"
    with TierStore(path) as local:  # the copies are ordinary records to a store without shared=
        assert local.get("changed") == "new"


def test_without_shared_nothing_of_it_is_loaded_or_bound(tmp_path: Path) -> None:
    code = (
        "import sys; from tierstore import TierStore\n"
        f"s = TierStore({str(tmp_path / 's')!r}); s.set('k', 1); assert s.get('k') == 1\n"
        "assert not any(m.startswith('tierstore.shared') or m == 'redis' for m in sys.modules), sorted(sys.modules)\n"
        "assert '_fetch' not in vars(s) and 'get_or_load' not in vars(s)\n"
        "assert 'hits_shared' not in s.stats()\n"
        "assert s.get_or_load('j', lambda: 2) == 2 and s.incr('c') == 1\n"
        "s.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_flushed_redis_is_noticed_by_the_reset_seq(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    """FLUSHALL keeps the connections: the next write's seq starts again at 1, which is a gap."""
    store, other = stores(), stores()
    other.set("kept", "old")
    other.set("rewritten", "old")
    wait_for(lambda: store.stats()["invalidations_received"] == 2)
    for key in ("kept", "rewritten", "kept", "rewritten"):
        assert store.get(key) == "old"  # copies in both tiers
    epoch = raw.get(Names("tierstore").epoch)
    raw.flushall()
    other.set("rewritten", "new")  # seq 1 again, under a new epoch id
    wait_for(lambda: store.stats()["resyncs"] == 1)
    assert raw.get(Names("tierstore").epoch) != epoch
    assert store.get("rewritten") == "new"
    assert store.get("kept") is None  # Redis lost it: the distrusted copy is dropped, not served
    other.set("rewritten", "newer")
    wait_for(lambda: store.get("rewritten") == "newer")
    assert store.stats()["resyncs"] == 1


def test_get_many_reads_each_key_as_get_does(stores: Callable[..., TierStore]) -> None:
    writer, reader = stores(), stores()
    writer.set("a", 1)
    writer.set("b", 2)
    writer.set("absent", ABSENT)
    writer.set("gone", 3, version=4)
    writer.delete("gone")
    wait_for(lambda: reader.stats()["invalidations_received"] == 5)
    assert reader.get_many(["a", "b", "absent", "gone", "missing"]) == {"a": 1, "b": 2}
    assert reader.stats()["hits_shared"] == 4  # every record Redis holds, tombstone and negative entry included
    writer.set("a", 10)
    wait_for(lambda: reader.get_many(["a", "b"]) == {"a": 10, "b": 2})


def test_no_copy_lands_while_the_listener_is_not_subscribed(stores: Callable[..., TierStore]) -> None:
    store, other = stores(), stores()
    other.set("k", 1)
    wait_for(lambda: store.stats()["invalidations_received"] == 1)
    mirror = store._shared.mirror  # type: ignore[union-attr]
    mirror.resync(listening=False)  # what the listener does when it loses its subscription
    assert [store.get("k"), store.get("k"), store.get("k")] == [1, 1, 1]
    assert store.stats()["hits_shared"] == 3  # each read went to Redis: nobody would say when a copy went stale
    assert store.set("k", 2) is True
    assert store.get("k") == 2
    assert store.stats()["hits_shared"] == 4  # nor does a write's copy land
    mirror.resync(listening=True)  # subscribed again
    assert [store.get("k"), store.get("k"), store.get("k")] == [2, 2, 2]
    assert store.stats()["hits_shared"] == 5  # copied once, then served locally
