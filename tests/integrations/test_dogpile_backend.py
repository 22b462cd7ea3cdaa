"""The dogpile.cache backend "tierstore": arguments, values, and mutexes on store leases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE, CachedValue
from dogpile.cache.region import _backend_loader

from tierstore import TierStore
from tierstore.integrations.dogpile import TierStoreBackend
from tierstore.integrations.registry import open_count


def test_registered_under_its_name_and_found_through_the_entry_point() -> None:
    assert _backend_loader.load("tierstore") is TierStoreBackend
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="dogpile.cache") if p.name == "tierstore"]
    assert point.load() is TierStoreBackend


def test_arguments_path_store_and_unknown_ones(tmp_path: Path) -> None:
    arguments = {"path": str(tmp_path / "s"), "memory_items": 50, "colour": "blue"}
    copy = dict(arguments)
    backend = TierStoreBackend(arguments)  # unknown arguments are ignored
    assert arguments == copy
    backend.set("k", CachedValue("v", {"ct": 1.0, "v": 2}))
    assert backend.get("k") == CachedValue("v", {"ct": 1.0, "v": 2})
    assert backend.store.get("k") == ["v", {"ct": 1.0, "v": 2}]  # msgpack: payload and metadata
    backend.close()
    assert open_count(tmp_path / "s") == 0
    with TierStore(tmp_path / "own") as store:
        given = TierStoreBackend({"store": store})
        given.set_serialized("b", b"bytes")
        assert given.get_serialized("b") == b"bytes"
        assert given.get("b") is NO_VALUE  # bytes are not a CachedValue
        assert given.get_serialized_multi(["b", "x"]) == [b"bytes", NO_VALUE]
        given.close()  # a store passed in stays open
        assert not store.closed
    with pytest.raises(ValueError, match="path"):
        TierStoreBackend({})
    with pytest.raises(TypeError, match="TierStore"):
        TierStoreBackend({"store": "not a store"})


def test_payloads_must_be_msgpack_values(tmp_path: Path) -> None:
    region = make_region().configure("tierstore", arguments={"path": str(tmp_path / "s")})
    region.set("ok", {"a": [1, 2]})
    assert region.get("ok") == {"a": [1, 2]}
    with pytest.raises(TypeError):
        region.set("object", object())
    assert region.get("object") is NO_VALUE
    region.backend.close()


def test_the_mutex_frees_itself_when_lock_timeout_passes(tmp_path: Path) -> None:
    backend = TierStoreBackend({"path": str(tmp_path / "s"), "lock_timeout": 0.3})
    assert backend.has_lock_timeout()
    held = backend.get_mutex("k")
    assert held.acquire()
    other = backend.get_mutex("k")
    assert other.locked() and not other.acquire(False)
    assert backend.get_mutex("another key").acquire(False)
    time.sleep(0.4)
    assert not other.locked()
    assert other.acquire(False)  # the first holder's lease ended
    held.release()  # late: does not free the new holder's lock
    assert other.locked()
    other.release()
    backend.close()


LEASE = 2.0  # seconds: longer than closing and reopening a store takes on a loaded machine (0.3 was not)


def test_a_lock_held_by_a_closed_store_frees_itself_when_its_lease_ends(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    first = TierStoreBackend({"path": path, "lock_timeout": LEASE})
    first.set("k", CachedValue(1, {"ct": 1.0, "v": 2}))
    assert first.get_mutex("k").acquire()
    taken = time.monotonic()
    first.close()
    assert first.store.closed is False  # reopened on use
    first.close()
    assert open_count(path) == 0
    second = TierStoreBackend({"path": path, "lock_timeout": LEASE})
    assert second.get("k") == CachedValue(1, {"ct": 1.0, "v": 2})
    mutex = second.get_mutex("k")
    assert not mutex.acquire(False)
    assert mutex.acquire()  # blocks until the lease of the closed store's lock ends
    assert time.monotonic() - taken >= LEASE * 0.9
    mutex.release()
    second.close()


def test_the_mutex_of_a_store_passed_in_lasts_that_store_s_lock_timeout(tmp_path: Path) -> None:
    with TierStore(tmp_path / "own", lock_timeout=0.3) as store:
        backend = TierStoreBackend({"store": store})
        held = backend.get_mutex("k")
        assert held.acquire()
        other = backend.get_mutex("k")
        assert not other.acquire(False)
        time.sleep(0.4)
        assert other.acquire(False)  # the store's lock_timeout ended the first lease
        other.release()


SUITE_LIKE = """
import os
from tierstore.integrations.dogpile import TierStoreBackend


class TestKept:
    def test_mutex_then_a_delete(self):
        self.backend = TierStoreBackend({"path": os.environ["STORE_PATH"], "checkpoint_interval": None})
        self.backend.get_mutex("foo")

    def teardown_method(self, method):
        self.backend.delete("some key")  # as dogpile's own suites tear down
"""


def test_a_backend_kept_by_a_test_until_exit_closes_quietly(tmp_path: Path) -> None:
    """dogpile's suites keep their backends on test instances that live until the interpreter's last
    collection; the closed store's LevelDB handle must not be freed there (plyvel's finalizer then
    fails and Python prints "Error in sys.excepthook" at exit)."""
    module = tmp_path / "test_kept.py"
    module.write_text(SUITE_LIKE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(module)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "STORE_PATH": str(tmp_path / "store")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "sys.excepthook" not in done.stderr and "Original exception" not in done.stderr, done.stderr
