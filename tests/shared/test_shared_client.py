"""The shared tier's own connections and the listener's reading of its subscription.

``SharedClient.execute`` runs the hot commands on connections of the client's
own; the listener reads every reply waiting per wake-up. Two stores in one
process over one real redis-server stand for two processes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.shared.support import wait_for
from tierstore import TierStore, codec
from tierstore.errors import SharedUnavailable
from tierstore.shared.client import Names


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
