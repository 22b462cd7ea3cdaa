"""The registry: one store per directory per process, shared by every holder that names it, counted."""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path

import pytest

from tierstore.integrations.registry import StoreHolder, close_all, lease_locks, open_count


def test_holders_share_one_store_and_the_last_release_closes_it(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    first, second = StoreHolder(path, {}), StoreHolder(path, {})
    assert open_count(path) == 0  # nothing opens before use
    store = first.store
    assert second.store is store
    assert open_count(path) == 2
    store.set("k", 1)
    first.close()
    assert not store.closed and open_count(path) == 1
    first.close()  # a second close gives back nothing more
    assert not store.closed
    second.close()
    assert store.closed and open_count(path) == 0
    reopened = first.store  # the next use reopens
    assert reopened is not store and reopened.get("k") == 1
    first.close()
    assert reopened.closed


def test_holders_in_many_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        holder = StoreHolder(path, {})  # one per thread, as Django makes one backend per thread
        try:
            barrier.wait()
            for i in range(30):
                holder.store.set(f"{n}:{i}", i)
                assert holder.store.get(f"{n}:{i}") == i
                holder.close()  # as Django does after every request
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open_count(path) == 0
    holder = StoreHolder(path, {})
    assert sorted(holder.store.keys()) == sorted(f"{n}:{i}" for n in range(8) for i in range(30))
    holder.close()


def test_different_settings_first_wins_and_the_second_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "s")
    first = StoreHolder(path, {"memory_items": 100})
    second = StoreHolder(path, {"memory_items": 5})
    store = first.store
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        assert second.store is store
        second.close()
        assert second.store is store  # warned once per distinct settings
    warnings = [r for r in caplog.records if "first settings win" in r.getMessage()]
    assert len(warnings) == 1 and path in warnings[0].getMessage()
    first.close()
    second.close()
    assert store.closed
    with pytest.raises(TypeError, match="unknown store settings: colour"):
        StoreHolder(path, {"colour": "blue"})


def test_settings_given_at_their_default_are_no_difference(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "s")
    first, second = StoreHolder(path, {}), StoreHolder(path, {"memory_items": 10_000, "lock_timeout": 30})
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        assert second.store is first.store
    assert not [r for r in caplog.records if "first settings win" in r.getMessage()]
    first.close()
    second.close()


def test_a_forgotten_holder_gives_its_reference_back(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    keeper, forgotten = StoreHolder(path, {}), StoreHolder(path, {})
    store = keeper.store
    forgotten.store.set("k", 1)
    assert open_count(path) == 2
    del forgotten
    gc.collect()
    assert open_count(path) == 1
    keeper.close()
    assert store.closed


def test_close_all_closes_what_is_left_open(tmp_path: Path) -> None:
    holder = StoreHolder(str(tmp_path / "s"), {})
    store = holder.store
    close_all()
    assert store.closed
    assert not holder.store.closed  # the holder reopens on its next use
    holder.close()


def test_a_lease_lock_outlives_the_store_that_took_it(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    holder = StoreHolder(path, {"lock_timeout": 0.3})
    holder.store.set("k", 1)
    assert lease_locks(path) is holder.locks
    assert holder.locks.lock("m").acquire()
    taken = time.monotonic()
    holder.close()  # the store closes with the lock still held
    assert open_count(path) == 0
    other = StoreHolder(path, {"lock_timeout": 0.3})
    other.store.get("k")
    assert not other.locks.lock("m").acquire(blocking=False)  # still held: its lease has not ended
    assert other.locks.lock("m").acquire(timeout=5)  # and it frees itself when the lease ends
    assert time.monotonic() - taken >= 0.25
    other.close()


def test_close_all_goes_on_past_a_store_that_fails_to_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = StoreHolder(str(tmp_path / "a"), {}), StoreHolder(str(tmp_path / "b"), {})
    failing, other = first.store, second.store
    real_close = failing.close

    def refuse() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(failing, "close", refuse)
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        close_all()
    assert other.closed
    assert any("disk gone" in record.getMessage() for record in caplog.records)
    monkeypatch.undo()
    real_close()


def test_the_warning_never_shows_a_password_of_the_shared_url(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "s")
    first = StoreHolder(path, {})
    second = StoreHolder(path, {"shared": "redis://cache-user:hunter2@redis.internal:6380/3"})
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        assert first.store is second.store  # the first settings (local) win: no connection is made
    [message] = [r.getMessage() for r in caplog.records if "first settings win" in r.getMessage()]
    assert "hunter2" not in message
    assert "redis://cache-user:***@redis.internal:6380/3" in message  # what differs is still told
    first.close()
    second.close()


@pytest.mark.parametrize(
    "url",
    [
        "unix:///run/redis.sock?db=0&password=hunter2",  # redis-py's own form of a socket with a password
        "redis://redis.internal:6380/3?password=hunter2",
        "unix://:hunter2@/run/redis.sock",
        "rediss://:hunter2@[2001:db8::1]:6380/0",
        "redis://:hunter2@[2001:db8::1",  # no closing bracket: urlsplit refuses it, the warning still comes
    ],
)
def test_the_warning_hides_the_password_of_any_shape_of_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    path = str(tmp_path / "s")
    first = StoreHolder(path, {})
    second = StoreHolder(path, {"shared": url})
    with caplog.at_level(logging.WARNING, logger="tierstore.integrations"):
        assert first.store is second.store  # the first settings (local) win: no connection is made
    [message] = [r.getMessage() for r in caplog.records if "first settings win" in r.getMessage()]
    assert "hunter2" not in message
    assert "differing: shared" in message
    first.close()
    second.close()


def test_no_directory_in_shared_mode_refuses_a_persist_path(tmp_path: Path) -> None:
    """Every worker would keep a private temp directory and restore from, and checkpoint into, the one
    persist_path: all but one got StoreLocked at open (found by opening four such stores in four processes)."""
    for path in (None, ""):
        with pytest.raises(ValueError, match="persist_path"):
            StoreHolder(path, {"shared": "redis://redis.internal:6380/0", "persist_path": str(tmp_path / "cp")})
    StoreHolder(None, {"shared": "redis://redis.internal:6380/0", "persist_path": None}).close()  # no connection yet
