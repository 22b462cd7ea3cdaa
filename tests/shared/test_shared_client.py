"""The shared tier's own connections and the listener's reading of its subscription.

``SharedClient.execute`` runs the hot commands on connections of the client's
own; the listener reads every reply waiting per wake-up. Two stores in one
process over one real redis-server stand for two processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis

from tests.shared.support import wait_for
from tierstore import TierStore, codec
from tierstore.errors import SharedUnavailable
from tierstore.shared.client import Names
from tierstore.shared.mirror import mark_slot


def test_an_error_reply_leaves_the_connection_in_step(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    writer, reader = stores(), stores()
    shared = reader._shared
    assert shared is not None
    entry = Names("tierstore").entry(codec.encode_key("k"))
    raw.set(entry, b"not a hash")  # HMGET on it: a WRONGTYPE error reply
    assert reader.get("k", "missed") == "missed"  # a damaged entry: a counted miss
    assert reader.stats()["corrupt_records"] == 1
    assert not shared.client.down  # an error reply is no outage
    raw.delete(entry)
    writer.set("k", {"v": 1})
    wait_for(lambda: reader.stats()["invalidations_received"] == 1)
    assert reader.get("k") == {"v": 1}  # the next reply read is this call's, on the same connection
    writer.set("other", 2)
    wait_for(lambda: reader.stats()["invalidations_received"] == 2)
    assert reader.get("other") == 2
    assert len(shared.client._idle) == 1  # one caller at a time: one connection, reused


def test_a_lost_connection_is_not_reused_half_read(stores: Callable[..., TierStore], raw: redis.Redis) -> None:
    writer, reader = stores(), stores()
    shared = reader._shared
    assert shared is not None
    writer.set("k", 1)
    wait_for(lambda: reader.stats()["invalidations_received"] == 1)
    assert reader.get("k") == 1
    (conn,) = shared.client._idle
    raw.client_kill_filter(_id=int(shared.client.send(b"CLIENT", b"ID")))  # the server drops it
    with pytest.raises(SharedUnavailable, match="unreachable"):
        reader.delete("gone")  # its script's call finds the connection closed: Redis looks down
    assert conn._sock is None  # disconnected, so no half-read reply reaches a later call
    wait_for(lambda: not shared.client.down)  # the listener resubscribes and resyncs
    reader.set("k", 3)
    wait_for(lambda: writer.get("k") == 3)  # its copy dropped by the message, the new value read


def test_a_burst_of_messages_is_handled_in_full(stores: Callable[..., TierStore]) -> None:
    writer, reader = stores(), stores(memory_admission="always")
    keys = [f"k{i}" for i in range(300)]
    for key in keys:
        writer.set(key, 0)
    wait_for(lambda: reader.stats()["invalidations_received"] == len(keys))
    assert [reader.get(key) for key in keys] == [0] * len(keys)  # copies in both tiers now
    for key in keys:  # faster than the listener wakes: many messages wait per wake-up
        writer.set(key, 1)
    wait_for(lambda: reader.stats()["invalidations_received"] == 2 * len(keys))
    assert [reader.get(key) for key in keys] == [1] * len(keys)
    assert reader.stats()["resyncs"] == writer.stats()["resyncs"]  # no gap was seen: only the opens' resyncs


def _keys_in_distinct_slots(count: int) -> list[str]:
    """``count`` keys no two of which share a change-mark slot (str hashes vary by process)."""
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < count:
        keys.setdefault(mark_slot(f"k{candidate}"), f"k{candidate}")
        candidate += 1
    return list(keys.values())


def test_get_many_pipelines_the_reads_redis_must_answer(stores: Callable[..., TierStore]) -> None:
    writer = stores()
    *present, absent = _keys_in_distinct_slots(601)
    values = {key: {"i": index} for index, key in enumerate(present)}
    writer.set_many(values)
    reader = stores()  # opened after the writes: it holds no copy and hears of none
    before = reader.stats()
    assert reader.get_many([*values, absent]) == values
    after = reader.stats()
    assert after["shared_calls"] - before["shared_calls"] == 3  # 601 reads, 256 to a round trip (one each before)
    assert after["hits_shared"] - before["hits_shared"] == 600
    assert after["misses"] - before["misses"] == 1
    assert reader.get_many(list(values)) == values  # every copy kept: no round trip now
    assert reader.stats()["shared_calls"] == after["shared_calls"]


def test_get_many_reads_keys_of_one_change_mark_slot_in_separate_round_trips(stores: Callable[..., TierStore]) -> None:
    """A copy landing moves its slot's mark; a read of another key of that slot sent with it would then
    find its mark moved and drop its own copy. So they go one round trip apart, and both copies stay."""
    first = "k0"
    second = next(f"k{i}" for i in range(1, 1_000_000) if mark_slot(f"k{i}") == mark_slot(first))
    writer = stores()
    writer.set_many({first: 1, second: 2})
    reader = stores()
    before = reader.stats()["shared_calls"]
    assert reader.get_many([first, second]) == {first: 1, second: 2}
    assert reader.stats()["shared_calls"] - before == 2
    assert reader.get_many([first, second]) == {first: 1, second: 2}
    assert reader.stats()["shared_calls"] - before == 2  # both held as local copies


def test_get_many_counts_a_damaged_entry_and_reads_the_others(
    stores: Callable[..., TierStore], raw: redis.Redis
) -> None:
    writer = stores()
    writer.set_many({"a": 1, "b": 2})
    raw.set(Names("tierstore").entry(codec.encode_key("bad")), b"not a hash")  # its HMGET: a WRONGTYPE reply
    reader = stores()
    assert reader.get_many(["a", "bad", "b"]) == {"a": 1, "b": 2}
    assert reader.stats()["corrupt_records"] == 1
    shared = reader._shared
    assert shared is not None and not shared.client.down  # an error reply is no outage
    writer.set("c", 3)
    assert reader.get("c") == 3  # the pipeline's connection stayed in step: this reply is this call's
    assert len(shared.client._idle) == 1


@pytest.mark.parametrize("change", ["set", "delete"])
def test_a_write_landing_between_get_many_s_replies_and_their_commits_leaves_no_stale_copy(
    stores: Callable[..., TierStore], change: str
) -> None:
    """The pipeline's replies predate another store's write, whose message the listener handles before the
    reads commit: get_many answers what Redis held when it asked, and keeps no copy of it (as ``get``)."""
    writer = stores()
    keys = _keys_in_distinct_slots(40)
    target = keys[7]
    writer.set_many(dict.fromkeys(keys, "old"))
    reader = stores()
    shared = reader._shared
    assert shared is not None
    client, mirror = shared.client, shared.mirror
    pipelined = client.execute_many
    slot = mark_slot(target)

    def write_then_answer(what: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        replies = pipelined(what, commands)  # the reads are answered: old values
        before = mirror._marks[slot]
        writer.set(target, "new") if change == "set" else writer.delete(target)
        wait_for(lambda: mirror._marks[slot] != before)  # the reader's listener has handled the write
        return replies

    client.execute_many = write_then_answer  # type: ignore[method-assign]
    try:
        assert reader.get_many(keys)[target] == "old"  # the value Redis held when asked
    finally:
        del client.execute_many
    expected = "new" if change == "set" else None
    assert reader.get(target) == expected  # no stale copy kept
    assert reader.get_many([target]) == ({} if expected is None else {target: expected})
    assert reader.get_many(keys[:5]) == dict.fromkeys(keys[:5], "old")  # the other copies stand
